"""What Snakemake's orchestration costs a render: overhead per frame of a long 2D render, and the time and memory
to plan longer ones, each beside the same DAG with nothing of ours in it. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_orchestration.py [--frames 500] [--plan-frames 2000 20000] [--workdir DIR]
        [--baseline REVISION]

(a) A `--frames` render (64x64, builtin:tiny, steps 1 so the model's share is small) runs as `snakemake` would,
    through the workflow profile, but inside a driver that times, in the same process (jobs are threads of it):
    every job body (Snakemake's run_wrapper around a rule's `run:` block) and, inside them, every model call
    (deforum_steps.diffusion.encode / generate, model loading included). Overhead per frame = (wall time of the
    whole command - time inside model calls) / frames, the target's definition: it counts Snakemake (startup,
    planning, scheduling, its job records) and our own non-model per-frame work (PNG I/O, warp, color match, noise,
    latent file, video encoding). It is then split into what each frame costs and what a render pays once: per
    frame, Snakemake's steps around the frame's job (the driver times each: job start, its records, output checks,
    DAG update, job selection, log lines; the rest of the time between jobs is its scheduler loop) and the frame
    job's own work besides the model, step by step (reading its images, warp, colors and noise, its latent and PNG
    files, the live preview); once, the startup (with Snakemake's and torch's imports, measured apart),
    planning, the one-off jobs (schedules and their plot, with importing matplotlib measured apart; the video) and
    the exit; and from those two parts, the figure over longer renders (1,000 to 10,000 frames), where the
    once-per-render part is spread thinner. On a busy machine wall times count waiting for a core, so the CPU time
    spent outside job bodies is printed as well (process CPU - the job threads' CPU; torch runs on one thread for
    that). So is the price of a new file in the work folder, before and after the render: a frame creates six, and
    on a virtual disk that price moves with the disk's state. --profile writes a cProfile of the main thread
    (Snakefile, DAG, scheduler; its waits include the GIL held by a running job) to see where that time goes. Last,
    a dry run on the finished render: every job's records are checked and nothing is to be done.
(b) `snakemake -n` from an empty folder, for each of `--plan-frames`: 2D, and 3D with cadence 4 (a diffusion every
    4 frames, a blend per frame that writes its depth map too: 1.25 jobs per frame); wall and CPU time, peak memory
    (RSS of the snakemake process); and a 2-frame config for the fixed part (interpreter, imports, Snakefile). For
    the first of `--plan-frames`, where the time goes, beside Snakemake alone (c): the dry runs again through the
    driver, split into Snakemake's start, the Snakefile, the DAG and the dry run's scheduling of every job.
    --baseline REVISION plans each config with the workflow as it was at that git revision too (exported with git
    archive, its own modules first on PYTHONPATH) and prints now / then: an issue's figures were measured on another
    machine, so its code measured here beside ours says what they mean here. The render of (a) is then made with it
    too, in turn with ours (then, now, then), where that revision has the model calls the driver times.
(c) Snakemake alone, side by side, planned and run the same way (the run through the same driver, Snakemake's
    steps timed beside ours): a chain of as many jobs (each with an input function, a params function and a `run:`
    block that writes 1 KB; the profile's options), and the same DAG as ours (every job's files and params, as our
    dry run planned them, with the switches our Snakefile turns on in Snakemake and Python; each job writes 1 KB to
    each output), for the render and for the first of `--plan-frames`. What the same DAG costs is Snakemake's floor
    for it: the difference is ours, split into importing torch, the frame jobs' work, the one-off jobs and the rest.
    The render of (a) and the same DAG's run are made twice, in turn (ours, it, ours, it), each from no files and no
    records: the faster of each is the one split, so the floor is measured beside the render, under the same load.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DIFFUSION = Path("deforum_steps") / "diffusion.py"

# snakemake's main() with job bodies, model calls and Snakemake's own per-job steps timed; the sums are written to
# $TIMINGS at exit. With MODEL_TIMING unset (the bare chain) nothing of ours is imported.
DRIVER = """
import atexit, collections, inspect, json, logging, os, threading, time
import snakemake.cli  # first: its modules imported alone are circular imports
import snakemake.dag, snakemake.executors.local as local, snakemake.jobs, snakemake.persistence
from snakemake.scheduling.job_scheduler import JobScheduler

