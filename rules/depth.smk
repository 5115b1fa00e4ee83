"""3D depth maps (job functions: deforum_steps/depth.py), depth/s.npy: the depth predicted on diffusion
d = s - s % c warped through frames d+1..s, the newer of the two images tween frame s blends, as it stands at frame
s. The warp into frame t reads depth/(t-1).npy, except the older image's warp into a diffusion frame t, which reads
depth/t.npy (deforum_steps/animation.py says why: the reference predicts once per step, on the newer image).
With c > 1 the blend job of frame s warps that image anyway and writes map s (rules/animation.smk); with c = 1
the map is frame s's depth, a job of its own here, so that an edit of a depth key reruns no diffusion before it.
save_depth_maps adds depth/s.png, a job of its own, so toggling it renders nothing."""

from deforum_steps import depth

if CADENCE == 1:

    rule depth:
        input:
            frame=f"{FRAMES}/{{s}}.png",
        output:
            depth_map=f"{OUT}/depth/{{s}}.npy",
        wildcard_constraints:
            s=r"\d{5}",
        threads: MODEL_THREADS
        resources:
            **FRAME_RESOURCES,
        params:
            settings=DEPTH_JOB_SETTINGS,
        run:
            depth.depth_map(**input, **output, settings=params.settings, threads=threads)


rule depth_png:
    input:
        depth_map=f"{OUT}/depth/{{s}}.npy",
    output:
        png=f"{OUT}/depth/{{s}}.png",
    resources:
        **FRAME_RESOURCES,
    run:
        depth.depth_png(**input, **output)


if config["save_depth_maps"]:
    TARGETS.extend(f"{OUT}/depth/{s:05d}.png" for s in animation.depth_maps_written(N_FRAMES, CADENCE))
