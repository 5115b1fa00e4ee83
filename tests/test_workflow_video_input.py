"""Video Input through the workflow, on lossless videos the tests make (FFV1): every extract_nth_frame-th frame
extracted exactly, one independent img2img per frame (two at a time with --cores 2), a mask video applied per
frame, what each edit reruns (dry runs), and one-line errors for bad videos before anything runs."""
import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import SCHEMA, SMALL_CONFIG, last_line, output, planned_jobs, run_snakemake, write_config

from deforum_steps import diffusion, io, masks
from deforum_steps.config import load_config
from deforum_steps.dependencies import DIFFUSION_COLUMNS, DIFFUSION_SETTINGS, MASK_SETTINGS, pick
from deforum_steps.schedules import build_table
from deforum_steps.video import content_fingerprint, count_video_frames, ffmpeg_exe
from deforum_steps.video_input import PROBE_CACHE

OUT = "output/test"
W = H = 64
N_SOURCE, NTH = 50, 2
N = N_SOURCE // NTH  # frames 0, 2, ..., 48
RENDER = {
    "animation_mode": "Video Input", "video_init_path": "in.mkv", "extract_nth_frame": NTH,
    "use_video_mask": True, "video_mask_path": "mask.mkv", "steps": 4,
    "strength_schedule": "0:(0.25), 24:(0.75)",  # denoising steps 3 down to 1: each frame its own strength
    "animation_prompts": {0: "a red apple", 10: "a yellow banana", 21: "a green pear"},
    "max_frames": 3,  # ignored: the video decides
}
BAND = 16


def source_frame(i):
    return np.random.default_rng(i).integers(0, 256, (H, W, 3)).astype(np.uint8)


def mask_frame(i, shift=0):
    """White band of BAND columns, at x = 0, 16, 32, 48 in turn (even frames: 0 or 32)."""
    grey = np.zeros((H, W, 3), np.uint8)
    x = ((i + shift) % 4) * BAND
    grey[:, x:x + BAND] = 255
    return grey


def encode_lossless(frames, path: Path):
    """RGB frames → FFV1 (lossless, RGB) video."""
    folder = Path(tempfile.mkdtemp(dir=path.parent))
    for i, frame in enumerate(frames):
        io.write_image(folder / f"{i:05d}.png", frame)
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", "12", "-i", str(folder / "%05d.png"),
                    "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)], check=True)


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("video_input")
    encode_lossless([source_frame(i) for i in range(N_SOURCE)], workdir / "in.mkv")
    encode_lossless([mask_frame(i) for i in range(N_SOURCE)], workdir / "mask.mkv")
    write_config(workdir, **RENDER)
    proc = run_snakemake(workdir, "--cores", "2", check=True)
    return workdir, proc


def dry_run(workdir, configfile="edited.yaml", **changes):
    write_config(workdir, configfile, **{**RENDER, **changes})
    return run_snakemake(workdir, "-n", "--quiet", "host", configfile=configfile, check=True)


def planned_frames(proc):
    files = [f for line in output(proc).splitlines() if line.startswith("    output: ") for f in line[12:].split(", ")]
    return sorted(int(m.group(1)) for f in files if (m := re.fullmatch(rf"{OUT}/frames/(\d{{5}})\.png", f)))


def test_frames_are_the_videos_nth_frames_each_diffused_under_its_mask(render):
    workdir, _ = render
    out = workdir / OUT
    names = [f"{i:05d}.png" for i in range(N)]
    for folder in ("inputframes", "maskframes", "frames"):
        assert sorted(p.name for p in (out / folder).iterdir()) == names
    for k in range(N):  # lossless: exactly the source frames 0, 2, 4, ...
        np.testing.assert_array_equal(io.read_image(out / "inputframes" / names[k]), source_frame(NTH * k))
        np.testing.assert_array_equal(io.read_image(out / "maskframes" / names[k]), mask_frame(NTH * k))
    assert count_video_frames(out / "video.mp4") == N
    for log in ("extract_video_frames.log", "extract_mask_frames.log", "video.log"):  # ffmpeg's messages
        assert (out / "logs" / log).read_text().startswith("$ "), log

    cfg = load_config({**SMALL_CONFIG, **RENDER, "max_frames": N}, SCHEMA)
    rows = build_table(cfg).to_dict("records")
    assert len({row["strength_schedule"] for row in rows}) == N and len({row["seed_schedule"] for row in rows}) == N
    settings = pick(cfg, DIFFUSION_SETTINGS + MASK_SETTINGS)
    for k in (0, 11, N - 1):
        frame = io.read_image(out / "frames" / names[k])
        init = source_frame(NTH * k)
        mask = masks.read_mask(out / "maskframes" / names[k], settings)
        expected = diffusion.img2img(init, pick(rows[k], DIFFUSION_COLUMNS), settings,
                                     strength=rows[k]["strength_schedule"], mask=mask)
        np.testing.assert_array_equal(frame, expected)
        x = (NTH * k % 4) * BAND
        band = np.s_[:, x:x + BAND]  # the white band: the video frame itself
        np.testing.assert_array_equal(frame[band], init[band])
        assert np.abs(frame.astype(int) - init).mean() > 10  # the rest diffused


