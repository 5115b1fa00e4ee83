"""Quality of the builtin:toy model, measured through the engine's own sampling path
(deforum_steps.models.load_folder + deforum_steps.diffusion.denoise):

* colour: txt2img of 'a <colour> <shape> on a <background> background' -> is the named colour the dominant
  non-background colour (share of seeds, per colour);
* shape: circularity 4πA/P² of the largest blob of the named colour, per shape (circle ~0.9, square ~0.79,
  triangle ~0.55, star ~0.3 on drawn scenes), and how often a circle beats the square of the same colour/seed;
  blobs: connected parts of the named colour, 1 = one object, more = tiling;
* layout: SSIM between a drawn scene and its img2img at strength 0.65 (and of the bare VAE round trip);
* motion: a zoom/rotate img2img chain (warp, LAB colour match to frame 0, noise, img2img), mean absolute
  frame-to-frame difference for the toy model vs a random-init model of the same architecture.

    .venv/bin/python bench/bench_toy_quality.py [--seeds 5] [--sides 128 64]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from deforum_steps import colour, diffusion, models, motion2d, noise, toy_world

REPO = Path(__file__).resolve().parents[1]
CIRCLE_SQUARE_SPLIT = 0.84  # between a drawn circle's ~0.9 and a drawn square's ~0.79


def render(pipe, prompt: str, seed: int, side: int, args, init: np.ndarray | None = None,
           strength: float = 0.0) -> np.ndarray:
    """txt2img, or img2img of `init` at `strength`, with the render defaults (sampler, steps, scale)."""
    latent = None if init is None else diffusion.encode_image(pipe, init)
    latent = diffusion.denoise(pipe, latent, prompt=prompt, steps=args.steps, strength=strength,
                               cfg_scale=args.scale, sampler=args.sampler, seed=seed, width=side, height=side)
    return diffusion.decode_latent(pipe, latent)


def random_init_like(pipe: models.Pipeline, seed: int = 0) -> models.Pipeline:
    """The same architecture and tokenizer with freshly initialised weights: what an untrained model draws."""
    torch.manual_seed(seed)
    unet = type(pipe.unet).from_config(pipe.unet.config)
    vae = type(pipe.vae).from_config(pipe.vae.config)
    text_encoder = type(pipe.text_encoder)(pipe.text_encoder.config)
    parts = (m.eval().requires_grad_(False) for m in (unet, vae, text_encoder))
    return models.Pipeline(*parts, pipe.tokenizer, pipe.scheduler_config, pipe.device, pipe.dtype)


def blobs(mask: np.ndarray, min_share: float = 0.01) -> int:
    """Connected parts of the mask covering at least `min_share` of the image."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    return int((stats[1:, cv2.CC_STAT_AREA] >= min_share * mask.size).sum())


def bench_prompts(pipe, side: int, args) -> None:
    """Colour hit rate, circularity per shape, circle-vs-square separation and blob count at one size."""
    colours = list(toy_world.SHAPE_COLOURS)
    backgrounds = list(toy_world.BACKGROUND_COLOURS)
    hits = {c: [] for c in colours}
    circ = {s: {} for s in toy_world.SHAPES}
    parts = []
    for c in colours:
        others = [b for b in backgrounds if b != c]
        for s in toy_world.SHAPES:
            for seed in range(args.seeds):
                bg = others[seed % len(others)]
                image = render(pipe, f"a {c} {s} on a {bg} background", seed, side, args)
                hits[c].append(toy_world.dominant_colour(image, exclude=(bg,)) == c)
                mask = toy_world.colour_mask(image, c)
                circ[s][c, seed] = toy_world.circularity(mask)
                parts.append(blobs(mask))
    print(f"\n[{side}x{side}] txt2img, {args.seeds} seeds per caption, backgrounds cycled per seed")
    print("colour   dominant-colour hit rate")
    for c in colours:
        print(f"  {c:<7} {np.mean(hits[c]):5.0%}")
    total = np.mean([h for v in hits.values() for h in v])
    print(f"  all     {total:5.0%}   (target >= 80%)")
    print("shape    circularity median [25%, 75%] of the named colour's largest blob")
    for s in toy_world.SHAPES:
        q = np.percentile(list(circ[s].values()), [50, 25, 75])
        print(f"  {s:<8} {q[0]:.3f} [{q[1]:.3f}, {q[2]:.3f}]")
    pairs = [circ["circle"][k] > circ["square"][k] for k in circ["circle"]]
    split = np.mean([v > CIRCLE_SQUARE_SPLIT for v in circ["circle"].values()]
                    + [v <= CIRCLE_SQUARE_SPLIT for v in circ["square"].values()])
    print(f"  circle rounder than the square of the same colour and seed: {np.mean(pairs):.0%}; "
          f"classified by circularity > {CIRCLE_SQUARE_SPLIT}: {split:.0%}")
    print(f"  blobs of the named colour per image: mean {np.mean(parts):.2f}, "
          f"exactly one in {np.mean(np.equal(parts, 1)):.0%}")


