"""The Snakemake process a render runs in: settings made when the Snakefile loads, when the jobs start and while a
job loads a model.

Jobs run as threads of this process (force-use-threads), so these settings are theirs too.
"""
import atexit
import contextlib
import gc
import os
import threading
from collections.abc import Iterator

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


_loads = 0  # loading_model blocks running now, in any job's thread
_loads_lock = threading.Lock()
_thresholds_before_loads = RUN_THRESHOLDS


@contextlib.contextmanager
def loading_model() -> Iterator[None]:
    """Around loading a model that stays loaded (its library's modules imported, its network built): full garbage
    collections wait, as while planning, and what the load made is then frozen out of them. A load makes hundreds of
    thousands of objects and frees few, so each full collection during it walked them all again for nothing: a
    process's first load of a builtin:tiny-size model took 3.2-3.3 s, now 2.6-2.8 s (bench/bench_models.py --small
    --first-load). Concurrent loads (jobs are threads) share one hold: Python's pace is back when the last ends.
    A load that fails freezes nothing: what it made is garbage. Whoever drops a model made here calls
    release_frozen, or the model's reference cycles are never freed."""
    global _loads, _thresholds_before_loads
    with _loads_lock:
        if _loads == 0:
            _thresholds_before_loads = gc.get_threshold()
            gc.set_threshold(*_thresholds_before_loads[:2], PLAN_THRESHOLDS[2])
        _loads += 1
    loaded = False
    try:
        yield
        loaded = True
    finally:
        with _loads_lock:
            _loads -= 1
            if _loads == 0:
                if loaded:
                    gc.freeze()
                gc.set_threshold(*_thresholds_before_loads)


def release_frozen() -> None:
    """After dropping a model that loading_model froze: a diffusers pipeline can need the cycle collector, which
    skips frozen objects. Everything frozen is collected once (the dropped model freed), then frozen again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
