"""Video input and output with the static ffmpeg binary that imageio-ffmpeg ships.

Frame numbers are those of the *decoded* stream (ffmpeg's `n`, 0-based, after edit lists and
autorotation), never container metadata: `probe_video` counts by decoding, and `extract_frames`
selects by the same numbering, so the DAG planned from a probe matches what extraction writes.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import imageio_ffmpeg

from deforum_steps import io
from deforum_steps.config import ConfigError

CODECS = ("libx264", "libx265")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


class FFmpegError(RuntimeError):
    """ffmpeg failed; the message is ffmpeg's own fatal/error line, `stderr` its whole log."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


class VideoInfo(NamedTuple):
    n_frames: int
    fps: float
    width: int
    height: int


@functools.cache
def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(args: Sequence[str | os.PathLike], loglevel: str = "error",
            log: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg; `level+` tags every log line with its level so errors can be picked out reliably. With `log`,
    the command and ffmpeg's messages (from level info) are written to that file (a rule's log:)."""
    if log is not None:
        loglevel = "info"
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", f"level+{loglevel}", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if log is not None:
        io.write_text(log, "$ " + " ".join(cmd) + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise FFmpegError(_error_line(proc.stderr) or f"ffmpeg exited with status {proc.returncode}", proc.stderr)
    return proc


def _error_line(stderr: str) -> str:
    """The last fatal line (ffmpeg's summary), else the last error line, without ffmpeg's prefixes."""
    tagged = re.findall(r"^(?:\[\S+ @ 0x[0-9a-f]+\] )?\[(fatal|error)\] (.*)$", stderr, re.M)
    for level in ("fatal", "error"):
        lines = [text.strip() for lvl, text in tagged if lvl == level]
        if lines:
            return lines[-1]
    return ""


def _decode_count(path: Path) -> VideoInfo:
    """Decode the first video stream to nowhere and read what came out of the decoder."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    try:
        proc = _ffmpeg(["-i", path, "-map", "0:v:0", "-fps_mode", "passthrough", "-nostats",
                        "-progress", "pipe:1", "-f", "null", "-"], loglevel="info")
    except FFmpegError as e:
        if "matches no streams" in e.stderr:  # e.g. an audio file: it opens fine but has nothing to map
            raise FFmpegError("no video stream", e.stderr) from None
        raise
    progress = dict(re.findall(r"^(\w+)=(.*)$", proc.stdout, re.M))  # last value of each key wins
    n_frames = int(progress.get("frame", 0))
    # the output stream line carries the size after autorotation (phone videos), i.e. the frames' size
    out_stream = re.search(r"Stream #0:0.*?: Video: (.*)", proc.stderr.partition("Output #0")[2])
    size = re.search(r"(?<![0-9a-zA-Z])([1-9]\d*)x([1-9]\d*)", out_stream.group(1)) if out_stream else None
    if size is None:
        raise FFmpegError("cannot read the frame size")
    fps_m = re.search(r"([\d.]+)(k?) fps", out_stream.group(1))
    if fps_m:
        fps = float(fps_m.group(1)) * (1000 if fps_m.group(2) else 1)
    else:  # variable frame rate without a nominal rate: the average over what was decoded
        duration_us = progress.get("out_time_us", "N/A")
        fps = n_frames / (int(duration_us) / 1e6) if duration_us.isdigit() and int(duration_us) > 0 else 0.0
    return VideoInfo(n_frames, fps, int(size.group(1)), int(size.group(2)))


def count_video_frames(path: str | os.PathLike) -> int:
    """Exact number of decodable frames of the first video stream (decodes it; ~0.2 s for 900 frames
    at 480x270). Raises FileNotFoundError or FFmpegError."""
    return _decode_count(Path(path)).n_frames


def probe_video(path: str | os.PathLike, *, key: str = "video_init_path") -> VideoInfo:
    """Frame count (by decoding), nominal fps and decoded frame size of a user's video.
    Missing, unreadable or frameless videos raise ConfigError naming `key`."""
    path = Path(path)
    try:
        info = _decode_count(path)
    except FileNotFoundError:
        raise ConfigError(f"{key}: no such file {path}") from None
    except FFmpegError as e:
        raise ConfigError(f"{key}: not a readable video {path} ({e})") from None
    if info.n_frames == 0:
        raise ConfigError(f"{key}: no frames in {path}")
    return info


def content_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, so extraction reruns when the video's content changes, not its mtime."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def extraction_indices(n_frames: int, nth: int, from_frame: int = 0, to_frame: int = -1) -> list[int]:
    """Source frame numbers to extract: `count % nth == 0` and `from_frame <= count <= to_frame`
    (to_frame -1 = last frame). As in sd-webui-deforum, `count` is the absolute frame number, so nth
    counts from frame 0, not from from_frame: nth=2, from=5 gives 6, 8, 10, ..."""
    if nth < 1:
        raise ConfigError(f"extract_nth_frame: must be >= 1, got {nth}")
    if from_frame < 0:
        raise ConfigError(f"extract_from_frame: must be >= 0, got {from_frame}")
    if to_frame < -1:
        raise ConfigError(f"extract_to_frame: must be >= 0 or -1 (end), got {to_frame}")
    last = n_frames - 1 if to_frame == -1 else min(to_frame, n_frames - 1)
    first = -(-from_frame // nth) * nth  # first multiple of nth at or after from_frame
    return list(range(first, last + 1, nth))


def plan_extraction(video: str | os.PathLike, *, nth: int, from_frame: int, to_frame: int,
                    key: str = "video_init_path") -> list[int]:
    """Probe `video` and choose its frames; what the DAG builder calls to know the frame count."""
    info = probe_video(video, key=key)
    indices = extraction_indices(info.n_frames, nth, from_frame, to_frame)
    if not indices:
        raise ConfigError(f"{key}: no frames selected from {video} ({info.n_frames} frames; extract_nth_frame={nth}, "
                          f"extract_from_frame={from_frame}, extract_to_frame={to_frame})")
    return indices


def _select_expr(indices: Sequence[int]) -> str:
    """ffmpeg `select` expression for increasing indices, one term per arithmetic run: the usual every-nth
    selection is a single term, where one eq() per selected frame would cost frames x selected evaluations."""
    terms, i = [], 0
    while i < len(indices):
        j = i
        step = indices[i + 1] - indices[i] if i + 1 < len(indices) else 1
        while j + 1 < len(indices) and indices[j + 1] - indices[j] == step:
            j += 1
        a, b = indices[i], indices[j]
        terms.append(f"eq(n,{a})" if a == b else f"between(n,{a},{b})*not(mod(n-{a},{step}))")
        i = j + 1
    return "+".join(terms)


def extract_frames(video: str | os.PathLike, out_dir: str | os.PathLike, indices: Sequence[int], *,
                   size: tuple[int, int] | None = None, key: str = "video_init_path",
                   log: str | os.PathLike | None = None) -> list[Path]:
    """Write source frames `indices` (increasing) as RGB PNGs `out_dir/%05d.png`, numbered 0.. in order,
    resized to size=(W, H) if given (stretched, as Deforum does). All frames are decoded into a temp folder
    beside out_dir first, so a failure leaves out_dir as it was; numbered PNGs left from a longer earlier
    extraction are removed so out_dir holds exactly this set."""
    video, out_dir = Path(video), Path(out_dir)
    if not indices:
        raise ConfigError(f"{key}: no frames selected from {video}")
    if any(b <= a for a, b in zip(indices, indices[1:])) or indices[0] < 0:
        raise ValueError(f"frame indices must be increasing and >= 0: {list(indices)[:10]}")
    if not video.is_file():
        raise ConfigError(f"{key}: no such file {video}")
    vf = f"select='{_select_expr(indices)}'"
    if size is not None:
        vf += f",scale={size[0]}:{size[1]}:flags=lanczos"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        try:
            _ffmpeg(["-i", video, "-map", "0:v:0", "-vf", vf, "-fps_mode", "passthrough",
                     "-frames:v", len(indices), "-pix_fmt", "rgb24",
                     # intermediate files: zlib level 1 writes ~4.5x faster than the default for ~15% more bytes
                     "-compression_level", 1, "-start_number", 0, tmp / "%05d.png"], log=log)
        except FFmpegError as e:
            raise ConfigError(f"{key}: not a readable video {video} ({e})") from None
        written = len(list(tmp.glob("*.png")))
        if written != len(indices):
            raise ConfigError(f"{key}: {video} gave {written} of the {len(indices)} planned frames "
                              f"(last wanted: {indices[-1]}); did the video change?")
        out_dir.mkdir(exist_ok=True)
        paths = [out_dir / f"{i:05d}.png" for i in range(len(indices))]
        for p in paths:
            os.replace(tmp / p.name, p)
            io.record(p)
        for stale in out_dir.glob("*.png"):
            if re.fullmatch(r"\d{5,}", stale.stem) and int(stale.stem) >= len(indices):
                stale.unlink()
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _framerate(fps: float) -> str:
    """fps as an exact ffmpeg rational (29.97 -> 2997/100, 30000/1001 stays so)."""
    if fps <= 0:
        raise ConfigError(f"fps: must be > 0, got {fps}")
    return str(Fraction(fps).limit_denominator(1001))


def _image_sequence_input(frame_paths: Sequence[str | os.PathLike], fps: float, link_dir: Path) -> list[str]:
    """ffmpeg input args reading exactly `frame_paths`, in order, at `fps`: the frames' own names when they are
    00000, 00001, ... of one folder (a render's frames/), else symlinks named %05d in link_dir, so any list of files
    (any names, any folders) becomes one numbered image2 sequence. A frame that does not read back whole stops it
    (ffmpeg would drop it, or end the video there, without a word)."""
    if not frame_paths:
        raise ValueError("no frames to assemble")
    suffixes = {Path(p).suffix.lower() for p in frame_paths}
    if len(suffixes) != 1:
        raise ValueError(f"frames must share one image format, got {sorted(suffixes)}")
    suffix = suffixes.pop()
    for p in frame_paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no such frame {p}")
        try:
            io.check_whole(p)
        except io.DamagedFile as e:
            raise io.DamagedFile(f"{e}: not made into a video; run again to render the frame again") from None
    folder = Path(frame_paths[0]).parent
    numbered = "%" not in str(folder) and all(Path(p) == folder / f"{i:05d}{suffix}" for i, p in enumerate(frame_paths))
    if not numbered:  # 500 links took 0.2 s (measured): only for frames that are not a numbered sequence already
        folder = link_dir
        for i, p in enumerate(frame_paths):
            os.symlink(Path(p).resolve(), link_dir / f"{i:05d}{suffix}")
    return ["-framerate", _framerate(fps), "-pattern_type", "sequence", "-start_number", "0",
            "-i", str(folder / f"%05d{suffix}"), "-frames:v", str(len(frame_paths))]


def assemble_video(frame_paths: Sequence[str | os.PathLike], out_mp4: str | os.PathLike, *, fps: float, crf: int,
                   preset: str, codec: str, log: str | os.PathLike | None = None) -> None:
    """Encode exactly len(frame_paths) frames at `fps` into an mp4 (yuv420p, BT.709-tagged, no audio).
    yuv420p needs even sides: an odd width or height gets one more column/row repeating the edge pixels
    (no stretch, no black or lost edge; scaling 33x17 to 34x18 also crashes the bundled libx265)."""
    if codec not in CODECS:
        raise ConfigError(f"codec: must be one of {', '.join(CODECS)}, got {codec!r}")
    if preset not in PRESETS:
        raise ConfigError(f"preset: must be an ffmpeg x264/x265 preset ({', '.join(PRESETS)}), got {preset!r}")
    if not 0 <= crf <= 51:
        raise ConfigError(f"crf: must be 0..51, got {crf}")
    codec_args = ["-tag:v", "hvc1", "-x265-params", "log-level=error"] if codec == "libx265" else []
    with tempfile.TemporaryDirectory() as links:
        inputs = _image_sequence_input(frame_paths, fps, Path(links))
        h, w = io.read_image(frame_paths[0]).shape[:2]
        odd = w % 2 or h % 2
        pad = f"pad={w + w % 2}:{h + h % 2},fillborders=right={w % 2}:bottom={h % 2}:mode=smear," if odd else ""
        with io.atomic_path(out_mp4) as tmp:
            _ffmpeg(["-y", *inputs, "-vf", pad + "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
                     "-c:v", codec, "-crf", crf, "-preset", preset, *codec_args,
                     "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
                     "-movflags", "+faststart", "-an", "-f", "mp4", tmp], log=log)


def assemble_gif(frame_paths: Sequence[str | os.PathLike], out_gif: str | os.PathLike, *, fps: float,
                 log: str | os.PathLike | None = None) -> None:
    """Looping GIF of exactly len(frame_paths) frames with a palette computed from all of them
    (palettegen buffers the whole sequence, so memory grows with frames x size)."""
    graph = "[0:v]split[a][b];[a]palettegen[p];[b][p]paletteuse"
    with tempfile.TemporaryDirectory() as links:
        inputs = _image_sequence_input(frame_paths, fps, Path(links))
        with io.atomic_path(out_gif) as tmp:
            _ffmpeg(["-y", *inputs, "-filter_complex", graph, "-loop", "0", "-f", "gif", tmp], log=log)
