"""What Snakemake's orchestration costs a render: overhead per frame of a long 2D render, and the time and memory
to plan longer ones, each beside the same DAG with nothing of ours in it. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_orchestration.py [--frames 500] [--plan-frames 2000 20000] [--workdir DIR]

(a) A `--frames` render (64x64, builtin:tiny, steps 1 so the model's share is small) runs as `snakemake` would,
    through the workflow profile, but inside a driver that times, in the same process (jobs are threads of it):
    every job body (Snakemake's run_wrapper around a rule's `run:` block) and, inside them, every model call
    (deforum_steps.diffusion.encode / generate, model loading included). Overhead per frame = (wall time of the whole
    command - time inside model calls) / frames, the target's definition: it counts Snakemake (startup, planning,
    scheduling, its job records) and our own non-model per-frame work (PNG I/O, warp, color match, noise, latent
    file, video encoding). The split between the two is printed too: the orchestration proper is the wall time
    outside every job body. On a busy machine wall times count waiting for a core, so the CPU time spent outside
    job bodies is printed as well (process CPU - the job threads' CPU; torch runs on one thread for that).
    --profile writes a cProfile of the main thread (Snakefile, DAG, scheduler; its waits include the GIL held by
    a running job) to see where that time goes. Last, a dry run on the finished render: every job's records are
    checked and nothing is to be done.
(b) `snakemake -n` from an empty folder, for each of `--plan-frames`: 2D, and 3D with cadence 4 (a diffusion every
    4 frames, a blend and a depth map per frame: 2.25 jobs per frame); wall and CPU time, peak memory (RSS of the
    snakemake process); and a 2-frame config for the fixed part (interpreter, imports, Snakefile).
(c) Snakemake alone, side by side: a Snakefile of the same shape with nothing of ours in it (a chain of as many
    jobs, each with an input function, a params function and a `run:` block that writes 1 KB; the profile's
    options) is planned and run the same way. What it costs is Snakemake's own floor: the difference is ours.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

# snakemake's main() with job bodies and model calls timed; the sums are written to $TIMINGS at exit.
DRIVER = """
import atexit, json, os, threading, time
import torch
import snakemake.executors.local as local
from deforum_steps import diffusion

torch.set_num_threads(1)  # all of a job's CPU time is then its own thread's
timings = {"jobs": 0.0, "jobs_cpu": 0.0, "n_jobs": 0, "model": 0.0, "first_job_start": None, "last_job_end": None}
depth = threading.local()

def timed(fn, key):
    def wrapper(*args, **kwargs):
        outer = not getattr(depth, key, False)  # nested calls (generate inside a timed call) count once
        setattr(depth, key, True)
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if outer:
                setattr(depth, key, False)
                timings[key] += time.perf_counter() - t
    return wrapper

job = timed(local.run_wrapper, "jobs")
def run_wrapper(*args, **kwargs):
    timings["first_job_start"] = timings["first_job_start"] or time.time()
    timings["n_jobs"] += 1
    cpu = time.thread_time()
    try:
        return job(*args, **kwargs)
    finally:
        timings["jobs_cpu"] += time.thread_time() - cpu
        timings["last_job_end"] = time.time()

def done():
    t = os.times()
    timings.update(end=time.time(), process_cpu=t.user + t.system)
    open(os.environ["TIMINGS"], "w").write(json.dumps(timings))
    if profile:
        profile.disable()
        profile.dump_stats(os.environ["PROFILE"])

local.run_wrapper = run_wrapper
# the jobs (animation.first_frame / diffusion_frame, diffusion.img2img) call these through the module
diffusion.encode = timed(diffusion.encode, "model")
diffusion.generate = timed(diffusion.generate, "model")
atexit.register(done)
profile = None
if os.environ.get("PROFILE"):  # the main thread: Snakefile, DAG, scheduler (jobs run in other threads)
    import cProfile
    profile = cProfile.Profile()
    profile.enable()

from snakemake.cli import main
main()
"""

# ru_maxrss of the one child it runs (Linux: KiB), with its CPU times.
MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": r.ru_utime + r.ru_stime, "max_rss_mib": r.ru_maxrss / 1024}))
"""


# (c): a chain of `jobs` jobs shaped like 2D frames, with nothing of ours; run with the profile's options.
BARE_SNAKEFILE = """
import sys
sys.setrecursionlimit(100_000)
N = int(config["jobs"])

rule all:
    input: [f"out/{i:05d}.png" for i in range(N)]

rule frame:
    input: lambda wc: [] if int(wc.i) == 0 else [f"out/{int(wc.i) - 1:05d}.png"]
    output: "out/{i}.png"
    params: row=lambda wc: {"frame": int(wc.i), "angle": 0.5, "zoom": 1.01}
    run:
        open(output[0], "wb").write(bytes(1024))
"""
BARE_OPTIONS = ["--cores", "1", "--force-use-threads", "--scheduler", "greedy", "--nolock", "--quiet", "rules",
                "host"]


def write_config(workdir: Path, frames: int, name: str, **overrides) -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump({
        "model": "builtin:tiny", "max_frames": frames, "W": 64, "H": 64, "seed": 42, "steps": 1,
        "batch_name": name.removesuffix(".yaml"),
        "output_path": str(workdir / "output"), "zoom": "0:(1.01)", "angle": "0:(0.5)",
        "animation_prompts": {0: "a red apple", frames // 2: "a yellow banana"}, **overrides,
    }))
    return path


