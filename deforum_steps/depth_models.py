"""Which depth model a 3D render uses, decided when the workflow loads (torch-free: planning imports it).

`depth_algorithm` names a model of the catalogue below, `embedded` (ours, committed in models/depth/), `tiny`
(random weights, for tests) or `auto`: the first model of AUTO_ORDER whose weights are here (`depth_model_path`,
or the local Hugging Face cache), else `embedded`. The choice replaces `auto` in the resolved config, so it is in
settings.yaml and the params of the jobs that predict depth: when other weights appear, auto picks them, depth redone.
Weights are never downloaded; a model named explicitly whose weights are missing is a one-line ConfigError that
says what to fetch. The webui's names (Midas-3-Hybrid, Zoe, ...) are translated by WEBUI_NAMES (settings
import); the ones nothing here can serve (LeReS, AdaBins) are refused there, with what to use instead.

Depth conventions (deforum_steps.depth converts each to the depth z the notebook's 3D warp reads):
- "midas": MiDaS v3 DPT relative inverse depth d, used raw as the notebook does, z = (50 - d) / 19;
- "relative": other relative inverse depth (MiDaS v3.1 BEiT, Depth-Anything), whose scale differs from MiDaS
  v3's: rescaled per image so its largest value is MIDAS_NEAR, then as "midas";
- "metric": metric depth in metres (ZoeDepth), used as z directly, as the notebook uses AdaBins' metres.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "models" / "depth"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class DepthModelSpec:
    name: str  # our depth_algorithm value
    label: str  # what it is called in messages
    hub_id: str  # the Hugging Face repository holding it ("" = built in)
    model_type: str  # config.json's model_type
    convention: str  # "midas", "relative" or "metric" (module doc)


CATALOGUE = {spec.name: spec for spec in (
    DepthModelSpec("embedded", "the embedded depth model (models/depth)", "", "deforum-depth-unet", "midas"),
    DepthModelSpec("tiny", "a random tiny DPT (tests only)", "", "dpt", "midas"),
    DepthModelSpec("midas-3-hybrid", "MiDaS v3 DPT-Hybrid", "Intel/dpt-hybrid-midas", "dpt", "midas"),
    DepthModelSpec("midas-3-large", "MiDaS v3 DPT-Large", "Intel/dpt-large", "dpt", "midas"),
    DepthModelSpec("midas-3.1-beit-large", "MiDaS v3.1 BEiT-Large 512", "Intel/dpt-beit-large-512", "dpt",
                   "relative"),
    *(DepthModelSpec(f"depth-anything-v2-{size}", f"Depth-Anything v2 {size.title()}",
                     f"depth-anything/Depth-Anything-V2-{size.title()}-hf", "depth_anything", "relative")
      for size in ("small", "base", "large")),
    *(DepthModelSpec(f"depth-anything-{size}", f"Depth-Anything v1 {size.title()}",
                     f"LiheYoung/depth-anything-{size}-hf", "depth_anything", "relative")
      for size in ("small", "base", "large")),
    *(DepthModelSpec(f"zoedepth-{data}", f"ZoeDepth {data.upper()}", f"Intel/zoedepth-{data}", "zoedepth", "metric")
      for data in ("nyu", "kitti", "nyu-kitti")),
)}
# Older settings files name Depth-Anything v2 Small "depth-anything".
CATALOGUE["depth-anything"] = CATALOGUE["depth-anything-v2-small"]

# auto's preference, best first (relative-depth benchmarks of the models' papers); embedded when none is here.
AUTO_ORDER = ("depth-anything-v2-large", "depth-anything-v2-base", "depth-anything-large", "midas-3.1-beit-large",
              "depth-anything-v2-small", "depth-anything-base", "zoedepth-nyu-kitti", "midas-3-large",
              "depth-anything-small", "midas-3-hybrid", "zoedepth-nyu", "zoedepth-kitti")

# webui depth_algorithm (lower case) -> (ours, None) or (None, why it cannot be served and what to use).
WEBUI_NAMES = {
    "midas-3-hybrid": ("midas-3-hybrid", None),
    "midas-3.1-beitlarge": ("midas-3.1-beit-large", None),
    "midas+adabins (old)": ("midas-3-large", None),  # the notebook's MiDaS DPT-Large; AdaBins: midas_weight
    "zoe": ("zoedepth-nyu-kitti", None),
    "zoe+adabins (old)": ("zoedepth-nyu-kitti", None),
    "depth-anything": ("depth-anything-v2-small", None),
    "depth-anything-v2-small": ("depth-anything-v2-small", None),
    "depth-anything-v2-base": ("depth-anything-v2-base", None),
    "depth-anything-v2-large": ("depth-anything-v2-large", None),
    "leres": (None, "LeReS has no transformers port"),
    "adabins": (None, "AdaBins has no transformers port"),
}
MIDAS_NEAR = 31.0  # the "relative" convention's largest value: z = (50 - 31) / 19 = 1, nearest point at depth 1


@dataclass(frozen=True)
class ResolvedDepth:
    name: str  # a CATALOGUE name
    source: str  # the folder its weights are read from ("" for tiny)
    how: str  # why this one, for the line printed once

    @property
    def spec(self) -> DepthModelSpec:
        return CATALOGUE[self.name]

    @property
    def line(self) -> str:
        """What the workflow prints once, when the whole config has been checked."""
        return f"depth model: {self.name}, {self.spec.label} ({self.how})"


def webui_name(algorithm: str) -> str:
    """Our depth_algorithm for a webui one; ConfigError for a name nothing here serves."""
    ours, why = WEBUI_NAMES.get(algorithm.strip().lower(), (None, None))
    if ours:
        return ours
    if why:
        raise ConfigError(f"depth_algorithm: {algorithm!r} is not available here ({why}); use auto (the best "
                          "depth model here), or fetch a Depth-Anything v2 or MiDaS model (README, 3D depth)")
    raise ConfigError(f"depth_algorithm: unknown {algorithm!r}; the webui's names are "
                      f"{', '.join(repr(n) for n in WEBUI_NAMES)}")


def resolve(cfg: dict) -> ResolvedDepth | None:
    """The depth model of a render whose 3D warps read depth (None otherwise); replaces `auto` in cfg by the
    model chosen. ConfigError when its weights are not here."""
    if cfg["animation_mode"] != "3D" or not cfg["use_depth_warping"]:
        return None
    chosen = find(cfg["depth_algorithm"], cfg["depth_model_path"])
    cfg["depth_algorithm"] = chosen.name
    return chosen


def find(algorithm: str, model_path: str = "") -> ResolvedDepth:
    """Where the weights of `algorithm` are (ConfigError when they are not here); `auto` picks a model."""
    if algorithm == "auto":
        return _auto(model_path)
    if algorithm not in CATALOGUE:
        raise ConfigError(f"depth_algorithm: unknown {algorithm!r}; choose auto, {', '.join(CATALOGUE)}")
    spec = CATALOGUE[algorithm]
    if spec.name == "tiny":
        return ResolvedDepth("tiny", "", "random weights, for tests")
    if spec.name == "embedded":
        return ResolvedDepth("embedded", str(embedded_folder()), f"weights in {EMBEDDED_DIR}")
    if model_path:
        folder = Path(model_path).expanduser()
        problem = _folder_problem(folder, spec)
        if problem:
            raise ConfigError(f"depth_model_path: {problem}; fetch {spec.hub_id} (hf download {spec.hub_id} "
                              f"--local-dir {model_path}) or use depth_algorithm: auto")
        return ResolvedDepth(spec.name, str(folder), f"from {folder}")
    folder = cached_folder(spec)
    if folder is None:
        raise ConfigError(f"depth_algorithm: {spec.name} needs {spec.hub_id}, which is not in the local Hugging Face "
                          f"cache; fetch it on a connected machine (hf download {spec.hub_id}), set "
                          "depth_model_path to a folder holding it, or use depth_algorithm: auto")
    return ResolvedDepth(spec.name, str(folder), f"{spec.hub_id} from the Hugging Face cache")


def _auto(model_path: str) -> ResolvedDepth:
    if model_path:
        folder = Path(model_path).expanduser()
        name = folder_model(folder)
        return ResolvedDepth(name, str(folder), f"auto: the model in depth_model_path {folder}")
    for name in AUTO_ORDER:
        folder = cached_folder(CATALOGUE[name])
        if folder is not None:
            return ResolvedDepth(name, str(folder), f"auto: the best depth model in the Hugging Face cache, "
                                                    f"{CATALOGUE[name].hub_id}")
    return ResolvedDepth("embedded", str(embedded_folder()), "auto: no other depth model's weights are here; "
                                                              "README, 3D depth, says which to fetch")


def folder_model(folder: Path) -> str:
    """The catalogue name of the depth model a transformers folder holds, read from its config.json."""
    config = _read_config(folder)
    if config is None or not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"depth_model_path: {folder} holds no transformers depth model (config.json and weights)")
    model_type, backbone = config.get("model_type"), config.get("backbone_config") or {}
    if model_type == "dpt":
        if config.get("is_hybrid"):
            return "midas-3-hybrid"
        return "midas-3.1-beit-large" if backbone.get("model_type") == "beit" else "midas-3-large"
    if model_type == "depth_anything":
        size = {384: "small", 768: "base", 1024: "large"}.get(backbone.get("hidden_size"), "small")
        return f"depth-anything-v2-{size}"  # v1 and v2 share architecture and convention
    if model_type == "zoedepth":
        return "zoedepth-nyu-kitti"
    raise ConfigError(f"depth_model_path: {folder} holds a {model_type!r} model, not a depth model this workflow "
                      "reads (DPT/MiDaS, Depth-Anything, ZoeDepth)")


def _read_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _folder_problem(folder: Path, spec: DepthModelSpec) -> str | None:
    config = _read_config(folder)
    if config is None:
        return f"no {spec.label} at {folder} (no readable config.json)"
    if config.get("model_type") != spec.model_type:
        return f"{folder} holds a {config.get('model_type')!r} model, not {spec.label}"
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        return f"{folder} has the config of {spec.label} but no weights"
    return None


def cached_folder(spec: DepthModelSpec) -> Path | None:
    """The snapshot of spec's repository (its main revision) in the local Hugging Face cache, when it holds the
    config and weights. Read from the cache's layout (models--org--name/refs/main -> snapshots/<commit>): the
    hub library's lookup would import its download code, 1.3 s of every 3D plan."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{spec.hub_id.replace('/', '--')}"
    try:
        folder = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    return None if _folder_problem(folder, spec) else folder


def embedded_folder(folder: Path = EMBEDDED_DIR) -> Path:
    """models/depth, its weights checked against SHA256SUMS."""
    sums = folder / "SHA256SUMS"
    try:
        expected = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip())
        for name, digest in expected.items():
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
                raise ConfigError(f"depth_algorithm: {folder / name} does not match {sums}; restore models/depth "
                                  "from the repository (git checkout models/depth)")
    except OSError as e:
        raise ConfigError(f"depth_algorithm: the embedded depth model is missing ({e.filename}); restore "
                          "models/depth from the repository or retrain it (scripts/train_depth_model.py)") from e
    return folder
