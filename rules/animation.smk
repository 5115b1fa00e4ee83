"""2D/3D animation: one job per frame. Frame i is frame i-1 warped by row i's motion, conditioned (colour,
contrast, anti-blur, noise), encoded to an init latent (kept in latents/) and re-diffused. Each job's params
are its own schedule row plus the settings that change a frame, so an edit at frame k reruns k.. only."""
from deforum_steps.frames import FIRST_FRAME_SETTINGS, frame_settings

FRAMES = f"{OUT}/frames"
FRAME_PNG = FRAMES + "/{i}.png"
SETTINGS = frame_settings(config)


def frame_path(i):
    return f"{FRAMES}/{int(i):05d}.png"


def colour_reference():
    """The image every frame's colours are matched to: frame 0, or the configured image."""
    if config["color_coherence"] == "None":
        return []
    if config["color_coherence"] == "Image":
        return [config["color_coherence_image_path"]]
    return [frame_path(0)]


def first_frame_inputs(wildcards):
    return [config["init_image"]] if config["use_init"] else []


rule first_frame:
    input:
        init=first_frame_inputs,
    output:
        image=frame_path(0),
    params:
        frame={"row": frame_params(0), "settings": SETTINGS, "first": frame_settings(config, FIRST_FRAME_SETTINGS)},
    run:
        from deforum_steps import frames, io

        p = params.frame
        row, settings = p["row"], p["settings"]
        init_latent = None
        if p["first"]["use_init"]:
            init = io.read_image(input.init[0], size=(settings["W"], settings["H"]))
            init_latent = frames.encode(init, config)
            row = {**row, "strength": p["first"]["strength"]}
        _, image = frames.diffuse(init_latent, row, settings, config)
        io.write_image(output.image, image)


rule frame:
    input:
        previous=lambda wc: frame_path(int(wc.i) - 1),
        reference=colour_reference(),
    output:
        latent=f"{OUT}/latents/{{i}}.safetensors",
        image=FRAME_PNG,
    wildcard_constraints:
        i=r"(?!00000)\d{5}",
    params:
        frame=lambda wc: {"row": frame_params(wc.i), "settings": SETTINGS},
    run:
        from deforum_steps import diffusion, frames, io

        row, settings = params.frame["row"], params.frame["settings"]
        reference = io.read_image(input.reference[0], size=(settings["W"], settings["H"])) if input.reference else None
        warped = frames.warp(io.read_image(input.previous), row, settings)
        init = frames.condition(warped, row, settings, reference)
        init_latent = frames.encode(init, config)
        diffusion.save_latent(output.latent, init_latent)
        _, image = frames.diffuse(init_latent, row, settings, config)
        io.write_image(output.image, image)


if config["animation_mode"] in ("2D", "3D"):
    FINAL_FRAMES[config["animation_mode"]] = [frame_path(i) for i in range(config["max_frames"])]
    MODE_TARGETS[config["animation_mode"]].extend(video_targets(final_frames()))
