"""Video assembly: FINAL_FRAMES (set by the mode's stage file) → video.mp4 (and video.gif); job functions in
deforum_steps/video.py. Its params are only the encoding settings, so changing fps, crf, preset or codec
reruns this job alone, which loads no model. ffmpeg's messages go to logs/."""

from deforum_steps import video
from deforum_steps.dependencies import VIDEO_SETTINGS


rule video:
    input:
        frames=FINAL_FRAMES,
    output:
        video=f"{OUT}/video.mp4",
    log:
        f"{OUT}/logs/video.log",
    params:
        encoding=pick(config, VIDEO_SETTINGS),
    run:
        video.assemble_video(input.frames, output.video, **params.encoding, log=log[0])


rule gif:
    input:
        frames=FINAL_FRAMES,
    output:
        gif=f"{OUT}/video.gif",
    log:
        f"{OUT}/logs/gif.log",
    params:
        fps=config["fps"],
    run:
        video.assemble_gif(input.frames, output.gif, fps=params.fps, log=log[0])


# The frames are targets themselves so that a deleted frame is made again: Snakemake leaves a missing
# intermediate file alone while the files made from it are up to date.
TARGETS.extend(FINAL_FRAMES)
if not config["skip_video"]:
    TARGETS.append(f"{OUT}/video.mp4")
    if config["make_gif"]:
        TARGETS.append(f"{OUT}/video.gif")
