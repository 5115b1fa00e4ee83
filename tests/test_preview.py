"""Previews (deforum_steps/preview.py): the motion preview (motion_preview_mode, rules/preview.smk) and the live
preview of a render (display_samples, show_sample_per_step)."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import SCHEMA, SMALL_CONFIG, last_line, output, planned_jobs, run_snakemake, write_config
from render_fixture import OUT, RENDER, N, small_render

from deforum_steps import io, preview
from deforum_steps.config import ConfigError, load_config
from deforum_steps.schedules import build_table

ROW_2D = {"angle": 0.0, "zoom": 1.0, "translation_x": 2.0, "translation_y": 0.0, "transform_center_x": 0.5,
          "transform_center_y": 0.5, "perspective_flip_theta": 0.0, "perspective_flip_phi": 0.0,
          "perspective_flip_gamma": 0.0, "perspective_flip_fv": 53.0}


def test_test_pattern_shows_orientation():
    pattern = preview.test_pattern(128, 96)
    assert pattern.shape == (96, 128, 3) and pattern.dtype == np.uint8
    assert tuple(pattern[12, 16]) == (255, 0, 0)  # the marker at the top left
    assert (pattern[48, :] == 255).all() and (pattern[:, 64] == 255).all()  # the white cross
    assert len(np.unique(pattern.reshape(-1, 3), axis=0)) > 50


def test_2d_camera_path_is_the_whole_motion_applied_once():
    """translation_x 2 px a frame: frame k is the pattern moved 2k px right (tiled), exactly, with no blur
    piling up over the frames."""
    start = preview.test_pattern(64, 64)
    settings = {"animation_mode": "2D", "flip_2d_perspective": False, "border": "replicate"}
    frames = list(preview.camera_path(start, [ROW_2D] * 20, settings, border="wrap"))
    assert len(frames) == 20
    for k in (1, 7, 19):
        np.testing.assert_array_equal(frames[k], np.roll(start, 2 * k, axis=1))


def test_3d_camera_path_moves_through_a_flat_scene():
    start = preview.test_pattern(64, 64)
    row = {"translation_x": 0.0, "translation_y": 0.0, "translation_z": 5.0, "rotation_3d_x": 0.0,
           "rotation_3d_y": 0.0, "rotation_3d_z": 0.0, "fov_schedule": 40.0, "near_schedule": 200.0,
           "far_schedule": 10000.0}
    settings = {"animation_mode": "3D", "padding_mode": "border", "sampling_mode": "bicubic"}
    frames = list(preview.camera_path(start, [row] * 5, settings))
    # moving forward through a flat scene magnifies it about the centre, more with every frame
    zooms = [best_zoom(start, frame) for frame in frames]
    assert zooms[0] == 1.0 and zooms[1] > 1.0 and zooms[4] > zooms[2] > zooms[1], zooms


def best_zoom(start, frame):
    """The magnification about the centre (1.00, 1.02, ...) that makes `start` most like `frame`."""
    h, w = start.shape[:2]

    def zoomed(s):
        return cv2.warpAffine(start, np.float32([[s, 0, (1 - s) * w / 2], [0, s, (1 - s) * h / 2]]), (w, h))

    scales = np.round(np.arange(1.0, 2.0, 0.02), 2)
    errors = [np.abs(zoomed(s)[8:-8, 8:-8].astype(int) - frame[8:-8, 8:-8]).mean() for s in scales]
    return float(scales[int(np.argmin(errors))])


def test_only_2d_and_3d_have_a_camera_path():
    cfg = load_config({**SMALL_CONFIG, "animation_mode": "Interpolation"}, SCHEMA)
    with pytest.raises(ConfigError, match="^motion_preview_mode: previews the camera path of animation_mode 2D"):
        preview.check(cfg)


def test_the_motion_preview_loads_no_model(tmp_path):
    """In a fresh process: preview frames made, and neither the diffusion model code nor torch imported (2D)."""
    script = f"""
