"""Threads that fit the job, measured side by side in one run: renders as a user starts them (`snakemake --cores N
--configfile ...`, the workflow profile), each into its own folder, wall times and the ratios the README quotes.

    .venv/bin/python bench/bench_threads.py [--frames 48] [--workdir DIR]

1. the default render (config/render.yaml: 2D, 128x128, the toy model) alone, --cores 1;
2. two of it at once, in two folders, --cores 1 each: both done / alone (target <= 1.15 on 2 cores);
3. it beside one busy process (a Python busy loop): render / alone (target <= 1.15);
4. Video Input (a 128x128 test-pattern video, one frame per output frame) with --cores 2 vs --cores 1: frames per
   second of the frame stage (from the frame files' times), ratio (target >= 1.7 on 2 cores), and end to end;
5. the default render with diffusion_cadence 4, --cores 2 vs --cores 1, the same two ways.

Every render starts from an empty folder, so each time includes start-up and model loading, as a user sees it
(after an untimed 2-frame render, so the first one measured does not also pay for a cold start).
Prints figures, asserts nothing. Run it on a machine that is otherwise quiet: the ratios are what it measures.
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
BUSY_LOOP = "while True: pass"


def write_config(workdir: Path, name: str, **overrides) -> Path:
    """config/render.yaml with `overrides`, rendering into workdir/output/name."""
    cfg = yaml.safe_load((REPO / "config" / "render.yaml").read_text())
    cfg.update(output_path=str(workdir / "output"), batch_name=name, **overrides)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(config: Path, cores: int) -> subprocess.Popen:
    log = open(config.with_suffix(".log"), "w")
    return subprocess.Popen([str(SNAKEMAKE), "--cores", str(cores), "--configfile", str(config)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)


def wait(*renders: subprocess.Popen) -> None:
    for render in renders:
        if render.wait() != 0:
            raise SystemExit(f"render failed: see {Path(render.args[-1]).with_suffix('.log')}")


def timed(*configs: Path, cores: int = 1) -> float:
    """Wall time until every render of `configs`, started together, is done."""
    t = time.perf_counter()
    wait(*(start(config, cores) for config in configs))
    return time.perf_counter() - t


def frame_rate(workdir: Path, name: str) -> float:
    """Output frames written per second while the render's frames were being made (their files' times): the
    throughput of the frame stage, without start-up, model loading, extraction and the video."""
    times = sorted(p.stat().st_mtime for p in (workdir / "output" / name / "frames").glob("*.png"))
    return (len(times) - 1) / (times[-1] - times[0])


def make_video(path: Path, frames: int) -> None:
    from deforum_steps.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=128x128:rate=24",
                    "-frames:v", str(frames), "-c:v", "ffv1", str(path)], check=True)


def ratio_line(label: str, value: float, target: str) -> str:
    return f"    {label:58s} {value:5.2f}  ({target})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48, help="frames of every render")
    parser.add_argument("--workdir", type=Path, help="keep the renders here (default: a temporary folder)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.frames} frames per render")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        frames = {"max_frames": args.frames}

        timed(write_config(workdir, "warm_up", max_frames=2))  # files into the page cache, bytecode compiled
        alone = timed(write_config(workdir, "alone", **frames))
        print(f"1. default render alone, --cores 1:                 {alone:6.1f} s")
        both = timed(write_config(workdir, "first", **frames), write_config(workdir, "second", **frames))
        print(f"2. two at once in two folders, --cores 1 each:      {both:6.1f} s until both are done")
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            beside = timed(write_config(workdir, "beside_busy", **frames))
        finally:
            busy.kill()
        print(f"3. beside one busy process, --cores 1:              {beside:6.1f} s")

        video = workdir / "testsrc.mkv"
        make_video(video, args.frames)
        video_input = {"animation_mode": "Video Input", "video_init_path": str(video), "extract_nth_frame": 1}
        vi = {cores: timed(write_config(workdir, f"video_input_{cores}", **frames, **video_input), cores=cores)
              for cores in (1, 2)}
        vi_rate = {cores: frame_rate(workdir, f"video_input_{cores}") for cores in (1, 2)}
        print(f"4. Video Input, --cores 1 / --cores 2:              {vi[1]:6.1f} s / {vi[2]:.1f} s; frame stage "
              f"{vi_rate[1]:.2f} / {vi_rate[2]:.2f} frames/s")
        cadence = {cores: timed(write_config(workdir, f"cadence4_{cores}", **frames, diffusion_cadence=4),
                                cores=cores) for cores in (1, 2)}
        cadence_rate = {cores: frame_rate(workdir, f"cadence4_{cores}") for cores in (1, 2)}
        print(f"5. cadence 4, --cores 1 / --cores 2:                {cadence[1]:6.1f} s / {cadence[2]:.1f} s; frame "
              f"stage {cadence_rate[1]:.2f} / {cadence_rate[2]:.2f} frames/s")

        print("ratios:")
        print(ratio_line("two renders at once / one alone", both / alone, "target <= 1.15"))
        print(ratio_line("beside a busy process / alone", beside / alone, "target <= 1.15"))
        print(ratio_line("Video Input frame throughput, --cores 2 / --cores 1", vi_rate[2] / vi_rate[1],
                         "target >= 1.7"))
        print(ratio_line("Video Input end to end, --cores 2 / --cores 1", vi[1] / vi[2], "measured"))
        print(ratio_line("cadence 4 frame throughput, --cores 2 / --cores 1", cadence_rate[2] / cadence_rate[1],
                         "measured"))
        print(ratio_line("cadence 4 end to end, --cores 2 / --cores 1", cadence[1] / cadence[2], "measured"))


if __name__ == "__main__":
    main()
