"""Scenes with known depth, for the embedded depth model (`depth_algorithm: embedded`): its training data, its
tests and its bench. Pure and seeded, like toy_world, whose shapes it places in a 3D room.

A pinhole camera at the origin looks along +z (x right, y down). Every pixel's depth is its z, in the units the
3D warp reads (`motion3d.warp_3d`, the notebook's raw MiDaS depth `(50 - d) / 19`): the scenes span about
0.45..3, the range that conversion gives for MiDaS' outputs. Two kinds of scene:
- room: a back wall (tilted up to ~20 degrees either way when stripes or checks show it) and a ground plane (the
  camera pitched a little up or down, the ground always in view below the wall), their textures plain, graded,
  striped or checked in world coordinates and sometimes fading into haze with distance; up to four toy_world
  shapes, flat, facing the camera, standing on the ground, their size on screen shrinking with depth (a room
  without ground, its wall facing us, would be one depth: nothing to learn or to rank);
- toy: the toy model's own frames, one shape over a plain or top-to-black gradient background, the background
  a wall facing the camera, the shape somewhere in front of it.
Images get a little blur and grain now and then, as diffusion output has.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.stats import rankdata

from . import toy_world

NEAR, FAR = 0.45, 3.0  # the depth range of every scene
_WALL_COLORS = list(toy_world.BACKGROUND_COLORS.values())
_SHAPE_COLORS = list(toy_world.SHAPE_COLORS)


@dataclass(frozen=True)
class DepthScene:
    image: np.ndarray  # RGB uint8 (side, side, 3)
    depth: np.ndarray  # float32 (side, side), z of every pixel
    kind: str  # "room" or "toy"


def _pixel_rays(side: int, tan_half: float) -> tuple[np.ndarray, np.ndarray]:
    """x/z and y/z of the ray through each pixel centre."""
    ndc = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
    return np.meshgrid(ndc * tan_half, ndc * tan_half)


def _texture(style: str, rng: np.random.Generator, a: np.ndarray, b: np.ndarray, base: np.ndarray) -> np.ndarray:
    """A plane's colour from its 2D world coordinates (a, b): plain, graded, striped or checked."""
    out = np.broadcast_to(base, (*a.shape, 3)).astype(np.float32)
    if style == "plain":
        return out
    other = np.asarray(_WALL_COLORS[rng.integers(len(_WALL_COLORS))], np.float32)
    if style == "grade":
        t = np.clip((b - b.min()) / max(1e-6, float(np.ptp(b))), 0, 1)[..., None]
        return out * (1 - t) + other * t
    period = float(rng.uniform(0.1, 0.5))
    mix = float(rng.uniform(0.3, 1.0))
    if style == "stripes":
        on = np.floor(b / period) % 2
    else:
        on = (np.floor(a / period) + np.floor(b / period)) % 2
    return out + (other - out) * (on[..., None] * mix)


def _style(rng: np.random.Generator) -> str:
    return str(rng.choice(["plain", "grade", "stripes", "checks"], p=[0.35, 0.2, 0.15, 0.3]))


