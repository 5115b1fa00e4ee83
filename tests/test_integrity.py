"""Every artifact is whole or absent: damaged files (truncated, emptied, changed in place, deleted) of a finished
render are found when the next run starts and rendered again with what depends on them, bit-identically; temp
files of a killed run are removed; the video refuses a frame that does not decode; a full disk fails with one
line and the same command finishes the render once there is space again."""
import hashlib
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
from helpers import SNAKEFILE, SNAKEMAKE, output, planned_jobs, run_snakemake, write_config

from deforum_steps import io, preview, video

OUT = "output/test"
N = 5
RENDER_3D = {"animation_mode": "3D", "diffusion_cadence": 2, "depth_algorithm": "tiny",
             "save_depth_maps": True, "translation_z": "0:(8)", "rotation_3d_y": "0:(1.5)"}


def _render(tmp_path_factory, name, **config):
    workdir = tmp_path_factory.mktemp(name)
    write_config(workdir, max_frames=N, steps=4, **config)
    run_snakemake(workdir, check=True)
    return workdir


@pytest.fixture(scope="module")
def render_2d(tmp_path_factory):
    return _render(tmp_path_factory, "render2d")


@pytest.fixture(scope="module")
def render_3d(tmp_path_factory):
    return _render(tmp_path_factory, "render3d", **RENDER_3D)


def copy_of(render, tmp_path):
    """The finished render (with its .snakemake records), times kept, in a fresh working folder."""
    workdir = tmp_path / "w"
    shutil.copytree(render, workdir, symlinks=True)
    return workdir


def contents(workdir):
    """{path in OUT: SHA-256} of the render's artifacts (logs name temp folders, and the live preview.png is
    whichever frame finished last, so they are left out)."""
    out = workdir / OUT
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*")
            if p.is_file() and p.name not in (io.CHECKSUMS, ".render.lock", preview.LIVE_FILE)
            and p.parent.name != "logs"}


def truncate(path, size=300):
    path.write_bytes(path.read_bytes()[:size])


