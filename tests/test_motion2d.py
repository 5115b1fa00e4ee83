import json

import cv2
import numpy as np
import pytest

from deforum_steps.motion2d import perspective_flip_matrix, warp_2d, warp_matrix_2d


def _kwargs(case):
    return dict(angle=case["angle"], zoom=case["zoom"], translation_x=case["tx"], translation_y=case["ty"],
                transform_center_x=case.get("cx", 0.5), transform_center_y=case.get("cy", 0.5),
                flip_perspective=case.get("flip", False), theta=case.get("theta", 0), phi=case.get("phi", 0),
                gamma=case.get("gamma", 0), fv=case.get("fv", 53))


def _translation(tx, ty):
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


def test_warp2d_conformance(conformance):
    """Every recorded case: webui always (our centre is the webui one); the notebook where it equals webui.
    With perspective flip and a translation the references drop the translation (np.matmul out= bug);
    we apply it: our matrix is the recorded one followed by the translation."""
    manifest = json.loads((conformance / "warp2d/manifest.json").read_text())
    checked = 0
    for case in manifest["cases"]:
        img = np.load(conformance / case["input_file"])
        height, width = img.shape[:2]
        kw = _kwargs(case)
        matrix = warp_matrix_2d(width, height, **kw)
        out = warp_2d(img, border=case["border"], **kw)
        repos = ["webui"] + (["notebook"] if case.get("notebook_equals_webui") else [])
        for repo in repos:
            recorded_matrix = np.array(case[f"{repo}_matrix"])
            recorded = np.load(conformance / case[f"{repo}_file"])
            if kw["flip_perspective"] and (case["tx"] or case["ty"]):
                expected_matrix = recorded_matrix @ _translation(np.float32(case["tx"]), np.float32(case["ty"]))
                np.testing.assert_allclose(matrix, expected_matrix, rtol=0, atol=1e-9, err_msg=case["name"])
                assert not np.array_equal(out, recorded), f"{case['name']}: translation ignored with flip"
            else:
                np.testing.assert_array_equal(matrix, recorded_matrix, err_msg=f"{case['name']} {repo}")
                # Recorded with OpenCV 4.8.1: every local case is bit-identical with 4.14; allow 1 LSB on
                # a few pixels for interpolation-table differences between versions.
                diff = np.abs(out.astype(int) - recorded)
                assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"{case['name']} {repo}"
            checked += 1
    assert checked >= 6


def test_positive_translation_moves_content_right_and_down():
    img = np.zeros((32, 32, 3), np.uint8)
    img[10, 10] = 255
    out = warp_2d(img, angle=0, zoom=1, translation_x=3, translation_y=2)
    assert out[12, 13].tolist() == [255, 255, 255] and out.sum() == 3 * 255


def test_transform_centre_is_fixed_point():
    m = warp_matrix_2d(96, 64, angle=30, zoom=1.3, translation_x=0, translation_y=0,
                       transform_center_x=0.25, transform_center_y=0.75)
    np.testing.assert_allclose(m @ [24, 48, 1], [24, 48, 1], atol=1e-4)


def test_border_modes_differ_and_bad_border_rejected():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    kw = dict(angle=0, zoom=0.8, translation_x=0, translation_y=0)
    rep, wrap = warp_2d(img, border="replicate", **kw), warp_2d(img, border="wrap", **kw)
    assert not np.array_equal(rep, wrap)
    with pytest.raises(ValueError, match="border"):
        warp_2d(img, border="reflect", **kw)


def test_flip_honours_translation(conformance):
    """Decision: with the perspective flip on, translation still moves the image (both references drop it:
    `np.matmul(bM, rot, trans)` makes `trans` the out= argument). M = bM @ R @ T: the flip is applied on top
    of the same rotate/zoom/translate motion as without flip."""
    img = np.load(conformance / "inputs/test_image_64x64.npy")
    flip = dict(angle=5, zoom=1.02, flip_perspective=True, theta=0, phi=10, gamma=0, fv=53)
    still = warp_2d(img, translation_x=0, translation_y=0, **flip)
    moved = warp_2d(img, translation_x=6, translation_y=-4, **flip)
    assert not np.array_equal(still, moved)
    m = warp_matrix_2d(64, 64, translation_x=6, translation_y=-4, **flip)
    bm = perspective_flip_matrix(64, 64, theta=0, phi=10, gamma=0, fv=53)
    rot = np.vstack([cv2.getRotationMatrix2D((32.0, 32.0), 5, 1.02), [0, 0, 1]])
    np.testing.assert_allclose(m, bm @ rot @ _translation(6, -4), rtol=1e-12)
