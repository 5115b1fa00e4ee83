"""Sampling with Deforum semantics on diffusers components: samplers, prompt weighting, txt2img / img2img from
latents, the reference image <-> tensor conversions and latent files.

img2img runs the last `int((1 - strength) * steps)` steps of a `steps`-step schedule from the init latent noised
to the start of those steps (strength 1 returns the init, strength 0 is txt2img from pure noise). All noise comes
from one CPU torch.Generator seeded with `seed`, so equal inputs give bit-identical latents on the CPU.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

from . import gradient_conditioning, io, preview
from .config import ConfigError
from .masks import latent_mask, overlay
from .models import Pipeline, get_pipeline
from .prompts import weighted_parts
from .samplers import SAMPLERS, denoise_steps, resolve_sampler

# ---- samplers --------------------------------------------------------------------------------------


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

def encode_text(pipe: Pipeline, texts: list[str]) -> torch.Tensor:
    """CLIP hidden states (len(texts), 77, D) in the model dtype. SDXL: both encoders' penultimate hidden states
    side by side, and one more row holding the second encoder's pooled embedding (zero-padded to D), so that
    prompt weighting and interpolation blend it like the rest: (len(texts), 78, D)."""
    if not pipe.is_sdxl:
        return pipe.text_encoder(_token_ids(pipe.tokenizer, texts, pipe.device))[0]
    first = pipe.text_encoder(_token_ids(pipe.tokenizer, texts, pipe.device), output_hidden_states=True)
    second = pipe.text_encoder_2(_token_ids(pipe.tokenizer_2, texts, pipe.device), output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    pooled = torch.nn.functional.pad(second.text_embeds, (0, hidden.shape[-1] - second.text_embeds.shape[-1]))
    return torch.cat([hidden, pooled[:, None]], dim=1)


def _token_ids(tokenizer, texts: list[str], device) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def prompt_conditioning(
    pipe: Pipeline,
    prompt: str,
    negative_prompt: str = "",
    *,
    prompt_weighting: bool = True,
    normalize_prompt_weights: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond), each (1, 77, D): weighted sums of sub-prompt encodings (prompts.weighted_parts). Negative-
    weight sub-prompts and the negative prompt (weight 1) make up the unconditional side; an empty side encodes ""."""
    parts = weighted_parts(prompt, negative_prompt, prompt_weighting=prompt_weighting,
                           normalize_prompt_weights=normalize_prompt_weights)
    sides = [parts.positive or [("", 1.0)], parts.negative or [("", 1.0)]]
    texts = sorted({text for side in sides for text, _ in side})
    encoded = dict(zip(texts, encode_text(pipe, texts).unsqueeze(1)))
    cond, uncond = (sum(w * encoded[text] for text, w in side) for side in sides)
    return cond, uncond


# ---- sampling --------------------------------------------------------------------------------------

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, number of steps, latent after the step)


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
    mask: np.ndarray | torch.Tensor | None = None,
    callback: StepCallback | None = None,
    conditioning: tuple[torch.Tensor, torch.Tensor] | None = None,
    gradient: Mapping | None = None,
) -> torch.Tensor:
    """Denoise from `init_latent` (img2img) or from noise (txt2img) and return the latent (1, 4, H/8, W/8),
    float32 on the CPU. `mask` (latent resolution, 1 = keep the init, 0 = diffuse) blends the init, noised to
    the current level, back in after every step. `callback` is called after each of the steps run.
    `conditioning` (cond, uncond), e.g. interpolated ones, replaces the encoding of prompt and negative_prompt.
    `gradient` (the gradient_settings.GRADIENT_SETTINGS keys and `model`) turns on gradient conditioning."""
    if steps < 1:
        raise ConfigError(f"steps: {steps} is not a positive number of steps")
    shape = pipe.latent_shape(width, height)
    t_enc = denoise_steps(strength, steps, init_latent is not None)
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
    guide = gradient_conditioning.guide(pipe, gradient, prompt=prompt, seed=seed, width=width, height=height,
                                        steps_run=t_enc)

    done = 0
    for i, t in enumerate(timesteps):
        if guide is not None and step_completed(scheduler) and guide.selected(done + 1):
            noise_pred, x = guide.step_input(scheduler, x, t, embeddings, cfg_scale, done + 1,
                                             lambda model_input, emb, t=t: unet_output(pipe, model_input, t, emb))
        else:
            noise_pred = guided_noise(pipe, scheduler, x, t, embeddings, cfg_scale)
        x = scheduler.step(noise_pred, t, x, **step_kwargs).prev_sample
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
    eps_uncond, eps_cond = unet_output(pipe, scheduler.scale_model_input(torch.cat([x, x]), t), t, embeddings).chunk(2)
    return eps_uncond + cfg_scale * (eps_cond - eps_uncond)