timings = collections.defaultdict(float)
timings.update(first_job_start=None, last_job_end=None)
per_rule = collections.defaultdict(lambda: collections.defaultdict(float))  # rule: {jobs, body, cpu, model}
current = threading.local()

def timed(fn, key):
    \"\"\"fn, its wall time added to timings[key]; a call nested in another of the same key counts once.\"\"\"
    def outer():
        if not getattr(current, key, False):
            setattr(current, key, True)
            return True
        return False
    def done(was_outer, t):
        if was_outer:
            setattr(current, key, False)
            timings[key] += time.perf_counter() - t
    if inspect.iscoroutinefunction(fn):
        async def wrapper(*args, **kwargs):
            t, was_outer = time.perf_counter(), outer()
            try:
                return await fn(*args, **kwargs)
            finally:
                done(was_outer, t)
    else:
        def wrapper(*args, **kwargs):
            t, was_outer = time.perf_counter(), outer()
            try:
                return fn(*args, **kwargs)
            finally:
                done(was_outer, t)
    return wrapper

log = logging.Logger.callHandlers

def patch(owner, name, key):
    setattr(owner, name, timed(getattr(owner, name), key))

# Snakemake's steps around each job (main thread), nested as listed: records inside postprocess.
patch(snakemake.workflow.Workflow, "_build_dag", "planning")
patch(JobScheduler, "schedule", "scheduling")
patch(snakemake.workflow.Workflow, "include", "snakefile")

def first_call_time(owner, name, key):
    \"\"\"timings[key]: when owner.name was first called.\"\"\"
    fn = getattr(owner, name)
    def wrapper(*args, **kwargs):
        timings.setdefault(key, time.time())
        return fn(*args, **kwargs)
    setattr(owner, name, wrapper)

first_call_time(snakemake.workflow.Workflow, "include", "snakefile_at")
first_call_time(snakemake.workflow.Workflow, "_build_dag", "planning_at")
patch(local.Executor, "job_args_and_prepare", "start")
patch(snakemake.persistence.PersistenceBase, "started", "records_start")
patch(snakemake.persistence.PersistenceBase, "finished", "records_end")
patch(snakemake.jobs.Job, "postprocess", "postprocess")
patch(snakemake.dag.DAG, "finish", "dag_update")
patch(JobScheduler, "job_selector", "selection")
main_logging = timed(logging.Logger.callHandlers, "logging")
logging.Logger.callHandlers = lambda self, record: (main_logging(self, record) if threading.current_thread() is
                                                    threading.main_thread() else log(self, record))

def rule_timed(run):
    \"\"\"A rule's run: block, timed apart from Snakemake's run_wrapper around it.\"\"\"
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            current.rule["run"] += time.perf_counter() - t
    wrapper.timed = True
    return wrapper

job = local.run_wrapper
def run_wrapper(job_rule, *args, **kwargs):
    timings["first_job_start"] = timings["first_job_start"] or time.time()
    if not getattr(job_rule.run_func, "timed", False):
        job_rule.run_func = rule_timed(job_rule.run_func)
    stats = per_rule[job_rule.name]
    current.rule = stats
    t, cpu = time.perf_counter(), time.thread_time()
    try:
        return job(job_rule, *args, **kwargs)
    finally:
        stats["jobs"] += 1
        stats["body"] += time.perf_counter() - t
        stats["cpu"] += time.thread_time() - cpu
        timings["last_job_end"] = time.time()
local.run_wrapper = run_wrapper

if os.environ.get("DAG_SHAPE"):  # the planned DAG, written for the bare workflow of the same shape
    build_dag = snakemake.workflow.Workflow._build_dag

    def build_and_write_shape(self):
        build_dag(self)
        jobs = list(self.dag.jobs)
        shape = {"rules": {job.rule.name: [str(f) for f in job.rule.output] for job in jobs if job.output},
                 "targets": [f for job in jobs if not job.output for f in job.input],
                 "jobs": [{"rule": job.rule.name, "wildcards": dict(job.wildcards_dict), "input": list(job.input),
                           "params": dict(job.params.items())} for job in jobs if job.output]}
        open(os.environ["DAG_SHAPE"], "w").write(json.dumps(shape, default=str))
    snakemake.workflow.Workflow._build_dag = build_and_write_shape

