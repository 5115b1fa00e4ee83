"""Scale figures for batches (README "Batches and clusters", docs/scale-out.md): wall time of a batch of 8 short
renders (builtin:tiny, 64 px, 2D, 4 frames each) on 1 and 2 local cores, and through SLURM on this machine (a
single-node cluster started by tests/slurm_cluster.py, as root), plus the cluster path's overhead per render and
the model loads counted on each path. Each run starts from an empty folder.

    .venv/bin/python bench/bench_scale.py            # add --no-slurm where no SLURM can be started
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import slurm_cluster  # noqa: E402

RENDERS = 8
RENDER = {"model": "builtin:tiny", "W": 64, "H": 64, "max_frames": 4, "animation_prompts": {0: "a red apple"}}
SNAKEMAKE = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile")]


def run_batch(extra: list[str], renders: int = RENDERS) -> tuple[float, int]:
    """(wall seconds, model loads) of a batch of `renders` rendered from scratch with `extra` arguments."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "renders").mkdir()
        for i in range(renders):
            (work / "renders" / f"r{i}.yaml").write_text(yaml.safe_dump({**RENDER, "seed": i}))
        log = work / "model-loads.log"
        started = time.perf_counter()
        proc = subprocess.run([*SNAKEMAKE, *extra], cwd=work, capture_output=True, text=True,
                              env={**os.environ, "DEFORUM_MODEL_LOG": str(log)})
        seconds = time.perf_counter() - started
        if proc.returncode:
            sys.exit(f"the batch failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        return seconds, len(log.read_text().splitlines()) if log.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-slurm", action="store_true", help="local figures only")
    args = parser.parse_args()
    batch = ["--config", "batch=renders"]
    # planning: a dry run of 1 and of RENDERS renders; the difference is what each render's module costs
    plan_1, plan_n = (run_batch(["-n", *batch], renders)[0] for renders in (1, RENDERS))
    results = {f"local, {cores} core{'s' * (cores > 1)}": run_batch(["--cores", str(cores), *batch])
               for cores in (1, 2)}
    if not args.no_slurm:
        if reason := slurm_cluster.why_not():
            sys.exit(f"no SLURM here: {reason} (use --no-slurm)")
        slurm_cluster.ensure()
        results["SLURM, one job per render"] = run_batch(
            [*slurm_cluster.EXECUTOR_ARGS, "--jobs", "8", *batch, "render_jobs=cluster", "render_mem_mb=1000"])
    print(f"batch of {RENDERS} renders x {RENDER['max_frames']} frames (builtin:tiny, 64 px, 2D), "
          f"{os.cpu_count()} CPU cores")
    print(f"  planning (snakemake -n): 1 render {plan_1:.1f} s, {RENDERS} renders {plan_n:.1f} s: "
          f"{(plan_n - plan_1) / (RENDERS - 1):.2f} s per render")
    for name, (seconds, loads) in results.items():
        print(f"  {name:<28} {seconds:7.1f} s   {seconds / RENDERS:5.1f} s/render   model loads: {loads}")
    if "SLURM, one job per render" in results:
        extra = results["SLURM, one job per render"][0] - results["local, 2 cores"][0]
        print(f"  cluster overhead over local 2 cores: {extra:.1f} s for the batch, {extra / RENDERS:.1f} s/render")


if __name__ == "__main__":
    main()
