"""3D depth maps, one job per frame (job functions: deforum_steps/depth.py; inputs and params: common.smk).

depth/s.npy is the depth predicted on diffusion d = s - s % c warped through frames d+1..s: the newer of the two
images tween frame s blends, as it stands at frame s (with c = 1, frame s itself). The warp into frame t reads
depth/(t-1).npy, except the older image's warp into a diffusion frame t, which reads depth/t.npy
(deforum_steps/animation.py says why: the reference predicts once per step, on the newer image). A job
recomputes its warp chain from diffusion d and the earlier maps of the interval (at most c - 1 warps), so no
warped image is stored. save_depth_maps adds depth/s.png, a job of its own, so toggling it renders nothing."""

from deforum_steps import depth


rule depth:
    input:
        unpack(depth_job_inputs),
    output:
        depth_map=f"{OUT}/depth/{{s}}.npy",
    wildcard_constraints:
        s=r"\d{5}",
    threads: MODEL_THREADS
    resources:
        **FRAME_RESOURCES,
    params:
        depth=depth_params,
    run:
        depth.depth_map(**input, **output, **params.depth, threads=threads)


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
    TARGETS.extend(f"{OUT}/depth/{s:05d}.png" for s in animation.depth_frames_used(N_FRAMES, CADENCE))
