import json

import numpy as np
import pytest
from helpers import SCHEMA, fake_diffusion_output

from deforum_steps import color, motion2d, noise
from deforum_steps.animation import (
    blend_depth_frames,
    condition,
    depth_frames,
    depth_frames_used,
    tween_frame,
    warp,
    warp_source,
)
from deforum_steps.cadence import (
    blend,
    blend_job_plan,
    diffusion_frames,
    init_job_plan,
    init_plan,
    start,
    tween_plan,
)
from deforum_steps.config import load_config
from deforum_steps.dependencies import ANIMATION_SETTINGS, MOTION_COLUMNS, WARP_SETTINGS, pick
from deforum_steps.motion3d import warp_3d
from deforum_steps.schedules import build_table

ROW = {"angle": 3.0, "zoom": 1.02, "translation_x": 2.0, "translation_y": -1.0, "transform_center_x": 0.5,
       "transform_center_y": 0.5, "perspective_flip_theta": 0, "perspective_flip_phi": 0,
       "perspective_flip_gamma": 0, "perspective_flip_fv": 53, "contrast_schedule": 1.0, "kernel_schedule": 5,
       "sigma_schedule": 1.0, "amount_schedule": 0.0, "threshold_schedule": 0.0, "noise_schedule": 0.0,
       "seed_schedule": 7}
SETTINGS = {"animation_mode": "2D", "border": "replicate", "flip_2d_perspective": False,
            "color_coherence": "None", "color_force_grayscale": False, "noise_type": "uniform", "perlin_w": 8,
            "perlin_h": 8, "perlin_octaves": 4, "perlin_persistence": 0.5}


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_warp_applies_the_rows_2d_motion():
    img = _image()
    expected = motion2d.warp_2d(img, angle=3.0, zoom=1.02, translation_x=2.0, translation_y=-1.0)
    assert np.array_equal(warp(img, ROW, SETTINGS), expected)


def test_neutral_conditioning_leaves_the_image_alone():
    img = _image()
    assert np.array_equal(condition(img, ROW, SETTINGS, color_reference=_image(1)), img)


def test_conditioning_order_color_contrast_sharpen_noise():
    img, ref = _image(), _image(1)
    row = {**ROW, "contrast_schedule": 1.1, "amount_schedule": 0.3, "noise_schedule": 0.1}
    settings = {**SETTINGS, "color_coherence": "Match Frame 0 RGB"}
    expected = color.match_colors(img, ref, "RGB")
    expected = color.unsharp_mask(color.apply_contrast(expected, 1.1), 5, 1.0, 0.3, 0.0)
    expected = noise.add_noise(expected, 0.1, 7, noise_type="uniform", perlin_w=8, perlin_h=8, perlin_octaves=4,
                               perlin_persistence=0.5)
    assert np.array_equal(condition(img, row, settings, ref), expected)


def test_pick_takes_only_the_animation_settings():
    cfg = {key: i for i, key in enumerate(ANIMATION_SETTINGS)} | {"fps": 12, "crf": 17}
    assert set(pick(cfg, ANIMATION_SETTINGS)) == set(ANIMATION_SETTINGS)


ROW_3D = {"translation_x": 3.0, "translation_y": -2.0, "translation_z": 12.0, "rotation_3d_x": 1.0,
          "rotation_3d_y": -2.5, "rotation_3d_z": 4.0, "fov_schedule": 55.0, "near_schedule": 200.0,
          "far_schedule": 10000.0}
SETTINGS_3D = {"animation_mode": "3D", "padding_mode": "reflection", "sampling_mode": "bilinear"}


