"""Gradient conditioning on the toy model: what each loss does and what conditioning costs. Prints measured numbers.

1. Effects: the same seed rendered with every scale 0 and with one loss's scale given (decode autoencoder,
   x0_pred, every step conditioned), and the loss's own measure of both images: mean |x| (mean), variance (var),
   mean pixel (exposure -0.5 / +0.5), mean blue (blue), MSE to the init_mse image, mean distance to the nearest
   colormatch palette colour, tiny-CLIP cosine similarity to the prompt (clip), tiny aesthetic rating (aesthetics).
2. Cost: CPU seconds per frame (one thread, best of --repeats) with conditioning off, x0_pred + linear decode, x0_pred +
   autoencoder and x (through the UNet, linear decode), every step conditioned with mean_scale, as ratios to off.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_gradient.py [--side 64] [--steps 8] [--cost-side 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforum_steps import diffusion, io, toy_world  # noqa: E402
from deforum_steps import gradient_conditioning as gc  # noqa: E402
from deforum_steps.config import load_config  # noqa: E402
from deforum_steps.dependencies import DIFFUSION_SETTINGS, diffusion_settings  # noqa: E402

PROMPT = "a red circle on a blue background"


def render(side: int, steps: int, **keys) -> tuple[np.ndarray, float]:
    cfg = load_config({"model": "builtin:toy", "W": side, "H": side, "grad_inject_timing": None, "clip_name": "builtin",
                       **keys}, ROOT / "config" / "schema.yaml")
    start = time.process_time()  # CPU seconds of this process: steady while other work shares the machine
    _, image = diffusion.generate(None, diffusion_settings(cfg, DIFFUSION_SETTINGS), prompt=PROMPT,
                                  negative_prompt="", seed=1, steps=steps, cfg_scale=7, sampler="euler")
    return image.astype(np.float64) / 127.5 - 1, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cost-side", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    for name, scene in (("target", toy_world.Scene("square", "yellow", "purple", False, 0.5, 0.5, 0.3)),
                        ("palette", toy_world.Scene("circle", "green", "orange", False, 0.5, 0.5, 0.3))):
        io.write_image(folder / f"{name}.png", toy_world.draw(scene, args.side))
    target = io.read_image(folder / "target.png").astype(np.float64) / 127.5 - 1
    centres, _ = gc.kmeans_palette((io.read_image(folder / "palette.png") / 127.5 - 1).reshape(-1, 3), 2)
    similarity, aesthetic = gc.builtin_measures(PROMPT)

    effects = [
        ("mean", {"mean_scale": 5}, "mean |x| (down)", lambda x: np.abs(x).mean()),
        ("var", {"var_scale": 5}, "variance (down)", lambda x: x.var()),
        ("exposure -0.5", {"exposure_scale": 5, "exposure_target": -0.5}, "mean pixel (down)", np.mean),
        ("exposure +0.5", {"exposure_scale": 5, "exposure_target": 0.5}, "mean pixel (up)", np.mean),
        ("blue", {"blue_scale": 5}, "mean blue (up)", lambda x: x[..., 2].mean()),
        ("init_mse", {"init_mse_scale": 5, "init_mse_image": str(folder / "target.png")}, "MSE to image (down)",
         lambda x: ((x - target) ** 2).mean()),
        ("colormatch", {"colormatch_scale": 500, "colormatch_image": str(folder / "palette.png")},
         "distance to palette (down)", lambda x: np.linalg.norm(x.reshape(-1, 1, 3) - centres, axis=-1).min(1).mean()),
        ("clip", {"clip_scale": 100}, "CLIP similarity (up)", similarity),
        ("aesthetics", {"aesthetics_scale": 5}, "aesthetic rating (up)", aesthetic),
    ]
    print(f"effects: builtin:toy {args.side} px, euler {args.steps} steps, seed 1, autoencoder decode, x0_pred, "
          "every step")
    off, _ = render(args.side, args.steps)
    print(f"{'loss':<14} {'scale':>6}  {'measure':<28} {'off':>8} {'on':>8}")
    for name, keys, what, measure in effects:
        on, _ = render(args.side, args.steps, decode_method="autoencoder", **keys)
        scale = next(v for k, v in keys.items() if k.endswith("_scale"))
        print(f"{name:<14} {scale:>6}  {what:<28} {measure(off):8.4f} {measure(on):8.4f}")

    print(f"\ncost: builtin:toy {args.cost_side} px, euler {args.steps} steps, mean_scale 5 on every step, "
          f"best of {args.repeats}")
    modes = [("off", {}), ("x0_pred + linear", {"mean_scale": 5, "decode_method": "linear"}),
             ("x0_pred + autoencoder", {"mean_scale": 5, "decode_method": "autoencoder"}),
             ("x (through the UNet)", {"mean_scale": 5, "decode_method": "linear", "gradient_wrt": "x"})]
    render(args.cost_side, 2)  # load the model
    base = None
    for name, keys in modes:
        seconds = min(render(args.cost_side, args.steps, **keys)[1] for _ in range(args.repeats))
        base = base or seconds
        print(f"{name:<24} {seconds:7.3f} s/frame  {seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
