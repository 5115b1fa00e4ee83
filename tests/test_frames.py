import numpy as np

from deforum_steps import colour, motion2d, noise
from deforum_steps.frames import FRAME_SETTINGS, condition, frame_settings, warp

ROW = {"angle": 3.0, "zoom": 1.02, "translation_x": 2.0, "translation_y": -1.0, "transform_center_x": 0.5,
       "transform_center_y": 0.5, "perspective_flip_theta": 0, "perspective_flip_phi": 0,
       "perspective_flip_gamma": 0, "perspective_flip_fv": 53, "contrast": 1.0, "kernel": 5, "sigma": 1.0,
       "amount": 0.0, "threshold": 0.0, "noise": 0.0, "seed": 7}
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
    assert np.array_equal(condition(img, ROW, SETTINGS, colour_reference=_image(1)), img)


def test_conditioning_order_colour_contrast_sharpen_noise():
    img, ref = _image(), _image(1)
    row = {**ROW, "contrast": 1.1, "amount": 0.3, "noise": 0.1}
    settings = {**SETTINGS, "color_coherence": "Match Frame 0 RGB"}
    expected = colour.match_colors(img, ref, "RGB")
    expected = colour.unsharp_mask(colour.apply_contrast(expected, 1.1), 5, 1.0, 0.3, 0.0)
    expected = noise.add_noise(expected, 0.1, 7)
    assert np.array_equal(condition(img, row, settings, ref), expected)


def test_frame_settings_pick_only_frame_keys():
    cfg = {key: i for i, key in enumerate(FRAME_SETTINGS)} | {"fps": 12, "crf": 17}
    assert set(frame_settings(cfg)) == set(FRAME_SETTINGS)
