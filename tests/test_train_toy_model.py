"""scripts/train_toy_model.py, shortened to a few steps: same seed, same weights; the folder it writes is a
diffusers folder the engine loads."""
import subprocess
import sys
from pathlib import Path

import torch

from deforum_steps import models

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_toy_model.py"
FEW_STEPS = ["--vae-steps", "3", "--vae-batch", "4", "--unet-steps", "3", "--unet-batch", "4", "--scenes", "16",
             "--threads", "1"]


def train(out: Path, seed: int) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--seed", str(seed), "--out", str(out), *FEW_STEPS],
                          capture_output=True, text=True, check=True)
    assert f"saved {out}" in proc.stdout and "trained in" in proc.stdout
    return (out / "SHA256SUMS").read_text()


def test_same_seed_same_weights_and_the_engine_loads_them(tmp_path):
    first = train(tmp_path / "a", seed=3)
    assert train(tmp_path / "b", seed=3) == first
    assert train(tmp_path / "c", seed=4) != first
    assert sorted(line.split("  ")[1] for line in first.splitlines()) == [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors"]
    pipe = models.load_folder(tmp_path / "a", torch.device("cpu"), torch.float32)
    assert pipe.unet.config.in_channels == 4 and pipe.unet.config.sample_size * 8 == 128
