"""2D/3D animation (job functions: deforum_steps/animation.py). With diffusion_cadence c, frames 0, c, 2c, ...
are diffused: rule first_frame (frame 0) and rule frame (d >= c: diffusion d - c warped through the motion of
frames d-c+1..d (cadence.init_plan), conditioned (color, contrast, anti-blur, noise), encoded to an init latent
kept in latents/, re-diffused). With c = 1 the diffusion is the frame (frames/); with c > 1 diffusions go to
diffused/ and rule blend makes every frame < max_frames from the one or two diffusions cadence.tween_plan names,
each warped forward, cross-faded. A chain past frame d - 1 starts from that frame's file, which is diffusion
d - c warped up to d - 1 (cadence.resumed): diffusion d reads frame d - 1, and so do the blends of frames
d .. d+c-2, beside diffusion d. 3D warps read depth maps: with c > 1 each blend job predicts its frame's on
the newer image it warps (deforum_steps/animation.py), with c = 1 rules/depth.smk makes them. Each job's params
are its own row, the motion columns of the frames its warps apply and the settings that change it
(deforum_steps/dependencies.py), so an edit at frame k reruns from k on only. Inputs and params: rules/common.smk."""

from deforum_steps import animation


rule first_frame:
    input:
        unpack(first_frame_inputs),
    output:
        image=diffused_path(0),
    threads: MODEL_THREADS
    resources:
        **FRAME_RESOURCES,
    params:
        frame=first_frame_params,
    run:
        animation.first_frame(**input, **output, **params.frame, threads=threads)


# A diffusion d >= c (frames/ when c = 1, else diffused/).
rule frame:
    input:
        unpack(diffusion_inputs),
    output:
        latent=f"{OUT}/latents/{{i}}.safetensors",
        image=f"{DIFFUSED}/{{i}}.png",
    wildcard_constraints:
        i=r"(?!00000)\d{5}",
    threads: MODEL_THREADS
    resources:
        **FRAME_RESOURCES,
    params:
        frame=diffusion_params,
    run:
        animation.diffusion_frame(**input, **output, **params.frame, threads=threads)


if CADENCE > 1:

    # Every output frame when c > 1: its two images (next, and prev unless next has full weight) warped, mixed;
    # in 3D with depth warping, also the frame's depth map, predicted on the warped next image.
    rule blend:
        input:
            unpack(blend_inputs),
        output:
            **BLEND_DEPTH_OUTPUT,
            image=f"{FRAMES}/{{i}}.png",
        wildcard_constraints:
            i=r"\d{5}",
        threads: BLEND_THREADS
        resources:
            **FRAME_RESOURCES,
        params:
            blend=blend_params,
        run:
            animation.blend_frame(**input, **output, **params.blend, threads=threads)


FINAL_FRAMES = [frame_path(i) for i in range(N_FRAMES)]
