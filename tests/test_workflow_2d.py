"""The 2D animation as cached per-frame jobs, run as a user runs it (the venv's snakemake with the workflow
profile) on tiny renders: what a render writes, which jobs an edit reruns, kill -9 and resume, the run lock,
seed -1, and bad edits. Each render lives in its own temporary working directory, output_path "output"."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import SCHEMA, SMALL_CONFIG, SNAKEFILE, last_line, output, planned_jobs, run_snakemake, write_config

from deforum_steps import io, video
from deforum_steps.config import load_config

N = 8
OUT = "output/test"
# 12 steps at strength 0.65: 4 denoising steps per frame, long enough to catch a job between its latent and
# its image. Schedules keyed so that an edit of the value at frame 5 changes frames 5.. only.
BASE = {
    "max_frames": N,
    "seed": -1,
    "steps": 12,
    "output_path": "output",
    "angle": "0:(0), 4:(0), 5:(3)",
    "zoom": "0:(1.05)",
    "animation_prompts": {0: "a red apple", 5: "a yellow banana"},
}
FRAME_FILE = re.compile(r"/frames/(\d{5})\.png$")


def render_config(workdir: Path, name: str = "render.yaml", **overrides) -> Path:
    return write_config(workdir, name, **{**BASE, **overrides})


def frame_files(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / OUT / "frames").iterdir())


def frames_and_latents(workdir: Path) -> dict[str, Path]:
    out = workdir / OUT
    return {p.relative_to(out).as_posix(): p for d in ("frames", "latents") for p in sorted((out / d).iterdir())}


def mtimes(workdir: Path) -> dict[str, int]:
    out = workdir / OUT
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def latent(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(path))["latent"]


def planned_frames(proc: subprocess.CompletedProcess) -> list[int]:
    """Frame numbers whose frames/ image a dry run with the per-job blocks (--quiet host) plans to write."""
    lines = output(proc).splitlines()
    outputs = [f for line in lines if line.startswith("    output: ") for f in line[12:].split(", ")]
    return sorted(int(m.group(1)) for f in outputs if (m := FRAME_FILE.search(f)))


def dry_run(workdir: Path, configfile: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "-n", "--quiet", "host", configfile=configfile, check=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """An uninterrupted 8-frame render with seed -1; tests only read it (or copy it)."""
    workdir = tmp_path_factory.mktemp("render")
    render_config(workdir)
    proc = run_snakemake(workdir, check=True)
    workdir.joinpath("render.log").write_text(output(proc))
    return workdir


def recorded_seed(workdir: Path) -> int:
    return int((workdir / OUT / "resolved_seed.txt").read_text())


def copy_render(rendered: Path, tmp_path: Path) -> Path:
    """A copy of the render with Snakemake's records (.snakemake) and mtimes, up to date as the original."""
    workdir = tmp_path / "copy"
    shutil.copytree(rendered, workdir)
    return workdir


# ---- what a render writes ---------------------------------------------------------------------------


def test_render_writes_every_frame_its_latent_and_the_video(rendered):
    out = rendered / OUT
    assert frame_files(rendered) == [f"{i:05d}.png" for i in range(N)]
    # frame 0 is txt2img (no init latent); every later frame is img2img from its kept init latent
    assert sorted(p.name for p in (out / "latents").iterdir()) == [f"{i:05d}.safetensors" for i in range(1, N)]
    assert video.count_video_frames(out / "video.mp4") == N
    images = [io.read_image(out / "frames" / f"{i:05d}.png") for i in range(N)]
    assert all(im.shape == (64, 64, 3) for im in images)
    assert all(not np.array_equal(a, b) for a, b in zip(images, images[1:]))
    # no temp files: the only dotfiles are the run lock and the records
    assert {p.name for p in out.rglob(".*")} == {".render.lock", io.CHECKSUMS}
    seed = recorded_seed(rendered)
    assert yaml.safe_load((out / "settings.yaml").read_text())["seed"] == seed