def unet_output(pipe: Pipeline, model_input: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
    """The UNet's float32 output for a batch of model inputs, one row of `embeddings` each."""
    extra = {}
    if pipe.is_sdxl:  # the pooled row (encode_text) and the size conditioning: full frame, no crop
        embeddings, pooled = embeddings[:, :-1], embeddings[:, -1, : pipe.text_encoder_2.config.projection_dim]
        h, w = (n * pipe.vae_scale_factor for n in model_input.shape[-2:])
        time_ids = torch.tensor([[h, w, 0, 0, h, w]] * len(embeddings), dtype=pipe.dtype, device=pipe.device)
        extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
    return pipe.unet(model_input.to(pipe.dtype), t, encoder_hidden_states=embeddings, **extra).sample.float()


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
    """Write a latent tensor as safetensors (key "latent"), atomically and checked."""
    from safetensors.torch import save

    io.write_bytes(path, save({"latent": latent.detach().cpu().contiguous()}))


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


# ---- what jobs call: settings (dependencies.DIFFUSION_SETTINGS) and schedule rows in, images out ---------------


def encode(image: np.ndarray, settings: Mapping) -> torch.Tensor:
    """RGB uint8 image → init latent, on the process-wide model of `settings`."""
    return encode_image(get_pipeline(settings), image)


def decode(latent: torch.Tensor, settings: Mapping) -> np.ndarray:
    """Latent → RGB uint8 image, on the process-wide model of `settings`."""
    return decode_latent(get_pipeline(settings), latent)


def generate(init_latent: torch.Tensor | None, settings: Mapping, *, prompt: str, negative_prompt: str, seed: int,
             steps: int, cfg_scale: float, sampler: str, strength: float = 0.0, mask: np.ndarray | None = None,
             callback: StepCallback | None = None,
             conditioning: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """txt2img (`init_latent` None) or img2img on the process-wide model of `settings` (W, H and the sampler
    settings of dependencies.DIFFUSION_SETTINGS); `mask` (pixels, 1 = keep the init) is averaged down to the
    latent grid. Returns (latent, RGB uint8 image)."""
    pipe = get_pipeline(settings)
    if callback is None:  # show_sample_per_step: each step decoded into the live preview
        callback = preview.step_callback(lambda x: decode_latent(pipe, x))
    latent = denoise(
        pipe, init_latent, prompt=prompt, negative_prompt=negative_prompt, steps=steps, strength=strength,
        cfg_scale=cfg_scale, sampler=sampler, seed=seed, width=settings["W"], height=settings["H"],
        ddim_eta=settings["ddim_eta"], use_karras_sigmas=settings["use_karras_sigmas"],
        prompt_weighting=settings["prompt_weighting"], normalize_prompt_weights=settings["normalize_prompt_weights"],
        mask=None if mask is None else latent_mask(mask, pipe.latent_shape(settings["W"], settings["H"])[-2:]),
        callback=callback, conditioning=conditioning, gradient=settings)
    return latent, decode_latent(pipe, latent)


def row_arguments(row: Mapping) -> dict:
    """A frame's sampling arguments from its schedule row (the columns of dependencies.DIFFUSION_COLUMNS but
    strength, which the caller picks: strength_schedule, or `strength` for an init image)."""
    return {"prompt": row["prompt"], "negative_prompt": row["negative_prompt"], "seed": row["seed_schedule"],
            "steps": row["steps_schedule"], "cfg_scale": row["cfg_scale_schedule"], "sampler": row["sampler_schedule"]}


def img2img(init: np.ndarray, row: Mapping, settings: Mapping, *, strength: float, mask: np.ndarray | None = None,
            init_latent: torch.Tensor | None = None) -> np.ndarray:
    """img2img from the RGB uint8 `init` (or its `init_latent`, when the caller keeps it) with the row's prompts,
    seed, steps, cfg and sampler at `strength`. With `mask` (1 = keep the init) only the rest is diffused, and
    with overlay_mask the init is pasted back through it after decoding. Returns RGB uint8."""
    if init_latent is None:
        init_latent = encode(init, settings)
    _, image = generate(init_latent, settings, strength=strength, mask=mask, **row_arguments(row))
    return overlay(image, init, mask) if mask is not None and settings["overlay_mask"] else image