import sys
from deforum_steps import preview
from deforum_steps.config import load_config
from deforum_steps.schedules import build_table
cfg = load_config({{"max_frames": 30, "W": 64, "H": 64, "seed": 1, "angle": "0:(2)"}}, {str(SCHEMA)!r})
rows = build_table(cfg).to_dict("records")
frames = [{str(tmp_path)!r} + f"/{{i:05d}}.png" for i in range(30)]
preview.motion_preview(init=[], frames=frames, rows=rows, settings=cfg)
print(sorted(m for m in ("deforum_steps.models", "deforum_steps.diffusion", "diffusers", "torch") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:05d}.png" for i in range(30)]
    assert not np.array_equal(io.read_image(tmp_path / "00029.png"), io.read_image(tmp_path / "00000.png"))


def _render_files(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*")
            if p.is_file() and p.relative_to(out).parts[0] not in ("preview", "logs", "report")
            and p.name not in (io.CHECKSUMS, ".render.lock")}


def test_motion_preview_mode_writes_preview_only(tmp_path_factory):
    workdir, _ = small_render(tmp_path_factory)
    out = workdir / OUT
    before = _render_files(out)
    args = ("--config", "motion_preview_mode=true", "max_frames=120")
    assert planned_jobs(run_snakemake(workdir, "-n", *args, check=True)) == {
        "motion_preview": 1, "preview_video": 1, "all": 1}
    run_snakemake(workdir, *args, check=True)
    assert sorted(p.name for p in (out / "preview").iterdir()) == [*(f"{i:05d}.png" for i in range(120)),
                                                                   "preview.mp4"]
    assert _render_files(out) == before  # frames, video, schedules, settings: untouched
    # the render itself is still up to date: nothing of it reran or changed
    assert planned_jobs(run_snakemake(workdir, "-n", check=True)) == {}


def test_motion_preview_of_another_mode_is_one_line(tmp_path):
    write_config(tmp_path, animation_mode="Interpolation", motion_preview_mode=True)
    proc = run_snakemake(tmp_path, "-n")
    assert proc.returncode == 1 and "Traceback" not in output(proc)
    assert last_line(proc) == ("config error: motion_preview_mode: previews the camera path of animation_mode 2D "
                               "or 3D, not 'Interpolation'")


# ---- live preview ------------------------------------------------------------------------------------------


def test_a_render_keeps_its_latest_frame_in_preview_png_and_starts_with_the_schedules(tmp_path_factory):
    workdir, text = small_render(tmp_path_factory)
    out = workdir / OUT
    assert (out / "preview.png").read_bytes() == (out / f"frames/{N - 1:05d}.png").read_bytes()  # the frame's file
    progress = [line for line in text.splitlines() if line.startswith("[")]
    assert progress[0].startswith(f"[1/{N + 3}] schedules done")  # before any frame: the CSV is there at once
    assert f"· frames {N}/{N}" in progress[-2]


def test_preview_png_is_replaced_atomically(tmp_path):
    preview.start_live(tmp_path, {"display_samples": True, "show_sample_per_step": False})
    try:
        io.write_image(tmp_path / "diffused" / "00004.png", np.zeros((8, 8, 3), np.uint8))
        preview.show_frame(tmp_path / "diffused" / "00004.png")  # not a frame
        assert not (tmp_path / "preview.png").exists()
        for value in (10, 20):
            io.write_image(tmp_path / "frames" / "00004.png", np.full((8, 8, 3), value, np.uint8))
            preview.show_frame(tmp_path / "frames" / "00004.png")
            assert io.read_image(tmp_path / "preview.png")[0, 0, 0] == value
        preview.show_frame(tmp_path / "frames" / "00005.png")  # unreadable: the preview stays, the job goes on
        assert io.read_image(tmp_path / "preview.png")[0, 0, 0] == 20
        assert sorted(p.name for p in tmp_path.iterdir()) == ["diffused", "frames", "preview.png"]  # no temp file
        assert preview.step_callback(lambda latent: latent) is None  # steps only with show_sample_per_step
    finally:
        preview.start_live(tmp_path, {"display_samples": False, "show_sample_per_step": False})


def test_preview_png_is_the_frame_file_itself_or_a_copy_without_hard_links(tmp_path, monkeypatch):
    preview.start_live(tmp_path, {"display_samples": True, "show_sample_per_step": False})
    try:
        io.write_image(tmp_path / "frames" / "00001.png", np.full((8, 8, 3), 10, np.uint8))
        mode = (tmp_path / "frames" / "00001.png").stat().st_mode
        preview.show_frame(tmp_path / "frames" / "00001.png")
        assert (tmp_path / "preview.png").samefile(tmp_path / "frames" / "00001.png")  # a link, not a second file
        assert (tmp_path / "frames" / "00001.png").stat().st_mode == mode
        monkeypatch.setattr(os, "link", lambda *args: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
        io.write_image(tmp_path / "frames" / "00002.png", np.full((8, 8, 3), 20, np.uint8))
        preview.show_frame(tmp_path / "frames" / "00002.png")
        assert not (tmp_path / "preview.png").samefile(tmp_path / "frames" / "00002.png")
        assert (tmp_path / "preview.png").read_bytes() == (tmp_path / "frames" / "00002.png").read_bytes()
        assert (tmp_path / "frames" / "00001.png").stat().st_nlink == 1  # the last preview let go of frame 1
    finally:
        preview.start_live(tmp_path, {"display_samples": False, "show_sample_per_step": False})


def test_show_sample_per_step_shows_every_denoising_step(tmp_path, monkeypatch):
    from deforum_steps import diffusion

    cfg = load_config({**SMALL_CONFIG, **RENDER}, SCHEMA)
    shown = []
    monkeypatch.setattr(preview, "show", lambda image: shown.append(image.shape))
    preview.start_live(tmp_path, {"display_samples": True, "show_sample_per_step": True})
    try:
        diffusion.generate(None, cfg, prompt="a red apple", negative_prompt="", seed=1, steps=3, cfg_scale=7.0,
                           sampler="euler")
    finally:
        preview.start_live(tmp_path, {"display_samples": False, "show_sample_per_step": False})
    assert shown == [(64, 64, 3)] * 3
    assert build_table(cfg) is not None
