"""Init images and masks: reading a mask as the notebook does (greyscale, brightness, contrast, invert), its
latent-resolution version, the overlay, the init image list of None mode, the one-line errors, and a masked
img2img with the builtin tiny model (white kept, black diffused)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import SCHEMA
from PIL import Image, ImageEnhance

from deforum_steps import diffusion, io, masks
from deforum_steps.config import ConfigError, load_config
from deforum_steps.dependencies import DIFFUSION_SETTINGS, MASK_SETTINGS, pick

W = H = 64
# load_mask's adjustments (the config keys, all required) at their neutral values: the mask as drawn
NEUTRAL = {"invert_mask": False, "mask_brightness_adjust": 1.0, "mask_contrast_adjust": 1.0}


def write_grey(path: Path, values: np.ndarray) -> Path:
    cv2.imwrite(str(path), values.astype(np.uint8))
    return path


def test_load_mask_is_greyscale_0_to_1_white_kept(tmp_path):
    grey = np.zeros((H, W), np.uint8)
    grey[:, W // 2:] = 255
    grey[:8] = 128
    mask = masks.load_mask(write_grey(tmp_path / "m.png", grey), (W, H), **NEUTRAL)
    assert mask.dtype == np.float32 and mask.shape == (H, W)
    assert mask[20, 0] == 0 and mask[20, -1] == 1 and mask[0, 0] == pytest.approx(128 / 255)
    inverted = masks.load_mask(tmp_path / "m.png", (W, H), **{**NEUTRAL, "invert_mask": True})
    np.testing.assert_allclose(inverted, 1 - mask, atol=1e-7)


def test_load_mask_reads_color_as_luma_and_resizes(tmp_path):
    rgb = np.full((16, 32, 3), (0, 255, 0), np.uint8)  # pure green: ITU-R 601 luma 0.587 * 255 = 150
    io.write_image(tmp_path / "green.png", rgb)
    mask = masks.load_mask(tmp_path / "green.png", (W, H), **NEUTRAL)
    assert mask.shape == (H, W)
    np.testing.assert_allclose(mask, 150 / 255, atol=1e-6)


def test_brightness_then_contrast_as_pil_image_enhance(tmp_path):
    """The notebook's adjustment: PIL brightness, then contrast around the rounded mean, on the 8-bit mask."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (H, W)).astype(np.uint8)
    path = write_grey(tmp_path / "m.png", grey)
    expected = ImageEnhance.Contrast(ImageEnhance.Brightness(Image.fromarray(grey)).enhance(1.3)).enhance(0.6)
    mask = masks.load_mask(path, (W, H), invert_mask=False, mask_brightness_adjust=1.3, mask_contrast_adjust=0.6)
    np.testing.assert_array_equal(np.rint(mask * 255).astype(np.uint8), np.asarray(expected))
    # brightness 0.5 halves (truncating), contrast 0 is the flat mean
    halved = masks.load_mask(path, (W, H), **{**NEUTRAL, "mask_brightness_adjust": 0.5})
    np.testing.assert_array_equal(np.rint(halved * 255), grey // 2)
    flat = masks.load_mask(path, (W, H), **{**NEUTRAL, "mask_contrast_adjust": 0.0})
    assert np.unique(flat).size == 1 and flat[0, 0] == pytest.approx(int(grey.mean() + 0.5) / 255)


def test_latent_mask_averages_each_8x8_cell():
    mask = np.zeros((H, W), np.float32)
    mask[:, :32] = 1  # left half kept
    mask[:, 36:40] = 1  # half of latent column 4
    latent = masks.latent_mask(mask, (H // 8, W // 8))
    assert latent.shape == (8, 8) and latent.dtype == np.float32
    np.testing.assert_allclose(latent[:, :4], 1)
    np.testing.assert_allclose(latent[:, 4], 0.5)
    np.testing.assert_allclose(latent[:, 5:], 0)


def test_overlay_keeps_white_exactly_blends_grey():
    image = np.full((4, 3, 3), 10, np.uint8)
    init = np.full((4, 3, 3), 201, np.uint8)
    mask = np.array([[1, 0, 0.5]] * 4, np.float32)
    out = masks.overlay(image, init, mask)
    assert out.dtype == np.uint8
    assert (out[:, 0] == 201).all() and (out[:, 1] == 10).all() and (out[:, 2] == 106).all()  # 105.5 rounds to even


def cfg(**overrides):
    return load_config({"W": W, "H": H, "seed": 1, **overrides}, SCHEMA)


def test_init_images_file_folder_and_errors(tmp_path):
    assert masks.init_images(cfg(init_image="nowhere.png")) == []  # use_init false: not read
    one = tmp_path / "one.png"
    io.write_image(one, np.zeros((8, 8, 3), np.uint8))
    assert masks.init_images(cfg(use_init=True, init_image=str(one))) == [one]
    folder = tmp_path / "inits"
    folder.mkdir()
    for name in ("b.jpg", "a.png", "c.PNG"):
        io.write_image(folder / name, np.zeros((8, 8, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    listed = masks.init_images(cfg(use_init=True, init_image=str(folder)))
    assert listed == [folder / name for name in ("a.png", "b.jpg", "c.PNG")]

    def error(**overrides):
        with pytest.raises(ConfigError) as e:
            masks.init_images(cfg(use_init=True, **overrides))
        return str(e.value)

    assert error(init_image="") == "init_image: empty, but use_init is true"
    assert error(init_image=str(tmp_path / "missing.png")).startswith("init_image: no such file or folder")
    (tmp_path / "empty").mkdir()
    assert error(init_image=str(tmp_path / "empty")).startswith("init_image: no images")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert error(init_image=str(tmp_path / "broken.png")).startswith("init_image: not a readable image")


def test_check_input_images_names_the_key(tmp_path):
    init = tmp_path / "init.png"
    io.write_image(init, np.zeros((8, 8, 3), np.uint8))

    def error(**overrides):
        with pytest.raises(ConfigError) as e:
            masks.check_input_images(cfg(**overrides))
        return str(e.value)

    assert error(use_mask=True, mask_file=str(init)).startswith("use_mask: a mask needs an init image")
    assert error(use_init=True, init_image=str(init), use_mask=True) == "mask_file: empty, but use_mask is true"
    assert error(use_init=True, init_image=str(init), use_mask=True,
                 mask_file=str(tmp_path / "no.png")).startswith("mask_file: not a readable image")
    assert error(animation_mode="Video Input", use_mask=True, mask_file="no.png").startswith("mask_file:")
    # a video frame is the init in Video Input; Interpolation is txt2img and uses neither
    masks.check_input_images(cfg(animation_mode="Video Input", use_mask=True, mask_file=str(init)))
    masks.check_input_images(cfg(animation_mode="Interpolation", use_init=True, use_mask=True))
    assert error(animation_mode="2D", color_coherence="Image").startswith("color_coherence_image_path: not a readable")
    masks.check_input_images(cfg(animation_mode="2D", color_coherence="Image", color_coherence_image_path=str(init)))


def test_masked_img2img_keeps_white_and_diffuses_black(tmp_path):
    """Left half white: with overlay_mask that half is the init, pixel for pixel, and the right half is diffused.
    Without the overlay the mask acts in latent space only: all white gives back the init's latent (the VAE's
    reconstruction of the init), all black the unmasked img2img."""
    config = cfg(use_mask=True, steps=8)
    rng = np.random.default_rng(1)
    init = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    grey = np.zeros((H, W), np.uint8)
    grey[:, :W // 2] = 255
    half = write_grey(tmp_path / "half.png", grey)
    white = write_grey(tmp_path / "white.png", np.full((H, W), 255))
    black = write_grey(tmp_path / "black.png", np.zeros((H, W)))
    row = {"prompt": "a red apple", "negative_prompt": "", "seed_schedule": 3, "strength_schedule": 0.25,
           "steps_schedule": 8, "cfg_scale_schedule": 7.0, "sampler_schedule": "euler"}
    settings = pick(config, (*DIFFUSION_SETTINGS, *MASK_SETTINGS))

    def img2img(mask_file, settings):
        mask = None if mask_file is None else masks.read_mask(mask_file, settings)
        return diffusion.img2img(init, row, settings, strength=row["strength_schedule"], mask=mask)

    out = img2img(half, settings)
    np.testing.assert_array_equal(out[:, :W // 2], init[:, :W // 2])
    assert np.abs(out[:, W // 2:].astype(int) - init[:, W // 2:]).mean() > 20

    no_overlay = {**settings, "overlay_mask": False}
    reconstruction = diffusion.decode(diffusion.encode(init, settings), settings)
    unmasked = img2img(None, settings)
    assert not np.array_equal(unmasked, reconstruction)
    np.testing.assert_array_equal(img2img(white, no_overlay), reconstruction)
    np.testing.assert_array_equal(img2img(black, no_overlay), unmasked)
    # inverted, the white mask diffuses everything
    np.testing.assert_array_equal(img2img(white, {**no_overlay, "invert_mask": True}), unmasked)