if os.environ.get("MODEL_TIMING"):
    import torch
    from deforum_steps import diffusion

    torch.set_num_threads(1)  # all of a job's CPU time is then its own thread's

    def model_timed(fn):
        def wrapper(*args, **kwargs):
            if getattr(current, "in_model", False):  # generate inside a timed call counts once
                return fn(*args, **kwargs)
            current.in_model, t = True, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                current.in_model = False
                current.rule["model"] += time.perf_counter() - t
        return wrapper

    # the jobs (animation.first_frame / diffusion_frame, diffusion.img2img) call these through the module
    diffusion.encode = model_timed(diffusion.encode)
    diffusion.generate = model_timed(diffusion.generate)

    import importlib

    def step_timed(owner, name):
        \"\"\"owner.name, its wall time added to the running job's rule as "step <name>".\"\"\"
        fn = getattr(owner, name)
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                current.rule["step " + name] += time.perf_counter() - t
        setattr(owner, name, wrapper)

    # the steps of a frame job besides the model (animation.diffusion_frame calls each through its module) and
    # the schedules job's plot; a --baseline revision without one of them renders with it untimed
    for module, name in [("io", "read_shared_image"), ("animation", "warp_source"), ("animation", "condition"),
                         ("diffusion", "save_latent"), ("io", "write_image"), ("preview", "show_frame"),
                         ("schedules", "plot")]:
        try:
            owner = importlib.import_module("deforum_steps." + module)
        except ImportError:
            continue
        if hasattr(owner, name):
            step_timed(owner, name)

def done():
    t = os.times()
    timings.update(end=time.time(), process_cpu=t.user + t.system, rules=per_rule)
    open(os.environ["TIMINGS"], "w").write(json.dumps(timings))
    if profile:
        profile.disable()
        profile.dump_stats(os.environ["PROFILE"])

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
# (c): the same DAG as one of ours (SHAPE: every job's rule, wildcards, input files and params, with each rule's
# output patterns, as DRIVER writes them), with nothing of ours but the switches our Snakefile turns on in
# Snakemake and Python (deforum_steps/process.py, known_signature and FRAME_RESOURCES in rules/common.smk), written
# out here: what that DAG costs Snakemake at best. Each job writes 1 KB to each of its outputs.
SHAPE_SNAKEFILE = """
import atexit, gc, inspect, json, sys, tempfile
sys.setrecursionlimit(100_000)
RUN_THRESHOLDS = gc.get_threshold()
gc.set_threshold(*RUN_THRESHOLDS[:2], 1000)
atexit.register(gc.freeze)
SHAPE = json.load(open(config["shape"]))
JOBS = {(job["rule"], json.dumps(job["wildcards"], sort_keys=True)): job for job in SHAPE["jobs"]}
TMPDIR = tempfile.gettempdir()

def planned(rule, key):
    def function(wildcards):
        return JOBS[rule, json.dumps(dict(wildcards.items()), sort_keys=True)][key]
    function.__signature__ = inspect.signature(function)
    return function

onstart:
    workflow.scheduler.job_rate_limiter = None
    gc.freeze()
    gc.set_threshold(*RUN_THRESHOLDS)

rule all:
    input: SHAPE["targets"]

for name, outputs in SHAPE["rules"].items():
    rule:
        name: name
        input: planned(name, "input")
        output: outputs
        params: job=planned(name, "params")
        resources: tmpdir=TMPDIR
        run:
            for path in output:
                open(path, "wb").write(bytes(1024))
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
    for made in ("out", ".snakemake"):  # every run starts from nothing, in a --workdir used before too
        shutil.rmtree(folder / made, ignore_errors=True)
    folder.mkdir(exist_ok=True)
    (folder / "Snakefile").write_text(BARE_SNAKEFILE)
    return ["-s", str(folder / "Snakefile"), "-d", str(folder), *BARE_OPTIONS, *extra, "--config", f"jobs={jobs}"]


def write_shape(workdir: Path, config: Path) -> Path:
    """A folder with the bare workflow of the same DAG as `config`'s: our DAG is planned (a dry run through DRIVER,
    from an empty output folder) and its shape written there, its files moved into the folder's out/."""
    folder = workdir / f"shape_{config.stem}"
    folder.mkdir(exist_ok=True)
    shutil.rmtree(workdir / "output", ignore_errors=True)
    driven(workdir, snakemake_args(config, "-n"), DAG_SHAPE=str(folder / "shape.json"))
    shutil.rmtree(workdir / "output", ignore_errors=True)
    shape = folder / "shape.json"
    shape.write_text(shape.read_text().replace(str(workdir / "output"), "out"))
    (folder / "Snakefile").write_text(SHAPE_SNAKEFILE)
    return folder


