"""Fit a model's linear latent -> RGB decode (gradient conditioning's decode_method: linear) and write it as
linear_decode.json in the model folder: least squares (a 4x3 matrix and an RGB bias: the toy latents are not centred
as SD's are) of the scaled latents of toy-world scenes against their 8x8-area-averaged RGB in [-1, 1].

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/fit_linear_decode.py --model models/toy
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import AutoencoderKL

from deforum_steps import toy_world
from deforum_steps.gradient_settings import LINEAR_DECODE_FILE


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/toy"))
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vae = AutoencoderKL.from_pretrained(args.model / "vae").float().eval()
    images = np.stack([toy_world.draw(s, args.side) for s in toy_world.scenes(args.seed, args.scenes)])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = torch.cat([vae.encode(batch).latent_dist.mean for batch in pixels.split(32)]) * vae.config.scaling_factor
    f = args.side // latents.shape[-1]
    small = np.stack([cv2.resize(im, (args.side // f,) * 2, interpolation=cv2.INTER_AREA) for im in images])
    target = small.reshape(-1, 3).astype(np.float64) / 127.5 - 1
    z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double().numpy()
    z1 = np.concatenate([z, np.ones((len(z), 1))], 1)
    solution, *_ = np.linalg.lstsq(z1, target, rcond=None)
    rmse = float(np.sqrt(np.mean((z1 @ solution - target) ** 2)))
    out = {"matrix": np.round(solution[:-1], 4).tolist(), "bias": np.round(solution[-1], 4).tolist(),
           "rmse": round(rmse, 4), "scenes": args.scenes, "side": args.side, "seed": args.seed}
    (args.model / LINEAR_DECODE_FILE).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
