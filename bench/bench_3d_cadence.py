"""3D + diffusion cadence through the workflow: render wall time per frame, and the planning time and memory of a
long render (dry run).

* Render: 3D, cadence 4, 64x64, the builtin tiny model and the tiny depth network, rendered twice from scratch
  (--short and --long frames); seconds per frame = the difference over the extra frames, which leaves out the
  start-up (imports, model loading) that every run pays once. The total of the long run is printed too.
* Planning: `/usr/bin/time -f "%e s %M KB" snakemake -n --cores 1` on the same config with --plan-frames frames.

    .venv/bin/python bench/bench_3d_cadence.py [--short 8] [--long 24] [--steps 4] [--plan-frames 2000] [--threads N]

--threads sets OMP_NUM_THREADS for the renders: on a machine whose cores are busy with other work, torch's
default (one thread per core) can make these tiny networks 10-100x slower than one thread.
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
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def config(frames: int, steps: int, cadence: int) -> dict:
    return {"model": "builtin:tiny", "animation_mode": "3D", "max_frames": frames, "diffusion_cadence": cadence,
            "W": 64, "H": 64, "steps": steps, "seed": 42, "depth_algorithm": "tiny", "batch_name": "bench",
            "translation_x": "0:(2)", "translation_z": "0:(8)", "rotation_3d_y": "0:(1.5)"}


def snakemake(workdir: Path, cfg: dict, *args: str, prefix: tuple[str, ...] = (),
              env: dict | None = None) -> subprocess.CompletedProcess:
    (workdir / "render.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [*prefix, str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--cores", "1", *args,
           "--configfile", str(workdir / "render.yaml")]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def render_seconds(frames: int, steps: int, cadence: int, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        snakemake(Path(tmp), config(frames, steps, cadence), env=env)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=8)
    ap.add_argument("--long", type=int, default=24)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--cadence", type=int, default=4)
    ap.add_argument("--plan-frames", type=int, default=2000)
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the renders (default: torch's)")
    args = ap.parse_args()

    env = dict(os.environ) | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    short = render_seconds(args.short, args.steps, args.cadence, env)
    long = render_seconds(args.long, args.steps, args.cadence, env)
    threads = env.get("OMP_NUM_THREADS", "default")
    print(f"render 3D cadence {args.cadence}, 64x64, {args.steps} steps, tiny model + tiny depth, "
          f"{threads} threads:")
    print(f"  {args.short} frames {short:.1f} s, {args.long} frames {long:.1f} s "
          f"({long / args.long:.2f} s/frame with start-up)")
    print(f"  {(long - short) / (args.long - args.short):.3f} s per extra frame")

    with tempfile.TemporaryDirectory() as tmp:
        proc = snakemake(Path(tmp), config(args.plan_frames, args.steps, args.cadence), "-n",
                         prefix=("/usr/bin/time", "-f", "TIME %e s %M KB"))
        lines = (proc.stdout + proc.stderr).splitlines()
        jobs = next(line.split()[1] for line in lines if line.startswith("total "))
        measured = next(line for line in lines if line.startswith("TIME "))
    print(f"dry run, {args.plan_frames} frames, 3D cadence {args.cadence}: {jobs} jobs, {measured[5:]}")


if __name__ == "__main__":
    main()
