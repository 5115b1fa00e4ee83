"""Previews: the motion preview (rules/preview.smk) and the live preview of a render in progress.

Motion preview (`motion_preview_mode: true`, the webui's name): the camera path of a 2D/3D config without
diffusion. Frame 0 is the init image (use_init) or a test pattern; each next frame is the previous one warped
by that frame's motion, as a render warps before it diffuses, in 3D through the depth that
depth.load_depth_model gives for the config (a flat scene without use_depth_warping). Everything goes to
OUT/preview/ (frames and preview.mp4): the render's own files are not touched, and no diffusion model loads.

Live preview (`display_samples`, on by default): OUT/preview.png is replaced, atomically, by every finished frame
or image (a hard link to its file: editing preview.png in place would change that frame, which the next run then
finds damaged and renders again); with `show_sample_per_step` also by every denoising step of the frame in flight.
The workflow turns it on for its run (`start_live`); jobs run as threads of that process (the profile's
force-use-threads) and call `show` / `step_callback`, which do nothing when it is off. It is not part of any job's
params: turning it on or off reruns nothing. The file is not a render artifact and is not recorded in OUT/.checksums.
"""
from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from . import io, motion2d
from .config import ConfigError

PREVIEW_FOLDER = "preview"
LIVE_FILE = "preview.png"

# The live previews of this process: {render folder OUT (absolute): whether denoising steps are shown too}, for
# OUT/preview.png; one render, or each render of a batch that turns it on.
_live: dict[Path, bool] = {}


# ---- motion preview --------------------------------------------------------------------------------------


def check(cfg: Mapping) -> None:
    """The motion preview moves a camera: 2D and 3D only."""
    if cfg["animation_mode"] not in ("2D", "3D"):
        raise ConfigError(f"motion_preview_mode: previews the camera path of animation_mode 2D or 3D, not "
                          f"{cfg['animation_mode']!r}")


