import json
import math

import numpy as np
import pytest
import torch

from deforum_steps.motion3d import warp_3d

NO_MOTION = dict(translation_x=0, translation_y=0, translation_z=0, rotation_3d_x=0, rotation_3d_y=0,
                 rotation_3d_z=0)
NB_CAMERA = dict(fov=40, near=200, far=10000)


def _cases(conformance):
    manifest = json.loads((conformance / "warp3d" / "manifest.json").read_text())
    return manifest["cases"]


def _kwargs(case, variant):
    p, v = case["params"], case[variant]
    return dict(translation_x=p["tx"], translation_y=p["ty"], translation_z=p["tz"], rotation_3d_x=p["rx"],
                rotation_3d_y=p["ry"], rotation_3d_z=p["rz"], fov=v["fov"], near=v["near"], far=v["far"],
                aspect=v["aspect_ratio"], padding_mode=case["padding_mode"], sampling_mode=case["sampling_mode"])


def _lsb(a, b):
    diff = np.abs(a.astype(int) - b.astype(int))
    return diff.max(), (diff > 0).mean()


@pytest.mark.parametrize("variant", ["notebook", "webui_legacy"])
def test_matches_recorded_notebook_and_webui_legacy(conformance, variant):
    """We follow the raw-depth variant (notebook = webui 'Midas+AdaBins (old)', only fov differs): it is
    reproduced bit for bit on this machine; allow 1 LSB on a few pixels for other CPUs' float rounding."""
    img = np.load(conformance / "inputs" / "test_image_64x64.npy")
    for case in _cases(conformance):
        depth = None if case["depth"] is None else np.load(conformance / case["depth"])
        out = warp_3d(img, depth, **_kwargs(case, variant))
        ref = np.load(conformance / case[variant]["file"])
        assert out.dtype == np.uint8 and out.shape == ref.shape
        worst, share = _lsb(out, ref)
        assert worst <= 1 and share < 0.01, (case["case"], case["depth"], worst, share)


def test_webui_new_variant_is_not_followed(conformance):
    """webui 'Midas-3-Hybrid' warps without the +1/512 bias (and normalises depth): on flat depth it differs
    from ours by that bias only, i.e. 1 LSB of truncation on some pixels."""
    img = np.load(conformance / "inputs" / "test_image_64x64.npy")
    for case in _cases(conformance):
        if case["depth"] is None:
            out = warp_3d(img, None, **_kwargs(case, "webui_new"))
            worst, share = _lsb(out, np.load(conformance / case["webui_new"]["file"]))
            assert worst == 1 and share > 0


def _closed_form(img, depth, *, translation_x, translation_y, translation_z, rotation_3d_x, rotation_3d_y,
                 rotation_3d_z, fov, aspect=1.0, padding_mode="border", sampling_mode="bicubic"):
    """deforum-behaviour.md §4 written directly in float64: u = X / (Z tan(fov/2) aspect), v = Y / (Z tan(fov/2)),
    camera X_view = X_world @ (Rx Ry Rz) + T, T = (-tx, ty, -tz) / 200."""
    h, w = img.shape[:2]
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    z = np.ones_like(x) if depth is None else depth.astype(np.float64)
    a, b, c = (math.radians(v) for v in (rotation_3d_x, rotation_3d_y, rotation_3d_z))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    world = np.stack([x, y, z], axis=-1)
    view = world @ (rx @ ry @ rz) + np.array([-translation_x, translation_y, -translation_z]) / 200
    tan = math.tan(math.radians(fov) / 2)

    def project(p):
        return np.stack([p[..., 0] / (p[..., 2] * tan * aspect), p[..., 1] / (p[..., 2] * tan)], axis=-1)

    base = np.stack(np.meshgrid((2 * np.arange(w) + 1) / w - 1, (2 * np.arange(h) + 1) / h - 1), axis=-1)
    grid = torch.from_numpy(base - (project(view) - project(world)))[None]
    image = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None] + (1 / 512 - 0.0001)
    out = torch.nn.functional.grid_sample(image, grid, mode=sampling_mode, padding_mode=padding_mode,
                                          align_corners=False)
    return out[0].clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)


