"""Train the embedded depth model (`depth_algorithm: embedded`, deforum_steps.depth_net.DepthUNet) on the
generated scenes of deforum_steps.depth_world, and save it to models/depth/ (fp16 safetensors, config.json,
SHA256SUMS, training.json with the settings, the time taken and the held-out rank correlation).

Loss: L1 on log depth, L1 on it less its per-image median (the scene's layout, whatever its scale), L1 on its
gradients at four scales (edges and slopes where they belong) and a ranking loss on random pixel pairs (without
it the network learnt walls as flat: a wall's tilt is a small step in depth, but decides the order of all its
pixels). Inputs are flipped, zoomed, darkened and their colour channels shuffled at random (augment). The
same --seed, --steps and --threads give the same weights on one machine; with --minutes the learning-rate
schedule follows the time too and training stops when it is up, so the weights depend on CPU speed. The
committed weights: 30 minutes on 2 quiet cores (40,000 scenes, 5,584 steps); it prints the time and the
held-out score.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/train_depth_model.py --seed 0 --minutes 30 --steps 100000 --threads 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from deforum_steps import depth_world
from deforum_steps.depth_net import DepthUNet

HELD_OUT_SEED_OFFSET = 1_000_003  # held-out scenes: another seed than any training scene's
CHUNK = 1000  # scenes generated per worker task, each chunk from its own seed


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> (N, 3, S, S) in -1..1, as deforum_steps.depth feeds the network."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def gradient_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    loss = pred.new_zeros(())
    for _ in range(4):
        diff = pred - true
        loss = loss + (diff[:, :, 1:] - diff[:, :, :-1]).abs().mean() + (diff[:, 1:] - diff[:, :-1]).abs().mean()
        pred, true = F.avg_pool2d(pred[:, None], 2)[:, 0], F.avg_pool2d(true[:, None], 2)[:, 0]
    return loss


def generate(seed: int, n: int, side: int, toy_share: float, workers: int) -> list[depth_world.DepthScene]:
    """n training scenes, in chunks of CHUNK scenes seeded seed * CHUNK + chunk (the same on any worker count)."""
    tasks = [(seed * CHUNK + i, min(CHUNK, n - i * CHUNK), side, toy_share) for i in range(math.ceil(n / CHUNK))]
    with Pool(workers) as pool:
        return [scene for chunk in pool.starmap(depth_world.scenes, tasks) for scene in chunk]


def ranking_loss(pred: torch.Tensor, true: torch.Tensor, rng: np.random.Generator, pairs: int = 4096) -> torch.Tensor:
    """RankNet on random pixel pairs at two different true depths: the order, however small the step (a wall's
    tilt), counts as much as the order across an edge; what the rank-correlation measure asks."""
    n, flat_pred, flat_true = pred.shape[0], pred.flatten(1), true.flatten(1)
    i, j = (torch.from_numpy(rng.integers(flat_pred.shape[1], size=(n, pairs))) for _ in range(2))
    step = flat_true.gather(1, i) - flat_true.gather(1, j)
    order = torch.sign(step) * (step.abs() > 1e-4)
    margin = (flat_pred.gather(1, i) - flat_pred.gather(1, j)) * order * 20  # 0.1 in log depth: a sure order
    return (F.softplus(-margin) * order.abs()).sum() / order.abs().sum().clamp(min=1)


def augment(x: torch.Tensor, log_depth: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """What changes an image but not the order of its depths: a mirror image, a zoom into it up to 1.6x (a 3D
    zoom render's shapes grow past what the toy model draws) and a darker or brighter picture (renders drift)."""
    if rng.random() < 0.5:
        x, log_depth = x.flip(-1), log_depth.flip(-1)
    if rng.random() < 0.5:
        side = x.shape[-1]
        crop = int(side / rng.uniform(1.0, 1.6))
        top, left = rng.integers(side - crop + 1, size=2)
        window = (slice(None), slice(None), slice(top, top + crop), slice(left, left + crop))
        x = F.interpolate(x[window], size=(side, side), mode="bilinear", align_corners=False)
        log_depth = F.interpolate(log_depth[:, None][window], size=(side, side), mode="nearest")[:, 0]
    gain = torch.from_numpy(rng.uniform(0.5, 1.1, (x.shape[0], 1, 1, 1))).float()
    return ((x + 1) * gain - 1).clamp(-1, 1), log_depth


def held_out_scores(net: DepthUNet, scenes: list[depth_world.DepthScene]) -> dict[str, float]:
    with torch.inference_mode():
        log_z = net.log_depth(to_input(np.stack([s.image for s in scenes]))).numpy()
    rooms = [depth_world.rank_correlation(p, s.depth) for p, s in zip(log_z, scenes) if s.kind == "room"]
    toys = [depth_world.pairs_ordered(p, s.depth) for p, s in zip(log_z, scenes) if s.kind == "toy"]
    return {"rooms, rank correlation": round(float(np.mean(rooms)), 3),
            "toy frames, pairs ordered": round(float(np.mean(toys)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("models/depth"))
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (weights then vary)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--scenes", type=int, default=40000)
    parser.add_argument("--toy-share", type=float, default=0.2, help="share of toy frames (learnt fast) in training")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and scene-generating processes")
    parser.add_argument("--side", type=int, default=128, help="the network's input side (every image resized to it)")
    parser.add_argument("--channels", type=int, nargs="+", default=[12, 24, 48, 64, 96], help="the U-Net's widths")
    parser.add_argument("--rank-weight", type=float, default=0.5, help="weight of the ranking loss")
    parser.add_argument("--fold", type=int, default=2, help="space-to-depth factor: the U-Net works at side / fold")
    args = parser.parse_args()

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    scenes = generate(args.seed, args.scenes, args.side, args.toy_share, args.threads)
    images = np.stack([s.image for s in scenes])
    log_depths = torch.from_numpy(np.log(np.stack([s.depth for s in scenes])))
    held_out = depth_world.scenes(args.seed + HELD_OUT_SEED_OFFSET, 200, args.side)  # checks use the first 60
    print(f"{args.scenes} scenes generated in {time.perf_counter() - start:.0f}s", flush=True)

    net = DepthUNet(tuple(args.channels), args.fold)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    deadline = start + args.minutes * 60 if args.minutes else math.inf
    running, step = [], 0
    for step in range(1, args.steps + 1):
        # With --minutes, the schedule follows the time used too, so it ends cooled down whatever the CPU speed.
        progress = max(step / args.steps, (time.perf_counter() - start) / (deadline - start))
        for group in optimizer.param_groups:  # warm-up, then cosine down to 5%
            group["lr"] = args.lr * min(1.0, step / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        pick = rng.integers(len(scenes), size=args.batch)
        x, target = augment(to_input(images[pick][..., rng.permutation(3)]), log_depths[pick], rng)
        pred = net.log_depth(x)
        error = pred - target
        shape_error = error - error.flatten(1).median(1).values[:, None, None]  # what scaling cannot fix
        loss = (0.5 * error.abs().mean() + shape_error.abs().mean() + 0.5 * gradient_loss(pred, target)
                + args.rank_weight * ranking_loss(pred, target, rng))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        if step % 100 == 0:
            print(f"step {step} loss {np.mean(running):.4f} {time.perf_counter() - start:.0f}s", flush=True)
            running.clear()
        if step % 500 == 0:
            print(f"step {step} held-out {held_out_scores(net, held_out[:60])}", flush=True)
        if progress >= 1:
            print(f"stopped at step {step}", flush=True)
            break
    net.eval()
    scores = held_out_scores(net, held_out)
    seconds = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "model.safetensors"
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, weights)
    weights.chmod(0o644)
    (args.out / "config.json").write_text(json.dumps(
        {"architecture": "DepthUNet", "channels": list(net.channels), "fold": net.fold, "input_side": args.side,
         "output": "MiDaS v3 raw depth, 50 - 19 z"}, indent=2) + "\n")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (args.out / "SHA256SUMS").write_text(f"{digest}  {weights.name}\n")
    (args.out / "training.json").write_text(json.dumps(
        {"seed": args.seed, "steps": step, "batch": args.batch, "lr": args.lr, "scenes": args.scenes,
         "toy_share": args.toy_share, "side": args.side, "fold": args.fold, "channels": list(net.channels),
         "rank_weight": args.rank_weight, "threads": args.threads, "seconds": round(seconds), "held_out": scores,
         "torch": torch.__version__}, indent=2) + "\n")
    print(f"held-out scenes (mean over scenes): {scores}")
    print(f"trained in {seconds / 60:.1f} min; weights {weights} ({weights.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