def test_frames_run_two_at_a_time_with_two_cores(render):
    """Frames are independent jobs: Snakemake's log shows two frame jobs in flight at once (counted when a frame
    finishes after the other jobs but the video's, which waits for every frame, have finished)."""
    workdir, proc = render
    log = Path(re.search(r"Complete log\(s\): (\S+)", output(proc)).group(1)).read_text()
    others = {"schedules", "extract_video_frames", "extract_mask_frames"}
    running, in_flight, finished = 0, [], []
    for line in log.splitlines():
        if m := re.match(r"Execute (\d+) jobs", line):
            running += int(m.group(1))
        elif m := re.match(r"Finished jobid: \d+ \(Rule: (\w+)\)", line):
            if m.group(1) == "video_input_frame" and others <= set(finished):
                in_flight.append(running)
            running -= 1
            finished.append(m.group(1))
    assert finished.count("video_input_frame") == N
    assert max(in_flight) == 2 and in_flight.count(2) >= N // 2


def test_unchanged_and_touched_video_rerun_nothing(render):
    workdir, _ = render
    assert planned_jobs(run_snakemake(workdir, "-n", check=True)) == {}
    (workdir / "in.mkv").touch()  # same content, newer file
    assert planned_jobs(run_snakemake(workdir, "-n", check=True)) == {}
    # the videos are ancient inputs: a newer file alone re-extracts nothing. overwrite_extracted_frames adds
    # each video file's modification time to its extraction's params: both are extracted again (their params
    # changed; from then on, whenever a file is written again), and every frame redone
    assert planned_jobs(dry_run(workdir, overwrite_extracted_frames=True)) == {
        "schedules": 1, "extract_video_frames": 1, "extract_mask_frames": 1, "video_input_frame": N, "video": 1,
        "all": 1}


def test_prompt_edit_for_frames_10_to_20_reruns_those_frames_and_the_video(render):
    workdir, _ = render
    proc = dry_run(workdir, animation_prompts={**RENDER["animation_prompts"], 10: "a blue banana"})
    assert planned_jobs(proc) == {"schedules": 1, "video_input_frame": 11, "video": 1, "all": 1}
    assert planned_frames(proc) == list(range(10, 21))


def test_motion_and_color_settings_are_ignored(render):
    workdir, _ = render
    proc = dry_run(workdir, zoom="0:(1.2)", color_coherence="None", noise_schedule="0:(0.5)", diffusion_cadence=3)
    assert planned_jobs(proc) == {"schedules": 1, "all": 1}


def test_changed_mask_video_reruns_the_frames_it_masks(render, tmp_path):
    workdir, _ = render
    mask_video = workdir / "mask.mkv"
    original = mask_video.read_bytes()
    try:
        mask_video.unlink()
        encode_lossless([mask_frame(i, shift=1) for i in range(N_SOURCE)], mask_video)
        proc = dry_run(workdir)
    finally:
        mask_video.write_bytes(original)
    assert planned_jobs(proc) == {"extract_mask_frames": 1, "video_input_frame": N, "video": 1, "all": 1}


