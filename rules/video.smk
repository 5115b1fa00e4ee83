"""Video assembly: the frames → video.mp4 (and video.gif). Its params are only the encoding settings, so
changing fps, crf, preset or codec reruns this job alone, which loads no model."""


def video_targets(frame_paths):
    """What a mode's render ends in: the mp4 (+ gif) of its frames, or the frames alone with skip_video."""
    if config["skip_video"]:
        return frame_paths
    return [f"{OUT}/video.mp4"] + ([f"{OUT}/video.gif"] if config["make_gif"] else [])


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
