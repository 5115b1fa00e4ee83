"""How many CPU threads a job's maths use: the `threads` Snakemake gives the job, and not one more.

Jobs run as threads of the Snakemake process (force-use-threads), and the thread pools of torch (OpenMP) and
OpenCV are process-wide: a job sets them to its own `threads` when it starts, and the rules give jobs that can run
at the same time the same count (rules/common.smk: MODEL_THREADS), so they agree. Left alone, torch would use every
core for every job: two renders, or a render beside any other busy process, then fight over the cores (measured
40 times slower, README "Threads and cores"). Idle OpenMP threads sleep (process.prepare).
"""


def limit(threads: int) -> None:
    """Let this job's torch and OpenCV work use `threads` threads (process-wide: see the module's docstring)."""
    import cv2
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
