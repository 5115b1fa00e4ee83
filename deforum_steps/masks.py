"""Init images and masks (the notebook's init and mask settings).

A mask is greyscale: white areas keep the init image, black areas are diffused fully, grey in between. It is
read as the notebook reads it (greyscale, brightness then contrast with PIL's ImageEnhance, then inverted if
asked), applied in latent space during sampling (`latent_mask`, for `diffusion.denoise`) and, with
overlay_mask, once more in pixels after decoding (`overlay`), so kept areas come back exactly as the init.

Departure from the notebook's overlay: it keeps only the mask's brightest value and blurs that with a fixed
5 px Gaussian; here the same grey mask as in sampling is used, so grey areas blend and white ones are exact.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from .config import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def load_mask(path: str | os.PathLike, size: tuple[int, int], *, invert_mask: bool,
              mask_brightness_adjust: float, mask_contrast_adjust: float) -> np.ndarray:
    """Mask image `path` as float32 (H, W) in 0..1 at size=(W, H), 1 = keep the init."""
    with Image.open(path) as image:
        grey = image.convert("L").resize(tuple(size), resample=Image.LANCZOS)
    if mask_brightness_adjust != 1:
        grey = ImageEnhance.Brightness(grey).enhance(mask_brightness_adjust)
    if mask_contrast_adjust != 1:
        grey = ImageEnhance.Contrast(grey).enhance(mask_contrast_adjust)
    mask = np.asarray(grey, dtype=np.float32) / 255.0
    return np.clip(1.0 - mask if invert_mask else mask, 0.0, 1.0)


def read_mask(path: str | os.PathLike, settings: Mapping) -> np.ndarray:
    """load_mask at the render's W x H with the mask settings (dependencies.MASK_SETTINGS) of `settings`."""
    return load_mask(path, (settings["W"], settings["H"]), invert_mask=settings["invert_mask"],
                     mask_brightness_adjust=settings["mask_brightness_adjust"],
                     mask_contrast_adjust=settings["mask_contrast_adjust"])


def latent_mask(mask: np.ndarray, latent_hw: tuple[int, int]) -> np.ndarray:
    """A pixel mask averaged down to the latent grid (h, w): a latent cell half covered is kept half."""
    h, w = latent_hw
    return np.clip(cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA), 0.0, 1.0).astype(np.float32)


def overlay(image: np.ndarray, init: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paste `init` back over the decoded `image` through `mask` (1 = init): uint8 RGB, rounded."""
    m = mask[..., None].astype(np.float32)
    return np.rint(init * m + image * (1.0 - m)).astype(np.uint8)


def _readable_image(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and cv2.haveImageReader(str(path))


def init_images(cfg: Mapping) -> list[Path]:
    """The init images of a render with use_init: init_image itself, or for a folder (None mode: one image per
    init) its image files in name order. [] without use_init. Raises ConfigError naming init_image."""
    if not cfg["use_init"]:
        return []
    if not cfg["init_image"]:
        raise ConfigError("init_image: empty, but use_init is true")
    path = Path(cfg["init_image"])
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise ConfigError(f"init_image: no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
    elif path.exists():
        images = [path]
    else:
        raise ConfigError(f"init_image: no such file or folder {path}")
    bad = next((p for p in images if not _readable_image(p)), None)
    if bad is not None:
        raise ConfigError(f"init_image: not a readable image {bad}")
    return images


def check_input_images(cfg: Mapping) -> None:
    """Fail before anything runs when an image the animation mode reads points nowhere: init images for
    None/2D/3D with use_init, mask_file with use_mask (Interpolation uses neither; Video Input's init is the
    video, so its mask needs no use_init), and the color coherence image of 2D/3D."""
    mode = cfg["animation_mode"]
    if mode in ("2D", "3D") and cfg["color_coherence"] == "Image":
        if not _readable_image(Path(cfg["color_coherence_image_path"])):
            raise ConfigError(f"color_coherence_image_path: not a readable image {cfg['color_coherence_image_path']!r}")
    if mode == "Interpolation":
        return
    if mode != "Video Input":
        init_images(cfg)
    if not cfg["use_mask"] or (mode == "Video Input" and cfg["use_video_mask"]):
        return
    if mode != "Video Input" and not cfg["use_init"]:
        raise ConfigError("use_mask: a mask needs an init image (set use_init and init_image)")
    if not cfg["mask_file"]:
        raise ConfigError("mask_file: empty, but use_mask is true")
    if not _readable_image(Path(cfg["mask_file"])):
        raise ConfigError(f"mask_file: not a readable image {cfg['mask_file']}")
