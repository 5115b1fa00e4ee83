"""Sampling with Deforum semantics on diffusers components: samplers, prompt weighting, txt2img / img2img from
latents, the reference image <-> tensor conversions and latent files.

img2img runs the last `int((1 - strength) * steps)` steps of a `steps`-step schedule from the init latent noised
to the start of those steps (strength 1 returns the init, strength 0 is txt2img from pure noise). All noise comes
from one CPU torch.Generator seeded with `seed`, so equal inputs give bit-identical latents on the CPU.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping

import cv2
import numpy as np
import torch

from .config import ConfigError
from .io import atomic_path
from .models import Pipeline, get_pipeline

# ---- samplers --------------------------------------------------------------------------------------

# Deforum name -> (diffusers scheduler class name, config overrides)
SAMPLERS = {
    "klms": ("LMSDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
# AUTOMATIC1111 webui names (a " Karras" suffix turns on Karras sigmas).
WEBUI_SAMPLERS = {
    "lms": "klms",
    "dpm2": "dpm2",
    "dpm2 a": "dpm2_ancestral",
    "heun": "heun",
    "euler": "euler",
    "euler a": "euler_ancestral",
    "plms": "plms",
    "ddim": "ddim",
    "dpm++ 2m": "dpmpp_2m",
}


def resolve_sampler(name: str) -> tuple[str, bool]:
    """(Deforum sampler name, Karras sigmas forced by a webui "… Karras" name) for a Deforum or webui name."""
    key = " ".join(str(name).lower().split())
    karras = key.endswith(" karras")
    key = key.removesuffix(" karras")
    if key in SAMPLERS and not karras:
        return key, False
    if key in WEBUI_SAMPLERS:
        return WEBUI_SAMPLERS[key], karras
    known = ", ".join(list(SAMPLERS) + ["or a webui name such as 'Euler a', 'DPM++ 2M Karras'"])
    raise ConfigError(f"sampler: unknown sampler {name!r} (one of {known})")


def make_scheduler(pipe: Pipeline, sampler: str, steps: int, *, use_karras_sigmas: bool = False):
    """A fresh diffusers scheduler for `sampler`, with timesteps set for a `steps`-step schedule."""
    import diffusers  # on first use: rules that need no model never pay for importing diffusers

    name, karras = resolve_sampler(sampler)
    karras = karras or use_karras_sigmas
    class_name, overrides = SAMPLERS[name]
    cls = getattr(diffusers, class_name)
    config = {**pipe.scheduler_config, **overrides}
    # EulerAncestral has no Karras option of its own: it borrows Euler's Karras sigmas below.
    if karras and "use_karras_sigmas" in inspect.signature(cls.__init__).parameters:
        config["use_karras_sigmas"] = True
    elif karras and name != "euler_ancestral":
        raise ConfigError(f"use_karras_sigmas: the {name} sampler has no Karras schedule")
    scheduler = cls.from_config(config)
    scheduler.set_timesteps(steps, device=pipe.device)
    if karras and name == "euler_ancestral":
        euler = diffusers.EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True)
        euler.set_timesteps(steps, device=pipe.device)
        scheduler.sigmas, scheduler.timesteps = euler.sigmas, euler.timesteps
    return scheduler


def tail_timesteps(scheduler, steps: int, t_enc: int) -> torch.Tensor:
    """The timesteps of the last `t_enc` of `steps` steps, and the scheduler set to start there."""
    start = steps - t_enc
    if type(scheduler).__name__ == "PNDMScheduler":
        # PLMS warms up by evaluating the second timestep twice ([t0, t1, t1, t2, ...]): keep that shape.
        distinct = torch.unique_consecutive(scheduler.timesteps)[start:]
        return torch.cat([distinct[:2], distinct[1:]])
    begin = start * scheduler.order  # second-order samplers list two evaluations per step
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def step_completed(scheduler) -> bool:
    """False between the two model evaluations of a second-order step (Heun, DPM2, PLMS warm-up)."""
    if type(scheduler).__name__ == "PNDMScheduler":
        return scheduler.counter != 1
    return getattr(scheduler, "state_in_first_order", True)


# ---- prompt weighting (Deforum v0.6 "text:weight") -------------------------------------------------

_SUBPROMPT = re.compile(
    r"""(?P<prompt>(?:\\:|[^:])+)        # text up to the next unescaped ':'
        (?::+(?P<weight>-?\d+(?:\.\d+)?)?\s*|$)  # ':weight' (missing weight = 1) or end of text""",
    re.VERBOSE,
)


