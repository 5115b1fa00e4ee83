"""Gradient conditioning's pure rules with hand-computed numbers: inject timing, the four clamps, the losses, the
palette, the CLIP targets and the config-time checks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deforum_steps import gradient_conditioning as gc
from deforum_steps import gradient_settings as gs
from deforum_steps.config import ConfigError, load_config
from deforum_steps.dependencies import ANIMATION_SETTINGS, DIFFUSION_SETTINGS, STILL_SETTINGS, diffusion_settings

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


# ---- inject timing: counted on the steps run -------------------------------------------------------------------

def test_timing_forms():
    assert gs.inject_steps(None, 10) is None  # every step
    assert gs.inject_steps(3, 10) == {3, 6, 9}  # every 3rd
    assert gs.inject_steps([1, 2, 12], 10) == {1, 2}  # 1-based step numbers; 12 is past the 10 run
    # fractions: int(f * steps) is the 0-based index (truncated: int(0.29 * 100) = 28, the 29th step); 1.0 the last
    assert gs.inject_steps([0.0, 0.29, 0.5, 1.0], 100) == {1, 29, 51, 100}
    assert gs.inject_steps([0.5], 50) == {26}
    assert gs.inject_steps([], 10) == set()


def test_default_timing_conditions_img2img_steps():
    # the reference keys steps 1-9 to the full grid, so a 0.65-strength frame of 50 steps (steps 33-50) got nothing;
    # counted on the 17 steps run, its first 9 are conditioned
    default = load_config({}, SCHEMA)["grad_inject_timing"]
    assert default == list(range(1, 10))
    assert gs.inject_steps(default, int((1 - 0.65) * 50)) == set(range(1, 10))


@pytest.mark.parametrize("timing, message", [([1, 0.5], "mixes"), ([0, 2], "below 1"), ([0.5, 1.5], "outside"),
                                             (0, "positive")])
def test_timing_errors(timing, message):
    with pytest.raises(ConfigError, match=f"grad_inject_timing: .*{message}"):
        gs.inject_steps(timing, 10)


# ---- clamps ---------------------------------------------------------------------------------------------------

def g(*values):
    return torch.tensor([values], dtype=torch.float64)


def test_dynamic_clamp():
    # 50th percentile of |1, 2, 3, 4| (linear) = 2.5: clamp to +-2.5 and divide by 2.5
    assert gc.clamp_gradient(g(1, -2, 3, 4), "dynamic", 50).tolist() == [[0.4, -0.8, 1.0, 1.0]]
    # the default 0.2 is a percentile: s = max(1, tiny) = 1, a +-1 clamp
    assert gc.clamp_gradient(g(0.5, -3, 0.25, 2), "dynamic", 0.2).tolist() == [[0.5, -1.0, 0.25, 1.0]]


def test_static_clamp():
    assert gc.clamp_gradient(g(0.5, -3, 0.1), "static", 0.2).tolist() == [[0.2, -0.2, 0.1]]


def test_mean_clamp_caps_rms_per_sample():
    rms = math.sqrt((9 + 16) / 2)
    out = gc.clamp_gradient(torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64), "mean", 1.0)
    assert out[0].tolist() == pytest.approx([3 / rms, 4 / rms])
    assert out[1].tolist() == pytest.approx([0.3, 0.4])  # RMS 0.354 <= 1: unchanged


def test_schedule_clamp():
    assert gs.schedule_clamp(1, 10, 0.2, 0.01) == 0.2
    assert gs.schedule_clamp(10, 10, 0.2, 0.01) == pytest.approx(0.2 + 0.9 * -0.19)  # 0.029; 0.01 is sigma 0's
    rms = math.sqrt(12.5)
    out = gc.clamp_gradient(g(3, 4), "schedule", 0.2, schedule_value=0.2)
    assert out[0].tolist() == pytest.approx([3 * 0.2 / rms, 4 * 0.2 / rms])
    assert gc.clamp_gradient(g(0, 0), "schedule", 0.2, 0.1).tolist() == [[0.0, 0.0]]  # no 0/0
    assert gc.clamp_gradient(g(0.1, 0.1), "schedule", 0.2, 0.5)[0].tolist() == pytest.approx([0.1, 0.1])


def test_clamp_turns_nan_to_zero():
    assert gc.clamp_gradient(g(float("nan"), 0.5), "static", 1.0).tolist() == [[0.0, 0.5]]


# ---- losses ---------------------------------------------------------------------------------------------------

def test_pixel_losses():
    x = torch.tensor([-1.0, 0.5, 0.0, 0.5]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    x[0, 2] = torch.tensor([[0.9, 0.7], [1.0, 0.9]])
    assert float(gc.mean_loss(x)) == pytest.approx((2.0 * 2 + 3.5) / 12)
    assert float(gc.blue_loss(x)) == pytest.approx((0 + 0.2 + 0.1 + 0) / 4)
    assert float(gc.exposure_loss(x, 0.5)) == pytest.approx(float((x - 0.5).abs().mean()))
    assert float(gc.var_loss(x)) == pytest.approx(float(np.var(x.numpy(), ddof=1)))  # unbiased, all elements
    assert float(gc.mse_loss(x, torch.zeros_like(x))) == pytest.approx(float((x**2).mean()))


def test_palette_targets_and_colormatch_loss():
    centres = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    targets = gc.palette_targets(centres, np.array([3, 1]), 4)
    assert targets.tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    quantised = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32).view(1, 3, 2, 2)
    loss = gc.colormatch_loss(quantised, torch.tensor(centres).float(), torch.tensor(targets).float(), None)
    assert float(loss) == pytest.approx(0, abs=1e-5)
    white = torch.ones(1, 3, 2, 2)  # every pixel sqrt(2) from black's... far from both colours
    assert float(gc.colormatch_loss(white, torch.tensor(centres).float(), torch.tensor(targets).float(), None)) > 1
    # ignore_sat_weight 0 compares greyscale: a pure red image becomes grey 0.2989 * 2 - 1 ...
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    grey_loss = gc.colormatch_loss(red, torch.tensor(centres).float(), torch.tensor(targets).float(), 0.0)
    assert float(grey_loss) != pytest.approx(float(gc.colormatch_loss(red, torch.tensor(centres).float(),
                                                                      torch.tensor(targets).float(), None)))


def test_kmeans_palette_is_seeded_and_finds_the_colours():
    rng = np.random.default_rng(1)
    pixels = np.concatenate([rng.normal([-0.8, 0, 0.5], 0.02, (300, 3)), rng.normal([0.7, 0.7, -0.6], 0.02, (100, 3))])
    centres, counts = gc.kmeans_palette(pixels, 2)
    order = np.argsort(-counts)
    assert counts[order].tolist() == [300, 100]
    assert centres[order] == pytest.approx(np.array([[-0.8, 0, 0.5], [0.7, 0.7, -0.6]]), abs=0.01)
    again, _ = gc.kmeans_palette(pixels, 2)
    assert np.array_equal(centres, again)


def test_clip_target_is_the_whole_prompt():
    # the reference iterated the prompt's characters; here the prompt is one target, sub-prompts weighted
    assert gc.clip_targets("a red circle on a blue background") == [("a red circle on a blue background", 1.0)]
    assert gc.clip_targets("a red circle:1 a blue square:3") == [("a red circle", 0.25), ("a blue square", 0.75)]
    assert gc.clip_targets("a red circle:2 blurry:-1") == [("a red circle", 1.0)]


def test_spherical_distance_is_half_the_squared_angle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert float(gc.spherical_distance(a, b)) == pytest.approx((math.pi / 2) ** 2 / 2)


# ---- keys and config-time checks ------------------------------------------------------------------------------

def test_every_guide_key_in_the_schema_with_the_reference_defaults():
    cfg = load_config({}, SCHEMA)
    expected = {"mean_scale": 0, "var_scale": 0, "exposure_scale": 0, "exposure_target": 0.5, "colormatch_scale": 0,
                "colormatch_image": "", "colormatch_n_colors": 4, "ignore_sat_weight": None, "clip_name": "ViT-L/14",
                "clip_scale": 0, "aesthetics_scale": 0, "cutn": 1, "cut_pow": 0.0001, "init_mse_scale": 0,
                "init_mse_image": "", "blue_scale": 0, "gradient_wrt": "x0_pred", "gradient_add_to": "both",
                "decode_method": "linear", "grad_threshold_type": "dynamic", "clamp_grad_threshold": 0.2,
                "clamp_start": 0.2, "clamp_stop": 0.01, "cond_uncond_sync": True}
    assert {key: cfg[key] for key in expected} == expected
    # every mode's diffusion jobs depend on them while a scale is not 0, and on none of them while every scale is 0
    for keys in (DIFFUSION_SETTINGS, ANIMATION_SETTINGS, STILL_SETTINGS):
        assert set(gs.GRADIENT_SETTINGS) <= set(diffusion_settings({**cfg, "blue_scale": 1}, keys))
        assert not set(gs.GRADIENT_SETTINGS) & set(diffusion_settings(cfg, keys))
    with pytest.raises(ConfigError, match="^gradient_wrt: 'y' is not one of"):
        load_config({"gradient_wrt": "y"}, SCHEMA)


def checked(**keys):
    gs.check(load_config({"model": "builtin:toy", **keys}, SCHEMA))


def test_config_time_errors(tmp_path, monkeypatch):
    checked(colormatch_image="", clip_name="ViT-L/14")  # all scales 0: nothing is looked for
    with pytest.raises(ConfigError, match="^colormatch_image: colormatch_scale is 500, so it needs an image"):
        checked(colormatch_scale=500)
    with pytest.raises(ConfigError, match="^init_mse_image: no such file: nope.png"):
        checked(init_mse_scale=1, init_mse_image="nope.png")
    with pytest.raises(ConfigError, match="^clamp_grad_threshold: 150 is a percentile"):
        checked(mean_scale=1, clamp_grad_threshold=150)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^clip_name: ViT-B/32 is not here: fetch it with `hf download "
                                          r"openai/clip-vit-base-patch32`"):
        checked(clip_scale=1, clip_name="ViT-B/32", models_path=str(tmp_path))
    with pytest.raises(ConfigError, match="^clip_name: there is no aesthetic head for ViT-L/14@336px"):
        (tmp_path / "clip-vit-large-patch14-336").mkdir()
        (tmp_path / "clip-vit-large-patch14-336" / "config.json").write_text("{}")
        checked(aesthetics_scale=1, clip_name="ViT-L/14@336px", models_path=str(tmp_path))
    checked(clip_scale=1, aesthetics_scale=1, clip_name="builtin")
    with pytest.raises(ConfigError, match="^decode_method: linear fits SD 1.x/2.x latents only"):
        gs.linear_decode_source(None, {"scaling_factor": 0.13025, "latent_channels": 4})
    assert gs.linear_decode_source(None, {"scaling_factor": 0.18215, "latent_channels": 4}) == "sd"


def test_clip_feature_adapter_reads_both_transformers_forms():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    features = torch.ones(1, 4)
    assert gc._features(features) is features  # transformers 4.x: the projected tensor
    assert gc._features(BaseModelOutputWithPooling(pooler_output=features)) is features  # 5.x


def test_evaluation_sigma_maps_vp_latents():
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    from deforum_steps.models import SD_SCHEDULER_CONFIG

    euler = EulerDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG)
    euler.set_timesteps(10)
    t = euler.timesteps[3]
    assert gc.evaluation_sigma(euler, t, "cpu") == pytest.approx((float(euler.sigmas[3]), 1.0))
    ddim = DDIMScheduler.from_config(SD_SCHEDULER_CONFIG)
    ddim.set_timesteps(10)
    abar = float(ddim.alphas_cumprod[int(ddim.timesteps[3])])
    sigma, alpha = gc.evaluation_sigma(ddim, ddim.timesteps[3], "cpu")
    assert (sigma, alpha) == pytest.approx((math.sqrt((1 - abar) / abar), math.sqrt(abar)))


def test_builtin_clip_weights_match_their_checksums():
    import hashlib

    sums = (gs.BUILTIN_CLIP / "SHA256SUMS").read_text().split("\n")
    checked_files = [line.split() for line in sums if line.strip()]
    assert {name for _, name in checked_files} == {"model.safetensors", gs.AESTHETIC_HEAD}
    for digest, name in checked_files:
        assert hashlib.sha256((gs.BUILTIN_CLIP / name).read_bytes()).hexdigest() == digest
