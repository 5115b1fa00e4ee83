"""Seeded noise blended into the init image before img2img (webui `add_noise`).

The noise is drawn from a CPU torch generator seeded with the frame's seed, so the same frame always gets
the same noise (a resumed render draws what an uninterrupted one drew). Draw order and float32 arithmetic
follow the webui so its recorded outputs are reproduced exactly. Departures: 'uniform' noise is resized to
the image like perlin noise (the webui only resizes perlin and crashes when W or H is not a multiple of
64), perlin grids that do not divide the noise size are generated on the next multiple and cropped
(the webui crashes), and a mask restricts where the blend applies (the webui blends grey there instead).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

NOISE_TYPES = ("uniform", "perlin")


def _fade(t: torch.Tensor) -> torch.Tensor:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def _perlin(shape: tuple[int, int], res: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """One octave of gradient noise in about [-1, 1]: `res` cells along each axis, one random unit gradient
    per lattice corner. Grid of `shape` rounded up to whole cells, then cropped."""
    cells = (math.ceil(shape[0] / res[0]), math.ceil(shape[1] / res[1]))
    full = (cells[0] * res[0], cells[1] * res[1])
    delta = (res[0] / full[0], res[1] / full[1])
    # torch.arange as the webui (its float32 values are part of the recorded output); it can overshoot by one.
    rows, cols = torch.arange(0, res[0], delta[0])[:full[0]], torch.arange(0, res[1], delta[1])[:full[1]]
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1) % 1
    angles = 2 * math.pi * torch.rand(res[0] + 1, res[1] + 1, generator=generator)
    gy, gx = torch.cos(angles), torch.sin(angles)

    def corner(dy: int, dx: int) -> torch.Tensor:
        """Dot product of the offset from corner (dy, dx) of each pixel's cell with that corner's gradient."""
        def tile(g: torch.Tensor) -> torch.Tensor:
            return g[dy:dy + res[0], dx:dx + res[1]].repeat_interleave(cells[0], 0).repeat_interleave(cells[1], 1)
        return (grid[..., 0] - dy) * tile(gy) + (grid[..., 1] - dx) * tile(gx)

    t = _fade(grid)
    field = math.sqrt(2) * torch.lerp(torch.lerp(corner(0, 0), corner(1, 0), t[..., 0]),
                                      torch.lerp(corner(0, 1), corner(1, 1), t[..., 0]), t[..., 1])
    return field[:shape[0], :shape[1]]


def perlin_field(shape: tuple[int, int], res: tuple[int, int], octaves: int, persistence: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Sum of `octaves` perlin layers, frequency doubling and amplitude scaled by `persistence` each layer."""
    noise = torch.zeros(shape)
    frequency, amplitude = 1, 1
    for _ in range(int(octaves)):
        noise += amplitude * _perlin(shape, (frequency * res[0], frequency * res[1]), generator)
        frequency *= 2
        amplitude *= persistence
    return noise


def noise_image(height: int, width: int, seed: int, *, noise_type: str, perlin_w: int, perlin_h: int,
                perlin_octaves: int, perlin_persistence: float) -> np.ndarray:
    """The uint8 RGB noise image blended in by `add_noise`: standard normal noise drawn at the size rounded
    down to a multiple of 64, optionally modulated by a perlin field in [0, 1], nearest-resized to
    (height, width), mapped from [-1, 1] to 0..255 by truncation."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    size = (max(64, height - height % 64), max(64, width - width % 64))
    noise = torch.randn((3, *size), generator=generator)
    if noise_type == "perlin":
        # webui order: perlin_w sets the cell count along the first (row) axis.
        field = perlin_field(size, (int(perlin_w), int(perlin_h)), perlin_octaves, perlin_persistence, generator)
        noise = noise * ((field + torch.ones(size)) / 2)
    if size != (height, width):
        noise = F.interpolate(noise.unsqueeze(1), size=(height, width), mode="nearest").squeeze(1)
    rgb = noise.permute(1, 2, 0).numpy()
    return (np.clip(rgb * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)


def add_noise(img: np.ndarray, amount: float, seed: int, *, noise_type: str, perlin_w: int, perlin_h: int,
              perlin_octaves: int, perlin_persistence: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Blend `img` toward the seeded noise image: `(1-amount)*img + amount*noise`, rounded and saturated.
    `mask` (HxW, float 0..1 or uint8 0..255) weights the blend per pixel: 0 leaves the pixel untouched."""
    height, width = img.shape[:2]
    noise = noise_image(height, width, seed, noise_type=noise_type, perlin_w=perlin_w, perlin_h=perlin_h,
                        perlin_octaves=perlin_octaves, perlin_persistence=perlin_persistence)
    noisy = cv2.addWeighted(img, 1 - amount, noise, amount, 0)
    if mask is None:
        return noisy
    weight = (mask / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float64))[..., None]
    return np.rint(img + weight * (noisy.astype(np.float64) - img)).astype(np.uint8)
