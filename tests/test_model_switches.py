"""The GPU-ready switches, checked on the CPU: dtype auto (fp16 on CUDA, fp32 on the CPU), SDPA attention in every
layer (equal to the plain attention), VAE tiling (bit-identical below the tile size, close above it), and
compile_unet (wired to torch.compile; refused in one line where it cannot work)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from deforum_steps import model_files, models
from deforum_steps.config import ConfigError, load_config
from deforum_steps.dependencies import MODEL_SETTINGS, pick
from deforum_steps.diffusion import decode_latent, denoise, encode_image

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = load_config({}, REPO / "config" / "schema.yaml")
SETTINGS = {**pick(DEFAULTS, MODEL_SETTINGS), "model": "builtin:tiny"}
ARGS = dict(prompt="a red cat", negative_prompt="blurry", steps=3, cfg_scale=7, sampler="euler", seed=5, width=64,
            height=64)


def processors(pipe) -> set[type]:
    return {type(p) for m in (pipe.unet, pipe.vae) for p in m.attn_processors.values()}


def test_defaults_are_the_gpu_ready_ones():
    assert (DEFAULTS["dtype"], DEFAULTS["map_location"]) == ("auto", "auto")  # fp16 on CUDA, fp32 on the CPU
    assert models.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert models.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert (DEFAULTS["vae_tiling"], DEFAULTS["compile_unet"], DEFAULTS["allow_download"]) == (False, False, False)


@pytest.mark.parametrize("model", ["builtin:tiny", "builtin:tiny-xl"])
def test_attention_is_sdpa_and_equals_plain_attention(model):
    pipe = models.load_pipeline({**SETTINGS, "model": model})
    assert processors(pipe) == {AttnProcessor2_0}
    sdpa = denoise(pipe, None, **ARGS)
    plain = models.load_pipeline({**SETTINGS, "model": model})
    plain.unet.set_attn_processor(AttnProcessor())
    plain.vae.set_attn_processor(AttnProcessor())
    assert processors(plain) == {AttnProcessor}
    reference = denoise(plain, None, **ARGS)
    # float32 rounding of another kernel over 3 steps of a random model: measured at most 1.2e-4
    torch.testing.assert_close(sdpa, reference, rtol=0, atol=5e-4)


def stationary_image(size: int) -> np.ndarray:
    """Waves of a 32 px period: every tile has the statistics of the whole frame (GroupNorm sees the same)."""
    yy, xx = np.mgrid[0:size, 0:size] * (2 * np.pi / 32)
    return (127.5 + 100 * np.stack([np.sin(xx), np.cos(yy), np.sin(xx + yy)], -1)).astype(np.uint8)


def test_vae_tiling():
    """builtin:toy's trained VAE (tiles of sample_size = 128 px, a quarter overlapped and blended): identical up to
    the tile size; above it the tiles apply and the result stays close: the latent within 4 % of its spread, the
    decoded frame within 6 of 255 levels on average (measured 2.3 % and 3.0 at 192 px)."""
    settings = {**SETTINGS, "model": "builtin:toy"}
    whole, tiled = models.load_pipeline(settings), models.load_pipeline({**settings, "vae_tiling": True})
    assert tiled.vae.use_tiling and not whole.vae.use_tiling and whole.vae.tile_sample_min_size == 128
    small = stationary_image(128)
    assert torch.equal(encode_image(whole, small), encode_image(tiled, small))
    big = stationary_image(192)
    latent = encode_image(whole, big)
    latent_tiled = encode_image(tiled, big)
    assert not torch.equal(latent, latent_tiled)  # tiles were used
    assert (latent - latent_tiled).abs().mean() <= 0.04 * latent.std()
    frame, frame_tiled = decode_latent(whole, latent), decode_latent(tiled, latent)
    assert not np.array_equal(frame, frame_tiled)
    assert np.abs(frame.astype(int) - frame_tiled).mean() <= 6


def test_compile_unet_is_wired(monkeypatch):
    compiled = []

    def fake_compile(module, **kw):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = models.load_pipeline({**SETTINGS, "compile_unet": True})
    assert len(compiled) == 1 and compiled[0] is pipe.unet
    models.load_pipeline(SETTINGS)
    assert len(compiled) == 1  # off by default
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(ConfigError, match=r"^compile_unet: torch .* cannot compile"):
        models.load_pipeline({**SETTINGS, "compile_unet": True})


def test_compile_unet_needs_a_compiler(monkeypatch):
    """Found when the workflow loads, not at the first frame."""
    cfg = {**DEFAULTS, "model": "builtin:tiny", "compile_unet": True}
    assert model_files.check_model(cfg) == "builtin:tiny"
    monkeypatch.setattr(model_files.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError) as info:
        model_files.check_model(cfg)
    assert str(info.value).startswith("compile_unet: torch.compile needs a C++ compiler")
    model_files.check_model({**cfg, "compile_unet": False})


def test_switches_reload_the_model(monkeypatch):
    """Each switch is a model setting: a job with another value gets its own pipeline (and reruns)."""
    assert {"vae_tiling", "compile_unet"} <= set(MODEL_SETTINGS)
    first = models.get_pipeline(SETTINGS)
    assert models.get_pipeline({**SETTINGS, "vae_tiling": True}).vae.use_tiling and first is not models._loaded[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DEFORUM_SLOW"), reason="opt-in (DEFORUM_SLOW=1): compiles for minutes")
def test_compiled_unet_renders_the_same():
    """Inductor's fused kernels round differently: measured 1.5e-4 at most (first call 390 s on a loaded CPU)."""
    pipe = models.load_pipeline({**SETTINGS, "compile_unet": True})
    torch.testing.assert_close(denoise(pipe, None, **ARGS), denoise(models.build_tiny(), None, **ARGS),
                               rtol=0, atol=5e-4)
