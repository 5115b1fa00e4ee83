"""Per-frame color operations: color coherence (histogram match to a reference frame), grayscale,
contrast and the anti-blur unsharp mask. RGB uint8 in and out."""
from __future__ import annotations

import cv2
import numpy as np
from skimage.exposure import match_histograms

# (to color space, back to RGB); RGB is matched as is.
_SPACES = {"RGB": None, "HSV": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB), "LAB": (cv2.COLOR_RGB2LAB, cv2.COLOR_LAB2RGB)}
# The last reference converted to a color space: (reference, cv2 code, converted). Every diffusion of a render matches
# to the same read-only array (io.read_shared_image), so it is converted once: 2-3.5 ms a frame at 512x512 (measured).
_converted: tuple[np.ndarray, int, np.ndarray] | None = None


def color_mode(mode: str) -> str:
    """'Match Frame 0 LAB' / 'LAB' -> 'LAB' (likewise HSV, RGB); 'None' -> 'None'; 'Image' (match a given
    image) -> 'LAB', the space the references use for it."""
    short = mode.removeprefix("Match Frame 0 ").strip()
    if short == "Image":
        return "LAB"
    if short != "None" and short not in _SPACES:
        raise ValueError(f"unknown color coherence mode {mode!r}")
    return short


def match_colors(image: np.ndarray, reference: np.ndarray, mode: str) -> np.ndarray:
    """Match each channel's histogram of `image` to `reference` in RGB, HSV or LAB (notebook `maintain_colors`
    on RGB data). Matched values are written into uint8 by truncation, as the reference does."""
    short = color_mode(mode)
    if short == "None":
        return image
    if _SPACES[short] is None:
        return match_histograms(image, reference, channel_axis=-1)
    forward, back = _SPACES[short]
    matched = match_histograms(cv2.cvtColor(image, forward), _reference_in(reference, forward), channel_axis=-1)
    return cv2.cvtColor(matched, back)


def _reference_in(reference: np.ndarray, forward: int) -> np.ndarray:
    """`reference` converted by cv2 code `forward`; kept for the next call when the array owns pixels that cannot
    change (read-only), so that the same object means the same pixels."""
    global _converted
    kept = _converted
    if kept is not None and kept[0] is reference and kept[1] == forward:
        return kept[2]
    converted = cv2.cvtColor(reference, forward)
    if reference.flags.owndata and not reference.flags.writeable:
        _converted = (reference, forward, converted)
    return converted


def to_grayscale(img: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601) replicated to 3 channels (color_force_grayscale)."""
    return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def apply_contrast(img: np.ndarray, contrast: float) -> np.ndarray:
    """Scale pixel values by `contrast`, clipped to 0..255 and rounded (webui wraps around above 255)."""
    if contrast == 1:  # the default: the same pixels, without 3.5 ms of float maths a frame at 512x512
        return img
    return np.clip(np.rint(img * float(contrast)), 0, 255).astype(np.uint8)


def unsharp_mask(img: np.ndarray, kernel: int, sigma: float, amount: float, threshold: float = 0) -> np.ndarray:
    """Anti-blur: `(1+amount)*img - amount*gaussian(img)`, clipped and rounded; identity when amount <= 0.
    Where `|img - blur| < threshold` the original pixel is kept (the references compute that difference
    with uint8 wrap-around or crash on float input; here it is the true absolute difference)."""
    if amount <= 0:
        return img
    k = int(kernel)
    blurred = cv2.GaussianBlur(img, (k, k), sigma)
    sharpened = float(amount + 1) * img - float(amount) * blurred
    out = np.clip(sharpened, 0, 255).round().astype(np.uint8)
    if threshold > 0:
        low_contrast = np.abs(img.astype(np.int16) - blurred) < threshold
        out[low_contrast] = img[low_contrast]
    return out
