"""2D motion: rotation / zoom about a centre, translation, optional perspective flip (Deforum `anim_frame_warp_2d`).

Matrices follow the reference step by step (including its float32 roundings of the translation and of the
flip's post-translation) so they equal the recorded ones bit for bit. One deliberate departure: with the
perspective flip on, translation is applied (the reference's `np.matmul(bM, rot, trans)` passes `trans`
as numpy's `out=` argument and silently drops it).
"""
from __future__ import annotations

from functools import reduce

import cv2
import numpy as np

BORDERS = {"replicate": cv2.BORDER_REPLICATE, "wrap": cv2.BORDER_WRAP}


def _homogeneous(m2x3: np.ndarray) -> np.ndarray:
    return np.vstack([m2x3, [0, 0, 1]])


def _translation(tx: float, ty: float) -> np.ndarray:
    # np.float32 as the reference builds it; vstack with the int row promotes to float64.
    return _homogeneous(np.float32([[1, 0, tx], [0, 1, ty]]))


def _rotation_4x4(phi: float, gamma: float, theta: float) -> np.ndarray:
    """Rx(phi) @ Ry(gamma) @ Rz(theta), angles in degrees, homogeneous 4x4."""
    phi, gamma, theta = np.deg2rad([phi, gamma, theta])
    rx, ry, rz = np.eye(4), np.eye(4), np.eye(4)
    rx[1:3, 1:3] = [[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]]
    ry[0, 0], ry[0, 2], ry[2, 0], ry[2, 2] = np.cos(gamma), np.sin(gamma), -np.sin(gamma), np.cos(gamma)
    rz[0:2, 0:2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    return reduce(np.matmul, [rx, ry, rz])


def perspective_flip_matrix(width: int, height: int, *, theta: float, phi: float, gamma: float,
                            fv: float) -> np.ndarray:
    """The reference's `bM`: the image plane rotated in 3D and re-projected with field of view `fv` (degrees),
    then shifted so the projected square of side `d/cos(fv/2)` is centred on the frame."""
    fv_half = np.deg2rad(fv / 2.0)
    d = np.sqrt(width * width + height * height)
    side = d / np.cos(fv_half)
    h = d / (2.0 * np.sin(fv_half))
    near, far = h - d / 2.0, h + d / 2.0
    t = np.eye(4)
    t[2, 3] = -h
    p = np.eye(4)
    p[0, 0] = p[1, 1] = 1.0 / np.tan(fv_half)
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -(2.0 * far * near) / (far - near)
    p[3, 2] = -1.0
    f = reduce(np.matmul, [p, t, _rotation_4x4(phi, gamma, theta)])
    corners = np.array([[[-width / 2, height / 2, 0.0], [width / 2, height / 2, 0.0],
                         [width / 2, -height / 2, 0.0], [-width / 2, -height / 2, 0.0]]])
    projected = cv2.perspectiveTransform(corners, f)[0, :, :2]
    pin = (corners[0, :, :2] + [width / 2, height / 2]).astype(np.float32)
    pout = ((projected + [1.0, 1.0]) * (0.5 * side)).astype(np.float32)
    m33 = cv2.getPerspectiveTransform(pin, pout)
    post = _homogeneous(np.float32([[1, 0, (width - side) / 2], [0, 1, (height - side) / 2]]))
    return m33 @ post


def warp_matrix_2d(width: int, height: int, *, angle: float, zoom: float, translation_x: float,
                   translation_y: float, transform_center_x: float = 0.5, transform_center_y: float = 0.5,
                   flip_perspective: bool = False, theta: float = 0, phi: float = 0, gamma: float = 0,
                   fv: float = 53) -> np.ndarray:
    """3x3 float64 matrix passed to `cv2.warpPerspective` (maps source pixels to destination pixels).

    Without flip: `R @ T` (translate, then rotate/zoom about the centre), as both references.
    With flip: `bM @ R @ T`: the flip is applied on top of the same 2D motion, so translation still counts
    (reference: `bM @ R`, identical when translation is 0).
    """
    center = (width * transform_center_x, height * transform_center_y)
    m = _homogeneous(cv2.getRotationMatrix2D(center, angle, zoom)) @ _translation(translation_x, translation_y)
    if flip_perspective:
        m = perspective_flip_matrix(width, height, theta=theta, phi=phi, gamma=gamma, fv=fv) @ m
    return m


def warp_2d(img: np.ndarray, *, angle: float, zoom: float, translation_x: float, translation_y: float,
            transform_center_x: float = 0.5, transform_center_y: float = 0.5, flip_perspective: bool = False,
            theta: float = 0, phi: float = 0, gamma: float = 0, fv: float = 53,
            border: str = "replicate") -> np.ndarray:
    """Warp one frame by one frame's 2D motion keys (angle in degrees, positive = counter-clockwise;
    translation in pixels, positive = content moves right/down). Bilinear, border 'replicate' or 'wrap'."""
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, got {border!r}")
    height, width = img.shape[:2]
    m = warp_matrix_2d(width, height, angle=angle, zoom=zoom, translation_x=translation_x,
                       translation_y=translation_y, transform_center_x=transform_center_x,
                       transform_center_y=transform_center_y, flip_perspective=flip_perspective,
                       theta=theta, phi=phi, gamma=gamma, fv=fv)
    return cv2.warpPerspective(img, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=BORDERS[border])
