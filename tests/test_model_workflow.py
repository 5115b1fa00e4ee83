"""Models in the workflow: a render from a single-file checkpoint named as the guides do (a file name in
models_path; its frames equal builtin:tiny's, test_model_files), every model problem found when the workflow
loads (one config error line, every file of the finished render unchanged), and an SDXL render."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from helpers import run_snakemake, write_config
from safetensors.torch import save_file
from test_bad_input import OUT, bad, run_cases

from deforum_steps import checkpoints, ldm_checkpoint, models

MODEL = {"model": "tiny.safetensors", "model_config": "tiny_configs", "max_frames": 2}


@pytest.fixture(scope="module")
def checkpoint_render(tmp_path_factory) -> Path:
    """A finished render of builtin:tiny's weights from models/tiny.safetensors (original layout), configs in
    tiny_configs/."""
    workdir = tmp_path_factory.mktemp("checkpoint_render")
    pipe = models.build_tiny()
    models.save_pipeline(pipe, workdir / "tiny_configs")
    (workdir / "models").mkdir()
    ldm_checkpoint.save_checkpoint(pipe, workdir / "models" / "tiny.safetensors")
    write_config(workdir, **MODEL)
    run_snakemake(workdir, "--cores", "1", check=True)
    assert (workdir / OUT / "video.mp4").is_file()
    return workdir


def remove_model(workdir: Path) -> None:
    (workdir / "models" / "tiny.safetensors").unlink()


def inpainting_model(workdir: Path) -> None:
    save_file({checkpoints.UNET_INPUT: torch.zeros(320, 9, 3, 3), checkpoints.SD1_TEXT: torch.zeros(7, 768)},
              workdir / "models" / "tiny.safetensors")


def remove_configs(workdir: Path) -> None:
    shutil.rmtree(workdir / "tiny_configs")


CASES = [
    bad("checkpoint deleted", MODEL, "model", "tiny.safetensors", "models_path", setup=remove_model),
    bad("checkpoint replaced by an inpainting one", MODEL, "model", "inpainting", setup=inpainting_model),
    bad("its config folder deleted", MODEL, "model_config", "tiny_configs", setup=remove_configs),
    bad("no model_config for a small checkpoint", {**MODEL, "model_config": ""}, "model_config", "32-channel"),
    bad("custom without a path", {"model": "custom"}, "custom_checkpoint_path"),
    bad("wrong sha256", {**MODEL, "check_sha256": True, "model_sha256": "0" * 64}, "model_sha256"),
    bad("load_on_run_all", {**MODEL, "load_on_run_all": True}, "load_on_run_all"),
    bad("a download with no hub to reach", {"model": "deforum-test/tiny", "allow_download": True}, "model",
        "cannot download deforum-test/tiny", "hf download deforum-test/tiny"),
]


def test_model_problems_change_nothing(checkpoint_render, tmp_path, monkeypatch):
    with socket.socket() as s:  # HF_ENDPOINT: a port nothing listens on, as offline as it gets
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    run_cases(CASES, checkpoint_render, tmp_path)


def test_sdxl_render(tmp_path):
    write_config(tmp_path, model="builtin:tiny-xl", max_frames=2)
    run_snakemake(tmp_path, "--cores", "1", check=True)
    assert (tmp_path / OUT / "video.mp4").is_file() and len(list((tmp_path / OUT / "frames").glob("*.png"))) == 2