def bench_layout(pipe, side: int, args) -> None:
    """SSIM of drawn scenes vs their img2img at strength 0.65 with their own caption."""
    roundtrip, kept = [], []
    for seed, scene in enumerate(toy_world.scenes(1234, args.seeds * 2)):
        drawn = toy_world.draw(scene, side)
        decoded = diffusion.decode_latent(pipe, diffusion.encode_image(pipe, drawn))
        out = render(pipe, scene.caption(), seed, side, args, init=drawn, strength=args.strength)
        roundtrip.append(structural_similarity(drawn, decoded, channel_axis=-1, data_range=255))
        kept.append(structural_similarity(drawn, out, channel_axis=-1, data_range=255))
    print(f"[{side}x{side}] img2img strength {args.strength} on {len(kept)} drawn scenes: SSIM to the init "
          f"mean {np.mean(kept):.3f} min {np.min(kept):.3f} (target >= 0.6); "
          f"VAE round trip mean {np.mean(roundtrip):.3f}")


def zoom_chain(pipe, side: int, args) -> tuple[float, float]:
    """Deforum's 2D loop for a few frames; returns the mean |frame_i - frame_i-1| and the mean change
    that img2img made to each warped frame (0-255 scale)."""
    prompt, seed = "a red circle on a blue background", 7
    frame = first = render(pipe, prompt, seed, side, args)
    steps, changes = [], []
    for i in range(1, args.frames):
        warped = motion2d.warp_2d(frame, angle=2.0, zoom=1.04, translation_x=0, translation_y=0)
        init = noise.add_noise(colour.match_colors(warped, first, "LAB"), 0.02, seed + i)
        new = render(pipe, prompt, seed + i, side, args, init=init, strength=args.strength)
        steps.append(np.abs(new.astype(float) - frame).mean())
        changes.append(np.abs(new.astype(float) - warped).mean())
        frame = new
    return float(np.mean(steps)), float(np.mean(changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "toy")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 64], help="128 is the trained size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=7.0)
    parser.add_argument("--sampler", default="euler_ancestral")
    parser.add_argument("--strength", type=float, default=0.65)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    pipe = models.load_folder(args.model, torch.device("cpu"), torch.float32)
    print(f"model {args.model}: sampler {args.sampler}, {args.steps} steps, scale {args.scale}")
    for side in args.sides:
        bench_prompts(pipe, side, args)
        bench_layout(pipe, side, args)
    print(f"\nzoom 1.04 + 2° chain of {args.frames} frames, img2img strength {args.strength}: "
          "mean |frame - previous| / mean change img2img made to the warped frame")
    for name, model in (("toy", pipe), ("random-init", random_init_like(pipe))):
        for side in args.sides:
            step, change = zoom_chain(model, side, args)
            print(f"  {name:<12} {side}x{side}: {step:6.1f} / {change:6.1f}")
    print(f"\nbench took {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
