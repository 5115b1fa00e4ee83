"""Video assembly: the frames → video.mp4 (and video.gif). Its params are only the encoding settings, so
changing fps, crf, preset or codec reruns this job alone, which loads no model."""


def video_targets(frame_paths):
    """What a mode's render ends in: its frames and their mp4 (+ gif). The frames are targets themselves so
    that a deleted frame is made again: Snakemake leaves a missing intermediate file alone while the files
    made from it are up to date."""
    if config["skip_video"]:
        return frame_paths
    return [*frame_paths, f"{OUT}/video.mp4"] + ([f"{OUT}/video.gif"] if config["make_gif"] else [])


def final_frames():
    """Every frame the current mode writes, in order (each mode's .smk sets FINAL_FRAMES)."""
    return FINAL_FRAMES[config["animation_mode"]]


FINAL_FRAMES = {}


rule video:
    input:
        frames=lambda wc: final_frames(),
    output:
        f"{OUT}/video.mp4",
    params:
        encoding={key: config[key] for key in ("fps", "crf", "preset", "codec")},
    run:
        from deforum_steps.video import assemble_video

        assemble_video(list(input.frames), output[0], **params.encoding)


rule gif:
    input:
        frames=lambda wc: final_frames(),
    output:
        f"{OUT}/video.gif",
    params:
        fps=config["fps"],
    run:
        from deforum_steps.video import assemble_gif

        assemble_gif(list(input.frames), output[0], fps=params.fps)