def test_pattern(width: int, height: int) -> np.ndarray:
    """A grid of 8 x 8 squares over a hue ramp, a white cross through the centre and a red marker at the top left
    corner: rotation, zoom, translation and perspective all show on it."""
    y, x = np.mgrid[0:height, 0:width]
    hue = (180 * (x + y) / (width + height)).astype(np.uint8)
    hsv = np.stack([hue, np.full_like(hue, 150), np.full_like(hue, 200)], axis=-1)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    cell = max(4, min(width, height) // 8)
    image[((x // cell) + (y // cell)) % 2 == 1] //= 2
    line = max(1, min(width, height) // 64)
    cv2.line(image, (width // 2, 0), (width // 2, height - 1), (255, 255, 255), line)
    cv2.line(image, (0, height // 2), (width - 1, height // 2), (255, 255, 255), line)
    cv2.circle(image, (width // 8, height // 8), max(2, cell // 2), (255, 0, 0), -1)
    return image


def camera_path(start: np.ndarray, rows: Sequence[Mapping], settings: Mapping,
                predict_depth: Callable[[np.ndarray], np.ndarray] | None = None, border: str | None = None):
    """Yield frame 0 (`start`) and every next frame as the camera sees it after each row's motion.

    2D: `start` warped once by the product of the frames' warp matrices, so the picture stays sharp however
    long the path (`border` overrides the config's, e.g. wrap to tile a test pattern). 3D: the previous frame
    warped by the row's motion as a render does, through `predict_depth` of it (None: a flat scene)."""
    from .animation import warp

    height, width = start.shape[:2]
    image, total = start, np.eye(3)
    yield image
    for row in rows[1:]:
        if settings["animation_mode"] == "2D":
            total = motion2d.warp_matrix_2d(
                width, height, angle=row["angle"], zoom=row["zoom"], translation_x=row["translation_x"],
                translation_y=row["translation_y"], transform_center_x=row["transform_center_x"],
                transform_center_y=row["transform_center_y"], flip_perspective=settings["flip_2d_perspective"],
                theta=row["perspective_flip_theta"], phi=row["perspective_flip_phi"],
                gamma=row["perspective_flip_gamma"], fv=row["perspective_flip_fv"]) @ total
            image = cv2.warpPerspective(start, total, (width, height), flags=cv2.INTER_LINEAR,
                                        borderMode=motion2d.BORDERS[border or settings["border"]])
        else:
            image = warp(image, row, settings, None if predict_depth is None else predict_depth(image))
        yield image


def motion_preview(*, init: Sequence[str], frames: Sequence[str], rows: Sequence[Mapping], settings: Mapping) -> None:
    """Rule motion_preview:
    1. frame 0: the init image (use_init) or the test pattern (tiled where the camera leaves it), at W x H;
    2. every next frame: the camera moved by its motion (camera_path; 3D: the config's depth model, or flat);
    3. write them to preview/."""
    size = (settings["W"], settings["H"])
    start = io.read_image(init[0], size=size) if init else test_pattern(*size)
    predict = None
    if settings["animation_mode"] == "3D" and settings["use_depth_warping"]:
        from .depth import predict as predict_depth

        predict = functools.partial(predict_depth, settings=settings)
    for path, image in zip(frames, camera_path(start, rows, settings, predict, border=None if init else "wrap")):
        io.write_image(path, image)


def preview_video(*, frames: Sequence[str], video: str, encoding: Mapping, log: str) -> None:
    """Rule preview_video: the preview frames encoded as the render's video would be (its fps, crf, preset, codec)."""
    from .video import assemble_video

    assemble_video(frames, video, **encoding, log=log)


# ---- live preview ----------------------------------------------------------------------------------------


def start_live(out: str | os.PathLike, cfg: Mapping) -> None:
    """Turn the live preview of the render in `out` on or off for this process's jobs, as `display_samples` /
    `show_sample_per_step` say."""
    folder = Path(os.path.abspath(out))
    if cfg["display_samples"] or cfg["show_sample_per_step"]:
        _live[folder] = bool(cfg["show_sample_per_step"])
    else:
        _live.pop(folder, None)


def show(image: np.ndarray, out: str | os.PathLike | None = None) -> None:
    """Make `image` (RGB uint8) the live preview of the render in `out` (default: the one live render)."""
    folder = _live_folder(out)
    if folder is not None:
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        _publish(folder, lambda tmp: tmp.write_bytes(png.tobytes()))


def show_frame(path: str | os.PathLike) -> None:
    """Make the image a job has just written the live preview when it is an output frame (frames/) or image
    (images/), not an intermediate diffusion of cadence. The file itself, hard-linked: encoding the PNG a second time
    took 13.6 ms at 512x512, and even copying its bytes 1.5 ms a frame at 64x64 (a new file, and the last preview's
    data freed), a link 0.03 ms (measured); a copy where the file system has no hard links."""
    path = Path(path)
    if path.parent.name not in ("frames", "images"):
        return
    folder = _live_folder(path.parent.parent)
    if folder is not None:
        _publish(folder, functools.partial(_link_or_copy, path))


def _link_or_copy(source: Path, tmp: Path) -> None:
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (another device, a file system without them), or no such file
        shutil.copyfile(source, tmp)


def _live_folder(out: str | os.PathLike | None) -> Path | None:
    """The render folder `out` (default: the one live render) when its live preview is on, else None."""
    folder = next(iter(_live)) if out is None and len(_live) == 1 else Path(os.path.abspath(out or "."))
    return folder if folder in _live else None


def _publish(folder: Path, make: Callable[[Path], None]) -> None:
    """Make folder/preview.png what `make` puts at the temporary path it is given, atomically: a viewer never reads
    half a file. A preview that cannot be made must not fail the frame."""
    tmp = io.temp_path(folder / LIVE_FILE)
    try:
        make(tmp)
        os.replace(tmp, folder / LIVE_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)


def step_callback(decode: Callable[[object], np.ndarray]) -> Callable | None:
    """With show_sample_per_step, a denoising callback (done, total, latent) that shows each decoded step."""
    # The sampler does not know which render its job belongs to: steps are shown while only one render is live.
    if len(_live) != 1 or not next(iter(_live.values())):
        return None
    return lambda done, total, latent: show(decode(latent))
