"""Interpolation mode: one image per key prompt, and in between images whose text conditioning is the
spherical interpolation (slerp, notebook v0.7.1) of the two neighbouring key prompts' conditionings.

Frames, from the key prompts k_0 < k_1 < ... (animation_prompts keys, whole numbers):
* interpolate_key_frames false: interpolate_x_frames frames between consecutive prompts whatever their key
  numbers, (n_prompts - 1) * (x + 1) + 1 frames in all;
* interpolate_key_frames true: frame f in [k_p, k_p+1) gets t = (f - k_p) / (k_p+1 - k_p); frames before k_0
  show prompt 0; the last frame is the last key (the notebook interpolates every pair, not only the last one
  as its for/else bug does).
Every frame is txt2img from the same seed (seed_behavior is fixed in this mode, as in the notebook): with the
same starting noise, a small step in conditioning is a small step in the image, so the tween is smooth.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import cpu_threads, io, preview
from .config import ConfigError
from .dependencies import DIFFUSION_SETTINGS, INTERPOLATION_COLUMNS, diffusion_settings, pick
from .keyframes import prompts_per_frame


def key_prompts(cfg: Mapping) -> list[tuple[int, str, str]]:
    """(key frame, prompt, negative prompt) of every animation_prompts key, in key order; a key's negative is
    its "--neg" part and the neg_prompts value at that frame, as for any frame."""
    keys = []
    for key in cfg["animation_prompts"]:
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise ConfigError(f"animation_prompts: Interpolation mode needs whole frame numbers as keys, got {key!r}")
        keys.append(key)
    keys.sort()
    positive, negative = prompts_per_frame(cfg["animation_prompts"], cfg["neg_prompts"], keys[-1] + 1)
    return [(k, positive[k], negative[k]) for k in keys]


def plan(cfg: Mapping) -> list[dict]:
    """Per output frame {"a": key prompt index, "b": next key prompt index, "t": weight of b in 0..1)}."""
    keys = [k for k, _, _ in key_prompts(cfg)]
    last = len(keys) - 1
    if cfg["interpolate_key_frames"]:
        frames = [{"a": 0, "b": 0, "t": 0.0}] * keys[0]
        for p in range(last):
            span = keys[p + 1] - keys[p]
            frames += [{"a": p, "b": p + 1, "t": j / span} for j in range(span)]
    else:
        x = cfg["interpolate_x_frames"]
        frames = [{"a": p, "b": p + 1, "t": j / (x + 1)} for p in range(last) for j in range(x + 1)]
    return frames + [{"a": last, "b": last, "t": 0.0}]


def frame_count(cfg: Mapping) -> int:
    return len(plan(cfg))


def job_params(spec: Mapping, prompts: list[tuple[int, str, str]], row: Mapping, cfg: Mapping) -> dict:
    """Everything a frame (`spec`, its entry of plan) depends on: its two key prompts (one when t is 0), t,
    seed, steps, cfg and sampler (of its schedule `row`), and the settings; so an edited key prompt reruns only
    the frames that show it."""
    a = prompts[spec["a"]][1:]
    b = prompts[spec["b"]][1:] if spec["t"] > 0 else a
    return {"a": list(a), "b": list(b), "t": spec["t"], "row": pick(row, INTERPOLATION_COLUMNS),
            "settings": diffusion_settings(cfg, DIFFUSION_SETTINGS)}


def slerp(t: float, v0, v1, dot_threshold: float = 0.9995):
    """Spherical interpolation of two tensors as whole vectors (notebook v0.7.1): along the great circle when
    their directions differ, linear when they are (nearly) parallel. Computed in float64, returned in v0's dtype."""
    import torch

    a, b = v0.double(), v1.double()
    dot = torch.sum(a * b) / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    if torch.abs(dot) > dot_threshold:
        out = (1 - t) * a + t * b
    else:
        theta = torch.arccos(dot)
        out = (torch.sin(theta * (1 - t)) * a + torch.sin(theta * t) * b) / torch.sin(theta)
    return out.to(v0.dtype)


def render_frame(*, image: str, a: Sequence[str], b: Sequence[str], t: float, row: Mapping,
                 settings: Mapping, threads: int) -> None:
    """Rule interpolation_frame (params from job_params):
    1. encode the two key prompts `a` and `b` (prompt, negative prompt) into their conditionings;
    2. slerp them at `t`, each side of the guidance;
    3. txt2img from the row's seed with that conditioning;
    4. write the image."""
    from . import diffusion, models

    cpu_threads.limit(threads)
    pipe = models.get_pipeline(settings)

    def encode(prompt_and_negative):
        return diffusion.prompt_conditioning(pipe, *prompt_and_negative,
                                             prompt_weighting=settings["prompt_weighting"],
                                             normalize_prompt_weights=settings["normalize_prompt_weights"])

    cond_a, uncond_a = encode(a)
    cond_b, uncond_b = encode(b) if b != a else (cond_a, uncond_a)
    _, result = diffusion.generate(
        None, settings, prompt="", negative_prompt="", conditioning=(slerp(t, cond_a, cond_b),
                                                                      slerp(t, uncond_a, uncond_b)),
        seed=row["seed_schedule"], steps=row["steps_schedule"], cfg_scale=row["cfg_scale_schedule"],
        sampler=row["sampler_schedule"])
    io.write_image(image, result)
    preview.show_frame(image)