def flip_byte(path, at=-40):
    """Same size, one byte changed (the time changes too, as with any write)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def damaged_lines(proc):
    return sorted(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("damaged: "))


def test_damaged_frames_latents_and_records_are_rendered_again_identically(render_2d, tmp_path):
    workdir = copy_of(render_2d, tmp_path)
    finished = contents(workdir)
    out = workdir / OUT
    times = {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    truncate(out / "frames/00002.png")
    flip_byte(out / "latents/00004.safetensors")
    (out / "latents/00003.safetensors").write_bytes(b"")
    flip_byte(out / "schedules.csv", at=-3)
    truncate(out / "video.mp4", 1000)

    proc = run_snakemake(workdir, check=True)

    assert damaged_lines(proc) == ["frames/00002.png", "latents/00003.safetensors", "latents/00004.safetensors",
                                   "schedules.csv", "video.mp4"]
    # frame 2 and every frame made from it, the schedules records and the video; frames 0 and 1 are kept
    assert planned_jobs(proc) == {"schedules": 1, "frame": 3, "video": 1, "all": 1}
    assert {n: t for n, t in times.items() if n < "00002"} == {
        p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir() if p.name < "00002"}
    assert contents(workdir) == finished


def test_deleted_frame_and_video_are_made_again(render_2d, tmp_path):
    workdir = copy_of(render_2d, tmp_path)
    finished = contents(workdir)
    (workdir / OUT / "frames/00003.png").unlink()
    (workdir / OUT / "video.mp4").unlink()
    proc = run_snakemake(workdir, check=True)
    assert damaged_lines(proc) == []  # missing is not damaged: Snakemake makes it again by itself
    assert planned_jobs(proc) == {"frame": 2, "video": 1, "all": 1}
    assert contents(workdir) == finished


def test_render_without_records_is_checked_by_format_and_recorded(render_2d, tmp_path):
    """A render folder from before the records (or records lost): each file is checked by its format once."""
    workdir = copy_of(render_2d, tmp_path)
    finished = contents(workdir)
    out = workdir / OUT
    (out / io.CHECKSUMS).unlink()
    truncate(out / "frames/00004.png", 2000)
    flip_byte(out / "frames/00001.png", at=60)  # inside the pixel data: the PNG's CRC no longer matches
    truncate(out / "latents/00002.safetensors", 100)

    proc = run_snakemake(workdir, check=True)

    assert damaged_lines(proc) == ["frames/00001.png", "frames/00004.png", "latents/00002.safetensors"]
    assert "does not read back whole" in output(proc)
    assert contents(workdir) == finished
    recorded = {line.split(" ", 3)[3] for line in (out / io.CHECKSUMS).read_text().splitlines()}
    assert set(finished) <= recorded


def test_leftover_temp_files_of_a_killed_run_are_removed(render_2d, tmp_path):
    workdir = copy_of(render_2d, tmp_path)
    out = workdir / OUT
    leftovers = [out / ".schedules.k2x9_a1b.png", out / "frames/.00003.abcd1234.png",
                 out / "latents/.00002.zz99yy88.safetensors"]
    for path in leftovers:
        path.write_bytes(b"partial")
    (out / ".inputframes.q1w2e3r4").mkdir()
    proc = run_snakemake(workdir, check=True)
    assert planned_jobs(proc) == {}
    assert not [p for p in out.rglob(".*") if p.name not in (io.CHECKSUMS, ".render.lock")]


def test_depth_maps_and_diffused_images_of_a_3d_cadence_render(render_3d, tmp_path):
    workdir = copy_of(render_3d, tmp_path)
    finished = contents(workdir)
    out = workdir / OUT
    truncate(out / "depth/00002.npy", 100)
    flip_byte(out / "diffused/00002.png", at=100)
    (out / "frames/00003.png").write_bytes(b"")
    proc = run_snakemake(workdir, check=True)
    assert damaged_lines(proc) == ["depth/00002.npy", "diffused/00002.png", "frames/00003.png"]
    assert contents(workdir) == finished


def test_a_dry_run_plans_damaged_files_again(render_2d, tmp_path):
    workdir = copy_of(render_2d, tmp_path)
    truncate(workdir / OUT / "frames/00004.png")
    proc = run_snakemake(workdir, "-n", check=True)
    assert damaged_lines(proc) == ["frames/00004.png"]
    assert planned_jobs(proc) == {"frame": 1, "video": 1, "all": 1}


# ---- unit level ----------------------------------------------------------------------------------------------


def test_check_render_keeps_touched_files_whose_content_is_unchanged(tmp_path):
    io.record_in(tmp_path)
    try:
        io.write_image(tmp_path / "frames/00000.png", np.zeros((8, 8, 3), np.uint8))
        io.write_text(tmp_path / "notes.txt", "x")
    finally:
        io.record_in(None)
    subprocess.run(["touch", str(tmp_path / "frames/00000.png")], check=True)
    (tmp_path / "notes.txt").write_text("y")
    assert io.check_render(tmp_path) == ["notes.txt changed since it was written: it is rendered again, with what is "
                                         "made from it"]
    assert (tmp_path / "frames/00000.png").exists() and not (tmp_path / "notes.txt").exists()
    assert [line.split()[3] for line in (tmp_path / io.CHECKSUMS).read_text().splitlines()] == ["frames/00000.png"]


def test_write_is_read_back_before_it_counts(tmp_path, monkeypatch):
    """A writer that drops bytes without an error (cv2.imwrite on a full disk did) is caught: nothing is left."""
    real_write = os.write
    # half the bytes written, all of them reported
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[: len(data) // 2]) and len(data))
    with pytest.raises(io.WriteError, match=r"^cannot write .*a\.png: \d+ of \d+ bytes read back as written$"):
        io.write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_write_failure_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "frames").write_text("a file where a folder should be")
    with pytest.raises(io.WriteError) as failure:
        io.write_image(tmp_path / "frames/00000.png", np.zeros((8, 8, 3), np.uint8))
    assert str(failure.value) == f"cannot write {tmp_path}/frames/00000.png: File exists"


def test_video_refuses_a_frame_that_does_not_decode(tmp_path):
    frames = []
    for i in range(3):
        frames.append(tmp_path / f"{i:05d}.png")
        io.write_image(frames[-1], np.full((16, 16, 3), 40 * i, np.uint8))
    truncate(frames[1], 100)
    with pytest.raises(io.DamagedFile, match=rf"^{tmp_path}/00001.png does not read back whole .*run again"):
        video.assemble_video(frames, tmp_path / "video.mp4", fps=12, crf=17, preset="veryfast", codec="libx264")
    assert not (tmp_path / "video.mp4").exists()


# ---- a real full disk ----------------------------------------------------------------------------------------


def _can_mount_tmpfs(tmp_path):
    mnt = tmp_path / "probe"
    mnt.mkdir()
    try:
        probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c",
                                f"mount -t tmpfs -o size=64k tmpfs {mnt}"], capture_output=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_full_disk_fails_in_one_line_and_the_same_command_finishes_later(render_2d, tmp_path):
    """A small tmpfs (in a private mount namespace) holds the output folder: the render stops at the first write
    that does not fit, with one line naming the file; every file left is whole; after the filesystem grows, the
    same command finishes with every frame, identical to the render made with room to spare."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (unshare --mount needs user namespaces or root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    write_config(tmp_path, max_frames=N, steps=4, output_path=str(mnt / "output"))
    run = f"{SNAKEMAKE} -s {SNAKEFILE} --cores 1 --configfile render.yaml"
    finished_size_k = sum(p.stat().st_size for p in (render_2d / OUT).rglob("*") if p.is_file()) // 1024
    script = textwrap.dedent(f"""\
        mount -t tmpfs -o size={finished_size_k // 2}k tmpfs {mnt} || exit 99
        {run} > full.log 2>&1; echo $? > full.rc
        find {mnt} -type f | sort > left.txt
        python_check() {{ {SNAKEMAKE.with_name('python')} -c "$1"; }}
        python_check "
import sys; from pathlib import Path; from deforum_steps import io
for line in Path('left.txt').read_text().split():
    p = Path(line)
    if p.name not in (io.CHECKSUMS, '.render.lock'):
        io.check_whole(p)
" > whole.log 2>&1; echo $? > whole.rc
        mount -o remount,size={finished_size_k * 4}k {mnt}
        {run} > again.log 2>&1; echo $? > again.rc
        cp -a {mnt}/output {tmp_path}/kept
        """)
    proc = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    full_log = (tmp_path / "full.log").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1", full_log
    assert "Traceback" not in full_log and '  File "' not in full_log  # no stack: the line says it all
    failure = [line for line in full_log.splitlines() if "cannot write" in line]
    assert len(failure) == 1 and failure[0].startswith(f"error: cannot write {mnt}/output/test/"), full_log
    assert failure[0].endswith("No space left on device (free some space and run again: nothing finished is lost)")
    assert (tmp_path / "whole.rc").read_text().strip() == "0", (tmp_path / "whole.log").read_text()
    assert (tmp_path / "again.rc").read_text().strip() == "0", (tmp_path / "again.log").read_text()
    kept = tmp_path / "kept" / "test"
    assert video.count_video_frames(kept / "video.mp4") == N
    for i in range(N):
        name = f"frames/{i:05d}.png"
        assert (kept / name).read_bytes() == (render_2d / OUT / name).read_bytes(), name