@pytest.mark.parametrize("motion, padding, sampling", [
    (dict(rotation_3d_x=5, rotation_3d_y=-3), "border", "bicubic"),
    (dict(translation_x=20, translation_y=-10), "border", "bicubic"),
    (dict(translation_x=5, translation_z=8, rotation_3d_y=2, rotation_3d_z=-4), "reflection", "bicubic"),
    (dict(translation_z=-20, rotation_3d_x=-2), "zeros", "bilinear"),
    (dict(translation_y=7, rotation_3d_z=30), "border", "nearest"),
])
def test_equals_documented_closed_form(conformance, motion, padding, sampling):
    img = np.load(conformance / "inputs" / "test_image_64x64.npy")
    depth = np.load(conformance / "inputs" / "depth_64x64.npy")
    for d in (None, depth):
        kwargs = {**NO_MOTION, **motion, "fov": 40, "padding_mode": padding, "sampling_mode": sampling}
        worst, share = _lsb(warp_3d(img, d, near=200, far=10000, **kwargs), _closed_form(img, d, **kwargs))
        assert worst <= 1 and share < 0.02


def test_non_square_and_aspect(conformance):
    """Non-square frames work; aspect (webui's `aspect_ratio_use_old_formula` = w/h) scales the x projection."""
    img = np.load(conformance / "inputs" / "test_image_64x96.npy")
    depth = (1.0 + np.linspace(0, 1, 64 * 96).reshape(64, 96)).astype(np.float32)
    for aspect in (1.0, 96 / 64):
        kwargs = {**NO_MOTION, "translation_x": 6, "translation_z": 12, "rotation_3d_z": 5, "fov": 55,
                  "aspect": aspect}
        out = warp_3d(img, depth, near=200, far=10000, **kwargs)
        assert out.shape == img.shape
        worst, share = _lsb(out, _closed_form(img, depth, **kwargs))
        assert worst <= 1 and share < 0.02


@pytest.mark.parametrize("sampling", ["bicubic", "bilinear", "nearest"])
def test_no_motion_is_identity(conformance, sampling):
    """The notebook's +1/512 bias keeps the final truncation from turning k into k-1."""
    img = np.load(conformance / "inputs" / "test_image_64x64.npy")
    depth = np.load(conformance / "inputs" / "depth_64x64.npy")
    for d in (None, depth):
        assert np.array_equal(warp_3d(img, d, **NO_MOTION, **NB_CAMERA, sampling_mode=sampling), img)


def _bright_column(x0=32):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, x0] = 255
    return img


def test_directions():
    """Camera semantics: +x moves the camera right (content left), +z moves it forward (content grows
    away from the centre); a closer pixel (smaller depth) moves more."""
    img = _bright_column(40)
    col = lambda out: int(np.argmax(out[32, :, 0]))  # noqa: E731
    assert col(warp_3d(img, None, **{**NO_MOTION, "translation_x": 20}, **NB_CAMERA)) < 40
    assert col(warp_3d(img, None, **{**NO_MOTION, "translation_x": -20}, **NB_CAMERA)) > 40
    assert col(warp_3d(img, None, **{**NO_MOTION, "translation_z": 40}, **NB_CAMERA)) > 40
    near = np.full((64, 64), 0.5, np.float32)
    far = np.full((64, 64), 2.0, np.float32)
    shift_near = 40 - col(warp_3d(img, near, **{**NO_MOTION, "translation_x": 10}, **NB_CAMERA))
    shift_far = 40 - col(warp_3d(img, far, **{**NO_MOTION, "translation_x": 10}, **NB_CAMERA))
    assert shift_near > shift_far > 0


def test_near_far_do_not_change_the_warp(conformance):
    img = np.load(conformance / "inputs" / "test_image_64x64.npy")
    depth = np.load(conformance / "inputs" / "depth_64x64.npy")
    motion = {**NO_MOTION, "translation_z": 10, "rotation_3d_y": 3}
    a = warp_3d(img, depth, **motion, fov=40, near=200, far=10000)
    b = warp_3d(img, depth, **motion, fov=40, near=0.1, far=50)
    assert np.array_equal(a, b)


def test_bad_arguments(conformance):
    img = np.load(conformance / "inputs" / "test_image_64x64.npy")
    with pytest.raises(ValueError, match="padding_mode"):
        warp_3d(img, None, **NO_MOTION, **NB_CAMERA, padding_mode="wrap")
    with pytest.raises(ValueError, match="sampling_mode"):
        warp_3d(img, None, **NO_MOTION, **NB_CAMERA, sampling_mode="lanczos")
    with pytest.raises(ValueError, match="depth shape"):
        warp_3d(img, np.ones((32, 32), np.float32), **NO_MOTION, **NB_CAMERA)