@dataclass
class WeightedPrompt:
    positive: list[tuple[str, float]]
    negative: list[tuple[str, float]]  # negative weights, sign flipped: these go to the unconditional side


def split_weighted_subprompts(text: str, normalize: bool = True) -> WeightedPrompt:
    """Split "a cat:2 a dog:-1" into weighted sub-prompts; `\\:` is a literal colon, weight 0 drops a part.
    With `normalize` the positive weights are scaled to sum to 1; negative weights are never normalised."""
    positive, negative = [], []
    for match in _SUBPROMPT.finditer(text):
        part = match.group("prompt").replace("\\:", ":")
        weight = float(match.group("weight") or 1.0)
        if weight > 0:
            positive.append((part, weight))
        elif weight < 0:
            negative.append((part, -weight))
    if normalize and positive:
        total = sum(w for _, w in positive)
        positive = [(p, w / total) for p, w in positive]
    return WeightedPrompt(positive, negative)


def encode_text(pipe: Pipeline, texts: list[str]) -> torch.Tensor:
    """CLIP hidden states (len(texts), 77, D) in the model dtype."""
    ids = pipe.tokenizer(
        texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return pipe.text_encoder(ids.to(pipe.device))[0]


def prompt_conditioning(
    pipe: Pipeline,
    prompt: str,
    negative_prompt: str = "",
    *,
    prompt_weighting: bool = True,
    normalize_prompt_weights: bool = True,
    log_weighted_subprompts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond), each (1, 77, D): weighted sums of sub-prompt encodings. Negative-weight sub-prompts and
    the negative prompt (weight 1) make up the unconditional side; an empty side encodes ""."""
    if prompt_weighting:
        parts = split_weighted_subprompts(prompt, normalize_prompt_weights)
    else:
        parts = WeightedPrompt([(prompt, 1.0)], [])
    negative = parts.negative + ([(negative_prompt, 1.0)] if negative_prompt else [])
    if log_weighted_subprompts:
        _log_subprompts(pipe, parts.positive, negative)
    sides = [parts.positive or [("", 1.0)], negative or [("", 1.0)]]
    texts = sorted({text for side in sides for text, _ in side})
    encoded = dict(zip(texts, encode_text(pipe, texts).unsqueeze(1)))
    cond, uncond = (sum(w * encoded[text] for text, w in side) for side in sides)
    return cond, uncond


def _log_subprompts(pipe: Pipeline, positive, negative) -> None:
    limit = pipe.tokenizer.model_max_length - 2
    for sign, side in (("+", positive), ("-", negative)):
        for text, weight in side:
            n = len(pipe.tokenizer(text).input_ids) - 2
            cut = f", truncated to {limit}" if n > limit else ""
            print(f"subprompt {sign}{weight:g}: {text!r} ({n} tokens{cut})")


# ---- sampling --------------------------------------------------------------------------------------

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, number of steps, latent after the step)


def steps_to_run(steps: int, strength: float, has_init: bool) -> int:
    """Deforum's t_enc: the number of denoising steps img2img runs (all of them without an init); strength is
    clamped to [0, 1] as in the reference."""
    return int((1.0 - min(max(strength, 0.0), 1.0)) * steps) if has_init else steps


@torch.inference_mode()
def denoise(
    pipe: Pipeline,
    init_latent: torch.Tensor | None = None,
    *,
    prompt: str,
    negative_prompt: str = "",
    steps: int,
    strength: float = 0.0,
    cfg_scale: float,
    sampler: str,
    seed: int,
    width: int,
    height: int,
    ddim_eta: float = 0.0,
    use_karras_sigmas: bool = False,
    prompt_weighting: bool = True,
    normalize_prompt_weights: bool = True,
    log_weighted_subprompts: bool = False,
    mask: np.ndarray | torch.Tensor | None = None,
    callback: StepCallback | None = None,
    conditioning: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Denoise from `init_latent` (img2img) or from noise (txt2img) and return the latent (1, 4, H/8, W/8),
    float32 on the CPU. `mask` (latent resolution, 1 = keep the init, 0 = diffuse) blends the init, noised to
    the current level, back in after every step. `callback` is called after each of the steps run.
    `conditioning` (cond, uncond), e.g. interpolated ones, replaces the encoding of prompt and negative_prompt."""
    if steps < 1:
        raise ConfigError(f"steps: {steps} is not a positive number of steps")
    shape = pipe.latent_shape(width, height)
    t_enc = steps_to_run(steps, strength, init_latent is not None)
    if init_latent is not None:
        init_latent = _check_latent(init_latent, shape).to(pipe.device)
        if t_enc == 0:
            return init_latent.cpu().clone()
    if mask is not None:
        if init_latent is None:
            raise ConfigError("use_mask: a mask needs an init image (use_init)")
        mask = _latent_mask(mask, shape).to(pipe.device)

    cond, uncond = conditioning or prompt_conditioning(
        pipe,
        prompt,
        negative_prompt,
        prompt_weighting=prompt_weighting,
        normalize_prompt_weights=normalize_prompt_weights,
        log_weighted_subprompts=log_weighted_subprompts,
    )
    scheduler = make_scheduler(pipe, sampler, steps, use_karras_sigmas=use_karras_sigmas)
    timesteps = tail_timesteps(scheduler, steps, t_enc)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn(shape, generator=generator).to(pipe.device)
    if t_enc == steps:  # strength 0 or no init: pure noise
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(init_latent, noise, timesteps[:1])
    embeddings = torch.cat([uncond, cond])
    step_kwargs = _step_kwargs(scheduler, generator, ddim_eta)

    done = 0
    for i, t in enumerate(timesteps):
        x = scheduler.step(guided_noise(pipe, scheduler, x, t, embeddings, cfg_scale), t, x, **step_kwargs).prev_sample
        if i < len(timesteps) - 1 and not step_completed(scheduler):
            continue
        if mask is not None:
            x = blend_init(scheduler, x, init_latent, noise, mask, timesteps[i + 1 : i + 2])
        if callback is not None:
            callback(done, t_enc, x)
        done += 1
    return x.cpu()


def guided_noise(pipe: Pipeline, scheduler, x: torch.Tensor, t, embeddings: torch.Tensor, cfg_scale: float):
    """Classifier-free guidance: one UNet call on [uncond, cond], extrapolated by cfg_scale."""
    model_input = scheduler.scale_model_input(torch.cat([x, x]), t)
    eps = pipe.unet(model_input.to(pipe.dtype), t, encoder_hidden_states=embeddings).sample.float()
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + cfg_scale * (eps_cond - eps_uncond)


def blend_init(scheduler, x, init_latent, noise, mask, next_timestep: torch.Tensor) -> torch.Tensor:
    """Inpainting by blending: where mask is 1 put back the init noised to the next timestep (clean at the end)."""
    kept = scheduler.add_noise(init_latent, noise, next_timestep) if len(next_timestep) else init_latent
    return mask * kept + (1 - mask) * x


def _step_kwargs(scheduler, generator: torch.Generator, ddim_eta: float) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generator} if "generator" in params else {}
    if "eta" in params:
        kwargs["eta"] = float(ddim_eta)
    return kwargs


