import hashlib
import os
import subprocess

import numpy as np
import pytest
from conftest import SHARED

from deforum_steps import io, video
from deforum_steps.config import ConfigError

EXAMPLE = SHARED / "deforum-examples" / "example_init_vid.mp4"
N_SRC = 24
# The schema's defaults of the video keys (assemble_video takes them all)
ENCODING = {"crf": 17, "preset": "veryfast", "codec": "libx264"}


def color(i: int) -> tuple[int, int, int]:
    """A distinct solid color per source frame, so a frame's mean color tells which frame it is."""
    return (i * 10, 255 - i * 10, (i * 67) % 256)


def write_frames(folder, n, size=(32, 24), first=0):
    w, h = size
    paths = []
    for i in range(first, first + n):
        paths.append(folder / f"frame_{i}.png")
        io.write_image(paths[-1], np.full((h, w, 3), color(i), np.uint8))
    return paths


def ffmpeg(*args):
    subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def mean_color(path):
    return io.read_image(path).reshape(-1, 3).mean(axis=0)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A lossless (FFV1, RGB) 10 fps video whose frame i is solid color(i)."""
    d = tmp_path_factory.mktemp("src")
    for i, p in enumerate(write_frames(d, N_SRC)):
        p.rename(d / f"{i:05d}.png")
    ffmpeg("-framerate", 10, "-i", d / "%05d.png", "-c:v", "ffv1", "-pix_fmt", "bgr0", d / "src.mkv")
    return d / "src.mkv"


@pytest.mark.parametrize("n, nth, start, stop, expected", [
    (30, 1, 0, -1, list(range(30))),
    (30, 2, 0, -1, list(range(0, 30, 2))),
    (30, 2, 5, -1, list(range(6, 30, 2))),  # nth counts from frame 0, not from extract_from_frame
    (30, 3, 0, 10, [0, 3, 6, 9]),           # extract_to_frame is inclusive
    (30, 3, 0, 9, [0, 3, 6, 9]),
    (30, 5, 0, 100, [0, 5, 10, 15, 20, 25]),
    (30, 1, 29, -1, [29]),
    (5, 10, 0, -1, [0]),
    (30, 1, 30, -1, []),
    (30, 4, 10, 9, []),
])
def test_extraction_indices(n, nth, start, stop, expected):
    assert video.extraction_indices(n, nth, start, stop) == expected


@pytest.mark.parametrize("args, key", [((0, 0, -1), "extract_nth_frame"), ((1, -1, -1), "extract_from_frame"),
                                       ((1, 0, -2), "extract_to_frame")])
def test_extraction_indices_reject_bad_settings(args, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        video.extraction_indices(30, *args)


def test_probe_counts_decoded_frames(src):
    assert video.probe_video(src) == video.VideoInfo(N_SRC, 10.0, 32, 24)
    assert video.count_video_frames(src) == N_SRC


def test_example_video():
    assert video.probe_video(EXAMPLE) == video.VideoInfo(901, 30.0, 480, 270)


def test_extract_selected_frames(src, tmp_path):
    indices = video.plan_extraction(src, nth=3, from_frame=4, to_frame=20)
    assert indices == [6, 9, 12, 15, 18]
    out = tmp_path / "inputframes"
    paths = video.extract_frames(src, out, indices)
    assert paths == [out / f"{i:05d}.png" for i in range(5)]
    assert sorted(out.iterdir()) == paths
    for p, i in zip(paths, indices):
        assert np.array_equal(mean_color(p), color(i))
    assert [p.name for p in tmp_path.iterdir()] == ["inputframes"]  # temp folder gone


def test_reextract_resizes_and_drops_stale_frames(src, tmp_path):
    out = tmp_path / "inputframes"
    video.extract_frames(src, out, list(range(N_SRC)))
    paths = video.extract_frames(src, out, [1, 22], size=(16, 8))
    assert sorted(out.iterdir()) == paths
    for p, i in zip(paths, [1, 22]):
        img = io.read_image(p)
        assert img.shape == (8, 16, 3)
        assert np.abs(img.reshape(-1, 3).mean(axis=0) - color(i)).max() <= 1


def test_failed_extraction_leaves_folder_as_it_was(src, tmp_path):
    out = tmp_path / "inputframes"
    video.extract_frames(src, out, [0, 1])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="^video_init_path: .*1 of the 2 planned"):
        video.extract_frames(src, out, [5, N_SRC + 5])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["inputframes"]


def test_assemble_video_exact_frames_in_given_order(tmp_path):
    frames = write_frames(tmp_path, 10)[::-1]  # order comes from the list, not from the names
    out = tmp_path / "out" / "video.mp4"
    video.assemble_video(frames, out, fps=12, **ENCODING)
    assert video.probe_video(out) == video.VideoInfo(10, 12.0, 32, 24)
    got = video.extract_frames(out, tmp_path / "back", list(range(10)))
    for p, i in zip(got, range(9, -1, -1)):
        assert np.abs(mean_color(p) - color(i)).max() < 4  # lossy yuv420p round trip
    assert [p.name for p in out.parent.iterdir()] == ["video.mp4"]


@pytest.mark.parametrize("folder", ["frames", "100%/frames", "take [2] *final*/frames"])
def test_assemble_video_of_a_numbered_folder_takes_the_first_frames_only(tmp_path, folder, monkeypatch):
    frames = [tmp_path / folder / f"{i:05d}.png" for i in range(8)]
    for i, path in enumerate(frames):  # a render's frames/, 2 more frames than the video takes
        io.write_image(path, np.full((24, 32, 3), color(i), np.uint8))
    links = []
    symlink = os.symlink
    monkeypatch.setattr(os, "symlink", lambda *args: links.append(args) or symlink(*args))
    video.assemble_video(frames[:6], tmp_path / "v.mp4", fps=12, **ENCODING)
    assert len(links) == (6 if "%" in folder else 0)  # ffmpeg reads frames/%05d.png itself; "100%" is no pattern
    assert video.probe_video(tmp_path / "v.mp4").n_frames == 6
    got = video.extract_frames(tmp_path / "v.mp4", tmp_path / "back", list(range(6)))
    assert all(np.abs(mean_color(p) - color(i)).max() < 4 for i, p in enumerate(got))


def test_assemble_odd_size_and_fractional_fps(tmp_path):
    frames = write_frames(tmp_path, 5, size=(33, 17))
    video.assemble_video(frames, tmp_path / "v.mp4", fps=29.97, codec="libx265", crf=28, preset="ultrafast")
    assert video.probe_video(tmp_path / "v.mp4") == video.VideoInfo(5, 29.97, 34, 18)
    last = io.read_image(video.extract_frames(tmp_path / "v.mp4", tmp_path / "back", [4])[0])
    assert np.abs(last[-1, -1].astype(int) - color(4)).max() < 8  # padding repeats the edge, not black


def test_encoding_settings_are_required(tmp_path):
    frames = write_frames(tmp_path, 1)
    for key in ENCODING:
        with pytest.raises(TypeError, match=key):
            video.assemble_video(frames, tmp_path / "v.mp4", fps=12, **{k: v for k, v in ENCODING.items() if k != key})
    assert not (tmp_path / "v.mp4").exists()


def test_ffmpeg_runs_write_their_log(src, tmp_path):
    """With log=, the ffmpeg command line and its messages go to that file (a rule's log:)."""
    frames = write_frames(tmp_path, 3)
    video.assemble_video(frames, tmp_path / "v.mp4", fps=12, **ENCODING, log=tmp_path / "logs" / "video.log")
    text = (tmp_path / "logs" / "video.log").read_text()
    assert text.startswith("$ " + video.ffmpeg_exe()) and "-c:v libx264" in text
    assert "Output #0, mp4" in text
    video.assemble_gif(frames, tmp_path / "a.gif", fps=12, log=tmp_path / "logs" / "gif.log")
    assert "paletteuse" in (tmp_path / "logs" / "gif.log").read_text()
    paths = video.extract_frames(src, tmp_path / "inputframes", [0, 1], log=tmp_path / "logs" / "extract.log")
    assert len(paths) == 2 and "Output #0, image2" in (tmp_path / "logs" / "extract.log").read_text()
    # a failed run leaves its log too, with ffmpeg's reason
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ConfigError, match="^video_init_path: not a readable video"):
        video.extract_frames(tmp_path / "garbage.mp4", tmp_path / "out", [0], log=tmp_path / "logs" / "bad.log")
    assert "[error]" in (tmp_path / "logs" / "bad.log").read_text()
    # without log= nothing else is written
    video.assemble_video(frames, tmp_path / "w.mp4", fps=12, **ENCODING)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["bad.log", "extract.log", "gif.log", "video.log"]


