"""3D motion: warp an image by a camera move, using per-pixel depth (Deforum `anim_frame_warp_3d`).

Closed form of the reference's pytorch3d computation, without pytorch3d: every pixel `(x, y)` in [-1, 1]
with depth `z` is a world point; it is projected by the still camera and by the moved camera
(`X_view = X_world @ R + T`, row vectors, then FoVPerspectiveCameras' projection), the difference of the two
projections is the screen-space flow, and the image is resampled at `identity grid - flow`.

Variant: the notebook / webui-legacy ('Midas+AdaBins (old)') one, i.e. raw depth as the depth model gives it
(no per-frame normalisation) and the `+1/512 - 0.0001` bias added to the image before sampling, so that the
final truncation to uint8 does not turn exact values `k` into `k - 1`. Every step is done in float32 with
the same operations, in the same order, as pytorch3d, so the recorded outputs are reproduced bit for bit
(fov 40 for the notebook recordings, fov 70 for the webui-legacy ones). The webui 'new' depth path
(depth normalised and equalised into [1, 2], no bias) is not followed.
"""
from __future__ import annotations

import math

import numpy as np
import torch

TRANSLATION_SCALE = 1.0 / 200.0  # 200 px of translation = one NDC unit of camera motion (Disco Diffusion)
PADDING_MODES = ("border", "reflection", "zeros")
SAMPLING_MODES = ("bicubic", "bilinear", "nearest")


def rotation_matrix(rotation_3d_x: float, rotation_3d_y: float, rotation_3d_z: float) -> torch.Tensor:
    """pytorch3d `euler_angles_to_matrix(radians, "XYZ")`: Rx @ Ry @ Rz, float32 (3, 3)."""
    angles = torch.tensor([math.radians(rotation_3d_x), math.radians(rotation_3d_y), math.radians(rotation_3d_z)])
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones(()), torch.zeros(())
    rx = torch.stack([one, zero, zero, zero, cos[0], -sin[0], zero, sin[0], cos[0]]).reshape(3, 3)
    ry = torch.stack([cos[1], zero, sin[1], zero, one, zero, -sin[1], zero, cos[1]]).reshape(3, 3)
    rz = torch.stack([cos[2], -sin[2], zero, sin[2], cos[2], zero, zero, zero, one]).reshape(3, 3)
    return rx @ ry @ rz


def _full_projection(rotation: torch.Tensor, translation: torch.Tensor, fov: float, near: float, far: float,
                     aspect: float) -> torch.Tensor:
    """pytorch3d `FoVPerspectiveCameras(...).get_full_projection_transform().get_matrix()` for one camera:
    (world->view rotation @ translation) @ projection^T, row-vector convention, float32 (4, 4)."""
    znear, zfar = torch.tensor(float(near)), torch.tensor(float(far))
    half_fov = (np.pi / 180) * torch.tensor(float(fov)) / 2
    max_y = torch.tan(half_fov) * znear
    max_x = max_y * torch.tensor(float(aspect))
    k = torch.zeros(4, 4)
    k[0, 0] = 2.0 * znear / (max_x - -max_x)
    k[1, 1] = 2.0 * znear / (max_y - -max_y)
    k[3, 2] = 1.0
    k[2, 2] = zfar / (zfar - znear)
    k[2, 3] = -(zfar * znear) / (zfar - znear)
    rotate, translate = torch.eye(4), torch.eye(4)
    rotate[:3, :3] = rotation
    translate[3, :3] = translation
    return torch.bmm(torch.bmm(rotate[None], translate[None]), k.T.contiguous()[None])


def _project_xy(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """pytorch3d `transform_points`: homogeneous (1, N, 4) @ (1, 4, 4), divided by w; only x, y are used."""
    out = torch.bmm(torch.cat([points, torch.ones(1, points.shape[1], 1)], dim=2), matrix)
    return (out[..., :3] / out[..., 3:])[0, :, :2]


def warp_3d(img: np.ndarray, depth: np.ndarray | None, *, translation_x: float, translation_y: float,
            translation_z: float, rotation_3d_x: float, rotation_3d_y: float, rotation_3d_z: float,
            fov: float, near: float, far: float, padding_mode: str = "border", sampling_mode: str = "bicubic",
            aspect: float = 1.0) -> np.ndarray:
    """Warp an RGB uint8 image by one frame of 3D camera motion.

    `depth` is float32 (H, W) in the depth model's units (see `deforum_steps.depth`), or None for a flat
    scene at z = 1. Translations in px per frame (positive z = camera moves forward), rotations in degrees,
    `fov` in degrees; `near`/`far` only shape the projected z, so they do not change the result (kept
    for the reference's signature). Returns uint8 (H, W, 3), truncated as the reference does.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if sampling_mode not in SAMPLING_MODES:
        raise ValueError(f"sampling_mode must be one of {SAMPLING_MODES}, got {sampling_mode!r}")
    h, w = img.shape[:2]
    if depth is not None and depth.shape != (h, w):
        raise ValueError(f"depth shape {depth.shape} does not match image {(h, w)}")

    y, x = torch.meshgrid(torch.linspace(-1.0, 1.0, h), torch.linspace(-1.0, 1.0, w), indexing="ij")
    z = torch.ones_like(x) if depth is None else torch.as_tensor(np.asarray(depth, dtype=np.float32))
    points = torch.stack((x.flatten(), y.flatten(), z.flatten()), dim=1)[None]

    translation = torch.tensor([-translation_x * TRANSLATION_SCALE, translation_y * TRANSLATION_SCALE,
                                -translation_z * TRANSLATION_SCALE])
    old = _project_xy(points, _full_projection(torch.eye(3), torch.zeros(3), fov, near, far, aspect))
    new = _project_xy(points, _full_projection(
        rotation_matrix(rotation_3d_x, rotation_3d_y, rotation_3d_z), translation, fov, near, far, aspect))

    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[None]
    grid = torch.nn.functional.affine_grid(identity, [1, 1, h, w], align_corners=False)
    grid = grid - (new - old).reshape(h, w, 2)[None]

    image = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)
    out = torch.nn.functional.grid_sample(image.add(1 / 512 - 0.0001)[None], grid, mode=sampling_mode,
                                          padding_mode=padding_mode, align_corners=False)
    return out[0].clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