def _check_latent(latent: torch.Tensor, shape: tuple) -> torch.Tensor:
    if tuple(latent.shape) != shape:
        raise ValueError(f"init latent has shape {tuple(latent.shape)}, expected {shape} for this model and W/H")
    return latent.float()


def _latent_mask(mask, shape: tuple) -> torch.Tensor:
    mask = torch.as_tensor(mask, dtype=torch.float32)
    if tuple(mask.shape[-2:]) != shape[-2:]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected the latent size {shape[-2:]}")
    return mask.reshape(1, 1, *shape[-2:])


# ---- images <-> latents ----------------------------------------------------------------------------


def sample_from_cv2(image: np.ndarray) -> torch.Tensor:
    """Deforum's conversion: uint8 (H, W, 3) → float16 (1, 3, H, W) in [-1, 1]."""
    sample = (image.astype(np.float64) / 255.0) * 2 - 1
    return torch.from_numpy(sample[None].transpose(0, 3, 1, 2).astype(np.float16))


def sample_to_cv2(sample: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """Deforum's conversion: (1, 3, H, W) in [-1, 1] → (H, W, 3) of `dtype` (uint8 truncates)."""
    hwc = sample.squeeze(0).detach().cpu().float().numpy().transpose(1, 2, 0)
    return (((hwc + 1) / 2).clip(0, 1) * 255).astype(dtype)


@torch.inference_mode()
def encode_image(pipe: Pipeline, image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) → latent (1, 4, H/8, W/8) float32 on the CPU: the VAE posterior mean (deterministic)."""
    pipe.latent_shape(image.shape[1], image.shape[0])  # size check
    sample = sample_from_cv2(image).to(pipe.device, pipe.dtype)
    latent = pipe.vae.encode(sample).latent_dist.mean * pipe.vae.config.scaling_factor
    return latent.float().cpu()


@torch.inference_mode()
def decode_latent(pipe: Pipeline, latent: torch.Tensor) -> np.ndarray:
    """Latent (1, 4, h, w) → RGB uint8 (8h, 8w, 3)."""
    scaled = latent.to(pipe.device, pipe.dtype) / pipe.vae.config.scaling_factor
    return sample_to_cv2(pipe.vae.decode(scaled).sample)


# ---- latent files -----------------------------------------------------------------------------------


def save_latent(path: str | os.PathLike, latent: torch.Tensor) -> None:
    """Write a latent tensor as safetensors (key "latent"), atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"latent": latent.detach().cpu().contiguous()}, str(tmp))


