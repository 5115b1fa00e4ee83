"""animation_mode None: still images, as the notebook's render_image_batch makes them.

Every prompt of `prompts` is rendered n_batch times, each time once per init image (with use_init; init_image
may be a folder: one image per file, in name order). The images are numbered 0, 1, ... in that order (prompt,
then batch item, then init image) and the seed advances once per image by seed_behavior, across prompts too,
as the notebook's next_seed after every generate. So a larger n_batch adds images after each prompt's: the
first prompt's images keep their numbers and seeds, later prompts' move (with seed_behavior fixed their
seeds stay, so an image that lands on a number holding the same prompt is kept).

A prompt may carry its negative after "--neg"; neg_prompts (one text, or prompt index -> negative, held over
the prompts as over animation frames) is joined to it. seed_behavior schedule is for animations only.

Grids follow the notebook's torchvision make_grid call: one per prompt, of that prompt's images, 2 px black
padding around and between, a single image left as it is. Departure: the notebook puts int(n / grid_rows)
images in a row, which makes more than grid_rows rows when n is not a multiple of grid_rows and crashes when
n < grid_rows; here a row holds ceil(n / grid_rows) images, so there are at most grid_rows rows.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .config import ConfigError
from .io import atomic_path
from .masks import MASK_SETTINGS, init_images, latent_mask, overlay
from .schedules import denoise_steps, prompts_per_frame, seed_sequence

# Config keys that change every image; an image job's params hold these besides its prompts and seed, so an
# edit elsewhere (another prompt, n_batch, make_grid, fps...) never reruns it.
STILL_SETTINGS = ("W", "H", "steps", "scale", "sampler", "ddim_eta", "use_karras_sigmas", "prompt_weighting",
                  "normalize_prompt_weights", "model", "model_config", "map_location", "dtype")
GRID_PADDING = 2  # torchvision make_grid's default, which the notebook uses


def plan(cfg: Mapping) -> list[dict]:
    """Every image of the render, in file order: {prompt_index, batch_index, init_image (path or None), prompt,
    negative_prompt, seed}. Raises ConfigError naming the key at fault."""
    if cfg["seed_behavior"] == "schedule":
        raise ConfigError("seed_behavior: 'schedule' needs animation frames; "
                          "None mode takes iter, fixed, random, ladder or alternate")
    prompts = cfg["prompts"]
    positive, negative = prompts_per_frame(prompts, cfg["neg_prompts"], len(prompts), name="prompts")
    inits = [str(path) for path in init_images(cfg)] or [None]
    n = len(prompts) * cfg["n_batch"] * len(inits)
    seeds = iter(seed_sequence(cfg["seed"], cfg["seed_behavior"], n, cfg["seed_iter_N"]))
    return [{"prompt_index": p, "batch_index": b, "init_image": init, "prompt": positive[p],
             "negative_prompt": negative[p], "seed": next(seeds)}
            for p in range(len(prompts)) for b in range(cfg["n_batch"]) for init in inits]


def job_params(image: Mapping, cfg: Mapping) -> dict:
    """What one image (an entry of `plan`) depends on besides its init and mask files: prompts, seed, the
    STILL_SETTINGS, and with an init its strength (and the mask settings with use_mask)."""
    settings = {key: cfg[key] for key in STILL_SETTINGS}
    if image["init_image"] is not None:
        settings["strength"] = cfg["strength"]
        if cfg["use_mask"]:
            settings.update({key: cfg[key] for key in MASK_SETTINGS})
    return {"prompt": image["prompt"], "negative_prompt": image["negative_prompt"], "seed": image["seed"],
            "settings": settings}


def steps_run(cfg: Mapping) -> int:
    """Denoising steps each image runs (one per save_sample_per_step file): all of them from noise, the
    notebook's int((1 - strength) * steps) from an init image."""
    return denoise_steps(cfg["strength"], cfg["steps"]) if cfg["use_init"] else cfg["steps"]


def prompt_images(images: Sequence[Mapping]) -> dict[int, list[int]]:
    """{prompt index: the numbers of its images}: what each prompt's grid shows."""
    grids: dict[int, list[int]] = {}
    for k, image in enumerate(images):
        grids.setdefault(image["prompt_index"], []).append(k)
    return grids


def render(params: Mapping, model_cfg: Mapping, init: np.ndarray | None = None, mask: np.ndarray | None = None,
           on_step: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """The image of `params` (job_params) on the process-wide model of `model_cfg`: txt2img, or img2img from
    `init` (RGB uint8, W x H) at strength; with `mask` (float (H, W), 1 = keep the init) only the rest is
    diffused, and with overlay_mask the init is pasted back through it. `on_step(i, image)` receives the
    decoded latent after each step run. Returns RGB uint8 (H, W, 3)."""
    from . import diffusion, models  # torch and diffusers: only in jobs that diffuse

    pipe = models.get_pipeline(model_cfg)
    settings = params["settings"]
    init_latent = None if init is None else diffusion.encode_image(pipe, init)
    callback = None if on_step is None else lambda i, n, latent: on_step(i, diffusion.decode_latent(pipe, latent))
    latent = diffusion.denoise(
        pipe, init_latent, prompt=params["prompt"], negative_prompt=params["negative_prompt"],
        steps=settings["steps"], strength=settings.get("strength", 0.0), cfg_scale=settings["scale"],
        sampler=settings["sampler"], seed=params["seed"], width=settings["W"], height=settings["H"],
        ddim_eta=settings["ddim_eta"], use_karras_sigmas=settings["use_karras_sigmas"],
        prompt_weighting=settings["prompt_weighting"], normalize_prompt_weights=settings["normalize_prompt_weights"],
        mask=None if mask is None else latent_mask(mask, tuple(init_latent.shape[-2:])), callback=callback)
    image = diffusion.decode_latent(pipe, latent)
    return overlay(image, init, mask) if mask is not None and settings["overlay_mask"] else image


def make_grid(images: Sequence[np.ndarray], rows: int, padding: int = GRID_PADDING) -> np.ndarray:
    """Equal-sized RGB images left to right, top to bottom, ceil(len / rows) to a row, `padding` black pixels
    around and between (torchvision's make_grid layout); one image comes back as it is, as there."""
    if len(images) == 1:
        return images[0]
    h, w, channels = images[0].shape
    cols = math.ceil(len(images) / rows)
    grid = np.zeros((math.ceil(len(images) / cols) * (h + padding) + padding, cols * (w + padding) + padding,
                     channels), dtype=np.uint8)
    for k, image in enumerate(images):
        top, left = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        grid[top:top + h, left:left + w] = image
    return grid


def write_table(images: Sequence[Mapping], path: str | os.PathLike) -> None:
    """images/images.csv, the None mode's record: one row per image file with its prompt index, batch item,
    init image, seed, prompt and negative prompt."""
    table = pd.DataFrame(list(images), columns=["prompt_index", "batch_index", "init_image", "seed", "prompt",
                                                "negative_prompt"])
    table.insert(0, "image", [f"{k:05d}.png" for k in range(len(table))])
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
