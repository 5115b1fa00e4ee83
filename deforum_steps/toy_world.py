"""The toy visual world the builtin:toy model is trained on: one flat-colored shape (circle, square,
triangle, star) at any position and size, turned up to MAX_TURN degrees either way, over a plain or gradient
background, with a caption that names them. The turn is there so that a 2D render that turns the shape stays
something the model knows: trained on upright shapes only, every img2img turned it back upright. Pure and
seeded, so the training data, the tests and the quality bench all see the same world."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# One RGB value per color word: the model learns exactly these, and the measures classify against them.
SHAPE_COLORS = {
    "red": (220, 35, 35),
    "green": (40, 175, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 200),
    "orange": (250, 135, 25),
    "white": (245, 245, 245),
}
BACKGROUND_COLORS = {**SHAPE_COLORS, "black": (15, 15, 15), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "star")
WORDS = ("a", "on", "background", "gradient", *BACKGROUND_COLORS, *SHAPES)

# Every turn (0-360 degrees) made the shapes the model draws mushy within its 30-minute training budget
# (measured: its squares no longer fuller than its circles), so shapes stay within 20 degrees of upright.
MAX_TURN = 20.0
SUPERSAMPLE = 4  # draw at 4x and area-downsample: anti-aliased edges like a real image


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    background: str
    gradient: bool  # background fades from `background` at the top to black at the bottom
    cx: float  # centre, as fractions of the width / height
    cy: float
    size: float  # half-extent as a fraction of the image side
    angle: float = 0.0  # rotation in degrees, counter-clockwise on screen

    def caption(self, short: bool = False) -> str:
        """'a red circle on a blue background'; short form 'a red circle'."""
        thing = f"a {self.color} {self.shape}"
        if short:
            return thing
        return f"{thing} on a {self.background} {'gradient' if self.gradient else 'background'}"


def sample_scene(rng: np.random.Generator, shape: str | None = None, color: str | None = None,
                 background: str | None = None) -> Scene:
    """A random scene; fixing shape/color/background draws only the rest."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    color = color or list(SHAPE_COLORS)[rng.integers(len(SHAPE_COLORS))]
    if background is None:
        choices = [c for c in BACKGROUND_COLORS if c != color]
        background = choices[rng.integers(len(choices))]
    gradient = background != "black" and bool(rng.random() < 0.3)
    size = float(rng.uniform(0.16, 0.38))
    angle = float(rng.uniform(-MAX_TURN, MAX_TURN)) if shape != "circle" else 0.0
    # Centre drawn so the whole shape is in the frame; a big rotated square that cannot fit is centred.
    low, high = bounds(shape, size, angle)
    cx, cy = (float(rng.uniform(-lo, 1 - hi)) if hi - lo < 1 else 0.5 for lo, hi in zip(low, high))
    return Scene(shape, color, background, gradient, cx, cy, size, angle)


def scenes(seed: int, n: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(n)]


def _background(scene: Scene, side: int) -> np.ndarray:
    top = np.array(BACKGROUND_COLORS[scene.background], np.float32)
    bottom = np.array(BACKGROUND_COLORS["black"], np.float32) if scene.gradient else top
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (side, side, 3)).astype(np.uint8)


def _outline(shape: str, cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    """Polygon vertices (pixels) of the non-circle shapes, centred on (cx, cy), half-extent r, turned by
    `angle` degrees counter-clockwise on screen (y points down)."""
    if shape == "square":
        angles, radii = np.deg2rad([45, 135, 225, 315]), np.full(4, r * np.sqrt(2))
    elif shape == "triangle":  # upright, vertices at r from the centre
        angles, radii = np.deg2rad([-90, 30, 150]), np.full(3, r)
    elif shape == "star":  # five points, inner radius 0.45 r
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    angles = angles - np.deg2rad(angle)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)


