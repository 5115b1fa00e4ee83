"""3D camera motion with per-frame depth maps, and diffusion cadence, through the workflow: tiny 64x64 renders
with the builtin tiny model and the tiny depth network. One render (module fixture) is checked against the
package functions, then edited in dry runs to count what would rerun, and rendered again after a kill -9."""
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from helpers import (
    SCHEMA,
    SMALL_CONFIG,
    SNAKEFILE,
    SNAKEMAKE,
    output,
    planned_jobs,
    rerun_reasons,
    run_snakemake,
    write_config,
)

from deforum_steps import io
from deforum_steps.animation import tween_frame, warp_source
from deforum_steps.cadence import diffusion_frames, tween_plan
from deforum_steps.config import load_config
from deforum_steps.dependencies import DEPTH_SETTINGS, MOTION_COLUMNS, WARP_SETTINGS, pick
from deforum_steps.depth import load_depth_model
from deforum_steps.schedules import build_table
from deforum_steps.video import count_video_frames

OUT = "output/test"
N, CADENCE = 10, 3
RENDER_3D = {
    "animation_mode": "3D", "max_frames": N, "diffusion_cadence": CADENCE, "steps": 4,
    "depth_algorithm": "tiny", "save_depth_maps": True, "padding_mode": "reflection", "sampling_mode": "bilinear",
    "translation_x": "0:(2)", "translation_z": "0:(8)", "rotation_3d_y": "0:(1.5)", "fov_schedule": "0:(50)",
    "animation_prompts": {0: "a red apple", 5: "a yellow banana"},
}


def _files(out, folder, suffix):
    return sorted(p.name for p in (out / folder).glob(f"*{suffix}"))


def _names(frames, suffix):
    return [f"{i:05d}{suffix}" for i in frames]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("render3d")
    write_config(workdir, **RENDER_3D)
    run_snakemake(workdir, check=True)
    return workdir


def test_3d_cadence_render_writes_every_frame_from_its_diffusions_and_depth_maps(render):
    """Cadence 3, 10 frames: diffusions 0, 3, 6, 9; all 10 frames are written (the references stop at 8), each
    the tween_frame of the diffused images and depth maps on disk; each depth map is the tiny network's depth of
    its diffusion warped to its frame; the mp4 has 10 frames."""
    out = render / OUT
    assert _files(out, "frames", ".png") == _names(range(N), ".png")
    assert _files(out, "diffused", ".png") == _names(diffusion_frames(N, CADENCE), ".png")
    assert _files(out, "latents", ".safetensors") == _names([3, 6, 9], ".safetensors")
    assert _files(out, "depth", ".npy") == _names(range(N), ".npy")
    assert _files(out, "depth", ".png") == _names(range(N), ".png")
    assert count_video_frames(out / "video.mp4") == N

    cfg = load_config({**SMALL_CONFIG, **RENDER_3D}, SCHEMA)
    rows = {i: pick(row, MOTION_COLUMNS["3D"]) for i, row in enumerate(build_table(cfg).to_dict("records"))}
    diffused = {d: io.read_image(out / "diffused" / f"{d:05d}.png") for d in diffusion_frames(N, CADENCE)}
    depths = {s: np.load(out / "depth" / f"{s:05d}.npy") for s in range(N)}
    settings = pick(cfg, WARP_SETTINGS["3D"] + DEPTH_SETTINGS)
    model = load_depth_model("tiny", "", settings["map_location"], settings["midas_weight"])
    for s in range(N):
        source = tween_plan(s, N, CADENCE)["next"]
        assert np.array_equal(depths[s], model.predict(warp_source(diffused[source["diffused_at"]], source, rows,
                                                                   settings, depths))), s
    for i in range(N):
        assert np.array_equal(io.read_image(out / "frames" / f"{i:05d}.png"),
                              tween_frame(diffused, tween_plan(i, N, CADENCE), rows, settings, depths)), i
    # padding_mode and sampling_mode reach the warps
    default = {**settings, "padding_mode": "border", "sampling_mode": "bicubic"}
    assert not np.array_equal(io.read_image(out / "frames" / "00002.png"),
                              tween_frame(diffused, tween_plan(2, N, CADENCE), rows, default, depths))


def _dry_run(workdir, **changes):
    """A dry run with per-job blocks (--quiet host) of the render edited by `changes`."""
    write_config(workdir, "edited.yaml", **{**RENDER_3D, **changes})
    return run_snakemake(workdir, "-n", "--quiet", "host", configfile="edited.yaml", check=True)


def _planned(proc, folder, suffix=".png"):
    """Frame numbers of the files in OUT/folder that a dry run plans to write."""
    pattern = re.compile(rf"^{OUT}/{folder}/(\d{{5}}){re.escape(suffix)}$")
    files = [f for line in output(proc).splitlines() if line.startswith("    output: ") for f in line[12:].split(", ")]
    return sorted(int(m.group(1)) for f in files if (m := pattern.match(f)))


def test_unchanged_config_does_nothing(render):
    assert planned_jobs(run_snakemake(render, "-n", check=True)) == {}