def load_latent(
    path: str | os.PathLike, expected_shape: tuple | None = None, expected_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Read a latent written by save_latent; a wrong shape or dtype is an error, never a silent reshape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        latent = load_file(str(path))["latent"]
    except (SafetensorError, KeyError, OSError) as e:
        raise ValueError(f"{path}: not a latent file written by save_latent ({e})") from e
    if expected_shape is not None and tuple(latent.shape) != tuple(expected_shape):
        raise ValueError(f"{path}: latent shape {tuple(latent.shape)}, expected {tuple(expected_shape)}")
    if expected_dtype is not None and latent.dtype != expected_dtype:
        raise ValueError(f"{path}: latent dtype {latent.dtype}, expected {expected_dtype}")
    return latent


# ---- None mode ---------------------------------------------------------------------------------------


def render_still(
    cfg: Mapping, prompt: str, negative_prompt: str, seed: int, init_image: np.ndarray | None = None
) -> np.ndarray:
    """One still image (None mode): txt2img, or img2img from `init_image` at `strength`. RGB uint8 (H, W, 3)."""
    pipe = get_pipeline(cfg)
    width, height = cfg["W"], cfg["H"]
    init_latent = None
    if init_image is not None:
        if init_image.shape[:2] != (height, width):
            init_image = cv2.resize(init_image, (width, height), interpolation=cv2.INTER_LANCZOS4)
        init_latent = encode_image(pipe, init_image)
    latent = denoise(
        pipe,
        init_latent,
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=cfg["steps"],
        strength=cfg["strength"],
        cfg_scale=cfg["scale"],
        sampler=cfg["sampler"],
        seed=seed,
        width=width,
        height=height,
        ddim_eta=cfg["ddim_eta"],
        use_karras_sigmas=cfg["use_karras_sigmas"],
        prompt_weighting=cfg["prompt_weighting"],
        normalize_prompt_weights=cfg["normalize_prompt_weights"],
        log_weighted_subprompts=cfg["log_weighted_subprompts"],
    )
    return decode_latent(pipe, latent)
