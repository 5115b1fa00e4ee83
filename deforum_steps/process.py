"""The Snakemake process a render runs in: settings made when the Snakefile loads and when the jobs start.

Jobs run as threads of this process (force-use-threads), so these settings are theirs too.
"""
import atexit
import gc
import os

# Python's pace of garbage collection, which the jobs run with.
RUN_THRESHOLDS = gc.get_threshold()
# While the plan is made: a full collection, which walks every object alive, only after 1,000 collections of the
# middle generation instead of 10. Planning only adds objects (each frame's job, its files, its params) and frees
# few, so those collections found nothing and came again as the heap grew: 1.3-2 s of a 2,000-frame dry run.
PLAN_THRESHOLDS = (*RUN_THRESHOLDS[:2], 1000)


def prepare() -> None:
    """When the Snakefile loads, before anything imports torch:
    1. idle OpenMP threads sleep instead of spinning, so that a job whose pool is larger than the cores it gets does
       not burn the cores other work needs (a user's own OMP_WAIT_POLICY wins);
    2. full garbage collections wait while Snakemake plans (PLAN_THRESHOLDS), until start_jobs;
    3. the process will exit without Python's last garbage collection, which walks every object still alive (the
       DAG, torch, diffusers) for nothing as the process ends: frozen objects are left out of it (1.4 s after a
       2,000-frame dry run). Once, however many renders load the Snakefile."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    gc.set_threshold(*PLAN_THRESHOLDS)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def start_jobs(workflow) -> None:
    """onstart, the plan made and jobs about to run:
    1. Snakemake's job rate limiter (100 jobs/s by default, meant for cluster submissions) off when jobs run here.
       After every scheduling round that starts jobs it starts a one-second timer thread whose wake-up is another
       round, which starts another timer: with independent frames the rounds multiply through a render (200 timer
       threads after 600 short jobs, measured), take the GIL from the frames' threads, and the last timers keep the
       process alive a second after the run. Local jobs are threads of this process: nothing to protect.
    2. What the plan made (the DAG, its jobs, the modules imported) frozen out of garbage collections, which go back
       to Python's pace (RUN_THRESHOLDS) for the jobs: the render's garbage is freed as usual and its full
       collections do not walk the plan."""
    if workflow.local_exec:
        workflow.scheduler.job_rate_limiter = None
    gc.freeze()
    gc.set_threshold(*RUN_THRESHOLDS)