def test_motion_edit_at_frame_k_reruns_from_the_diffusion_it_first_affects(render):
    """translation_x changes from frame 5 on (inside the interval of diffusion 3): depth maps and frames 5..9
    (each pair one blend job), diffusions 6 and 9; diffusions 0 and 3, maps and frames 0..4 stay."""
    proc = _dry_run(render, translation_x="0:(2), 4:(2), 5:(3)")
    assert planned_jobs(proc) == {"frame": 2, "depth_png": 5, "blend": 5, "video": 1, "schedules": 1, "all": 1}
    assert _planned(proc, "diffused") == [6, 9]
    assert _planned(proc, "depth", ".npy") == _planned(proc, "frames") == [5, 6, 7, 8, 9]
    assert rerun_reasons(proc)["params have changed since last execution"] == {"blend", "schedules"}


def test_prompt_edit_at_a_later_diffusion_leaves_earlier_depth_maps_and_frames_alone(render):
    proc = _dry_run(render, animation_prompts={0: "a red apple", 5: "a yellow banana", 8: "a green pear"})
    # rows 8 and 9 change, but only diffusion 9 reads its prompt: then its depth map and frame 9
    assert planned_jobs(proc) == {"frame": 1, "depth_png": 1, "blend": 1, "video": 1, "schedules": 1, "all": 1}
    assert _planned(proc, "diffused") == _planned(proc, "depth", ".npy") == _planned(proc, "frames") == [9]


def test_depth_key_edit_reruns_every_map_and_the_diffusions_that_read_them(render):
    """midas_weight changes every map: every blend (which predicts its frame's map) and the diffusions from 3 on,
    whose inits warp with the maps; diffusion 0 reads none and stays."""
    proc = _dry_run(render, midas_weight=0.5)
    assert planned_jobs(proc) == {"frame": 3, "depth_png": N, "blend": N, "video": 1, "schedules": 1, "all": 1}
    assert _planned(proc, "diffused") == [3, 6, 9]
    assert _planned(proc, "depth", ".npy") == _planned(proc, "frames") == list(range(N))


def test_fps_or_depth_pngs_rerun_nothing_of_the_render(render):
    assert planned_jobs(_dry_run(render, fps=24)) == {"video": 1, "schedules": 1, "all": 1}
    assert planned_jobs(_dry_run(render, save_depth_maps=False)) == {"schedules": 1, "all": 1}


def test_kill_and_resume_is_bit_identical(render, tmp_path):
    """kill -9 in the middle of a render, then rerun: every file the same bytes as the uninterrupted render."""
    write_config(tmp_path, **RENDER_3D)
    cmd = [str(SNAKEMAKE), "-s", str(SNAKEFILE), "--configfile", str(tmp_path / "render.yaml")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    halfway = tmp_path / OUT / "depth" / "00004.npy"
    deadline = time.monotonic() + 300
    while not halfway.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = tmp_path / OUT
    assert not (out / "frames" / "00009.png").exists(), "the render finished before the kill"
    run_snakemake(tmp_path, check=True)
    expected = render / OUT
    for folder, suffix in (("frames", ".png"), ("diffused", ".png"), ("latents", ".safetensors"),
                           ("depth", ".npy"), ("depth", ".png")):
        names = _files(expected, folder, suffix)
        assert _files(out, folder, suffix) == names
        for name in names:
            assert (out / folder / name).read_bytes() == (expected / folder / name).read_bytes(), (folder, name)


@pytest.mark.parametrize("mode", ["2D", "3D"])
def test_cadence_without_depth_maps(tmp_path, mode):
    """2D, and 3D with use_depth_warping false (a flat scene): no depth stage; frames are the tween_frame of the
    diffused images with no depth."""
    config = {"animation_mode": mode, "max_frames": 4, "diffusion_cadence": 2, "steps": 4,
              "use_depth_warping": False, "translation_z": "0:(10)", "rotation_3d_z": "0:(3)", "angle": "0:(3)"}
    write_config(tmp_path, **config)
    run_snakemake(tmp_path, check=True)
    out = tmp_path / OUT
    assert not (out / "depth").exists()
    cfg = load_config({**SMALL_CONFIG, **config}, SCHEMA)
    rows = {i: pick(row, MOTION_COLUMNS[mode]) for i, row in enumerate(build_table(cfg).to_dict("records"))}
    diffused = {d: io.read_image(out / "diffused" / f"{d:05d}.png") for d in (0, 2)}
    settings = pick(cfg, WARP_SETTINGS[mode])
    for i in range(4):
        assert np.array_equal(io.read_image(out / "frames" / f"{i:05d}.png"),
                              tween_frame(diffused, tween_plan(i, 4, 2), rows, settings)), i
    assert count_video_frames(out / "video.mp4") == 4


def test_3d_cadence_1_plans_one_depth_map_per_warp(tmp_path):
    """Cadence 1: the diffusion is the frame (frames/, no blend), and the warp into frame i reads the depth of
    frame i - 1: maps 0..n-2."""
    write_config(tmp_path, animation_mode="3D", max_frames=5, depth_algorithm="tiny", save_depth_maps=True)
    proc = run_snakemake(tmp_path, "-n", check=True)
    assert planned_jobs(proc) == {"first_frame": 1, "frame": 4, "depth": 4, "depth_png": 4, "video": 1,
                                  "schedules": 1, "all": 1}
