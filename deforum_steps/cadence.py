"""Diffusion cadence ("turbo"): which frames are diffused, how every output frame is made from the diffused
images, as the references' loop does (deforum-behaviour.md §6), and the blend of the two warped images.

With cadence c, frames 0, c, 2c, ... are diffused. Frame i in the interval [d, d + c) of diffusion d
cross-fades diffusion d - c (weight 1 - t) and diffusion d (weight t), t = (i - d + 1) / c, each warped
forward frame by frame with the motion keys of the frames after it up to i. The first interval uses
diffusion 0 alone, and the last frame of an interval (t = 1) is diffusion d alone: a diffusion reaches full
weight one interval after its frame.

Departure (decisions.md): the references stop the loop at the last diffusion and never write it nor the
frames after it. Here every frame < n_frames is written; the tail after the last diffusion d is the interval
[d, d + c) cut at n_frames, made exactly as the loop would make it if it went on. So the plan of a frame does
not depend on n_frames: rendering more frames never changes the earlier ones.

Depth (3D): at each tween step t the reference predicts depth once, on the `next` image as it is before step
t, and warps both images with it. The `depth_of` lists give, per warp step t, the diffusion d whose image,
warped with the keys of frames d+1 .. t-1, is the one the depth is predicted on.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _check(cadence: int) -> None:
    if int(cadence) != cadence or cadence < 1:
        raise ValueError(f"diffusion_cadence must be an integer >= 1, got {cadence!r}")


def diffusion_frames(n_frames: int, cadence: int) -> list[int]:
    """Frames sent to the diffusion model, in order."""
    _check(cadence)
    return list(range(0, n_frames, cadence))


def _source(diffused_at: int, frame: int, cadence: int) -> dict:
    warps = list(range(diffused_at + 1, frame + 1))
    return {"diffused_at": diffused_at, "warps": warps, "depth_of": [t - t % cadence for t in warps]}


def tween_plan(i: int, n_frames: int, cadence: int) -> dict:
    """How output frame i is made: `prev_weight * prev + next_weight * next`, where `prev`/`next` are
    `{diffused_at, warps, depth_of}`: the diffused image at frame `diffused_at`, warped with the motion keys
    of each frame in `warps`, in order. `prev` is None when only `next` is used (then `prev_weight` is 0).
    `tween` is the reference's tween value (= next_weight whenever prev is used)."""
    _check(cadence)
    if not 0 <= i < n_frames:
        raise ValueError(f"frame {i} outside 0..{n_frames - 1}")
    current = i - i % cadence
    tween = (i - current + 1) / cadence
    plan = {"frame": i, "tween": tween, "prev_weight": 0.0, "next_weight": 1.0, "prev": None,
            "next": _source(current, i, cadence)}
    if current > 0 and tween < 1.0:
        plan.update(prev_weight=1.0 - tween, next_weight=tween, prev=_source(current - cadence, i, cadence))
    return plan


def init_plan(frame: int, cadence: int) -> dict | None:
    """The init image of the diffusion at `frame` (a multiple of the cadence): the previous diffusion warped
    with the keys of every frame after it up to `frame` included (= the interval's last tween, warped once
    more), each step's depth predicted on the image being warped. None for frame 0 (no previous image)."""
    _check(cadence)
    if frame < 0 or frame % cadence:
        raise ValueError(f"frame {frame} is not a diffusion frame for cadence {cadence}")
    if frame == 0:
        return None
    source = frame - cadence
    return {"diffused_at": source, "warps": list(range(source + 1, frame + 1)), "depth_of": [source] * cadence}


def start(source: Mapping) -> int:
    """The frame whose image a warp chain starts from: its diffusion (`diffused_at`) or, in a job plan, the output
    frame it resumes from (`frame_at`, `resumed`). With cadence > 1 the two never coincide: a resumed chain starts
    at the last frame of an interval, d - 1 for a diffusion d."""
    return source["frame_at"] if "frame_at" in source else source["diffused_at"]


def resumed(source: Mapping, cadence: int) -> dict:
    """A warp chain of diffusion s that runs past its interval's last frame s + c - 1, as a job makes it: from that
    output frame's image, with the warps after it. That frame is diffusion s warped through s+1 .. s+c-1 and nothing
    else (its tween weight is 1), so the rest of the chain gives the same pixels from it, and a job reads one frame
    and the depth maps of the remaining steps instead of the whole chain's. Other chains (and any with cadence 1,
    where frames are the diffusions) are returned as they are."""
    skip = cadence - 1  # the warps into s+1 .. s+c-1
    if cadence == 1 or len(source["warps"]) <= skip:
        return dict(source)
    return {"frame_at": source["diffused_at"] + skip, "warps": source["warps"][skip:],
            "depth_of": source["depth_of"][skip:]}


def blend_job_plan(i: int, n_frames: int, cadence: int) -> dict:
    """tween_plan of frame i with its older image's chain resumed from the last frame of the interval before."""
    plan = tween_plan(i, n_frames, cadence)
    return {**plan, "prev": resumed(plan["prev"], cadence) if plan["prev"] else None}


def init_job_plan(frame: int, cadence: int) -> dict | None:
    """init_plan of diffusion `frame`, resumed: with cadence > 1, frame - 1 warped once with the frame's keys."""
    plan = init_plan(frame, cadence)
    return None if plan is None else resumed(plan, cadence)


def blend(prev: np.ndarray | None, nxt: np.ndarray, prev_weight: float, next_weight: float) -> np.ndarray:
    """A tween frame from its two warped uint8 images: float64 blend rounded half to even (webui, whose
    cv2.imwrite rounds the float64 blend; the notebook truncates float32 images instead, 1-3 LSB apart)."""
    if prev is None:
        return nxt.copy()
    mixed = prev.astype(np.float64) * prev_weight + nxt.astype(np.float64) * next_weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
