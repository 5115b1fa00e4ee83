"""motion_preview_mode: the camera path of a 2D/3D config, no diffusion (job functions: deforum_steps/preview.py
and deforum_steps/video.py). One job warps the init image or a test pattern frame by frame into preview/ (a
few ms a frame), a second encodes preview/preview.mp4. The targets are these alone: the render's own rules
stay defined but nothing of the render runs or changes."""

from deforum_steps import preview
from deforum_steps.dependencies import VIDEO_SETTINGS

try:
    preview.check(config)
except ConfigError as e:
    sys.exit(f"config error: {e}")

PREVIEW = f"{OUT}/{preview.PREVIEW_FOLDER}"
PREVIEW_FRAMES = [f"{PREVIEW}/{i:05d}.png" for i in range(N_FRAMES)]


rule motion_preview:
    input:
        init=masks.init_images(config)[:1],
    output:
        frames=PREVIEW_FRAMES,
    params:
        rows=[pick(row, MOTION_COLUMNS[MODE]) for row in _ROWS],
        settings=WARP_JOB_SETTINGS | pick(config, ("W", "H", "use_depth_warping") + DEPTH_SETTINGS),
    run:
        preview.motion_preview(**input, **output, **params)


rule preview_video:
    input:
        frames=PREVIEW_FRAMES,
    output:
        video=f"{PREVIEW}/preview.mp4",
    log:
        f"{OUT}/logs/preview_video.log",
    params:
        encoding=pick(config, VIDEO_SETTINGS),
    run:
        preview.preview_video(**input, **output, **params, log=log[0])


TARGETS[:] = [*PREVIEW_FRAMES, f"{PREVIEW}/preview.mp4"]