def test_assemble_gif(tmp_path):
    frames = write_frames(tmp_path, 6)
    video.assemble_gif(frames, tmp_path / "a.gif", fps=12)
    info = video.probe_video(tmp_path / "a.gif")
    assert (info.n_frames, info.width, info.height) == (6, 32, 24)
    assert info.fps == pytest.approx(12, rel=0.01)  # GIF delays are whole centiseconds: 8 cs ~ 11.92 fps


@pytest.mark.parametrize("kwargs, key", [({"codec": "h264"}, "codec"), ({"preset": "fastest"}, "preset"),
                                         ({"crf": 52}, "crf"), ({"fps": 0}, "fps")])
def test_assemble_rejects_bad_settings(tmp_path, kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        video.assemble_video(write_frames(tmp_path, 1), tmp_path / "v.mp4", **{"fps": 12, **ENCODING, **kwargs})
    assert not (tmp_path / "v.mp4").exists()


def test_unusable_videos_name_the_key(tmp_path, src):
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "anullsrc", "-t", "0.1", tmp_path / "audio.wav")
    cases = {"missing.mp4": "no such file", "garbage.mp4": "not a readable video",
             "empty.mp4": "not a readable video", "audio.wav": r"not a readable video .*\(no video stream\)"}
    for name, msg in cases.items():
        with pytest.raises(ConfigError, match=f"^video_mask_path: {msg}"):
            video.probe_video(tmp_path / name, key="video_mask_path")
    with pytest.raises(ConfigError, match="^video_init_path: no such file"):
        video.extract_frames(tmp_path / "missing.mp4", tmp_path / "out", [0])
    with pytest.raises(ConfigError, match="^video_init_path: not a readable video"):
        video.extract_frames(tmp_path / "garbage.mp4", tmp_path / "out", [0])
    with pytest.raises(ConfigError, match=f"^video_init_path: no frames selected .*{N_SRC} frames"):
        video.plan_extraction(src, nth=1, from_frame=N_SRC, to_frame=-1)
    assert not (tmp_path / "out").exists()


def test_content_fingerprint(tmp_path, src):
    assert video.content_fingerprint(src) == hashlib.sha256(src.read_bytes()).hexdigest()
    copy = tmp_path / "copy.mkv"
    copy.write_bytes(src.read_bytes()[:-1] + b"\0")
    assert video.content_fingerprint(copy) != video.content_fingerprint(src)
