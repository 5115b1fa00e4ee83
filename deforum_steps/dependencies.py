"""What each job depends on: the config keys and schedule columns its params hold.

A job reruns exactly when its params change, so these sets decide what an edit redoes: a key that changes a
job's output must be in its set (or the job would not rerun), and a key that does not must stay out (or every
edit would rerun everything). Per-frame jobs also hold their own schedule row (or the columns named here), so
an edit keyed at frame k reruns frames k.. only. Planning reads this module while the DAG is built: no torch.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .gradient_settings import GRADIENT_SETTINGS, enabled

# The model: what models.get_pipeline loads, with the switches that change its numbers (vae_tiling, compile_unet).
# check_sha256/model_sha256 and allow_download act when the workflow loads and change no image, so they are not here.
MODEL_SETTINGS = ("model", "model_config", "map_location", "dtype", "vae_tiling", "compile_unet")
# Every diffusion: the model, the image size and how prompts and the sampler are read (and, with gradient
# conditioning on, its keys: diffusion_settings).
DIFFUSION_SETTINGS = ("W", "H", *MODEL_SETTINGS, "ddim_eta", "use_karras_sigmas", "prompt_weighting",
                      "normalize_prompt_weights")
# The schedule columns a diffusion reads (schedules.build_table): prompts, seed, strength, steps, cfg, sampler.
DIFFUSION_COLUMNS = ("prompt", "negative_prompt", "seed_schedule", "strength_schedule", "steps_schedule",
                     "cfg_scale_schedule", "sampler_schedule")
# How a mask file becomes a mask (masks.load_mask) and whether the init is pasted back (overlay_mask).
MASK_SETTINGS = ("invert_mask", "mask_brightness_adjust", "mask_contrast_adjust", "overlay_mask")

# ---- 2D / 3D (rules/animation.smk, rules/depth.smk) ----------------------------------------------------
# A 2D/3D diffusion besides its row: the warp, color coherence and noise. The depth keys are not among them:
# 3D warps read depth maps, the files of the depth stage.
ANIMATION_SETTINGS = (*DIFFUSION_SETTINGS, "animation_mode", "border", "flip_2d_perspective", "padding_mode",
                      "sampling_mode", "color_coherence", "color_force_grayscale", "noise_type", "perlin_w",
                      "perlin_h", "perlin_octaves", "perlin_persistence")
# The columns animation.condition reads to prepare each 2D/3D init: contrast, anti-blur, noise.
CONDITION_COLUMNS = ("contrast_schedule", "kernel_schedule", "sigma_schedule", "amount_schedule",
                     "threshold_schedule", "noise_schedule")
# Frame 0 only: its init image (diffused at `strength`, not at strength_schedule).
FIRST_FRAME_SETTINGS = ("use_init", "init_image", "strength")
# A warp chain, per mode: what a blend job depends on besides its images and motion columns.
WARP_SETTINGS = {"2D": ("animation_mode", "border", "flip_2d_perspective"),
                 "3D": ("animation_mode", "padding_mode", "sampling_mode")}
# A depth map, besides its warp chain.
DEPTH_SETTINGS = ("depth_algorithm", "depth_model_path", "midas_weight", "map_location")
# The schedule columns a warp reads, per mode: a warp chain's params hold only these of each frame's row, so
# an edited prompt or strength never reruns a blend or a depth map.
MOTION_COLUMNS = {
    "2D": ("angle", "zoom", "translation_x", "translation_y", "transform_center_x", "transform_center_y",
           "perspective_flip_theta", "perspective_flip_phi", "perspective_flip_gamma", "perspective_flip_fv"),
    "3D": ("translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z",
           "fov_schedule", "near_schedule", "far_schedule"),
}

# ---- Video Input (rules/video_input.smk) ------------------------------------------------------------------
# Extracted frames: the video's content (fingerprinted when planned) and these.
EXTRACTION_SETTINGS = ("extract_nth_frame", "extract_from_frame", "extract_to_frame", "W", "H")

# ---- None (rules/stills.smk) ------------------------------------------------------------------------------
# Every still image besides its prompts and seed (+ `strength` from an init image, + MASK_SETTINGS with a mask).
STILL_SETTINGS = (*DIFFUSION_SETTINGS, "steps", "scale", "sampler")

# ---- Interpolation (rules/interpolation.smk) --------------------------------------------------------------
# The row columns an interpolation frame reads; its prompts come from its two key prompts.
INTERPOLATION_COLUMNS = ("seed_schedule", "steps_schedule", "cfg_scale_schedule", "sampler_schedule")

# ---- video (rules/video.smk) ------------------------------------------------------------------------------
VIDEO_SETTINGS = ("fps", "crf", "preset", "codec")


def pick(values: Mapping, keys: Iterable[str]) -> dict:
    """{key: values[key]} for `keys`, in that order: a job's share of the config or of a schedule row."""
    return {key: values[key] for key in keys}


def diffusion_settings(cfg: Mapping, keys: Iterable[str]) -> dict:
    """pick(cfg, keys) for a diffusing job, with gradient conditioning's keys (GRADIENT_SETTINGS) when a scale is not
    0: with every scale 0 none of them changes an image, so editing one reruns nothing."""
    return {**pick(cfg, keys), **(pick(cfg, GRADIENT_SETTINGS) if enabled(cfg) else {})}
