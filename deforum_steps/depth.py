"""Depth stage: a depth model turns an RGB uint8 image into float32 (H, W) depth z in the units `motion3d.warp_3d`
reads (the notebook's raw-depth variant, decisions.md "3D depth").

Which model, and where its weights are, is decided when the workflow loads (deforum_steps.depth_models, which
also documents each family's convention). Here each network's output, predicted at its own input size and
resized back bicubically as the notebook does, becomes z:
- MiDaS v3 (and the embedded model, trained to answer in MiDaS v3's units): raw relative inverse depth d,
  z = (50 - d) / 19, the notebook's conversion (near = small z);
- other relative inverse depth (MiDaS v3.1 BEiT, Depth-Anything): scaled so its largest value is MIDAS_NEAR
  first, since their scale is not MiDaS v3's;
- metric depth (ZoeDepth): metres are z, as the notebook uses AdaBins' metres.
The notebook then blends `midas_weight * midas + (1 - midas_weight) * adabins`; AdaBins is not shipped here, so
its place is taken by a flat plane at depth 1 (the flat model's depth): weight 1 = the network's depth,
0 = flat, negative = relief inverted.

The job functions of rules/depth.smk come first, then predict, which animation.blend_frame calls too (with
cadence > 1 a blend job predicts its frame's map). Planning imports this module: torch only inside functions.
A network is loaded once per process and device and shared by every job (lock-protected cache).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from . import cpu_threads, depth_models, io, process
from .config import ConfigError

if TYPE_CHECKING:
    import torch


def depth_map(*, frame: str, depth_map: str, settings: Mapping, threads: int) -> None:
    """Rule depth (cadence 1), map s:
    1. read frame s;
    2. predict its depth (predict);
    3. save it as depth_map (.npy)."""
    cpu_threads.limit(threads)
    io.save_array(depth_map, predict(io.read_shared_image(frame), settings))


def predict(image: np.ndarray, settings: Mapping) -> np.ndarray:
    """The depth of an RGB uint8 image with the settings' depth_algorithm, depth_model_path, map_location and
    midas_weight, the model loaded once per process."""
    model = load_depth_model(settings["depth_algorithm"], settings["depth_model_path"], settings["map_location"],
                             settings["midas_weight"])
    return model.predict(image)


def depth_png(*, depth_map: str, png: str) -> None:
    """Rule depth_png (save_depth_maps): a depth map as a greyscale PNG, near = dark (depth_to_png)."""
    io.write_image(png, depth_to_png(np.load(depth_map)))


class DepthModel(Protocol):
    def predict(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> float32 (H, W) depth."""


class FlatDepth:
    """`use_depth_warping: false`: every pixel at depth 1 (what `warp_3d(depth=None)` assumes)."""

    def predict(self, img: np.ndarray) -> np.ndarray:
        return np.ones(img.shape[:2], dtype=np.float32)


@dataclass(frozen=True)
class Preprocess:
    """How an image is fed to a network: resized to `size` (square, or keeping the aspect ratio with the side
    closest to `size`, each side a multiple of `multiple_of`), bicubic, then normalised per channel."""
    size: int
    multiple_of: int
    keep_aspect: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def net_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.keep_aspect:
            return self.size, self.size
        scale_h, scale_w = self.size / height, self.size / width
        scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h  # scale as little as possible
        return self._multiple(scale * height), self._multiple(scale * width)

    def _multiple(self, value: float) -> int:
        return max(self.multiple_of, round(value / self.multiple_of) * self.multiple_of)


