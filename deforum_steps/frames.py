"""One animation frame's steps, composed from the stage modules: warp the previous image by this frame's
motion, pull its colours back to the reference, contrast, anti-blur, noise; then img2img with this frame's
strength, prompt, seed, cfg and sampler. `row` is the frame's schedule row (schedules.build_table) and
`settings` the global keys that change a frame (frame_settings).

With diffusion cadence, the warp chains of `cadence.tween_plan` / `cadence.init_plan` (which keys apply to
which diffused image) and the blend of the two warped images are the pure functions `warp_source` and
`tween_frame`. Their 3D depth comes from per-frame depth maps, numbered as the files depth/%05d.npy:

    depth map s = depth predicted on diffusion d = s - s % cadence warped through frames d+1 .. s
                  (the newer of the two images a tween frame s blends; with cadence 1, frame s itself).

The reference loop predicts depth once per tween step t, on the `next` image as it stands before step t, and
warps both images with it; the init of diffusion d predicts it on the image being warped (the last tween,
diffusion d - c warped up to d - 1). In these numbers: the warp into frame t reads map t - 1, except the
older image's warp into a diffusion frame t, which reads map t (diffusion t itself) — `depth_frame`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import colour, motion2d
from .cadence import blend, diffusion_frames, init_plan, tween_plan

# Config keys besides the schedule row that change what a frame job writes. A per-frame job's params hold
# exactly these, so editing anything else (fps, crf, prompts of other frames...) never reruns the frame.
# The depth keys are not among them: 3D warps read depth maps, the files of the depth stage.
FRAME_SETTINGS = (
    "animation_mode", "W", "H", "border", "flip_2d_perspective",
    "color_coherence", "color_force_grayscale",
    "noise_type", "perlin_w", "perlin_h", "perlin_octaves", "perlin_persistence", "padding_mode", "sampling_mode",
    "model", "model_config", "map_location", "dtype",
    "ddim_eta", "use_karras_sigmas", "prompt_weighting", "normalize_prompt_weights",
)
# Keys that change only the first frame (its init image).
FIRST_FRAME_SETTINGS = ("use_init", "init_image", "strength", "strength_0_no_init")
# Keys that change a warp chain, per mode: what a blend job depends on besides its images and rows.
WARP_SETTINGS = {"2D": ("animation_mode", "border", "flip_2d_perspective"),
                 "3D": ("animation_mode", "padding_mode", "sampling_mode")}
# ... and a depth map, besides its warp chain.
DEPTH_SETTINGS = ("depth_algorithm", "depth_model_path", "midas_weight", "map_location")
# The schedule columns `warp` reads, per mode: a warp chain's params hold only these of each frame's row, so
# an edited prompt or strength never reruns a blend or a depth map.
MOTION_KEYS = {
    "2D": ("angle", "zoom", "translation_x", "translation_y", "transform_center_x", "transform_center_y",
           "perspective_flip_theta", "perspective_flip_phi", "perspective_flip_gamma", "perspective_flip_fv"),
    "3D": ("translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z",
           "fov", "near", "far"),
}


def frame_settings(cfg: Mapping, keys=FRAME_SETTINGS) -> dict:
    return {key: cfg[key] for key in keys}


def motion_row(row: Mapping, mode: str) -> dict:
    return {key: row[key] for key in MOTION_KEYS[mode]}


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
    from . import noise  # imports torch: the workflow imports this module to plan, which needs none of it

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


def depth_frame(step: int, depth_of: int) -> int:
    """The depth map (see the module doc) a warp step reads, from the plan's `depth_of` for that step: the
    image diffusion `depth_of` warped up to step - 1, or diffusion `depth_of` itself when that is step."""
    return max(depth_of, step - 1)


def depth_frames(*sources: Mapping | None) -> list[int]:
    """The depth maps the warps of plan sources (`{diffused_at, warps, depth_of}`, None skipped) read."""
    return sorted({depth_frame(t, k) for src in sources if src for t, k in zip(src["warps"], src["depth_of"])})


def depth_frames_used(n_frames: int, cadence: int) -> list[int]:
    """Every depth map a render of `n_frames` frames reads: its tween frames' and its diffusions' inits."""
    used = set()
    for i in range(n_frames):
        plan = tween_plan(i, n_frames, cadence)
        used.update(depth_frames(plan["prev"], plan["next"]))
    for d in diffusion_frames(n_frames, cadence)[1:]:
        used.update(depth_frames(init_plan(d, cadence)))
    return sorted(used)


def warp_source(image: np.ndarray, source: Mapping, rows: Mapping[int, Mapping], settings: Mapping,
                depths: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """A diffused image warped through a plan source (`cadence.init_plan`, or a side of `cadence.tween_plan`):
    one `warp` per frame of `source["warps"]` with `rows[frame]`'s keys, in 3D with the depth map
    `depths[depth_frame(...)]` (depths None: 2D, or a flat scene)."""
    for step, of in zip(source["warps"], source["depth_of"]):
        image = warp(image, rows[step], settings, None if depths is None else depths[depth_frame(step, of)])
    return image


def tween_frame(diffused: Mapping[int, np.ndarray], plan: Mapping, rows: Mapping[int, Mapping],
                settings: Mapping, depths: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Output frame `plan["frame"]` (`cadence.tween_plan`): its one or two diffused images (`diffused` by
    frame) each warped through its source, then cross-faded with the plan's weights."""
    def warped(source):
        return None if source is None else warp_source(diffused[source["diffused_at"]], source, rows, settings, depths)

    return blend(warped(plan["prev"]), warped(plan["next"]), plan["prev_weight"], plan["next_weight"])
