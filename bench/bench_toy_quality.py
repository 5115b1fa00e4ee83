"""Quality of the builtin:toy model, measured through the engine's own sampling path
(deforum_steps.models.load_folder + deforum_steps.diffusion.denoise):

* color: txt2img of 'a <color> <shape> on a <background> background' -> is the named color the dominant
  non-background color (share of seeds, per color);
* shape: of the largest blob of the named color, circularity 4πA/P² (drawn: circle ~0.9, square ~0.79,
  triangle ~0.55, star ~0.32) and extent, the share of its smallest enclosing rectangle it fills (drawn: square
  1.0, circle 0.785, triangle 0.5, star 0.4); how well each tells circles from squares; blobs: connected parts
  of the named color, 1 = one object, more = tiling;
* layout: SSIM between a drawn scene and its img2img at strength 0.65 (and of the bare VAE round trip);
* default render: the README's render command on config/render.yaml with the toy model and with a
  random-init twin of it: mean frame-to-frame difference, how much of it the 2D motion explains, the
  difference at the prompt keyframe, how far the subject turned and grew against the angle and zoom
  schedules, and each keyframe prompt's color share over the frames.

    .venv/bin/python bench/bench_toy_quality.py [--seeds 5] [--sides 128 64]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity

from deforum_steps import diffusion, models, motion2d, toy_world
from deforum_steps.io import read_image

REPO = Path(__file__).resolve().parents[1]
CIRCLE_SQUARE_EXTENT = 0.89  # between a drawn circle's 0.785 and a drawn square's 1.0
CIRCLE_SQUARE_CIRCULARITY = 0.84  # between a drawn circle's ~0.9 and a drawn square's ~0.79


def render(pipe, prompt: str, seed: int, side: int, args, init: np.ndarray | None = None,
           strength: float = 0.0) -> np.ndarray:
    """txt2img, or img2img of `init` at `strength`, with the render defaults (sampler, steps, scale)."""
    latent = None if init is None else diffusion.encode_image(pipe, init)
    latent = diffusion.denoise(pipe, latent, prompt=prompt, steps=args.steps, strength=strength,
                               cfg_scale=args.scale, sampler=args.sampler, seed=seed, width=side, height=side)
    return diffusion.decode_latent(pipe, latent)


def blobs(mask: np.ndarray, min_share: float = 0.01) -> int:
    """Connected parts of the mask covering at least `min_share` of the image."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    return int((stats[1:, cv2.CC_STAT_AREA] >= min_share * mask.size).sum())