def test_warp_applies_the_rows_3d_motion_with_depth_padding_and_sampling():
    img, depth = _image(), np.linspace(1, 3, 64 * 64, dtype=np.float32).reshape(64, 64)
    expected = warp_3d(img, depth, translation_x=3.0, translation_y=-2.0, translation_z=12.0, rotation_3d_x=1.0,
                       rotation_3d_y=-2.5, rotation_3d_z=4.0, fov=55.0, near=200.0, far=10000.0,
                       padding_mode="reflection", sampling_mode="bilinear")
    assert np.array_equal(warp(img, ROW_3D, SETTINGS_3D, depth), expected)
    assert not np.array_equal(warp(img, ROW_3D, {**SETTINGS_3D, "padding_mode": "zeros"}, depth), expected)


def test_motion_columns_hold_every_key_the_warp_reads():
    """A warp job's params are only these columns of each row: with them alone the warp is unchanged."""
    full_2d = {**ROW, "zoom": 1.0, "perspective_flip_phi": 10.0, "prompt": "x"}
    settings = {**SETTINGS, "flip_2d_perspective": True}
    assert set(pick(full_2d, MOTION_COLUMNS["2D"])) == set(MOTION_COLUMNS["2D"])
    assert np.array_equal(warp(_image(), pick(full_2d, MOTION_COLUMNS["2D"]), settings),
                          warp(_image(), full_2d, settings))
    full_3d = {**ROW_3D, "angle": 5.0, "prompt": "x"}
    assert np.array_equal(warp(_image(), pick(full_3d, MOTION_COLUMNS["3D"]), SETTINGS_3D),
                          warp(_image(), full_3d, SETTINGS_3D))


@pytest.mark.parametrize("cadence", [2, 4])
def test_tween_frames_match_the_recorded_2d_cadence_runs(conformance, cadence):
    """tween_frame over the schedule rows of the recorded run (angle 3, zoom 1.02, translation_x 2, replicate)
    with fake diffusion outputs = the webui frames exactly; all 10 frames are made, the references write 8."""
    case = next(c for c in json.loads((conformance / "cadence" / "sim2d_manifest.json").read_text())["cases"]
                if c["cadence"] == cadence)
    n = case["max_frames"]
    cfg = load_config({"animation_mode": "2D", "max_frames": n, "diffusion_cadence": cadence, "seed": 1,
                       "angle": "0:(3)", "zoom": "0:(1.02)", "translation_x": "0:(2)", "translation_y": "0:(0)",
                       "border": "replicate"}, SCHEMA)
    rows = {i: pick(row, MOTION_COLUMNS["2D"]) for i, row in enumerate(build_table(cfg).to_dict("records"))}
    base = np.load(conformance / "inputs" / "test_image_64x64.npy")
    diffused = {d: fake_diffusion_output(base, d) for d in diffusion_frames(n, cadence)}
    settings = pick(cfg, WARP_SETTINGS["2D"])
    frames = np.stack([tween_frame(diffused, tween_plan(i, n, cadence), rows, settings) for i in range(n)])
    assert np.array_equal(frames[case["written_frames"]], np.load(conformance / case["webui_file"]))


class _Recorder(dict):
    """The depth maps, remembering which ones were read."""

    def __init__(self):
        super().__init__()
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def _predict(img):
    """A stand-in depth model: a deterministic function of the image, so depth taken on the wrong image shows."""
    return (1.0 + img.astype(np.float32).mean(axis=2) / 64.0).astype(np.float32)


def _reference_loop(n, c, diffused, rows, settings):
    """deforum-behaviour.md §6 written out: the turbo prev/next images, depth predicted once per tween step on
    `next` and used for both warps; the init of each diffusion is the last tween (or, with cadence 1, the
    previous frame) warped once more with depth predicted on it. Returns (frames written, inits)."""
    frames, inits = {}, {}
    prev = nxt = last = None
    prev_idx = next_idx = 0
    for frame_idx in range(0, n, c):
        if c > 1:
            start = max(0, frame_idx - c)
            for ti in range(start, frame_idx):
                tween = (ti - start + 1) / (frame_idx - start)
                depth = _predict(nxt)
                if prev is not None and ti > prev_idx:
                    prev = warp(prev, rows[ti], settings, depth)
                if ti > next_idx:
                    nxt = warp(nxt, rows[ti], settings, depth)
                prev_idx = next_idx = ti
                frames[ti] = blend(prev, nxt, 1 - tween, tween) if prev is not None and tween < 1 else nxt
            last = nxt
        if frame_idx > 0:
            inits[frame_idx] = warp(last, rows[frame_idx], settings, _predict(last))
        if c > 1:
            prev, prev_idx, nxt, next_idx = nxt, next_idx, diffused[frame_idx], frame_idx
        else:
            frames[frame_idx] = last = diffused[frame_idx]
    return frames, inits