def test_progress_is_one_line_per_job(rendered):
    text = rendered.joinpath("render.log").read_text()
    done = re.findall(r"^\[\s*\d+/\d+\] (\S+(?: \d{5})?) done \(", text, re.MULTILINE)
    assert sorted(d for d in done if d.startswith("frame ")) == [f"frame {i:05d}" for i in range(1, N)]
    assert {"first_frame", "video", "schedules"} <= set(done)
    assert "Select jobs to execute" not in text and "Finished jobid" not in text
    assert len(text.splitlines()) <= N + 25


def test_init_image_is_the_first_frame_at_strength_1(tmp_path, rendered):
    from deforum_steps import diffusion

    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    init = np.stack([np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)), np.full((64, 64), 90, np.uint8)], -1)
    io.write_image(tmp_path / "init.png", init)
    render_config(tmp_path, use_init=True, init_image=str(tmp_path / "init.png"), strength=1.0)
    run_snakemake(tmp_path, f"{OUT}/frames/00000.png", check=True)
    frame0 = io.read_image(tmp_path / OUT / "frames" / "00000.png").astype(int)

    # strength 1 keeps the init latent as it is: frame 0 is the init through the model's VAE
    settings = load_config({**SMALL_CONFIG, **BASE}, SCHEMA)  # the render's model settings, schema defaults
    roundtrip = diffusion.decode(diffusion.encode(init, settings), settings).astype(int)
    assert np.abs(frame0 - roundtrip).max() <= 1
    txt2img = io.read_image(rendered / OUT / "frames" / "00000.png").astype(int)  # frame 0 without an init
    assert np.abs(txt2img - roundtrip).mean() > 5


# ---- edits rerun what they change -------------------------------------------------------------------


def test_unchanged_config_plans_nothing(rendered):
    # seed -1 included: the seed recorded by the first run is reused, not drawn again
    assert planned_jobs(run_snakemake(rendered, "-n", check=True)) == {}


@pytest.mark.parametrize("edit", [
    {"angle": "0:(0), 4:(0), 5:(4)"},
    {"animation_prompts": {0: "a red apple", 5: "a green banana"}},
])
def test_edit_keyed_at_frame_5_reruns_frames_5_on(rendered, edit):
    render_config(rendered, "edit.yaml", **edit)
    dry = dry_run(rendered, "edit.yaml")
    assert planned_frames(dry) == list(range(5, N))
    assert planned_jobs(dry) == {"frame": N - 5, "video": 1, "schedules": 1, "all": 1}


# Run like the snakemake script, with model loading made to fail: a run that completes loaded no model.
NO_MODEL = """
import sys
from deforum_steps import models

def refuse(*args, **kwargs):
    raise RuntimeError("a model was loaded")

models.load_pipeline = refuse
from snakemake.cli import main
main()
"""


def run_without_model(workdir: Path, configfile: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_MODEL, "-s", str(SNAKEFILE), "--configfile",
                           str(workdir / configfile)], cwd=workdir, capture_output=True, text=True, timeout=600)


def test_encoding_settings_rerun_only_the_video_without_a_model(rendered, tmp_path):
    for key, value in {"fps": 24, "crf": 30, "codec": "libx265"}.items():
        render_config(rendered, f"{key}.yaml", **{key: value})
        assert planned_jobs(dry_run(rendered, f"{key}.yaml")) == {"video": 1, "schedules": 1, "all": 1}, key

    workdir = copy_render(rendered, tmp_path)
    frames_before = {name: p.stat().st_mtime_ns for name, p in frames_and_latents(workdir).items()}
    run = run_without_model(workdir, "fps.yaml")
    assert run.returncode == 0, output(run)[-3000:]
    assert video.probe_video(workdir / OUT / "video.mp4").fps == 24
    assert {name: p.stat().st_mtime_ns for name, p in frames_and_latents(workdir).items()} == frames_before
    # the same run, needing a frame, does load the model (and fails)
    (workdir / OUT / "frames" / f"{N - 1:05d}.png").unlink()
    failed = run_without_model(workdir, "fps.yaml")
    assert failed.returncode != 0 and "a model was loaded" in output(failed)