def bench_prompts(pipe, side: int, args) -> None:
    """Color hit rate, circularity per shape, circle-vs-square separation and blob count at one size."""
    colors = list(toy_world.SHAPE_COLORS)
    backgrounds = list(toy_world.BACKGROUND_COLORS)
    hits = {c: [] for c in colors}
    circ = {s: {} for s in toy_world.SHAPES}
    fill = {s: {} for s in toy_world.SHAPES}
    parts = []
    for c in colors:
        others = [b for b in backgrounds if b != c]
        for s in toy_world.SHAPES:
            for seed in range(args.seeds):
                bg = others[seed % len(others)]
                image = render(pipe, f"a {c} {s} on a {bg} background", seed, side, args)
                hits[c].append(toy_world.dominant_color(image, exclude=(bg,)) == c)
                mask = toy_world.color_mask(image, c)
                circ[s][c, seed] = toy_world.circularity(mask)
                fill[s][c, seed] = toy_world.extent(mask)
                parts.append(blobs(mask))
    print(f"\n[{side}x{side}] txt2img, {args.seeds} seeds per caption, backgrounds cycled per seed")
    print("color   dominant-color hit rate")
    for c in colors:
        print(f"  {c:<7} {np.mean(hits[c]):5.0%}")
    total = np.mean([h for v in hits.values() for h in v])
    print(f"  all     {total:5.0%}   (target >= 80%)")
    print("shape    median [25%, 75%] of the named color's largest blob: circularity | extent")
    for s in toy_world.SHAPES:
        c1, f1 = (np.percentile(list(m[s].values()), [50, 25, 75]) for m in (circ, fill))
        print(f"  {s:<8} {c1[0]:.3f} [{c1[1]:.3f}, {c1[2]:.3f}] | {f1[0]:.3f} [{f1[1]:.3f}, {f1[2]:.3f}]")
    for name, measure, threshold in (("circularity", circ, CIRCLE_SQUARE_CIRCULARITY),
                                     ("extent", fill, CIRCLE_SQUARE_EXTENT)):
        rounder = np.mean([measure["circle"][k] > measure["square"][k] for k in measure["circle"]])
        split = np.mean([v > threshold for v in measure["circle"].values()]
                        + [v <= threshold for v in measure["square"].values()])
        print(f"  by {name}: circle/square told apart (threshold {threshold}) in {split:.0%}; the circle "
              f"scores higher than the square of the same color and seed in {rounder:.0%}")
    print(f"  blobs of the named color per image: mean {np.mean(parts):.2f}, "
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


def random_init_folder(model: Path, folder: Path, seed: int = 0) -> Path:
    """A copy of the model folder with freshly initialised weights: what an untrained model draws."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    shutil.copytree(model, folder, ignore=shutil.ignore_patterns("*.safetensors", "SHA256SUMS"))
    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model / "unet")).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(AutoencoderKL.load_config(model / "vae")).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig.from_pretrained(model / "text_encoder")).save_pretrained(folder / "text_encoder")
    return folder


def render_default(workdir: Path, model: Path, seed: int) -> Path:
    """The README's render command on config/render.yaml, with only the model and seed set; returns the
    output folder."""
    workdir.mkdir(parents=True)
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "--configfile",
           str(REPO / "config" / "render.yaml"), "--config", f"model={model}", f"seed={seed}"]
    subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
    return workdir / "output" / "deforum"


def prompt_color(prompt: str) -> str:
    return next(w for w in prompt.split() if w in toy_world.SHAPE_COLORS)


def print_carried_motion(frames: list[np.ndarray], table: pd.DataFrame, every: int = 4) -> None:
    """How far the prompt's subject (its color's mask) has turned and grown since the prompt's first
    frame, measured frame to frame, against what the angle and zoom schedules asked for by then."""
    for prompt, rows in table.groupby("prompt", sort=False):
        color = prompt_color(prompt)
        masks = [toy_world.color_mask(frames[i].astype(np.uint8), color) for i in rows.index]
        turns, scales = zip(*(toy_world.turn_and_scale(a, b) for a, b in zip(masks, masks[1:])))
        turned, grew = np.cumsum(turns), np.cumprod(scales)
        asked_turn = rows["angle"].iloc[1:].cumsum().to_numpy()
        asked_zoom = rows["zoom"].iloc[1:].cumprod().to_numpy()
        picks = range(every - 1, len(turned), every)
        frame = [rows.index[k + 1] for k in picks]
        print(f"    {color} subject since frame {rows.index[0]}, measured/scheduled:\n      turn (deg) "
              + " ".join(f"f{f}:{turned[k]:.0f}/{asked_turn[k]:.0f}" for f, k in zip(frame, picks))
              + "\n      size       "
              + " ".join(f"f{f}:{grew[k]:.2f}/{asked_zoom[k]:.2f}" for f, k in zip(frame, picks)))


def bench_default_render(model: Path, args) -> None:
    """Frame-to-frame change of the default render with the toy model and with its random-init twin; how
    much of it the 2D motion explains (frame i vs frame i-1 warped by frame i's keys, against unwarped); and,
    for the toy model, how far its subjects turned and grew (print_carried_motion) and the share of each
    keyframe prompt's color over the frames."""
    print(f"\ndefault render (config/render.yaml, seed {args.render_seed}): mean |frame i - frame i-1| (0-255); "
          "|frame i - warp(frame i-1)| shows how much of that the motion carries")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, folder in (("toy", model), ("random-init", random_init_folder(model, tmp / "random-model"))):
            out = render_default(tmp / name, folder, args.render_seed)
            table = pd.read_csv(out / "schedules.csv", index_col="frame")
            frames = [read_image(p).astype(np.float32) for p in sorted((out / "frames").glob("*.png"))]
            step, unexplained = [], []
            for i in range(1, len(frames)):
                keys = {k: table.at[i, k] for k in ("angle", "zoom", "translation_x", "translation_y")}
                step.append(np.abs(frames[i] - frames[i - 1]).mean())
                unexplained.append(np.abs(frames[i] - motion2d.warp_2d(frames[i - 1], **keys)).mean())
            keyframe = int(table["prompt"].ne(table["prompt"].shift()).iloc[1:].idxmax())
            around = np.delete(step, keyframe - 1)
            print(f"  {name:<12} {len(frames)} frames: |frame i - frame i-1| mean {np.mean(step):5.1f} "
                  f"(at the prompt change, frame {keyframe}: {step[keyframe - 1]:5.1f}; elsewhere max "
                  f"{around.max():5.1f}); |frame i - warp(frame i-1)| mean {np.mean(unexplained):5.1f}")
            if name == "toy":
                print_carried_motion(frames, table)
                rows = []
                for prompt in table["prompt"].unique():
                    c = prompt_color(prompt)
                    share = [toy_world.color_mask(f.astype(np.uint8), c).mean() for f in frames]
                    every_6th = "".join(f" f{i}:{share[i]:.0%}" for i in range(0, len(frames), 6))
                    rows.append(f"{c} ({prompt!r}){every_6th}")
                print("    color share per frame: " + "\n                            ".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "toy")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sides", type=int, nargs="*", default=[128, 64],
                        help="128 is the trained size; none: only the default render")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=7.0)
    parser.add_argument("--sampler", default="euler_ancestral")
    parser.add_argument("--strength", type=float, default=0.65)
    parser.add_argument("--render-seed", type=int, default=1, help="seed of the default renders")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    pipe = models.load_folder(args.model, torch.device("cpu"), torch.float32)
    print(f"model {args.model}: sampler {args.sampler}, {args.steps} steps, scale {args.scale}")
    for side in args.sides:
        bench_prompts(pipe, side, args)
        bench_layout(pipe, side, args)
    bench_default_render(args.model, args)
    print(f"\nbench took {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