def _room(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
    """Background image and depth of a room, (height, slope) of its ground, tan(fov / 2)."""
    tan_half = float(np.tan(np.radians(rng.uniform(30, 65)) / 2))
    rx, ry = _pixel_rays(side, tan_half)
    wall_z = float(rng.uniform(1.4, 2.9))
    style = _style(rng)
    # wall: z = wall_z + tilt_x * x + tilt_y * y; only a striped or checked wall shows a tilt, others face us
    tilt_x, tilt_y = rng.uniform(-0.35, 0.35, 2) if style in ("stripes", "checks") else (0.0, 0.0)
    wall = wall_z / np.maximum(1 - tilt_x * rx - tilt_y * ry, 0.3)
    depth = np.clip(wall, NEAR, FAR)
    image = _texture(style, rng, rx * depth, ry * depth, np.asarray(_WALL_COLORS[rng.integers(len(_WALL_COLORS))]))
    # ground: y = height - slope * z, low enough that the bottom row sees it at most 0.6 of the wall's depth
    slope = float(rng.uniform(-0.15, 0.35))
    height = min(float(rng.uniform(0.2, 0.7)), 0.6 * wall_z * (tan_half + slope))
    with np.errstate(divide="ignore"):
        floor = np.where(ry + slope > 1e-3, height / (ry + slope), np.inf)
    on_floor = floor < depth
    depth = np.where(on_floor, np.clip(floor, NEAR, FAR), depth)
    floor_image = _texture(_style(rng), rng, rx * depth, depth,
                           np.asarray(_WALL_COLORS[rng.integers(len(_WALL_COLORS))]))
    image = np.where(on_floor[..., None], floor_image, image)
    if rng.random() < 0.3:  # haze: colours fade towards one colour with distance
        haze = np.asarray(_WALL_COLORS[rng.integers(len(_WALL_COLORS))], np.float32)
        fade = (1 - np.exp(-(depth - NEAR) * rng.uniform(0.1, 0.5)))[..., None]
        image = image * (1 - fade) + haze * fade
    return image, depth.astype(np.float32), (height, slope), tan_half


def _coverage(scene: toy_world.Scene, side: int) -> np.ndarray:
    """How much of each pixel the scene's shape covers, 0..1 (its anti-aliased mask)."""
    white = toy_world.Scene(scene.shape, "white", "black", False, scene.cx, scene.cy, scene.size, scene.angle)
    low, high = (np.float32(toy_world.BACKGROUND_COLORS[c][0]) for c in ("black", "white"))
    return np.clip((toy_world.draw(white, side)[..., 0] - low) / (high - low), 0, 1)


def _paste_shape(rng: np.random.Generator, image: np.ndarray, depth: np.ndarray, z: float, cx: float, cy: float,
                 size: float) -> None:
    """A toy_world shape at depth z, centre (cx, cy) and half-extent `size` (fractions of the side), in place."""
    shape = toy_world.SHAPES[rng.integers(len(toy_world.SHAPES))]
    color = _SHAPE_COLORS[rng.integers(len(_SHAPE_COLORS))]
    angle = float(rng.uniform(-toy_world.MAX_TURN, toy_world.MAX_TURN)) if shape != "circle" else 0.0
    alpha = _coverage(toy_world.Scene(shape, color, "black", False, cx, cy, size, angle), depth.shape[0])
    rgb = np.clip(np.asarray(toy_world.SHAPE_COLORS[color], np.float32) * rng.uniform(0.8, 1.1), 0, 255)
    image[:] = image * (1 - alpha[..., None]) + rgb * alpha[..., None]
    depth[alpha > 0.5] = z


def room_scene(rng: np.random.Generator, side: int) -> DepthScene:
    image, depth, ground, tan_half = _room(rng, side)
    far = float(np.percentile(depth, 50))
    zs = np.sort(rng.uniform(NEAR + 0.05, max(NEAR + 0.1, far - 0.1), rng.integers(0, 5)))[::-1]
    for z in zs:  # far to near: nearer shapes cover farther ones
        half = float(rng.uniform(0.04, 0.16))  # world half-extent
        x = float(rng.uniform(-0.9, 0.9)) * z * tan_half
        height, slope = ground
        y = height - slope * z - half  # standing on the ground
        to_frac = 1 / (2 * z * tan_half)
        _paste_shape(rng, image, depth, float(z), 0.5 + x * to_frac, 0.5 + y * to_frac, half * to_frac)
    return DepthScene(_finish(rng, image), depth, "room")


def toy_scene(rng: np.random.Generator, side: int) -> DepthScene:
    """A frame of toy_world, the builtin:toy model's world: its shape in front of its background, a wall facing
    the camera."""
    scene = toy_world.sample_scene(rng)
    wall_z = float(rng.uniform(1.2, FAR))
    depth = np.full((side, side), wall_z, np.float32)
    depth[_coverage(scene, side) > 0.5] = rng.uniform(NEAR + 0.05, wall_z - 0.3)
    return DepthScene(_finish(rng, toy_world.draw(scene, side).astype(np.float32)), depth, "toy")


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.4:
        image = image + rng.normal(0, rng.uniform(2, 8), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def sample(rng: np.random.Generator, side: int, toy_share: float = 0.35) -> DepthScene:
    return toy_scene(rng, side) if rng.random() < toy_share else room_scene(rng, side)


def scenes(seed: int, n: int, side: int, toy_share: float = 0.35) -> list[DepthScene]:
    rng = np.random.default_rng(seed)
    return [sample(rng, side, toy_share) for _ in range(n)]


def rank_correlation(predicted: np.ndarray, true: np.ndarray) -> float:
    """Spearman rank correlation of two depth maps over their pixels (ties share their mean rank); 0 when
    either is constant. Invariant to any increasing transform, so a log depth or a raw depth scores the same."""
    a, b = (rankdata(np.asarray(m, np.float64).ravel()) for m in (predicted, true))
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def pairs_ordered(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of the pixel pairs at two different true depths that `predicted` orders the same way (ties count
    half), over the pairs of the nearest and the farthest true depth level: for a toy frame (shape, wall) the
    measure that a two-level truth allows (Spearman cannot reach 1 there: the prediction is not flat)."""
    near, far = true == true.min(), true == true.max()
    shape, background = np.sort(predicted[near]), np.sort(predicted[far])
    farther = len(background) - np.searchsorted(background, shape, side="right")
    ties = np.searchsorted(background, shape, side="right") - np.searchsorted(background, shape, side="left")
    return float((farther + ties / 2).sum() / (len(shape) * len(background)))