@pytest.mark.parametrize("cadence", [1, 2, 3, 4])
def test_3d_cadence_with_per_frame_depth_maps_equals_the_reference_loop(cadence):
    """Depth map s = depth of diffusion s - s % c warped to frame s, each computed once from the earlier maps;
    tween frames and inits built from them are the reference loop's, depth subtlety included. Every map the
    render reads is one depth_frames_used lists, and beyond the reference's frames the tail is made too."""
    n = 10
    rng = np.random.default_rng(3)
    rows = {i: {**ROW_3D, "translation_z": float(rng.uniform(5, 20)), "rotation_3d_y": float(rng.uniform(-3, 3))}
            for i in range(n)}
    diffused = {d: _image(d)[:32, :32] for d in diffusion_frames(n, cadence)}
    depths = _Recorder()
    for s in range(n):
        source = tween_plan(s, n, cadence)["next"]
        depths[s] = _predict(warp_source(diffused[source["diffused_at"]], source, rows, SETTINGS_3D, depths))
    depths.read.clear()
    frames = [tween_frame(diffused, tween_plan(i, n, cadence), rows, SETTINGS_3D, depths) for i in range(n)]
    inits = {d: warp_source(diffused[d - cadence], init_plan(d, cadence), rows, SETTINGS_3D, depths)
             for d in diffusion_frames(n, cadence)[1:]}

    ref_frames, ref_inits = _reference_loop(n, cadence, diffused, rows, SETTINGS_3D)
    assert sorted(ref_frames) == list(range(cadence * (-(-n // cadence) - 1) if cadence > 1 else n))
    for i, frame in ref_frames.items():
        assert np.array_equal(frames[i], frame), i
    assert inits.keys() == ref_inits.keys()
    for d, init in ref_inits.items():
        assert np.array_equal(init, inits[d]), d
    assert sorted(depths.read) == depth_frames_used(n, cadence)

    # The jobs' plans: a chain past an interval's last frame resumes from that frame's image, and gives the same
    # pixels reading only the maps the job's inputs name (blend_depth_frames, depth_frames; blend i predicts map i).
    images = {**diffused, **{i: frames[i] for i in range(n) if cadence > 1 and i % cadence == cadence - 1}}
    for i in range(n):
        plan = blend_job_plan(i, n, cadence)
        depths.read.clear()
        assert np.array_equal(tween_frame(images, plan, rows, SETTINGS_3D, depths), frames[i]), i
        assert depths.read - {i} == set(blend_depth_frames(plan)), i
    for d, init in inits.items():
        plan = init_job_plan(d, cadence)
        depths.read.clear()
        assert np.array_equal(warp_source(images[start(plan)], plan, rows, SETTINGS_3D, depths), init), d
        assert sorted(depths.read) == depth_frames(plan) == [d - 1], d


def test_depth_maps_used():
    # cadence 1: the warp into frame i reads the depth of frame i - 1
    assert depth_frames_used(6, 1) == [0, 1, 2, 3, 4]
    assert depth_frames_used(1, 3) == []
    # the older image's warp into diffusion frame 8 reads the depth of diffusion 8 itself
    assert depth_frames_used(9, 4) == list(range(9))
    assert depth_frames_used(10, 4) == list(range(9))
    assert depth_frames_used(10, 3) == list(range(10))
