"""How many CPU threads a job's maths use: the `threads` Snakemake gives the job, and not one more.

Jobs run as threads of the Snakemake process (force-use-threads), and the thread pools of torch (OpenMP) and
OpenCV are process-wide: a job sets them to its own `threads` when it starts, and the rules give jobs that can run
at the same time the same count (rules/common.smk: MODEL_THREADS), so they agree. Left alone, torch would use every
core for every job: two renders, or a render beside any other busy process, then fight over the cores (measured
40 times slower, README "Threads and cores").
"""
import gc
import os


def prepare_process() -> None:
    """Before torch is imported: OpenMP threads that wait for work sleep instead of spinning, so a job whose pool is
    larger than the cores it gets does not burn the cores other work needs. A user's own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def unthrottle_local_jobs(workflow) -> None:
    """onstart: switch off Snakemake's job rate limiter (100 jobs/s by default, meant for cluster submissions) when
    jobs run here. After every scheduling round that starts jobs it starts a one-second timer thread whose wake-up is
    another round, which starts another timer: with independent frames the rounds multiply through a render (200
    timer threads after 600 short jobs, measured), take the GIL from the frames' threads, and the last timers keep
    the process alive a second after the run. Local jobs are threads of this process: nothing to protect."""
    if workflow.local_exec:
        workflow.scheduler.job_rate_limiter = None


def finish_process() -> None:
    """onsuccess, onerror: exit without Python's last garbage collection, which walks every object still alive
    (torch, diffusers, the DAG): seconds for nothing as the process ends. Frozen objects are left out of it."""
    gc.freeze()


def limit(threads: int) -> None:
    """Let this job's torch and OpenCV work use `threads` threads (process-wide: see the module's docstring)."""
    import cv2
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