def bare_args(workdir: Path, jobs: int, *extra: str) -> list[str]:
    """snakemake arguments for the bare chain of `jobs` jobs in workdir/bare_<jobs>/."""
    folder = workdir / f"bare_{jobs}"
    folder.mkdir(exist_ok=True)
    (folder / "Snakefile").write_text(BARE_SNAKEFILE)
    return ["-s", str(folder / "Snakefile"), "-d", str(folder), *BARE_OPTIONS, *extra, "--config", f"jobs={jobs}"]


def snakemake_args(config: Path, *extra: str) -> list[str]:
    return ["-s", str(SNAKEFILE), *extra, "--configfile", str(config)]


def measure(workdir: Path, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(SNAKEMAKE), *args], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out)
    if result["rc"] != 0:
        raise SystemExit(f"snakemake {' '.join(args)} exited {result['rc']}")
    return result


def render(workdir: Path, frames: int, profile: Path | None) -> None:
    config = write_config(workdir, frames, "render.yaml")
    timings_file = workdir / "timings.json"
    env = {**os.environ, "TIMINGS": str(timings_file), "PROFILE": str(profile or "")}
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", DRIVER, *snakemake_args(config)], cwd=workdir, text=True,
                          capture_output=True, env=env)
    wall = time.time() - t
    if proc.returncode != 0:
        raise SystemExit(f"render failed:\n{proc.stderr[-3000:]}")
    lines = len((proc.stdout + proc.stderr).splitlines())
    tm = json.loads(timings_file.read_text())
    startup = tm["first_job_start"] - t
    between = (tm["last_job_end"] - tm["first_job_start"]) - tm["jobs"]
    tail = t + wall - tm["last_job_end"]
    outside_cpu = tm["process_cpu"] - tm["jobs_cpu"]
    print(f"(a) {frames}-frame 2D render, 64x64, builtin:tiny, steps 1, torch on 1 thread: {tm['n_jobs']} jobs, "
          f"{lines} lines of output")
    print(f"    wall time                         {wall:8.2f} s")
    print(f"    inside model calls                {tm['model']:8.2f} s  (encode + generate, model loading included)")
    print(f"    inside job bodies, besides model  {tm['jobs'] - tm['model']:8.2f} s  (PNG/latent I/O, warp, color, "
          "noise, video, schedules)")
    print(f"    outside job bodies                {wall - tm['jobs']:8.2f} s  = startup and planning {startup:.2f} s "
          f"+ between jobs {between:.2f} s + exit {tail:.2f} s")
    print(f"    CPU outside job bodies            {outside_cpu:8.2f} s  (process CPU {tm['process_cpu']:.2f} s - "
          f"job threads' CPU {tm['jobs_cpu']:.2f} s)")
    print(f"    overhead per frame, (wall - model) / frames             {1000 * (wall - tm['model']) / frames:6.1f} ms")
    print(f"    orchestration per frame, (wall - job bodies) / frames   {1000 * (wall - tm['jobs']) / frames:6.1f} ms")
    print(f"    orchestration CPU per frame                             {1000 * outside_cpu / frames:6.1f} ms")
    print(f"    Snakemake between two jobs (wall)                       {1000 * between / tm['n_jobs']:6.1f} ms")
    if profile:
        import pstats

        print(f"    main thread profile in {profile}; by own time:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(20)
    noop = measure(workdir, snakemake_args(config, "-n"))
    print(f"    dry run on the finished render (nothing to do): {noop['wall']:.2f} s wall, {noop['cpu']:.2f} s CPU, "
          f"{noop['max_rss_mib']:.0f} MiB")
    bare = measure(workdir, bare_args(workdir, tm["n_jobs"]))
    print(f"(c) Snakemake alone, a chain of {tm['n_jobs']} jobs run the same way: {bare['wall']:.2f} s wall, "
          f"{1000 * bare['wall'] / frames:.1f} ms per frame")
    print(f"    ours, (wall - model - Snakemake alone) / frames         "
          f"{1000 * (wall - tm['model'] - bare['wall']) / frames:6.1f} ms")


def plan(workdir: Path, frame_counts: list[int]) -> None:
    """(b) and (c): dry runs of 2D renders of 2 and each of frame_counts frames, of 3D cadence 4 of the first, and
    of bare chains with as many jobs."""
    cadence_3d = {"animation_mode": "3D", "diffusion_cadence": 4}
    cases = [("2D", n, {}) for n in (2, *frame_counts)] + [("3D, cadence 4", frame_counts[0], cadence_3d)]
    for label, n, overrides in cases:
        config = write_config(workdir, n, f"plan_{n}_{label[:2]}.yaml", **overrides)
        r = measure(workdir, snakemake_args(config, "-n"))
        jobs = planned_jobs(workdir, config)
        bare = measure(workdir, bare_args(workdir, jobs, "-n"))
        print(f"(b) dry run, {label:13s} {n:6d} frames ({jobs:6d} jobs): {r['wall']:6.2f} s wall, {r['cpu']:6.2f} s "
              f"CPU, peak {r['max_rss_mib']:5.0f} MiB;  (c) Snakemake alone, {jobs} jobs: {bare['wall']:6.2f} s wall")


def planned_jobs(workdir: Path, config: Path) -> int:
    """The job count `snakemake -n` plans for `config` (its summary's `total` line)."""
    out = subprocess.run([str(SNAKEMAKE), *snakemake_args(config, "-n", "--quiet", "host")], cwd=workdir, text=True,
                         capture_output=True, check=True)
    return int(next(line.split()[-1] for line in (out.stdout + out.stderr).splitlines()
                    if line.startswith("total")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=500, help="frames rendered for (a)")
    parser.add_argument("--plan-frames", type=int, nargs="+", default=[2000, 20000], help="frames planned for (b)")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the render's main thread here")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plan(workdir, args.plan_frames)
        if args.frames:
            render(workdir, args.frames, args.profile)


if __name__ == "__main__":
    main()
