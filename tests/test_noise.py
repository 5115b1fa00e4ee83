import json

import numpy as np
import pytest
import torch

from deforum_steps.noise import add_noise, noise_image, perlin_field

# The perlin grid of the tests that do not vary it (the function has no defaults: those live in the schema).
GRID = {"perlin_w": 8, "perlin_h": 8, "perlin_octaves": 4, "perlin_persistence": 0.5}


def _webui_cases(conformance):
    manifest = json.loads((conformance / "noise/manifest.json").read_text())
    # Notebook cases add Gaussian noise from the global torch RNG (not reproducible); we follow the webui.
    return manifest, [c for c in manifest["cases"] if c["repo"] == "webui"]


def test_noise_conformance(conformance):
    _, cases = _webui_cases(conformance)
    assert cases
    for case in cases:
        img = np.load(conformance / case["input"])
        pw, ph, octaves, persistence = case["perlin_w_h_octaves_persistence"]
        out = add_noise(img, case["amount"], case["seed"], noise_type=case["noise_type"], perlin_w=pw,
                        perlin_h=ph, perlin_octaves=octaves, perlin_persistence=persistence)
        np.testing.assert_array_equal(out, np.load(conformance / case["file"]), err_msg=case["file"])


@pytest.mark.parametrize("seed", [0, 42, 3000000000])
def test_white_noise_is_the_seeded_randn(conformance, seed):
    randn = np.load(conformance / f"noise/randn_seed{seed}_3x128x128.npy")
    expected = (np.clip(randn.transpose(1, 2, 0) * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(noise_image(128, 128, seed, noise_type="uniform", **GRID), expected)


def test_perlin_field_follows_the_randn_draw(conformance):
    manifest, _ = _webui_cases(conformance)
    generator = torch.Generator().manual_seed(42)
    torch.randn((3, 128, 128), generator=generator)
    field = perlin_field((128, 128), (8, 8), 4, 0.5, generator)
    np.testing.assert_array_equal(field.numpy(), np.load(conformance / manifest["perlin_field"]))


@pytest.mark.parametrize("noise_type", ["uniform", "perlin"])
def test_reproducible_per_seed_and_different_across_seeds(noise_type):
    img = np.full((64, 64, 3), 128, np.uint8)
    a = add_noise(img, 0.3, 7, noise_type=noise_type, **GRID)
    np.testing.assert_array_equal(a, add_noise(img, 0.3, 7, noise_type=noise_type, **GRID))
    assert not np.array_equal(a, add_noise(img, 0.3, 8, noise_type=noise_type, **GRID))
    assert not np.array_equal(a, img)
    add_noise(img, 0.3, 2**32 - 1, noise_type=noise_type, **GRID)


@pytest.mark.parametrize("noise_type", ["uniform", "perlin"])
def test_sizes_not_multiple_of_64(noise_type):
    """Decision: the webui crashes on uniform noise at 72x72 (noise drawn at 64x64, never resized); we
    nearest-resize it like perlin noise, so it is the 64x64 noise stretched."""
    out = add_noise(np.zeros((72, 72, 3), np.uint8), 0.5, 3, noise_type=noise_type, **GRID)
    assert out.shape == (72, 72, 3) and out.dtype == np.uint8
    small = noise_image(64, 64, 3, noise_type=noise_type, **GRID)
    big = noise_image(72, 72, 3, noise_type=noise_type, **GRID)
    rows = np.arange(72) * 64 // 72
    np.testing.assert_array_equal(big, small[rows][:, rows])


def test_perlin_grid_not_dividing_the_size():
    out = add_noise(np.zeros((128, 192, 3), np.uint8), 0.5, 1, noise_type="perlin", perlin_w=5, perlin_h=7,
                    perlin_octaves=3, perlin_persistence=0.5)
    assert out.shape == (128, 192, 3)


def test_mask_restricts_the_blend():
    img = np.full((64, 64, 3), 90, np.uint8)
    full = add_noise(img, 0.5, 11, noise_type="uniform", **GRID)
    mask = np.zeros((64, 64))
    mask[:, 32:] = 1.0
    out = add_noise(img, 0.5, 11, noise_type="uniform", **GRID, mask=mask)
    assert (out[:, :32] == 90).all()
    np.testing.assert_array_equal(out[:, 32:], full[:, 32:])
    byte_mask = (mask * 255).astype(np.uint8)
    np.testing.assert_array_equal(add_noise(img, 0.5, 11, noise_type="uniform", **GRID, mask=byte_mask), out)
    half = add_noise(img, 0.5, 11, noise_type="uniform", **GRID, mask=np.full((64, 64), 0.5))
    assert np.abs(half.astype(int) - (img.astype(int) + full) / 2).max() <= 0.5


def test_unknown_noise_type_rejected():
    with pytest.raises(ValueError, match="noise_type"):
        add_noise(np.zeros((64, 64, 3), np.uint8), 0.1, 0, noise_type="gaussian", **GRID)
