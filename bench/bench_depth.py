"""Depth models: how right they are, how much 3D they give, what they cost. Prints measured numbers.

1. Rank correlation (Spearman, per image, mean) of each available model's depth with the true depth of
   held-out generated scenes (deforum_steps.depth_world, a seed no training scene used), rooms and toy frames
   apart, at --side px. A toy frame's truth has two levels (shape, wall), where Spearman stays well below 1
   even for a perfect ordering (a network's depth is not flat within them): the share of (shape, wall) pixel
   pairs ordered right is printed too. Rooms' walls facing the camera are one depth likewise: the true depth
   plus noise too small to see is scored too: what a near-perfect model scores.
2. The toy model's own frames: the README's default render with `animation_mode: 3D` (--frames frames, 128 px,
   builtin:toy, depth_algorithm auto), rendered in a temporary folder. Truth: the shape (its prompt colour) is
   nearer than the background (what is not the prompt's background colour); rank correlation of each depth map
   with it, and the share of (shape, background) pixel pairs ordered right.
3. Parallax of that render: frame 0 and its depth map warped by one frame of the render's 3D motion (its
   translation_z); the magnification the warp gives each pixel (distance from the centre after / before, read
   from warped coordinate ramps), median over the shape and over the background. Also the shape's size growth
   per frame over the render's frames (diffusion included).
4. Cost: seconds per depth map for each available model at 128 and 512 px, torch on 1 thread (after a warm-up).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_depth.py [--scenes 200] [--side 128] [--frames 12]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from deforum_steps import depth_models, depth_world, io, toy_world
from deforum_steps.config import ConfigError
from deforum_steps.depth import load_depth_model
from deforum_steps.motion3d import warp_3d

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
HELD_OUT_SEED = 20_250_917


def available_models() -> list[str]:
    names = ["embedded", "tiny"]
    for name in depth_models.AUTO_ORDER:
        try:
            depth_models.find(name)
        except ConfigError:
            continue
        names.append(name)
    return names


def held_out(names: list[str], n: int, side: int) -> None:
    scenes = depth_world.scenes(HELD_OUT_SEED, n, side)
    print(f"\n1. held-out generated scenes ({n}, {side} px, seed {HELD_OUT_SEED}): mean Spearman rank correlation "
          "with the true depth")
    for name in names:
        model = load_depth_model(name, "", "cpu", 1.0)
        rooms, toys, toy_pairs = [], [], []
        for scene in scenes:
            depth = model.predict(scene.image)
            (rooms if scene.kind == "room" else toys).append(depth_world.rank_correlation(depth, scene.depth))
            if scene.kind == "toy":
                toy_pairs.append(depth_world.pairs_ordered(depth, scene.depth))
        print(f"  {name:24s} rank correlation: all {np.mean(rooms + toys):.3f}, rooms {np.mean(rooms):.3f} "
              f"({len(rooms)}), toy frames {np.mean(toys):.3f} ({len(toys)}; pairs ordered {np.mean(toy_pairs):.3f})")
    # What the measure allows: a wall facing the camera is one depth, which any prediction not exactly flat there
    # misranks; the truth itself, with noise too small to see, shows how far below 1 that puts a perfect model.
    noise = np.random.default_rng(0)
    truth = [depth_world.rank_correlation(np.log(s.depth) + noise.normal(0, 0.02, s.depth.shape), s.depth)
             for s in scenes if s.kind == "room"]
    print(f"  {'true depth + noise':24s} rooms {np.mean(truth):.3f} (noise 0.02 in log depth: what a near-perfect "
          "model scores)")


def render_default_3d(workdir: Path, frames: int) -> tuple[Path, dict]:
    cfg = yaml.safe_load((REPO / "config" / "render.yaml").read_text())
    cfg.update(animation_mode="3D", max_frames=frames, seed=1, output_path=str(workdir / "output"))
    (workdir / "render.yaml").write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--cores", "1", "--configfile",
                           str(workdir / "render.yaml")], cwd=workdir, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    line = next(x for x in proc.stderr.splitlines() if x.startswith("depth model:"))
    print(f"\nrendered the default config in 3D ({frames} frames) in {time.perf_counter() - start:.0f}s; {line}")
    out = workdir / "output" / cfg["batch_name"]
    return out, yaml.safe_load((out / "settings.yaml").read_text()) if (out / "settings.yaml").exists() else cfg


def shape_mask(frame: np.ndarray, prompt: str) -> np.ndarray:
    """What is not the prompt's background colour (toy captions: '... on a blue background' / 'gradient'): the
    shape, however far the render's colours have drifted from the shape's."""
    words = prompt.split()
    background = words[max(i for i, w in enumerate(words) if w in ("background", "gradient")) - 1]
    return ~toy_world.color_mask(frame, background, max_distance=90)


def toy_frames(out: Path, frames: int, prompts: dict) -> None:
    print("\n2. the toy model's own frames (the render's depth maps; truth: shape nearer than background)")
    rows = []
    for s in range(frames - 1):  # the last frame's depth map is not needed by the render
        frame = io.read_image(out / "frames" / f"{s:05d}.png")
        mask = shape_mask(frame, prompt_at(prompts, s))
        if mask.sum() < 20 or (~mask).sum() < 20:
            continue
        depth = np.load(out / "depth" / f"{s:05d}.npy")
        truth = np.where(mask, 0.0, 1.0)
        rows.append((depth_world.rank_correlation(depth, truth), depth_world.pairs_ordered(depth, truth)))
    rank, pairs = np.mean(rows, axis=0)
    print(f"  {len(rows)} frames: rank correlation {rank:.3f}, (shape, background) pairs ordered right {pairs:.3f}")


def prompt_at(prompts: dict, frame: int) -> str:
    return prompts[max(k for k in map(int, prompts) if k <= frame)]


def magnification(depth: np.ndarray, translation_z: float, fov: float) -> np.ndarray:
    """Per pixel, how much farther from the centre the 3D warp (translation_z, bilinear) puts what was there."""
    h, w = depth.shape
    ramps = np.zeros((h, w, 3), np.float32)
    ramps[..., 0] = np.linspace(0, 255, w)[None, :]
    ramps[..., 1] = np.linspace(0, 255, h)[:, None]
    warped = warp_3d(ramps, depth, translation_x=0, translation_y=0, translation_z=translation_z, rotation_3d_x=0,
                     rotation_3d_y=0, rotation_3d_z=0, fov=fov, near=200, far=10000, sampling_mode="bilinear")
    src = np.stack([warped[..., 0] / 255 * (w - 1), warped[..., 1] / 255 * (h - 1)], -1).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centre = np.float32([(w - 1) / 2, (h - 1) / 2])
    after = np.hypot(xx - centre[0], yy - centre[1])
    before = np.linalg.norm(src - centre, axis=-1)
    far_enough = after > 0.15 * w  # near the centre the ratio is all rounding
    return np.where(far_enough, after / np.maximum(before, 1e-3), np.nan)


def parallax(out: Path, settings: dict, frames: int, prompts: dict) -> None:
    tz = float(str(settings["translation_z"]).split("(")[1].split(")")[0])
    fov = float(str(settings["fov_schedule"]).split("(")[1].split(")")[0])
    frame0 = io.read_image(out / "frames" / "00000.png")
    depth0 = np.load(out / "depth" / "00000.npy")
    mask = shape_mask(frame0, prompt_at(prompts, 0))
    mag = magnification(depth0, tz, fov)
    shape, background = np.nanmedian(mag[mask]), np.nanmedian(mag[~mask])
    print(f"\n3. parallax: one frame of the render's motion (translation_z {tz}) warping frame 0 with its depth map")
    print(f"  magnification: shape x{shape:.4f}, background x{background:.4f}; the shape grows "
          f"{(shape - 1) / (background - 1):.2f}x as fast (depth: shape median {np.median(depth0[mask]):.3f}, "
          f"background {np.median(depth0[~mask]):.3f})")
    last = min(frames - 1, min((k for k in map(int, prompts) if k > 0), default=frames) - 1)
    end = shape_mask(io.read_image(out / "frames" / f"{last:05d}.png"), prompt_at(prompts, last))
    _, scale = toy_world.turn_and_scale(mask, end)
    print(f"  the shape over the rendered frames 0..{last}: x{scale:.3f} in size, x{scale ** (1 / last):.4f} a "
          f"frame (diffusion redraws it each frame at strength {settings['strength_schedule']})")


def cost(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"\n4. depth map cost, CPU, torch threads {torch.get_num_threads()} (median of 5 after a warm-up)")
    rng = np.random.default_rng(0)
    for name in names:
        model = load_depth_model(name, "", "cpu", 1.0)
        cells = []
        for side in (128, 512):
            image = depth_world.sample(rng, side).image
            model.predict(image)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                model.predict(image)
                times.append(time.perf_counter() - start)
            cells.append(f"{side} px {np.median(times) * 1000:8.1f} ms")
        print(f"  {name:24s} " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    names = available_models()
    print(f"depth models with weights here: {', '.join(names)} (tiny = random weights, a baseline)")
    held_out(names, args.scenes, args.side)
    with tempfile.TemporaryDirectory() as tmp:
        out, settings = render_default_3d(Path(tmp), args.frames)
        prompts = {int(k): v for k, v in yaml.safe_load((REPO / "config" / "render.yaml").read_text())[
            "animation_prompts"].items()}
        toy_frames(out, args.frames, prompts)
        parallax(out, settings, args.frames, prompts)
    cost(names)


if __name__ == "__main__":
    main()
