"""2D/3D animation. With diffusion_cadence c, frames 0, c, 2c, ... are diffused: rule first_frame (frame 0) and
rule frame (d >= c: diffusion d - c warped through the keys of frames d-c+1..d (cadence.init_plan), conditioned
(colour, contrast, anti-blur, noise), encoded to an init latent kept in latents/, re-diffused). With c = 1 the
diffusion is the frame (frames/); with c > 1 diffusions go to diffused/ and rule blend makes every frame
< max_frames from the one or two diffusions cadence.tween_plan names, each warped forward, cross-faded.
3D warps read depth maps from rules/depth.smk. Each job's params are its own row, the motion keys of the
frames its warps apply and the settings that change it, so an edit at frame k reruns from k on only."""
from deforum_steps import masks
from deforum_steps.cadence import init_plan, tween_plan
from deforum_steps.frames import (FIRST_FRAME_SETTINGS, WARP_SETTINGS, depth_frames, frame_settings,
                                  motion_row)

ANIMATED = config["animation_mode"] in ("2D", "3D")
CADENCE = config["diffusion_cadence"] if ANIMATED else 1
N_FRAMES = config["max_frames"]
FRAMES = f"{OUT}/frames"
DIFFUSED = FRAMES if CADENCE == 1 else f"{OUT}/diffused"
SETTINGS = frame_settings(config)
# With use_mask, how the mask file becomes a mask changes every masked diffusion.
MASK_PARAMS = frame_settings(config, masks.MASK_SETTINGS) if config["use_mask"] else {}
# 3D warps read depth maps; 2D ones, and 3D without use_depth_warping (a flat scene), none.
USE_DEPTH = config["animation_mode"] == "3D" and config["use_depth_warping"]


def frame_path(i):
    return f"{FRAMES}/{int(i):05d}.png"


def diffused_path(d):
    return f"{DIFFUSED}/{int(d):05d}.png"


def depth_path(s):
    return f"{OUT}/depth/{int(s):05d}.npy"


def depth_inputs(*sources):
    """The depth map files the warps of these plan sources read."""
    return [depth_path(s) for s in depth_frames(*sources)] if USE_DEPTH else []


def motion_rows(*sources):
    """{frame: its motion keys} for every warp of these plan sources: a warp job's share of the schedule."""
    return {t: motion_row(frame_params(t), config["animation_mode"]) for src in sources if src for t in src["warps"]}


def colour_reference():
    """The image every diffusion's colours are matched to: frame 0 (= diffusion 0), or the configured image."""
    if config["color_coherence"] == "None":
        return []
    if config["color_coherence"] == "Image":
        return [config["color_coherence_image_path"]]
    return [diffused_path(0)]


def mask_input():
    return [config["mask_file"]] if config["use_mask"] else []


def first_frame_inputs(wildcards):
    return {"init": masks.init_images(config)[:1], "mask": mask_input()}


# The frame rules exist only in 2D/3D: other modes write frames/ with rules of their own.
if ANIMATED:

    include: "depth.smk"


    rule first_frame:
        input:
            unpack(first_frame_inputs),
        output:
            image=diffused_path(0),
        params:
            frame={"row": frame_params(0), "settings": SETTINGS, "first": frame_settings(config, FIRST_FRAME_SETTINGS)},
        run:
            from deforum_steps import frames, io

            p = params.frame
            row, settings = p["row"], p["settings"]
            if input.init:  # use_init: img2img from the init image at `strength`, masked with use_mask
                init = io.read_image(input.init[0], size=(settings["W"], settings["H"]))
                row = {**row, "strength": p["first"]["strength"]}
                mask_file = input.mask[0] if input.mask else None
                image = masks.masked_img2img(init, mask_file, row, {**settings, **MASK_PARAMS}, config)
            else:
                _, image = frames.diffuse(None, row, settings, config)
            io.write_image(output.image, image)


    # One input and one params function per rule: Snakemake inspects a function's signature at every call,
    # thousands of times while it plans a long render.
    def diffusion_inputs(wildcards):
        plan = init_plan(int(wildcards.i), CADENCE)
        return {"previous": diffused_path(plan["diffused_at"]), "depth": depth_inputs(plan),
                "reference": colour_reference(), "mask": mask_input()}


    def diffusion_params(wildcards):
        d = int(wildcards.i)
        plan = init_plan(d, CADENCE)
        return {"row": frame_params(d), "init": plan, "motion": motion_rows(plan), "settings": SETTINGS,
                "mask": MASK_PARAMS}


    # A diffusion d >= c (frames/ when c = 1, else diffused/).
    rule frame:
        input:
            unpack(diffusion_inputs),
        output:
            latent=f"{OUT}/latents/{{i}}.safetensors",
            image=DIFFUSED + "/{i}.png",
        wildcard_constraints:
            i=r"(?!00000)\d{5}",
        params:
            frame=diffusion_params,
        run:
            import numpy as np

            from deforum_steps import diffusion, frames, io

            p = params.frame
            row, settings = p["row"], p["settings"]
            reference = io.read_image(input.reference[0], size=(settings["W"], settings["H"])) if input.reference else None
            depths = dict(zip(frames.depth_frames(p["init"]), map(np.load, input.depth))) if input.depth else None
            warped = frames.warp_source(io.read_image(input.previous), p["init"], p["motion"], settings, depths)
            init = frames.condition(warped, row, settings, reference)
            init_latent = frames.encode(init, config)
            diffusion.save_latent(output.latent, init_latent)
            if input.mask:  # use_mask: the mask's white areas keep the warped init
                mask = masks.load_mask(input.mask[0], (settings["W"], settings["H"]), **masks.mask_args(p["mask"]))
                _, image = frames.diffuse(init_latent, row, settings, config,
                                          mask=masks.latent_mask(mask, init_latent.shape[-2:]))
                if p["mask"]["overlay_mask"]:
                    image = masks.overlay(image, init, mask)
            else:
                _, image = frames.diffuse(init_latent, row, settings, config)
            io.write_image(output.image, image)


    if CADENCE > 1:

        BLEND_SETTINGS = frame_settings(config, WARP_SETTINGS[config["animation_mode"]])

        def blend_inputs(wildcards):
            plan = tween_plan(int(wildcards.i), N_FRAMES, CADENCE)
            sources = [src for src in (plan["prev"], plan["next"]) if src]
            return {"diffused": [diffused_path(src["diffused_at"]) for src in sources], "depth": depth_inputs(*sources)}

        def blend_params(wildcards):
            plan = tween_plan(int(wildcards.i), N_FRAMES, CADENCE)
            return {"plan": plan, "motion": motion_rows(plan["prev"], plan["next"]), "settings": BLEND_SETTINGS}

        # Every output frame: its diffused images (next, and prev unless next has full weight) warped and mixed.
        rule blend:
            input:
                unpack(blend_inputs),
            output:
                image=FRAMES + "/{i}.png",
            params:
                blend=blend_params,
            run:
                import numpy as np

                from deforum_steps import frames, io

                plan = params.blend["plan"]
                sources = [src for src in (plan["prev"], plan["next"]) if src]
                diffused = {src["diffused_at"]: io.read_image(path) for src, path in zip(sources, input.diffused)}
                depths = dict(zip(frames.depth_frames(*sources), map(np.load, input.depth))) if input.depth else None
                image = frames.tween_frame(diffused, plan, params.blend["motion"], params.blend["settings"], depths)
                io.write_image(output.image, image)


    FINAL_FRAMES[config["animation_mode"]] = [frame_path(i) for i in range(N_FRAMES)]
    MODE_TARGETS[config["animation_mode"]].extend(video_targets(final_frames()))
