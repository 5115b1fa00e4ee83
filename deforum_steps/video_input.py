"""Video Input mode: which frames of the video (and of the mask video) become the render's frames.

The frame count must be known while the workflow is planned, so the videos are probed then (ffmpeg decodes
them: ~0.3 s for 900 frames at 480x270, ~2.7 s for 900 at 1920x1080 on 2 busy cores). Probes are cached by
content (sha256, ~0.1 s per 60 MB) in .snakemake/video_probes.json, the working directory's planning state
that Snakemake writes anyway: replanning decodes nothing, and a render that stops on a config error has still
written nothing into its output folder.

Each frame is then an independent img2img of its video frame at that frame's strength_schedule value and
prompt (no warp, color match or noise; cadence 1), so frames can run side by side.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import cpu_threads, io, preview
from .config import ConfigError
from .dependencies import EXTRACTION_SETTINGS, pick
from .masks import read_mask
from .video import VideoInfo, content_fingerprint, extract_frames, extraction_indices, probe_video

PROBE_CACHE = Path(".snakemake") / "video_probes.json"


def probe(path: str, key: str, cache_file: Path = PROBE_CACHE) -> tuple[VideoInfo, str]:
    """(VideoInfo, sha256) of the video at `path`; errors are one line naming `key`."""
    if not path:
        raise ConfigError(f"{key}: empty, but a video is needed")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{key}: no such file {path}")
    if file.stat().st_size == 0:
        raise ConfigError(f"{key}: empty file {path}")
    fingerprint = content_fingerprint(file)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(fingerprint), list):
        return VideoInfo(*cache[fingerprint]), fingerprint
    info = probe_video(file, key=key)
    io.write_text(cache_file, json.dumps({**cache, fingerprint: list(info)}, indent=1))
    return info, fingerprint


def plan(cfg: Mapping) -> dict:
    """What extraction writes, as {"video": source, "mask": source or None}. Each source: "path", the video;
    "extraction", what the extract job takes besides the files (its config key for errors, the source frame
    numbers of the render's frames 0.., the size W x H); "depends", what else the extracted frames depend on
    (the content fingerprint and the extraction settings; the file's time only with overwrite_extracted_frames).
    The mask video gives the same frame numbers as the video, so it must be at least as long."""
    settings = pick(cfg, EXTRACTION_SETTINGS)
    info, fingerprint = probe(cfg["video_init_path"], "video_init_path")
    indices = extraction_indices(info.n_frames, cfg["extract_nth_frame"], cfg["extract_from_frame"],
                                 cfg["extract_to_frame"])
    if not indices:
        raise ConfigError(f"video_init_path: no frames selected from {cfg['video_init_path']} ({info.n_frames} "
                          f"frames; extract_nth_frame={cfg['extract_nth_frame']}, extract_from_frame="
                          f"{cfg['extract_from_frame']}, extract_to_frame={cfg['extract_to_frame']})")
    sources = {"video": ("video_init_path", fingerprint), "mask": None}
    if cfg["use_video_mask"]:
        mask_info, mask_fingerprint = probe(cfg["video_mask_path"], "video_mask_path")
        if mask_info.n_frames <= indices[-1]:
            raise ConfigError(f"video_mask_path: {cfg['video_mask_path']} has {mask_info.n_frames} frames, but the "
                              f"video input uses frames up to {indices[-1]}")
        sources["mask"] = ("video_mask_path", mask_fingerprint)
    return {name: source and {"path": cfg[source[0]],
                              "extraction": {"key": source[0], "indices": indices, "size": [cfg["W"], cfg["H"]]},
                              "depends": {"fingerprint": source[1], **settings, **_file_time(cfg, source[0])}}
            for name, source in sources.items()}


def _file_time(cfg: Mapping, key: str) -> dict:
    """With overwrite_extracted_frames, a video file written again (even with the same content) is extracted
    again: its modification time joins the extraction's params."""
    return {"mtime_ns": Path(cfg[key]).stat().st_mtime_ns} if cfg["overwrite_extracted_frames"] else {}


def extract(*, video: str, frames: Sequence[str], log: str, key: str, indices: Sequence[int], size: Sequence[int]
            ) -> None:
    """Rule extract_video_frames / extract_mask_frames: write the planned source frames `indices` of `video` as
    the `frames` PNGs (one folder, numbered 0..) at size = (W, H); ffmpeg's messages go to `log`."""
    extract_frames(video, Path(frames[0]).parent, indices, size=tuple(size), key=key, log=log)


def render_frame(*, init: str, mask: Sequence[str], image: str, row: Mapping, settings: Mapping,
                 threads: int) -> None:
    """Rule video_input_frame:
    1. read the extracted video frame at W x H;
    2. img2img from it at the frame's strength_schedule, masked by its mask frame or mask_file (white keeps
       the video frame);
    3. write the image."""
    from . import diffusion  # torch, diffusers: only in jobs that diffuse

    cpu_threads.limit(threads)
    start = io.read_image(init, size=(settings["W"], settings["H"]))
    result = diffusion.img2img(start, row, settings, strength=row["strength_schedule"],
                               mask=read_mask(mask[0], settings) if mask else None)
    io.write_image(image, result)
    preview.show_frame(image)
