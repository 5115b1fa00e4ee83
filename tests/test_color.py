import json

import cv2
import numpy as np
import pytest

from deforum_steps.color import apply_contrast, color_mode, match_colors, to_grayscale, unsharp_mask


def test_colormatch_conformance(conformance):
    """Notebook and webui outputs (equal for every mode), and the webui run with the roles swapped."""
    manifest = json.loads((conformance / "colormatch/manifest.json").read_text())
    assert manifest["cases"]
    for case in manifest["cases"]:
        prev, sample = np.load(conformance / case["prev"]), np.load(conformance / case["sample"])
        for mode in (case["mode"], case["notebook_mode_string"], case["webui_mode_string"]):
            out = match_colors(prev, sample, mode)
            assert out.dtype == np.uint8
            for key in ("notebook_file", "webui_file"):
                np.testing.assert_array_equal(out, np.load(conformance / case[key]), err_msg=f"{mode} {key}")
        np.testing.assert_array_equal(match_colors(sample, prev, case["mode"]),
                                      np.load(conformance / case["swapped_file"]), err_msg=case["mode"])


def test_rgb_match_truncates_into_uint8(conformance):
    raw = np.load(conformance / json.loads((conformance / "colormatch/manifest.json").read_text())["raw_float"])
    prev = np.load(conformance / "inputs/colormatch_prev.npy")
    sample = np.load(conformance / "inputs/colormatch_sample.npy")
    out = match_colors(prev, sample, "RGB")
    np.testing.assert_array_equal(out, np.floor(raw))
    assert (np.rint(raw) != out).any()  # truncation, not rounding


def test_color_modes():
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert match_colors(img, img[::-1], "None") is img
    assert [color_mode(m) for m in ("Match Frame 0 LAB", "HSV", "Match Frame 0 RGB", "Image", "None")] == \
        ["LAB", "HSV", "RGB", "LAB", "None"]
    with pytest.raises(ValueError, match="XYZ"):
        match_colors(img, img, "XYZ")


def test_grayscale_replicates_luma():
    img = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = to_grayscale(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    luma = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    assert np.abs(out[..., 0] - luma).max() <= 1
    grey = np.repeat(img[..., :1], 3, axis=2)
    np.testing.assert_array_equal(to_grayscale(grey), grey)


def _contrast_cases(conformance):
    manifest = json.loads((conformance / "contrast/manifest.json").read_text())
    return np.load(conformance / manifest["input"]), manifest["cases"]


def test_contrast_conformance(conformance):
    """Our contrast clips (webui wraps mod 256) and sharpens the rounded uint8 image (notebook sharpens the
    float product, always; webui only when amount > 0). So we equal:
    * the notebook exactly when amount == 0 (both clip then round), and within 1 LSB elsewhere, away from
      clipped pixels;
    * the webui exactly wherever no pixel under the blur kernel overflowed 255, except that our threshold
      compares the true |img - blur| (webui's uint8 subtraction wraps, so pixels darker than their blur
      by less than the threshold are sharpened there and kept here)."""
    img, cases = _contrast_cases(conformance)
    assert cases
    for case in cases:
        name = f"c{case['contrast']} k{case['kernel']} s{case['sigma']} a{case['amount']} t{case['threshold']}"
        k = case["kernel"]
        contrasted = apply_contrast(img, case["contrast"])
        out = unsharp_mask(contrasted, k, case["sigma"], case["amount"], case["threshold"])
        assert out.dtype == np.uint8
        overflow = np.rint(img * case["contrast"]) > 255
        near = cv2.dilate(overflow.astype(np.uint8), np.ones((k, k), np.uint8)) > 0 if case["amount"] > 0 else overflow
        # webui
        expected = np.load(conformance / case["webui_file"]).copy()
        if case["threshold"] > 0 and case["amount"] > 0:
            blurred = cv2.GaussianBlur(contrasted, (k, k), case["sigma"]).astype(int)
            darker = (blurred - contrasted > 0) & (blurred - contrasted < case["threshold"])
            expected[darker] = contrasted[darker]
        np.testing.assert_array_equal(out[~near], expected[~near], err_msg=f"webui {name}")
        assert (out[overflow] == 255).all(), name
        # notebook (raises TypeError for threshold > 0: we do not)
        if "notebook_file" in case:
            nb = np.load(conformance / case["notebook_file"]).astype(int)
            if case["amount"] == 0:
                np.testing.assert_array_equal(out, nb, err_msg=f"notebook {name}")
            else:
                assert np.abs(out.astype(int) - nb)[~near].max() <= 1, f"notebook {name}"


def test_contrast_clips_instead_of_wrapping(conformance):
    """Decision: contrast 1.2 saturates at 255 where the webui wraps around (bright pixels turned dark)."""
    img, cases = _contrast_cases(conformance)
    case = next(c for c in cases if c["contrast"] == 1.2 and c["amount"] == 0)
    out = apply_contrast(img, 1.2)
    webui = np.load(conformance / case["webui_file"])
    overflow = np.rint(img * 1.2) > 255
    assert overflow.any()
    assert (out[overflow] == 255).all() and (webui[overflow] < 255).all()
    np.testing.assert_array_equal(out[~overflow], webui[~overflow])
    assert apply_contrast(np.array([[[0, 100, 213]]], np.uint8), 1.2).tolist() == [[[0, 120, 255]]]
    img = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert apply_contrast(img, 1.0) is img  # contrast 1 changes no pixel: no maths
    np.testing.assert_array_equal(apply_contrast(img, 1.0), np.clip(np.rint(img * 1.0), 0, 255).astype(np.uint8))


def test_unsharp_only_when_amount_positive():
    img = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert unsharp_mask(img, 5, 1.0, 0.0, 0) is img
    assert unsharp_mask(img, 5, 1.0, -0.5, 0) is img
    sharp = unsharp_mask(img, 5, 1.0, 0.5, 0)
    assert sharp.dtype == np.uint8 and not np.array_equal(sharp, img)


def test_unsharp_threshold_keeps_low_contrast_pixels():
    img = np.random.default_rng(4).integers(100, 140, (16, 16, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(img, (5, 5), 1.0).astype(int)
    diff = np.abs(img.astype(int) - blurred)
    out = unsharp_mask(img, 5, 1.0, 1.0, 6)
    np.testing.assert_array_equal(out[diff < 6], img[diff < 6])
    np.testing.assert_array_equal(out[diff >= 6], unsharp_mask(img, 5, 1.0, 1.0, 0)[diff >= 6])
    assert (diff < 6).any() and (diff >= 6).any()


def test_a_shared_reference_is_converted_once_with_the_same_result(monkeypatch):
    rng = np.random.default_rng(3)
    image, reference = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    expected = {mode: match_colors(image, reference, mode) for mode in ("LAB", "HSV")}  # a writeable reference
    conversions = []  # for each conversion: whether it converted the shared reference
    convert = cv2.cvtColor

    def counted(array, code):
        conversions.append(array is shared)
        return convert(array, code)

    monkeypatch.setattr(cv2, "cvtColor", counted)
    shared = reference.copy()
    shared.flags.writeable = False  # as io.read_shared_image gives it to every diffusion
    for mode in ("LAB", "LAB", "HSV", "LAB"):
        np.testing.assert_array_equal(match_colors(image, shared, mode), expected[mode])
    assert conversions.count(True) == 3  # LAB once, HSV once, LAB again after HSV
    np.testing.assert_array_equal(match_colors(image, reference, "LAB"), expected["LAB"])
    assert conversions.count(False) == 4 * 2 + 3  # the image there and back each call; a writeable reference each time
