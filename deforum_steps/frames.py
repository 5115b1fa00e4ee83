"""One animation frame's steps, composed from the stage modules: warp the previous image by this frame's
motion, pull its colours back to the reference, contrast, anti-blur, noise; then img2img with this frame's
strength, prompt, seed, cfg and sampler. `row` is the frame's schedule row (schedules.build_table) and
`settings` the global keys that change a frame (frame_settings)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import colour, motion2d, noise

# Config keys besides the schedule row that change what a frame job writes. A per-frame job's params hold
# exactly these, so editing anything else (fps, crf, prompts of other frames...) never reruns the frame.
FRAME_SETTINGS = (
    "animation_mode", "W", "H", "border", "flip_2d_perspective",
    "color_coherence", "color_force_grayscale",
    "noise_type", "perlin_w", "perlin_h", "perlin_octaves", "perlin_persistence",
    "use_depth_warping", "depth_algorithm", "depth_model_path", "midas_weight", "padding_mode", "sampling_mode",
    "model", "model_config", "map_location", "dtype",
    "ddim_eta", "use_karras_sigmas", "prompt_weighting", "normalize_prompt_weights",
)
# Keys that change only the first frame (its init image).
FIRST_FRAME_SETTINGS = ("use_init", "init_image", "strength", "strength_0_no_init")


def frame_settings(cfg: Mapping, keys=FRAME_SETTINGS) -> dict:
    return {key: cfg[key] for key in keys}


def warp(image: np.ndarray, row: Mapping, settings: Mapping, depth: np.ndarray | None = None) -> np.ndarray:
    """Move `image` by one frame of camera motion (`row`'s keys): 2D, or 3D through `depth`."""
    if settings["animation_mode"] == "3D":
        from .motion3d import warp_3d  # torch-heavy; 2D renders never need it

        return warp_3d(image, depth, translation_x=row["translation_x"], translation_y=row["translation_y"],
                       translation_z=row["translation_z"], rotation_3d_x=row["rotation_3d_x"],
                       rotation_3d_y=row["rotation_3d_y"], rotation_3d_z=row["rotation_3d_z"],
                       fov=row["fov"], near=row["near"], far=row["far"],
                       padding_mode=settings["padding_mode"], sampling_mode=settings["sampling_mode"])
    return motion2d.warp_2d(
        image, angle=row["angle"], zoom=row["zoom"], translation_x=row["translation_x"],
        translation_y=row["translation_y"], transform_center_x=row["transform_center_x"],
        transform_center_y=row["transform_center_y"], flip_perspective=settings["flip_2d_perspective"],
        theta=row["perspective_flip_theta"], phi=row["perspective_flip_phi"],
        gamma=row["perspective_flip_gamma"], fv=row["perspective_flip_fv"], border=settings["border"])


def condition(warped: np.ndarray, row: Mapping, settings: Mapping, colour_reference: np.ndarray | None,
              noise_mask: np.ndarray | None = None) -> np.ndarray:
    """The warped image made ready for img2img: colour coherence to the reference, grayscale, contrast,
    anti-blur, then noise seeded by the frame's seed (so a rerun draws the same noise)."""
    image = warped
    if colour_reference is not None and colour.colour_mode(settings["color_coherence"]) != "None":
        image = colour.match_colors(image, colour_reference, settings["color_coherence"])
    if settings["color_force_grayscale"]:
        image = colour.to_grayscale(image)
    image = colour.apply_contrast(image, row["contrast"])
    image = colour.unsharp_mask(image, row["kernel"], row["sigma"], row["amount"], row["threshold"])
    return noise.add_noise(image, row["noise"], row["seed"], noise_type=settings["noise_type"],
                           perlin_w=settings["perlin_w"], perlin_h=settings["perlin_h"],
                           perlin_octaves=settings["perlin_octaves"],
                           perlin_persistence=settings["perlin_persistence"], mask=noise_mask)


def diffuse(init_latent, row: Mapping, settings: Mapping, model_cfg: Mapping, mask: np.ndarray | None = None):
    """img2img (txt2img when `init_latent` is None) with the frame's prompt, seed, cfg, sampler and strength,
    on the process-wide model of `model_cfg`. Returns (latent, RGB uint8 image)."""
    from . import diffusion, models  # loads torch/diffusers only in jobs that diffuse

    pipe = models.get_pipeline(model_cfg)
    latent = diffusion.denoise(
        pipe, init_latent, prompt=row["prompt"], negative_prompt=row["negative_prompt"], steps=row["steps"],
        strength=row["strength"], cfg_scale=row["cfg_scale"], sampler=row["sampler"], seed=row["seed"],
        width=settings["W"], height=settings["H"], ddim_eta=settings["ddim_eta"],
        use_karras_sigmas=settings["use_karras_sigmas"], prompt_weighting=settings["prompt_weighting"],
        normalize_prompt_weights=settings["normalize_prompt_weights"], mask=mask)
    return latent, diffusion.decode_latent(pipe, latent)


def encode(image: np.ndarray, model_cfg: Mapping):
    from . import diffusion, models

    return diffusion.encode_image(models.get_pipeline(model_cfg), image)
