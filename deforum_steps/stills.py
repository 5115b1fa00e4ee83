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
from collections.abc import Mapping, Sequence

import numpy as np

from . import cpu_threads, io, preview
from .config import ConfigError
from .dependencies import MASK_SETTINGS, STILL_SETTINGS, diffusion_settings, pick
from .keyframes import prompts_per_frame, seed_sequence
from .masks import init_images, overlay, read_mask
from .samplers import denoise_steps

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
    STILL_SETTINGS, and with an init its strength (and the mask settings with use_mask), so an edit elsewhere
    (another prompt, n_batch, make_grid, fps...) never reruns it."""
    settings = diffusion_settings(cfg, STILL_SETTINGS)
    if image["init_image"] is not None:
        settings["strength"] = cfg["strength"]
        if cfg["use_mask"]:
            settings.update(pick(cfg, MASK_SETTINGS))
    return {"prompt": image["prompt"], "negative_prompt": image["negative_prompt"], "seed": image["seed"],
            "settings": settings}


def steps_run(cfg: Mapping) -> int:
    """Denoising steps each image runs (one per save_sample_per_step file): all of them from noise, the
    notebook's int((1 - strength) * steps) from an init image."""
    return denoise_steps(cfg["strength"], cfg["steps"], cfg["use_init"])


def prompt_images(images: Sequence[Mapping]) -> dict[int, list[int]]:
    """{prompt index: the numbers of its images}: what each prompt's grid shows."""
    grids: dict[int, list[int]] = {}
    for k, image in enumerate(images):
        grids.setdefault(image["prompt_index"], []).append(k)
    return grids


def render_image(*, init: Sequence[str], mask: Sequence[str], image: str, steps: Sequence[str], prompt: str,
                 negative_prompt: str, seed: int, settings: Mapping, threads: int) -> None:
    """Rule still, one image:
    1. read the init image at W x H, if any, and its mask;
    2. txt2img, or img2img from the init at `strength` (with a mask only its non-white areas; overlay_mask
       pastes the init back), writing the decoded latent of every step run to `steps` (save_sample_per_step);
    3. write the image."""
    from . import diffusion  # torch and diffusers: only in jobs that diffuse

    cpu_threads.limit(threads)
    start = io.read_image(init[0], size=(settings["W"], settings["H"])) if init else None
    pixel_mask = read_mask(mask[0], settings) if mask else None

    def save_step(i, n, latent):
        io.write_image(steps[i], diffusion.decode(latent, settings))

    _, result = diffusion.generate(
        None if start is None else diffusion.encode(start, settings), settings, prompt=prompt,
        negative_prompt=negative_prompt, seed=seed, steps=settings["steps"], cfg_scale=settings["scale"],
        sampler=settings["sampler"], strength=settings["strength"] if init else 0.0, mask=pixel_mask,
        callback=save_step if steps else None)
    if pixel_mask is not None and settings["overlay_mask"]:
        result = overlay(result, start, pixel_mask)
    io.write_image(image, result)
    preview.show_frame(image)


def write_grid(*, images: Sequence[str], grid: str, grid_rows: int) -> None:
    """Rule grid: one prompt's images side by side (make_grid), at most grid_rows rows."""
    io.write_image(grid, make_grid([io.read_image(path) for path in images], grid_rows))


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
    import pandas as pd  # here, not at the top: planning imports this module

    table = pd.DataFrame(list(images), columns=["prompt_index", "batch_index", "init_image", "seed", "prompt",
                                                "negative_prompt"])
    table.insert(0, "image", [f"{k:05d}.png" for k in range(len(table))])
    io.write_text(path, table.to_csv(index=False))
