"""3D depth maps, one job per frame (included by animation.smk, whose paths and helpers it uses).

depth/s.npy is the depth predicted on diffusion d = s - s % c warped through frames d+1..s: the newer of the two
images tween frame s blends, as it stands at frame s (with c = 1, frame s itself). The warp into frame t reads
depth/(t-1).npy, except the older image's warp into a diffusion frame t, which reads depth/t.npy (deforum_steps/
frames.py says why: the reference predicts once per step, on the newer image). A job recomputes its warp chain
from diffusion d and the earlier maps of the interval (at most c - 1 warps), so no warped image is stored.
save_depth_maps adds depth/s.png, a job of its own, so toggling it renders nothing again."""
from deforum_steps.frames import DEPTH_SETTINGS, depth_frames_used


DEPTH_JOB_SETTINGS = frame_settings(config, WARP_SETTINGS["3D"] + DEPTH_SETTINGS)


def depth_source(wildcards):
    """The image depth map s is predicted on, as a plan source: the `next` side of tween frame s."""
    return tween_plan(int(wildcards.s), N_FRAMES, CADENCE)["next"]


def depth_job_inputs(wildcards):
    source = depth_source(wildcards)
    return {"diffused": diffused_path(source["diffused_at"]), "depth": depth_inputs(source)}


def depth_params(wildcards):
    source = depth_source(wildcards)
    return {"source": source, "motion": motion_rows(source), "settings": DEPTH_JOB_SETTINGS}


rule depth:
    input:
        unpack(depth_job_inputs),
    output:
        depth=f"{OUT}/depth/{{s}}.npy",
    wildcard_constraints:
        s=r"\d{5}",
    params:
        depth=depth_params,
    run:
        import numpy as np

        from deforum_steps import depth, frames, io

        p = params.depth
        settings = p["settings"]
        depths = dict(zip(frames.depth_frames(p["source"]), map(np.load, input.depth)))
        image = frames.warp_source(io.read_image(input.diffused), p["source"], p["motion"], settings, depths)
        model = depth.load_depth_model(settings["depth_algorithm"], settings["depth_model_path"],
                                       settings["map_location"], settings["midas_weight"])
        io.save_array(output.depth, model.predict(image))


rule depth_png:
    input:
        f"{OUT}/depth/{{s}}.npy",
    output:
        f"{OUT}/depth/{{s}}.png",
    run:
        import numpy as np

        from deforum_steps import depth, io

        io.write_image(output[0], depth.depth_to_png(np.load(input[0])))


if USE_DEPTH and config["save_depth_maps"]:
    MODE_TARGETS["3D"].extend(f"{OUT}/depth/{s:05d}.png" for s in depth_frames_used(N_FRAMES, CADENCE))