def test_extraction_settings_rerun_extraction(render):
    workdir, _ = render
    proc = dry_run(workdir, extract_from_frame=10, extract_to_frame=30)  # source frames 10, 12, ..., 30
    jobs = planned_jobs(proc)
    assert jobs["extract_video_frames"] == 1 and jobs["extract_mask_frames"] == 1
    assert jobs["video_input_frame"] == 11 and planned_frames(proc) == list(range(11))


def test_probe_is_cached_by_content(render):
    """The DAG is planned from the cached probe: a (doctored) cache entry for the video's content decides."""
    workdir, _ = render
    cache_file = workdir / PROBE_CACHE
    cache = json.loads(cache_file.read_text())
    fingerprint = content_fingerprint(workdir / "in.mkv")
    assert cache[fingerprint] == [N_SOURCE, 12.0, W, H]
    try:
        cache_file.write_text(json.dumps({**cache, fingerprint: [N_SOURCE - 10, 12.0, W, H]}))
        jobs = planned_jobs(run_snakemake(workdir, "-n", "--forceall", check=True))
    finally:
        cache_file.write_text(json.dumps(cache))
    assert jobs["video_input_frame"] == (N_SOURCE - 10) // NTH


def test_static_mask_file_masks_every_frame_and_reruns_them_when_edited(tmp_path):
    """use_mask with mask_file (no mask video) masks every frame; with overwrite_extracted_frames a touched
    video is extracted again."""
    encode_lossless([source_frame(i) for i in range(8)], tmp_path / "in.mkv")
    grey = np.zeros((H, W, 3), np.uint8)
    grey[:, : W // 2] = 255
    io.write_image(tmp_path / "mask.png", grey)
    write_config(tmp_path, **{**RENDER, "use_video_mask": False, "use_mask": True, "mask_file": "mask.png",
                              "extract_nth_frame": 3, "skip_video": True, "overwrite_extracted_frames": True})
    run_snakemake(tmp_path, check=True)  # frames 0, 3, 6
    for k in range(3):
        frame = io.read_image(tmp_path / OUT / "frames" / f"{k:05d}.png")
        np.testing.assert_array_equal(frame[:, : W // 2], source_frame(3 * k)[:, : W // 2])
        assert not np.array_equal(frame[:, W // 2:], source_frame(3 * k)[:, W // 2:])
    assert planned_jobs(run_snakemake(tmp_path, "-n", check=True)) == {}
    io.write_image(tmp_path / "mask.png", 255 - grey)
    assert planned_jobs(run_snakemake(tmp_path, "-n", check=True)) == {"video_input_frame": 3, "all": 1}
    (tmp_path / "in.mkv").touch()
    assert planned_jobs(run_snakemake(tmp_path, "-n", check=True)) == {
        "extract_video_frames": 1, "video_input_frame": 3, "all": 1}


@pytest.mark.parametrize("case, message", [
    ("missing", "config error: video_init_path: no such file nowhere.mp4"),
    ("empty", "config error: video_init_path: empty file in.mkv"),
    ("garbage", "config error: video_init_path: not a readable video in.mkv"),
    ("no mask", "config error: video_mask_path: no such file mask.mkv"),
    ("short mask", "config error: video_mask_path: mask.mkv has 3 frames, but the video input uses frames up to 4"),
    ("no frames", "config error: video_init_path: no frames selected from in.mkv (6 frames; extract_nth_frame=1, "
                  "extract_from_frame=9"),
])
def test_bad_video_is_one_line_before_anything_runs(tmp_path, case, message):
    config = {**RENDER, "extract_nth_frame": 1, "use_video_mask": case in ("no mask", "short mask")}
    if case == "missing":
        config["video_init_path"] = "nowhere.mp4"
    elif case == "empty":
        (tmp_path / "in.mkv").touch()
    elif case == "garbage":
        (tmp_path / "in.mkv").write_bytes(b"\x00not a video" * 100)
    else:
        encode_lossless([source_frame(i) for i in range(5 if case != "no frames" else 6)], tmp_path / "in.mkv")
    if case == "short mask":
        encode_lossless([mask_frame(i) for i in range(3)], tmp_path / "mask.mkv")
    if case == "no frames":
        config["extract_from_frame"] = 9
    write_config(tmp_path, **config)
    proc = run_snakemake(tmp_path)
    assert proc.returncode != 0
    assert last_line(proc).startswith(message)
    assert not (tmp_path / "output").exists()