def shape_args(folder: Path, *extra: str) -> list[str]:
    """snakemake arguments for the bare workflow write_shape made in `folder`."""
    for made in ("out", ".snakemake"):  # every run starts from nothing
        shutil.rmtree(folder / made, ignore_errors=True)
    return ["-s", str(folder / "Snakefile"), "-d", str(folder), *BARE_OPTIONS, *extra, "--config",
            f"shape={folder / 'shape.json'}"]


def snakemake_args(config: Path, *extra: str, snakefile: Path = SNAKEFILE) -> list[str]:
    return ["-s", str(snakefile), *extra, "--configfile", str(config)]


def export_revision(workdir: Path, revision: str) -> Path:
    """The workflow as it was at git `revision` (Snakefile, profile, rules, modules), exported into workdir."""
    folder = workdir / f"at_{revision}"
    if not folder.exists():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True)
        folder.mkdir()
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def measure(workdir: Path, args: list[str], **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(SNAKEMAKE), *args], cwd=workdir, check=True,
                         capture_output=True, text=True, env={**os.environ, **env}).stdout
    result = json.loads(out)
    if result["rc"] != 0:
        raise SystemExit(f"snakemake {' '.join(args)} exited {result['rc']}")
    return result


def driven(workdir: Path, args: list[str], **env: str) -> tuple[float, dict, int]:
    """Wall time, DRIVER's timings and lines of output of `snakemake args` run through DRIVER."""
    timings_file = workdir / "timings.json"
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=workdir, text=True, capture_output=True,
                          env={**os.environ, "TIMINGS": str(timings_file), **env})
    wall = time.time() - t
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    tm = json.loads(timings_file.read_text())
    for key in ("planning", "scheduling", "snakefile", "start", "records_start", "records_end", "postprocess",
                "dag_update", "selection", "logging"):
        tm.setdefault(key, 0.0)  # a step that never ran
    for stats in tm["rules"].values():
        stats.setdefault("model", 0.0)
        stats.setdefault("run", stats["body"])
    tm.update(t0=t, wall=wall)
    if tm["first_job_start"] is not None:  # not a dry run
        tm["between"] = (tm["last_job_end"] - tm["first_job_start"]) - sum(r["body"] for r in tm["rules"].values())
    return wall, tm, len((proc.stdout + proc.stderr).splitlines())


# The steps of a frame job DRIVER times (deforum_steps.animation.diffusion_frame's calls), and what each does.
FRAME_STEPS = {"read_shared_image": "reading the previous frame and the color reference",
               "warp_source": "warp", "condition": "colors, contrast, noise",
               "save_latent": "the latent file", "write_image": "the PNG file", "show_frame": "live preview"}

# Snakemake's steps around each job, as DRIVER times them (ms per job), and what each does.
STEPS = [("start", "job start (params, old outputs removed, folders)"),
         ("records", "job records (incomplete markers, metadata, output checksums)"),
         ("checks", "job end besides records (output checks, touch)"),
         ("dag_update", "DAG update"), ("selection", "job selection"), ("logging", "log lines"),
         ("rest", "the rest (scheduler loop, thread hand-over)")]


