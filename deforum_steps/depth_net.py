"""The embedded depth model's network (`depth_algorithm: embedded`): a small U-Net trained on depth_world's
scenes by scripts/train_depth_model.py, its weights in models/depth/. It answers like transformers' depth
models (`net(pixel_values=...).predicted_depth`) in MiDaS v3's units, relative inverse depth `50 - 19 z`, so the
notebook's conversion `(50 - d) / 19` gives back its depth z (deforum_steps.depth). Imported only where torch is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class DepthOutput:
    predicted_depth: torch.Tensor  # (N, H, W)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.SiLU())


class DepthUNet(nn.Module):
    """RGB normalised to -1..1 (N, 3, S, S), S a multiple of 16 * fold -> MiDaS-style raw depth (N, S, S). It
    predicts log z; the depth range is that of depth_world's scenes. With fold 2 the U-Net works at S/2 on each
    2x2 block's 12 values (space to depth) and answers 2x2 values per position: it sees texture as fine as its
    input (a perspective cue that resizing would alias away) at a quarter of the cost."""

    def __init__(self, channels: tuple[int, ...], fold: int):
        super().__init__()
        self.channels, self.fold = tuple(channels), fold
        self.down = nn.ModuleList(_block(c_in, c_out)
                                  for c_in, c_out in zip((3 * fold**2, *channels[:-1]), channels))
        self.up = nn.ModuleList(_block(c_deep + c_skip, c_skip)
                                for c_deep, c_skip in zip(channels[:0:-1], channels[-2::-1]))
        self.context = nn.Linear(channels[-1], channels[-1])
        self.head = nn.Conv2d(channels[0], fold**2, 1)

    def log_depth(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(x, self.fold)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        # what the whole image says (a wall's tilt is one number for all of it) added at every deepest position
        x = x + self.context(x.mean((2, 3)))[:, :, None, None]
        for block, skip in zip(self.up, skips[-2::-1]):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False),
                                 skip], 1))
        return F.pixel_shuffle(self.head(x), self.fold)[:, 0]

    def forward(self, pixel_values: torch.Tensor) -> DepthOutput:
        return DepthOutput(50.0 - 19.0 * torch.exp(self.log_depth(pixel_values)))
