"""2D/3D animation (rules/animation.smk): the job functions of its rules, first_frame, diffusion_frame and
blend_frame, each a numbered recipe, and the steps they compose: warp the previous image by each frame's motion,
pull its colors back to the reference, contrast, anti-blur, noise; then img2img with the frame's row.

`row` is a frame's schedule row (schedules.build_table: columns named after their config keys) and `settings`
the config keys the job depends on (dependencies.ANIMATION_SETTINGS and friends).

With diffusion cadence, the warp chains of `cadence.tween_plan` / `cadence.init_plan` (which keys apply to
which diffused image) and the blend of the two warped images are the pure functions `warp_source` and
`tween_frame`. Their 3D depth comes from per-frame depth maps, numbered as the files depth/%05d.npy:

    depth map s = depth predicted on diffusion d = s - s % cadence warped through frames d+1 .. s
                  (the newer of the two images a tween frame s blends; with cadence 1, frame s itself).

The reference loop predicts depth once per tween step t, on the `next` image as it stands before step t, and
warps both images with it; the init of diffusion d predicts it on the image being warped (the last tween,
diffusion d - c warped up to d - 1). In these numbers: the warp into frame t reads map t - 1, except the
older image's warp into a diffusion frame t, which reads map t (diffusion t itself) — `depth_frame`.

With cadence > 1 the image map s is predicted on is the newer image tween frame s blends, which the blend job of
frame s warps anyway: that job predicts and writes map s (`blend_frame`). With cadence 1 map s is frame s's
depth, a job of its own (rules/depth.smk).

Jobs with cadence > 1 start a chain that runs past the last frame d - 1 of an interval from that frame's file
(`cadence.resumed`): frame d - 1 is diffusion d - c warped up to d - 1 alone (weight 1), so the init of diffusion
d is frame d - 1 warped once, and the older image of frames d .. d+c-2 is frame d - 1 warped on. The pixels are
the chains'; each job reads one frame and the depth maps of its remaining steps, not the whole chain's.

Planning imports this module: torch, diffusers and the 3D warp are imported inside the functions that run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import color, cpu_threads, io, motion2d, preview
from .cadence import blend, diffusion_frames, init_plan, start, tween_plan
from .masks import read_mask

# ---- jobs ------------------------------------------------------------------------------------------------


def first_frame(*, init: Sequence[str], mask: Sequence[str], image: str, row: Mapping, settings: Mapping,
                threads: int) -> None:
    """Rule first_frame, diffusion 0:
    1. without use_init: txt2img with the row's prompts, seed, steps, cfg and sampler;
    2. with use_init: img2img from the init image at `strength` (masked with use_mask: white keeps the init);
    3. write the image."""
    from . import diffusion  # torch, diffusers: only in jobs that diffuse

    cpu_threads.limit(threads)
    if init:
        start = io.read_image(init[0], size=(settings["W"], settings["H"]))
        result = diffusion.img2img(start, row, settings, strength=settings["strength"],
                                   mask=read_mask(mask[0], settings) if mask else None)
    else:
        _, result = diffusion.generate(None, settings, **diffusion.row_arguments(row))
    io.write_image(image, result)
    preview.show_frame(image)


def diffusion_frame(*, previous: str, depth: Sequence[str], reference: Sequence[str], mask: Sequence[str],
                    latent: str, image: str, row: Mapping, plan: Mapping, motion: Mapping[int, Mapping],
                    settings: Mapping, threads: int) -> None:
    """Rule frame, a diffusion d >= cadence (`plan`: cadence.init_job_plan):
    1. warp the previous image (`previous`: diffusion d - 1 with cadence 1, else frame d - 1, the previous
       diffusion warped through frames d-c+1..d-1) by the motion of frame d (3D: with depth map d - 1);
    2. condition it: color coherence to the reference, grayscale, contrast, anti-blur, noise;
    3. encode the init latent and keep it in latents/;
    4. img2img at the frame's strength_schedule (use_mask: white keeps the conditioned init);
    5. write the image."""
    from . import diffusion

    cpu_threads.limit(threads)
    size = (settings["W"], settings["H"])
    depths = dict(zip(depth_frames(plan), map(np.load, depth))) if depth else None
    warped = warp_source(io.read_shared_image(previous), plan, motion, settings, depths)
    color_reference = io.read_shared_image(reference[0], size=size) if reference else None
    init = condition(warped, row, settings, color_reference)
    init_latent = diffusion.encode(init, settings)
    diffusion.save_latent(latent, init_latent)
    result = diffusion.img2img(init, row, settings, strength=row["strength_schedule"], init_latent=init_latent,
                               mask=read_mask(mask[0], settings) if mask else None)
    io.write_image(image, result)
    preview.show_frame(image)


def blend_frame(*, sources: Sequence[str], depth: Sequence[str], image: str, plan: Mapping,
                motion: Mapping[int, Mapping], settings: Mapping, threads: int, depth_map: str | None = None) -> None:
    """Rule blend, an output frame i with cadence > 1 (`plan`: cadence.blend_job_plan):
    1. read the one or two images its warp chains start from (`sources`: the older chain's resumed from the last
       frame of the interval before, the newer's from its diffusion) and the 3D depth maps blend_depth_frames names;
    2. warp the newer image forward to frame i;
    3. 3D with depth warping (`depth_map` given): predict map i on that image and save it;
    4. warp the older image forward to frame i too (its warp into a diffusion frame i reads map i), cross-fade
       them (tween_frame) and write the image."""
    from . import depth as depth_stage

    cpu_threads.limit(threads)
    chains = [src for src in (plan["prev"], plan["next"]) if src]
    images = {start(src): io.read_shared_image(path) for src, path in zip(chains, sources)}
    depths = dict(zip(blend_depth_frames(plan), map(np.load, depth))) if depth_map else None
    newer = warp_source(images[start(plan["next"])], plan["next"], motion, settings, depths)
    if depth_map:
        depths[plan["frame"]] = depth_stage.predict(newer, settings)
        io.save_array(depth_map, depths[plan["frame"]])
    io.write_image(image, tween_frame(images, plan, motion, settings, depths, newer=newer))
    preview.show_frame(image)


# ---- steps -----------------------------------------------------------------------------------------------


def warp(image: np.ndarray, row: Mapping, settings: Mapping, depth: np.ndarray | None = None) -> np.ndarray:
    """Move `image` by one frame of camera motion (`row`'s keys): 2D, or 3D through `depth`."""
    if settings["animation_mode"] == "3D":
        from .motion3d import warp_3d  # torch-heavy; 2D renders never need it

        return warp_3d(image, depth, translation_x=row["translation_x"], translation_y=row["translation_y"],
                       translation_z=row["translation_z"], rotation_3d_x=row["rotation_3d_x"],
                       rotation_3d_y=row["rotation_3d_y"], rotation_3d_z=row["rotation_3d_z"],
                       fov=row["fov_schedule"], near=row["near_schedule"], far=row["far_schedule"],
                       padding_mode=settings["padding_mode"], sampling_mode=settings["sampling_mode"])
    return motion2d.warp_2d(
        image, angle=row["angle"], zoom=row["zoom"], translation_x=row["translation_x"],
        translation_y=row["translation_y"], transform_center_x=row["transform_center_x"],
        transform_center_y=row["transform_center_y"], flip_perspective=settings["flip_2d_perspective"],
        theta=row["perspective_flip_theta"], phi=row["perspective_flip_phi"],
        gamma=row["perspective_flip_gamma"], fv=row["perspective_flip_fv"], border=settings["border"])


def condition(warped: np.ndarray, row: Mapping, settings: Mapping, color_reference: np.ndarray | None,
              noise_mask: np.ndarray | None = None) -> np.ndarray:
    """The warped image made ready for img2img: color coherence to the reference, grayscale, contrast,
    anti-blur, then noise seeded by the frame's seed (so a rerun draws the same noise)."""
    from . import noise  # imports torch: the workflow imports this module to plan, which needs none of it

    image = warped
    if color_reference is not None and color.color_mode(settings["color_coherence"]) != "None":
        image = color.match_colors(image, color_reference, settings["color_coherence"])
    if settings["color_force_grayscale"]:
        image = color.to_grayscale(image)
    image = color.apply_contrast(image, row["contrast_schedule"])
    image = color.unsharp_mask(image, row["kernel_schedule"], row["sigma_schedule"], row["amount_schedule"],
                               row["threshold_schedule"])
    return noise.add_noise(image, row["noise_schedule"], row["seed_schedule"], noise_type=settings["noise_type"],
                           perlin_w=settings["perlin_w"], perlin_h=settings["perlin_h"],
                           perlin_octaves=settings["perlin_octaves"],
                           perlin_persistence=settings["perlin_persistence"], mask=noise_mask)


def depth_frame(step: int, depth_of: int) -> int:
    """The depth map (see the module doc) a warp step reads, from the plan's `depth_of` for that step: the
    image diffusion `depth_of` warped up to step - 1, or diffusion `depth_of` itself when that is step."""
    return max(depth_of, step - 1)


def depth_frames(*sources: Mapping | None) -> list[int]:
    """The depth maps the warps of plan sources (`{diffused_at or frame_at, warps, depth_of}`, None skipped) read."""
    return sorted({depth_frame(t, k) for src in sources if src for t, k in zip(src["warps"], src["depth_of"])})


def blend_depth_frames(plan: Mapping) -> list[int]:
    """The depth map files blend job `plan["frame"]` (`cadence.blend_job_plan`) reads: its warps' maps but its own,
    which it predicts (blend_frame)."""
    return [s for s in depth_frames(plan["prev"], plan["next"]) if s != plan["frame"]]


def depth_maps_written(n_frames: int, cadence: int) -> list[int]:
    """The depth maps a render writes: with cadence > 1 every frame's (its blend job's), with cadence 1 those the
    warps read (each a depth job)."""
    return list(range(n_frames)) if cadence > 1 else depth_frames_used(n_frames, cadence)


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
    """An image warped through a plan source (`cadence.init_plan`, a side of `cadence.tween_plan`, or one of their
    job plans' resumed chains), the image it starts from (`cadence.start`):
    one `warp` per frame of `source["warps"]` with `rows[frame]`'s keys, in 3D with the depth map
    `depths[depth_frame(...)]` (depths None: 2D, or a flat scene)."""
    for step, of in zip(source["warps"], source["depth_of"]):
        image = warp(image, rows[step], settings, None if depths is None else depths[depth_frame(step, of)])
    return image


def tween_frame(images: Mapping[int, np.ndarray], plan: Mapping, rows: Mapping[int, Mapping],
                settings: Mapping, depths: Mapping[int, np.ndarray] | None = None,
                newer: np.ndarray | None = None) -> np.ndarray:
    """Output frame `plan["frame"]` (`cadence.tween_plan` or its job plan): the images its one or two sources start
    from (`images` by `cadence.start`: the diffused images by frame for tween_plan) each warped through its source,
    then cross-faded with the plan's weights. `newer`: the newer image already warped (blend_frame predicts a depth
    map on it first)."""
    def warped(source):
        return None if source is None else warp_source(images[start(source)], source, rows, settings, depths)

    newer = warped(plan["next"]) if newer is None else newer
    return blend(warped(plan["prev"]), newer, plan["prev_weight"], plan["next_weight"])