# The parts of a dry run plan_breakdown prints, and whether each is also printed per job.
PLAN_PARTS = [("interpreter, importing Snakemake, its options", False),
              ("the Snakefile (ours: imports, config, schedules, rules)", False),
              ("between the Snakefile and the DAG (settings, plugins)", False),
              ("the DAG (each job, its files, input and params functions)", True),
              ("the dry run (Snakemake schedules and prints every job)", True),
              ("the rest (job counts, summary, exit)", False)]


def snakemake_steps(tm: dict) -> dict[str, float]:
    """Seconds of each of STEPS over the run (the rest: between-jobs time none of them accounts for)."""
    steps = {"start": tm["start"], "records": tm["records_start"] + tm["records_end"],
             "checks": tm["postprocess"] - tm["records_end"], "dag_update": tm["dag_update"],
             "selection": tm["selection"], "logging": tm["logging"]}
    steps["rest"] = tm["between"] - sum(steps.values())
    return steps


def import_time(*modules: str) -> float:
    """Seconds a fresh interpreter takes to import `modules` (each an import statement's names)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in modules)], check=True)
    return time.perf_counter() - t


def file_create_ms(folder: Path, files: int = 200) -> float:
    """The file system's price of a new file in `folder`, ms (median): create, write 9 KB (a 64x64 frame's PNG),
    close. On a virtual disk it moves with the disk's state (0.03-1 ms on one machine within an hour), and a
    frame creates six: its two outputs, Snakemake's two incomplete markers and two metadata records."""
    probe = folder / "create_probe"
    probe.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(files):
        t = time.perf_counter()
        fd = os.open(probe / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, bytes(9000))
        os.close(fd)
        times.append(time.perf_counter() - t)
    shutil.rmtree(probe)
    return 1000 * sorted(times)[files // 2]


def overhead(run: tuple[float, dict, int]) -> float:
    """A driven render's wall time outside model calls, s."""
    wall, tm, _ = run
    return wall - sum(r["model"] for r in tm["rules"].values())


def start_afresh(workdir: Path) -> None:
    """Before a render in `workdir`: no output and no records of Snakemake's, whose files a render would otherwise
    rewrite instead of creating."""
    for made in ("output", ".snakemake"):
        shutil.rmtree(workdir / made, ignore_errors=True)


def render(workdir: Path, frames: int, profile: Path | None, baseline: str | None) -> None:
    config = write_config(workdir, frames, "render.yaml")
    shape = write_shape(workdir, config)  # from an empty output folder, as the render starts
    create_before = file_create_ms(workdir)
    # Ours and the same DAG in turn (ours, it, ours, it): the floor is measured beside each render, and the faster
    # run of each is the one split below.
    ours_runs, same_runs = [], []
    for turn in range(2):
        start_afresh(workdir)
        ours_runs.append(driven(workdir, snakemake_args(config), MODEL_TIMING="1",
                                PROFILE=str(profile or "") if turn == 0 else ""))
        same_runs.append(driven(workdir, shape_args(shape))[:2])
    create_after = file_create_ms(workdir)
    wall, tm, lines = min(ours_runs, key=overhead)
    same_wall, same = min(same_runs, key=lambda run: run[0])
    rules = tm["rules"]
    n_jobs = int(sum(r["jobs"] for r in rules.values()))
    model = sum(r["model"] for r in rules.values())
    bodies = sum(r["body"] for r in rules.values())
    startup = tm["first_job_start"] - tm["t0"]
    tail = tm["t0"] + wall - tm["last_job_end"]
    outside_cpu = tm["process_cpu"] - sum(r["cpu"] for r in rules.values())
    frame = rules["frame"]
    per_frame = tm["between"] / n_jobs + (frame["body"] - frame["model"]) / frame["jobs"]
    one_off = {name: r["body"] - r["model"] for name, r in rules.items() if name != "frame"}
    once = startup + tail + sum(one_off.values()) + tm["between"] / n_jobs * (n_jobs - frame["jobs"])
    print(f"(a) {frames}-frame 2D render, 64x64, builtin:tiny, steps 1, torch on 1 thread: {n_jobs} jobs, "
          f"{lines} lines of output")
    print(f"    wall time                         {wall:8.2f} s")
    print(f"    inside model calls                {model:8.2f} s  (encode + generate, model loading included)")
    print(f"    inside job bodies, besides model  {bodies - model:8.2f} s")
    print(f"    outside job bodies                {wall - bodies:8.2f} s  = startup and planning {startup:.2f} s "
          f"+ between jobs {tm['between']:.2f} s + exit {tail:.2f} s")
    print(f"    CPU outside job bodies            {outside_cpu:8.2f} s  (process CPU {tm['process_cpu']:.2f} s - "
          f"job threads' CPU)")
    print(f"    a new file here (9 KB)            {create_before:8.3f} ms before the render, {create_after:.3f} ms "
          "after; six a frame (its 2 outputs, Snakemake's 2 incomplete markers and 2 metadata records)")
    print(f"    overhead per frame, (wall - model) / frames             {1000 * (wall - model) / frames:6.1f} ms"
          "  (the target's figure; the faster of two renders: "
          + " and ".join(f"{1000 * overhead(run) / frames:.1f}" for run in ours_runs) + " ms)")
    print(f"    orchestration per frame, (wall - job bodies) / frames   {1000 * (wall - bodies) / frames:6.1f} ms")
    print(f"    orchestration CPU per frame                             {1000 * outside_cpu / frames:6.1f} ms")
    print(f"  = each frame: {1000 * per_frame:.1f} ms = Snakemake's steps around its job "
          f"{1000 * tm['between'] / n_jobs:.1f} ms + the frame job besides the model "
          f"{1000 * (frame['body'] - frame['model']) / frame['jobs']:.1f} ms: its run: block "
          f"{1000 * (frame['run'] - frame['model']) / frame['jobs']:.1f} ms (PNG/latent I/O and checksums, warp, "
          f"color, noise) and Snakemake's run_wrapper around it "
          f"{1000 * (frame['body'] - frame['run']) / frame['jobs']:.1f} ms")
    steps = {what: frame.get(f"step {name}", 0.0) for name, what in FRAME_STEPS.items()}
    steps["the rest (its arguments, thread limit)"] = frame["run"] - frame["model"] - sum(steps.values())
    print("      its run: block besides the model, ms: "
          + ", ".join(f"{what} {1000 * t / frame['jobs']:.2f}" for what, t in steps.items()))
    torch_import = import_time("torch")
    print(f"  + once per render: {once:.2f} s ({1000 * once / frames:.1f} ms a frame over {frames} frames):")
    print(f"      startup up to the first job {startup:.2f} s, of which planning (the DAG) {tm['planning']:.2f} s; "
          f"measured apart: importing Snakemake {import_time('snakemake.cli'):.2f} s and torch "
          f"{torch_import:.2f} s (the driver imports torch first; a plain run, in its first model job)")
    diffusers = "diffusers.models.unets.unet_2d_condition"
    print(f"      (and in the first model call, counted as model time: importing diffusers' UNet "
          f"{import_time('torch', diffusers) - torch_import:.2f} s more)")
    matplotlib = import_time("numpy", "matplotlib.figure") - import_time("numpy")
    plot = {"schedules": f" (its plot {rules['schedules'].get('step plot', 0.0):.2f} s; importing matplotlib "
                         f"{matplotlib:.2f} s, measured apart)"}
    print("      one-off jobs besides the model: "
          + ", ".join(f"{name} {t:.2f} s{plot.get(name, '')}" for name, t in one_off.items() if t >= 0.01)
          + f"; Snakemake's steps around them {tm['between'] / n_jobs * (n_jobs - frame['jobs']):.2f} s; "
          f"exit {tail:.2f} s")
    print("    = over a longer render, each frame + once per render / frames: "
          + ", ".join(f"{n:,} frames {1000 * (per_frame + once / n):.1f} ms" for n in (1000, 2000, 10000)))
    if profile:
        import pstats

        print(f"    main thread profile in {profile}; by own time:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(20)
    noop = measure(workdir, snakemake_args(config, "-n"))
    print(f"    dry run on the finished render (nothing to do): {noop['wall']:.2f} s wall, {noop['cpu']:.2f} s CPU, "
          f"{noop['max_rss_mib']:.0f} MiB")
    bare_wall, bare, _ = driven(workdir, bare_args(workdir, n_jobs))
    print(f"(c) Snakemake alone, run the same way: a chain of {n_jobs} jobs {bare_wall:.2f} s wall "
          f"({1000 * bare_wall / frames:.1f} ms per frame; startup and planning "
          f"{bare['first_job_start'] - bare['t0']:.2f} s); the same DAG as ours (its jobs' files and params, 1 KB "
          f"written to each output), in turn with ours, {same_wall:.2f} s wall ({1000 * same_wall / frames:.1f} ms "
          f"per frame, the faster of {' and '.join(f'{w:.2f}' for w, _ in same_runs)} s; startup and planning "
          f"{same['first_job_start'] - same['t0']:.2f} s)")
    ours = wall - model - same_wall
    frame_work = (frame["body"] - frame["model"]) - (same["rules"]["frame"]["body"])
    one_offs = sum(one_off.values()) - sum(r["body"] for name, r in same["rules"].items() if name != "frame")
    rest = ours - torch_import - frame_work - one_offs

    def ms(seconds: float) -> str:
        return f"{1000 * seconds / frames:.1f} ms"

    print(f"    ours, (wall - model - Snakemake alone, the same DAG) / frames {ms(ours)}: importing torch "
          f"{ms(torch_import)}, the frame jobs' work besides the model {ms(frame_work)} (their files, warp, "
          f"colors, noise; beyond writing 1 KB), the one-off jobs {ms(one_offs)}, the rest {ms(rest)} (Snakemake's "
          "steps around our jobs beyond the same DAG's, our Snakefile, exit)")
    print(f"    before any work of ours: Snakemake's floor for this DAG {ms(same_wall)} + importing torch "
          f"{ms(torch_import)} = {ms(same_wall + torch_import)} a frame (the target: 10 ms)")
    print("    Snakemake's steps around a job, ms (ours | Snakemake alone: the chain | the same DAG):")
    steps = [snakemake_steps(run) for run in (tm, bare, same)]
    for key, what in STEPS:
        print(f"      {what:62s} {' | '.join(f'{1000 * step[key] / n_jobs:5.2f}' for step in steps)}")
    totals = " | ".join(f"{1000 * run['between'] / n_jobs:5.2f}" for run in (tm, bare, same))
    print(f"      {'total':62s} {totals}")
    if baseline:
        render_beside(workdir, config, frames, baseline, overhead(ours_runs[-1]) / frames)


def render_beside(workdir: Path, config: Path, frames: int, revision: str, first: float) -> None:
    """The render of (a) with the workflow at git `revision`, in turn with ours (then, now, then): on a busy machine
    only renders run close together compare. Overhead per frame as in (a), its model calls timed the same way."""
    then = export_revision(workdir, revision)
    if not {"def encode(", "def generate("} <= set(re.findall(r"^def \w+\(", (then / DIFFUSION).read_text(), re.M)):
        print(f"    (the workflow at {revision} is not rendered: it has no diffusion.encode and generate to time)")
        return
    overheads: dict[str, list[float]] = {"now": [first], "then": []}
    for who in ("then", "now", "then"):
        start_afresh(workdir)
        old = who == "then"
        wall, tm, _ = driven(workdir, snakemake_args(config, snakefile=then / "Snakefile" if old else SNAKEFILE),
                             MODEL_TIMING="1", **({"PYTHONPATH": str(then)} if old else {}))
        overheads[who].append((wall - sum(r["model"] for r in tm["rules"].values())) / frames)
    now, old = (" and ".join(f"{1000 * o:.1f}" for o in overheads[who]) for who in ("now", "then"))
    print(f"    beside the workflow at {revision} (rendered in turn: now, then, now, then): overhead per frame "
          f"{now} ms now, {old} ms then; now / then {min(overheads['now']) / min(overheads['then']):.2f} "
          "(fastest of each)")


def plan(workdir: Path, frame_counts: list[int], baseline: str | None) -> None:
    """(b) and (c): dry runs of 2D renders of 2 and each of frame_counts frames, of 3D cadence 4 of the first, and
    of bare chains with as many jobs; with `baseline`, the same dry runs of the workflow at that git revision."""
    cadence_3d = {"animation_mode": "3D", "diffusion_cadence": 4}
    cases = [("2D", n, {}) for n in (2, *frame_counts)] + [("3D, cadence 4", frame_counts[0], cadence_3d)]
    for label, n, overrides in cases:
        config = write_config(workdir, n, f"plan_{n}_{label[:2]}.yaml", **overrides)
        r = measure(workdir, snakemake_args(config, "-n"))
        jobs = planned_jobs(workdir, config)
        bare = measure(workdir, bare_args(workdir, jobs, "-n"))
        print(f"(b) dry run, {label:13s} {n:6d} frames ({jobs:6d} jobs): {r['wall']:6.2f} s wall, {r['cpu']:6.2f} s "
              f"CPU, peak {r['max_rss_mib']:5.0f} MiB;  (c) Snakemake alone, {jobs} jobs: {bare['wall']:6.2f} s wall")
        if n == frame_counts[0]:
            shape = write_shape(workdir, config)
            same = measure(workdir, shape_args(shape, "-n"))
            print(f"    (c) Snakemake alone, the same DAG (its jobs' files and params, nothing of ours): "
                  f"{same['wall']:6.2f} s wall, peak {same['max_rss_mib']:5.0f} MiB; ours / it "
                  f"{r['wall'] / same['wall']:.2f}")
        if baseline:
            then = export_revision(workdir, baseline)
            shutil.rmtree(workdir / "output", ignore_errors=True)
            old = measure(workdir, snakemake_args(config, "-n", snakefile=then / "Snakefile"), PYTHONPATH=str(then))
            shutil.rmtree(workdir / "output", ignore_errors=True)
            print(f"    the workflow at {baseline}: {old['wall']:6.2f} s wall, {old['max_rss_mib']:5.0f} MiB; "
                  f"now / then {r['wall'] / old['wall']:.2f}")
        if n == frame_counts[0]:
            plan_breakdown(workdir, config, jobs, shape)


def plan_breakdown(workdir: Path, config: Path, jobs: int, shape: Path) -> None:
    """Where a dry run's time goes, ours beside Snakemake alone (the bare chain of as many jobs, the bare workflow
    of the same DAG in `shape`), each run through DRIVER."""
    shutil.rmtree(workdir / "output", ignore_errors=True)
    runs = [driven(workdir, args)[:2] for args in (snakemake_args(config, "-n"), bare_args(workdir, jobs, "-n"),
                                                   shape_args(shape, "-n"))]

    def parts(wall: float, tm: dict) -> list[float]:
        before = tm["snakefile_at"] - tm["t0"]
        setup = tm["planning_at"] - tm["snakefile_at"] - tm["snakefile"]
        return [before, tm["snakefile"], setup, tm["planning"], tm["scheduling"],
                wall - before - tm["snakefile"] - setup - tm["planning"] - tm["scheduling"]]

    print("    where the time goes, s (ours | Snakemake alone: a chain of as many jobs | the same DAG; per job, ms), "
          + " | ".join(f"{wall:.2f}" for wall, _ in runs) + " s through the timing driver:")
    for (what, each_job), values in zip(PLAN_PARTS, zip(*(parts(*run) for run in runs))):
        per_job = f"  ({' | '.join(f'{1000 * v / jobs:.2f}' for v in values)} ms a job)" if each_job else ""
        print(f"      {what:62s} {' | '.join(f'{v:5.2f}' for v in values)}{per_job}")


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
    parser.add_argument("--baseline", metavar="REVISION",
                        help="also plan (b) and render (a) with the workflow at this git revision, e.g. the one an "
                             "issue measured (its render only where it has diffusion.encode and generate to time)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plan(workdir, args.plan_frames, args.baseline)
        if args.frames:
            render(workdir, args.frames, args.profile, args.baseline)


if __name__ == "__main__":
    main()