def bounds(shape: str, size: float, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest (x, y) of the shape relative to its centre, as fractions of the image side."""
    if shape == "circle":
        return np.full(2, -size), np.full(2, size)
    outline = _outline(shape, 0.0, 0.0, size, angle)
    return outline.min(0), outline.max(0)


def draw(scene: Scene, side: int) -> np.ndarray:
    """Render the scene as an RGB uint8 (side, side, 3) image."""
    big = side * SUPERSAMPLE
    canvas = np.ascontiguousarray(_background(scene, big))
    color = tuple(int(v) for v in SHAPE_COLORS[scene.color])
    cx, cy, r = scene.cx * big, scene.cy * big, scene.size * big
    if scene.shape == "circle":
        cv2.circle(canvas, (round(cx), round(cy)), round(r), color, -1, cv2.LINE_AA)
    else:
        outline = _outline(scene.shape, cx, cy, r, scene.angle)
        cv2.fillPoly(canvas, [np.round(outline).astype(np.int32)], color, cv2.LINE_AA)
    return cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA)


def color_map(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]] = BACKGROUND_COLORS,
               max_distance: float = 60.0) -> tuple[list[str], np.ndarray]:
    """Label each pixel with its nearest palette color (index into the returned names), -1 when no
    palette color is within max_distance (RGB Euclidean): edges, gradients and muddy pixels."""
    names = list(palette)
    ref = np.array([palette[n] for n in names], np.float32)
    dist = np.linalg.norm(rgb[..., None, :].astype(np.float32) - ref, axis=-1)
    labels = dist.argmin(-1)
    labels[dist.min(-1) > max_distance] = -1
    return names, labels


def dominant_color(rgb: np.ndarray, exclude: tuple[str, ...] = ()) -> str | None:
    """The shape color covering most pixels, ignoring the colors in `exclude` (the background)."""
    palette = {n: c for n, c in SHAPE_COLORS.items() if n not in exclude}
    names, labels = color_map(rgb, {**palette, **{n: BACKGROUND_COLORS[n] for n in exclude}})
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(names))[: len(palette)]
    return names[int(counts.argmax())] if counts.max() > 0 else None


def color_mask(rgb: np.ndarray, color: str, max_distance: float = 60.0) -> np.ndarray:
    """Boolean mask of the pixels whose nearest world color is `color`."""
    names, labels = color_map(rgb, max_distance=max_distance)
    return labels == names.index(color)


def _largest_blob(mask: np.ndarray) -> np.ndarray | None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea) if contours else None


def extent(mask: np.ndarray) -> float:
    """How much of its smallest enclosing (rotated) rectangle the largest blob fills; 0 when the mask is
    empty. Drawn shapes, at any rotation: square ~1.0, circle π/4, triangle 0.5, star ~0.38. Blur rounds a
    square's corners only a little, so this tells squares from circles better than circularity on soft
    generated images."""
    blob = _largest_blob(mask)
    if blob is None:
        return 0.0
    _, (w, h), _ = cv2.minAreaRect(blob)
    return float(cv2.contourArea(blob) / (w * h)) if w * h > 0 else 0.0


def circularity(mask: np.ndarray) -> float:
    """4πA/P² of the largest blob in the mask; 0 when the mask is empty. On drawn shapes (pixel outlines
    lengthen the perimeter): circle ~0.9, square ~0.79, triangle ~0.55, star ~0.32."""
    blob = _largest_blob(mask)
    if blob is None:
        return 0.0
    perimeter = cv2.arcLength(blob, True)
    return float(4 * np.pi * cv2.contourArea(blob) / perimeter**2) if perimeter > 0 else 0.0


def turn_and_scale(before: np.ndarray, after: np.ndarray, max_turn: float = 15.0) -> tuple[float, float]:
    """How far a shape turned (degrees, counter-clockwise on screen like Deforum's `angle`) and grew
    (ratio of sizes) from mask `before` to mask `after`: the turn, in 0.25° steps up to ±max_turn, whose
    rotation of `before` about its centroid, scaled and moved onto `after`'s centroid, overlaps `after` best.
    (0, 1) when either mask is empty."""
    a, b = before.astype(np.float32), after.astype(np.float32)
    ma, mb = cv2.moments(a, binaryImage=True), cv2.moments(b, binaryImage=True)
    if ma["m00"] == 0 or mb["m00"] == 0:
        return 0.0, 1.0
    scale = float(np.sqrt(mb["m00"] / ma["m00"]))
    ca, cb = (ma["m10"] / ma["m00"], ma["m01"] / ma["m00"]), (mb["m10"] / mb["m00"], mb["m01"] / mb["m00"])
    best, best_overlap = 0.0, -1.0
    for turn in np.arange(-max_turn, max_turn + 0.125, 0.25):
        m = cv2.getRotationMatrix2D(ca, float(turn), scale)
        m[:, 2] += np.subtract(cb, ca)
        moved = cv2.warpAffine(a, m, (b.shape[1], b.shape[0]), flags=cv2.INTER_LINEAR)
        overlap = np.minimum(moved, b).sum() / np.maximum(moved, b).sum()
        if overlap > best_overlap:
            best, best_overlap = float(turn), overlap
    return best, scale