def midas_preprocess(size: int) -> Preprocess:
    # transformers' DPT reassembles its tokens into a square grid, so DPT input must be square (the notebook's
    # own MiDaS kept the aspect ratio; transformers' DPT image processor does not).
    return Preprocess(size, 32, False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


DEPTH_ANYTHING_PREPROCESS = Preprocess(518, 14, True, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class NetworkDepth:
    """A depth network answering like transformers' (`predicted_depth`), its output converted to z by its
    family's convention ("midas", "relative" or "metric", module doc)."""

    def __init__(self, net: torch.nn.Module, preprocess: Preprocess, device: torch.device,
                 midas_weight: float = 1.0, convention: str = "midas"):
        self.net, self.preprocess, self.device, self.midas_weight = net, preprocess, device, float(midas_weight)
        self.convention = convention

    def predict(self, img: np.ndarray) -> np.ndarray:
        import torch

        height, width = img.shape[:2]
        net_h, net_w = self.preprocess.net_size(height, width)
        x = cv2.resize(img.astype(np.float32) / 255.0, (net_w, net_h), interpolation=cv2.INTER_CUBIC)
        x = (x - np.float32(self.preprocess.mean)) / np.float32(self.preprocess.std)
        pixels = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        with torch.inference_mode():
            raw = self.net(pixel_values=pixels).predicted_depth
            raw = torch.nn.functional.interpolate(raw[:, None].float(), size=(height, width), mode="bicubic",
                                                  align_corners=False)[0, 0]
        depth = to_depth(raw.cpu().numpy(), self.convention)
        if self.midas_weight != 1.0:
            depth = depth * self.midas_weight + (1.0 - self.midas_weight)
        return depth.astype(np.float32)


def to_depth(raw: np.ndarray, convention: str) -> np.ndarray:
    """A network's raw output -> the depth z the warp reads (module doc)."""
    if convention == "metric":
        return raw
    if convention == "relative":
        nearest = float(raw.max())
        raw = raw * (depth_models.MIDAS_NEAR / nearest) if nearest > 0 else np.zeros_like(raw)
    return (50.0 - raw) / 19.0


def tiny_network() -> torch.nn.Module:
    """A 140k-parameter randomly initialised DPT (MiDaS architecture), identical on every call: for tests and
    dry runs. The init range is chosen so its output spans ~0..15 like MiDaS', giving non-trivial depth."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, use_auxiliary_head=False,
                       initializer_range=0.15)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(0)
        return DPTForDepthEstimation(config).eval()


def embedded_network(folder: str | Path = depth_models.EMBEDDED_DIR) -> tuple[torch.nn.Module, Preprocess]:
    """The embedded model (models/depth): its U-Net and input size, from config.json and the fp16 weights."""
    import json

    from safetensors.torch import load_file

    from .depth_net import DepthUNet

    config = json.loads((Path(folder) / "config.json").read_text())
    net = DepthUNet(tuple(config["channels"]), config["fold"])
    net.load_state_dict({k: v.float() for k, v in load_file(Path(folder) / "model.safetensors").items()})
    return net.eval(), Preprocess(config["input_side"], 16 * config["fold"], False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# ZoeDepth's image processor: the aspect ratio kept, 384 x 512 at most, sides multiples of 32, mean/std 0.5.
ZOEDEPTH_PREPROCESS = Preprocess(384, 32, True, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _load_pretrained(spec: depth_models.DepthModelSpec, folder: str) -> tuple[torch.nn.Module, Preprocess]:
    """A transformers depth model from a local folder (depth_models found it), never downloading."""
    from transformers import AutoModelForDepthEstimation

    net, info = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    if info["missing_keys"]:
        raise ConfigError(f"depth_model_path: {folder} lacks {len(info['missing_keys'])} weights of {spec.label} "
                          f"(e.g. {sorted(info['missing_keys'])[0]}); fetch {spec.hub_id} again")
    if spec.model_type == "depth_anything":
        return net.eval(), DEPTH_ANYTHING_PREPROCESS
    if spec.model_type == "zoedepth":
        return net.eval(), ZOEDEPTH_PREPROCESS
    backbone = net.config.backbone_config
    size = backbone.image_size if getattr(backbone, "model_type", "") == "beit" else net.config.image_size  # 512
    return net.eval(), midas_preprocess(size if isinstance(size, int) else size[0])


def resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_networks: dict[tuple[str, str, str], tuple[torch.nn.Module, Preprocess, str]] = {}
_networks_lock = threading.Lock()


def _network(algorithm: str, model_path: str, device: torch.device) -> tuple[torch.nn.Module, Preprocess, str]:
    key = (algorithm, model_path, str(device))
    with _networks_lock:
        if key not in _networks:
            found = depth_models.find(algorithm, model_path)
            with process.loading_model():  # kept until the process ends
                if found.name == "tiny":
                    net, preprocess = tiny_network(), midas_preprocess(64)
                elif found.name == "embedded":
                    net, preprocess = embedded_network(found.source)
                else:
                    net, preprocess = _load_pretrained(found.spec, found.source)
                _networks[key] = (net.to(device), preprocess, found.spec.convention)
        return _networks[key]


def load_depth_model(algorithm: str, model_path: str | Path = "", device: str | torch.device | None = "auto",
                     midas_weight: float = 1.0) -> DepthModel:
    """The depth model for `depth_algorithm` ('flat' when `use_depth_warping` is false), its weights read from
    `model_path` ("" = the local Hugging Face cache). Raises ConfigError when the weights are not there."""
    if algorithm == "flat":
        return FlatDepth()
    device = resolve_device(device)
    net, preprocess, convention = _network(algorithm, str(model_path) if model_path else "", device)
    return NetworkDepth(net, preprocess, device, midas_weight, convention)


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """Depth as a greyscale image (3 equal channels, near = dark) for `save_depth_maps`: min..max -> 0..255,
    truncated as the notebook. The range is this map's own, so a frame's image does not depend on which
    frames were rendered before it (the references keep a running min/max over the run)."""
    depth = np.asarray(depth, dtype=np.float64)
    lo, hi = float(depth.min()), float(depth.max())
    grey = ((depth - lo) / max(1e-8, hi - lo) * 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)
