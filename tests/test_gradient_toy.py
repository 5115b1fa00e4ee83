"""Gradient conditioning on the toy model: off is bit-identical, each loss measurably does what it says (same seed,
scale 0 vs the scale given), every sampler runs it, img2img frames are conditioned, x and x0_pred both work."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deforum_steps import diffusion, io, toy_world
from deforum_steps import gradient_conditioning as gc
from deforum_steps import gradient_settings as gs
from deforum_steps.config import load_config
from deforum_steps.dependencies import DIFFUSION_SETTINGS, diffusion_settings, pick
from deforum_steps.samplers import SAMPLERS

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
PROMPT = "a red circle on a blue background"
BASE = {"model": "builtin:toy", "W": 64, "H": 64, "grad_inject_timing": None, "decode_method": "autoencoder",
        "clip_name": "builtin"}


def settings(**keys):
    return diffusion_settings(load_config({**BASE, **keys}, SCHEMA), DIFFUSION_SETTINGS)


def render(init_latent=None, strength=0.0, sampler="euler", steps=6, **keys) -> np.ndarray:
    """RGB in [-1, 1] (H, W, 3), float64."""
    _, image = diffusion.generate(init_latent, settings(**keys), prompt=PROMPT, negative_prompt="", seed=1,
                                  steps=steps, cfg_scale=7, sampler=sampler, strength=strength)
    return image.astype(np.float64) / 127.5 - 1


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gc")
    target = toy_world.draw(toy_world.Scene("square", "yellow", "purple", False, 0.5, 0.5, 0.3), 64)
    palette = toy_world.draw(toy_world.Scene("circle", "green", "orange", False, 0.5, 0.5, 0.3), 64)
    io.write_image(folder / "target.png", target)
    io.write_image(folder / "palette.png", palette)
    return folder


@pytest.fixture(scope="module")
def baseline():
    return render()


def test_all_scales_zero_is_bit_identical():
    off = diffusion.generate(None, settings(), prompt=PROMPT, negative_prompt="", seed=1, steps=4, cfg_scale=7,
                             sampler="euler_ancestral")[0]
    assert not set(settings()) & set(gs.GRADIENT_SETTINGS)  # off: no job depends on them
    cfg = load_config({**BASE, "gradient_wrt": "x", "cond_uncond_sync": False, "grad_threshold_type": "schedule"},
                      SCHEMA)
    zero = diffusion.generate(None, pick(cfg, (*DIFFUSION_SETTINGS, *gs.GRADIENT_SETTINGS)), prompt=PROMPT,
                              negative_prompt="", seed=1, steps=4, cfg_scale=7, sampler="euler_ancestral")[0]
    on = diffusion.generate(None, settings(mean_scale=0.01), prompt=PROMPT, negative_prompt="", seed=1, steps=4,
                            cfg_scale=7, sampler="euler_ancestral")[0]
    assert torch.equal(off, zero)
    assert not torch.equal(off, on)


def clip_measures():
    return gc.builtin_measures(PROMPT)


# (keys, measure of the image, +1 = must rise / -1 = must fall)
def effects(folder: Path):
    target = io.read_image(folder / "target.png").astype(np.float64) / 127.5 - 1
    palette = io.read_image(folder / "palette.png").astype(np.float64) / 127.5 - 1
    centres, _ = gc.kmeans_palette(palette.reshape(-1, 3), 2)
    similarity, aesthetic = clip_measures()
    return {
        "mean -> grey": ({"mean_scale": 5}, lambda x: np.abs(x).mean(), -1),
        "var -> less variance": ({"var_scale": 5}, lambda x: x.var(), -1),
        "exposure -0.5 darkens": ({"exposure_scale": 5, "exposure_target": -0.5}, np.mean, -1),
        "exposure +0.5 brightens": ({"exposure_scale": 5, "exposure_target": 0.5}, np.mean, 1),
        "blue -> bluer": ({"blue_scale": 5}, lambda x: x[..., 2].mean(), 1),
        "init_mse -> closer": ({"init_mse_scale": 5, "init_mse_image": str(folder / "target.png")},
                               lambda x: ((x - target) ** 2).mean(), -1),
        "colormatch -> palette": ({"colormatch_scale": 500, "colormatch_image": str(folder / "palette.png")},
                                  lambda x: np.linalg.norm(x.reshape(-1, 1, 3) - centres, axis=-1).min(1).mean(), -1),
        "clip -> prompt": ({"clip_scale": 100}, similarity, 1),
        "aesthetics -> rating": ({"aesthetics_scale": 5}, aesthetic, 1),
    }


@pytest.mark.parametrize("name", ["mean -> grey", "var -> less variance", "exposure -0.5 darkens",
                                  "exposure +0.5 brightens", "blue -> bluer", "init_mse -> closer",
                                  "colormatch -> palette", "clip -> prompt", "aesthetics -> rating"])
def test_loss_does_what_it_says(name, images, baseline):
    keys, measure, sign = effects(images)[name]
    before, after = measure(baseline), measure(render(**keys))
    assert sign * (after - before) > 0.02 * max(abs(before), 0.1), (name, before, after)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_is_conditioned(sampler):
    off, on = render(sampler=sampler, steps=3), render(sampler=sampler, steps=3, mean_scale=5, decode_method="linear")
    assert np.isfinite(on).all() and np.abs(on - off).max() > 0.05


@pytest.mark.parametrize("keys", [{"gradient_wrt": "x"}, {"cond_uncond_sync": False, "gradient_add_to": "cond"},
                                  {"cond_uncond_sync": False, "gradient_add_to": "uncond", "gradient_wrt": "x"},
                                  {"cond_uncond_sync": False, "gradient_add_to": "both"}])
def test_other_modes_pull_toward_grey(keys, baseline):
    assert np.abs(render(mean_scale=5, **keys)).mean() < np.abs(baseline).mean() - 0.01


def test_img2img_frames_are_conditioned_from_their_first_step_run(capsys):
    # strength 0.5 of 20 steps runs steps 11-20 of the full grid, where the reference's timing [1, 2, 3] conditions
    # nothing; counted on the 10 steps run, the first three are conditioned, and step 15 is never reached
    init = diffusion.encode(toy_world.draw(toy_world.Scene("circle", "white", "gray", False, 0.5, 0.5, 0.3), 64),
                            settings())
    darker = {"exposure_scale": 1000, "exposure_target": -1, "grad_threshold_type": "static", "clamp_grad_threshold": 5}
    off = render(init, strength=0.5, steps=20)
    on = render(init, strength=0.5, steps=20, grad_inject_timing=[1, 2, 3], **darker)
    assert on.mean() < off.mean() - 0.01
    assert np.array_equal(render(init, strength=0.5, steps=20, grad_inject_timing=[15], **darker), off)
    assert "selects none of the 10 steps this image runs" in capsys.readouterr().err
