"""Video Input mode: which frames of the video (and of the mask video) become the render's frames.

The frame count must be known while the workflow is planned, so the videos are probed then (ffmpeg decodes
them: ~0.3 s for 900 frames at 480x270, ~2.7 s for 900 at 1920x1080 on 2 busy cores). Probes are cached by
content (sha256, ~0.1 s per 60 MB) in .snakemake/video_probes.json, the working directory's planning state
that Snakemake writes anyway: replanning decodes nothing, and a render that stops on a config error has still
written nothing into its output folder.

Each frame is then an independent img2img of its video frame at that frame's strength_schedule value and
prompt (no warp, colour match or noise; cadence 1), so frames can run side by side.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from . import io
from .config import ConfigError
from .video import VideoInfo, content_fingerprint, extract_frames, extraction_indices, probe_video

PROBE_CACHE = Path(".snakemake") / "video_probes.json"
EXTRACTION_SETTINGS = ("extract_nth_frame", "extract_from_frame", "extract_to_frame", "W", "H")
# Config keys besides the frame's row that change a video input frame (its masks add masks.MASK_SETTINGS).
FRAME_SETTINGS = ("W", "H", "model", "model_config", "map_location", "dtype", "ddim_eta", "use_karras_sigmas",
                  "prompt_weighting", "normalize_prompt_weights")
# The schedule columns an img2img reads: a frame's params hold only these, so an edited motion schedule
# (meaningless here) reruns nothing.
DIFFUSION_KEYS = ("prompt", "negative_prompt", "seed", "strength", "steps", "cfg_scale", "sampler")


def diffusion_row(row: Mapping) -> dict:
    return {key: row[key] for key in DIFFUSION_KEYS}


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
    """What extraction writes, as {"video": source, "mask": source or None}, each source {"key", "path",
    "params", "indices"}: `indices` the source frame numbers of the render's frames 0.., `params` what the
    extracted frames depend on (content fingerprint and extraction settings; not the path, and the file's time
    only with overwrite_extracted_frames).
    The mask video gives the same frame numbers as the video, so it must be at least as long."""
    settings = {key: cfg[key] for key in EXTRACTION_SETTINGS}
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
    return {name: source and {"key": source[0], "path": cfg[source[0]], "indices": indices,
                              "params": {"fingerprint": source[1], **settings, **_file_time(cfg, source[0])}}
            for name, source in sources.items()}


def _file_time(cfg: Mapping, key: str) -> dict:
    """With overwrite_extracted_frames, a video file written again (even with the same content) is extracted
    again: its modification time joins the extraction's params."""
    return {"mtime_ns": Path(cfg[key]).stat().st_mtime_ns} if cfg["overwrite_extracted_frames"] else {}


def extract(source: Mapping, out_dir: str, cfg: Mapping) -> None:
    """Write a planned source's frames as out_dir/%05d.png at W x H."""
    extract_frames(source["path"], out_dir, source["indices"], size=(cfg["W"], cfg["H"]), key=source["key"])