# ---- interruption, lock, seed -----------------------------------------------------------------------


def in_flight(out: Path) -> int | None:
    """A frame >= 2 whose job is between writing its init latent and writing its image, if any."""
    for latent_file in (out / "latents").glob("[0-9]*.safetensors"):
        i = int(latent_file.stem)
        if i >= 2 and not (out / "frames" / f"{i:05d}.png").exists():
            return i
    return None


def test_kill_9_mid_frame_then_resume_is_bit_identical(rendered, tmp_path):
    render_config(tmp_path, seed=recorded_seed(rendered))
    out = tmp_path / OUT
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(SNAKEFILE), "--configfile",
           str(tmp_path / "render.yaml")]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                log = (tmp_path / "killed.log").read_text()
                pytest.fail(f"the render ended before it could be interrupted:\n{log}")
            if (out / "latents").is_dir() and in_flight(out):
                os.killpg(proc.pid, signal.SIGSTOP)
                if k := in_flight(out):
                    break  # frozen mid-frame k, holding the lock
                os.killpg(proc.pid, signal.SIGCONT)  # it got past that frame meanwhile
            time.sleep(0.002)

        refused = run_snakemake(tmp_path)
        assert refused.returncode != 0
        assert last_line(refused) == (f"error: {OUT} is being rendered by another run (pid {proc.pid}); "
                                      "wait for it to finish or choose another batch_name")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert [n for n in frame_files(tmp_path) if not n.startswith(".")] == [f"{i:05d}.png" for i in range(k)]
    before = {name: p.stat().st_mtime_ns for name, p in frames_and_latents(tmp_path).items()
              if name != f"latents/{k:05d}.safetensors"}
    # what a writer killed mid-write could leave at an output path: Snakemake marked the job incomplete
    (out / "frames" / f"{k:05d}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    resumed = run_snakemake(tmp_path, check=True)  # no --unlock: the killed run's lock died with it
    assert planned_jobs(resumed)["frame"] == N - k
    after = frames_and_latents(tmp_path)
    assert {name: after[name].stat().st_mtime_ns for name in before} == before
    assert sorted(n for n in after if not n.rsplit("/", 1)[1].startswith(".")) == sorted(frames_and_latents(rendered))
    for name, reference in frames_and_latents(rendered).items():
        if name.startswith("frames/"):
            assert np.array_equal(io.read_image(after[name]), io.read_image(reference)), name
        else:
            assert np.array_equal(latent(after[name]), latent(reference)), name
    assert video.count_video_frames(out / "video.mp4") == N


def test_deleted_frame_is_rendered_again_with_the_recorded_seed(rendered, tmp_path):
    workdir = copy_render(rendered, tmp_path)
    seed = recorded_seed(workdir)
    last = workdir / OUT / "frames" / f"{N - 1:05d}.png"
    last.unlink()
    rerun = run_snakemake(workdir, check=True)
    assert planned_jobs(rerun) == {"frame": 1, "video": 1, "all": 1}
    assert recorded_seed(workdir) == seed
    assert np.array_equal(io.read_image(last), io.read_image(rendered / OUT / "frames" / last.name))


# ---- bad input --------------------------------------------------------------------------------------


def test_bad_schedule_edit_fails_in_one_line_and_loses_nothing(rendered):
    before = mtimes(rendered)
    render_config(rendered, "bad.yaml", angle="0:(0), 4:(0), 5:(t**-1)")
    proc = run_snakemake(rendered, configfile="bad.yaml")
    assert proc.returncode != 0
    assert last_line(proc) == ("config error: angle: cannot evaluate 't**-1': Integers to negative integer powers are "
                               "not allowed. at frame 5 in '0:(0), 4:(0), 5:(t**-1)'")
    assert "Traceback" not in output(proc)
    assert mtimes(rendered) == before
