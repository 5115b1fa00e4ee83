import os

import cv2
import numpy as np
import pytest

from deforum_steps import io


def test_image_roundtrip_is_lossless_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    io.write_image(tmp_path / "a.png", rgb)
    assert np.array_equal(io.read_image(tmp_path / "a.png"), rgb)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_umask_permissions(tmp_path):
    io.write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_shared_image_is_decoded_once_per_version_of_its_file(tmp_path):
    path = tmp_path / "00000.png"
    io.write_image(path, np.full((8, 12, 3), 10, np.uint8))
    first = io.read_shared_image(path, size=(12, 8))
    assert io.read_shared_image(path, size=(12, 8)) is first  # the same array for every job
    assert (first == 10).all() and not first.flags.writeable
    with pytest.raises(ValueError):
        first[0, 0, 0] = 0  # no job can change what the others read
    small = io.read_shared_image(path, size=(6, 4))
    assert small.shape == (4, 6, 3) and io.read_shared_image(path, size=(6, 4)) is small
    io.write_image(path, np.full((8, 12, 3), 20, np.uint8))  # frame 0 rendered again
    assert (io.read_shared_image(path, size=(12, 8)) == 20).all()


def test_a_written_image_is_read_back_without_decoding(tmp_path, monkeypatch):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    io.write_image(tmp_path / "00004.png", rgb)
    rgb[:] = 0  # the caller's array may change after the write: what was written is kept
    monkeypatch.setattr(io, "_decode", lambda *args, **kwargs: pytest.fail("decoded again"))
    kept = io.read_shared_image(tmp_path / "00004.png")
    monkeypatch.undo()
    np.testing.assert_array_equal(kept, io.read_image(tmp_path / "00004.png"))  # the very pixels of the file
    assert kept.any() and not kept.flags.writeable


def test_a_touched_image_is_read_from_memory_and_one_written_over_is_decoded(tmp_path, monkeypatch):
    path = tmp_path / "00004.png"
    io.write_image(path, np.full((8, 12, 3), 10, np.uint8))
    os.utime(path, ns=(10**18, 10**18))  # Snakemake touches every output of a job when it ends
    decoded = []
    decode = io._decode
    monkeypatch.setattr(io, "_decode", lambda *args: decoded.append(args[1]) or decode(*args))
    assert (io.read_shared_image(path) == 10).all() and decoded == []
    cv2.imwrite(str(path), np.full((8, 12, 3), 30, np.uint8))  # another program writes over it
    assert (io.read_shared_image(path) == 30).all() and decoded == [os.path.abspath(path)]
    assert (io.read_shared_image(path) == 30).all() and len(decoded) == 1  # that version is kept in turn


def test_read_image_resizes_only_when_asked(tmp_path):
    rgb = np.full((8, 12, 3), 200, dtype=np.uint8)
    io.write_image(tmp_path / "a.png", rgb)
    assert io.read_image(tmp_path / "a.png", size=(12, 8)).shape == (8, 12, 3)
    assert io.read_image(tmp_path / "a.png", size=(6, 4)).shape == (4, 6, 3)
    assert (io.read_image(tmp_path / "a.png", size=(6, 4)) == 200).all()
