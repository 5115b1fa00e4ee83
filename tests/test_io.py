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
