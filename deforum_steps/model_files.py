"""The model's files, found and checked when the workflow loads, without torch: check_model resolves what
`model` names (builtin, a file in models_path, `custom` with custom_checkpoint_path, a folder, a cached hub id),
reads a single-file checkpoint's header to pick its configs (checkpoints.family), and verifies check_sha256, so a
missing or wrong model is a config error before anything runs (with allow_download, model_download fetches a
missing one first). A .ckpt's family and a digest are computed once per file version (cached by path, size and
modification time in .snakemake/, the working directory's planning state), so replanning a render reads no
checkpoint again."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from . import checkpoints, io
from .config import ConfigError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
TOY_DIR = Path(__file__).resolve().parents[1] / "models" / "toy"
# The component configs of each checkpoint family (checkpoints.family), shipped: no Hugging Face cache needed.
CONFIGS_DIR = Path(__file__).resolve().parent / "model_configs"
FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")
BUILT_IN_MEMORY = ("builtin:tiny", "builtin:tiny-xl")  # models.build_tiny / build_tiny_xl
HUB_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")
DIGEST_CACHE = Path(".snakemake") / "sha256_digests.json"
FAMILY_CACHE = Path(".snakemake") / "checkpoint_families.json"  # checkpoints.describe per .ckpt version


def check_model(cfg: Mapping, cache_dir: Path = DIGEST_CACHE.parent) -> str:
    """The `model` the jobs load: `model` itself, or the checkpoint that `custom` or a bare file name stands for
    (resolve_model_name). Checks everything a load needs but the weights, and check_sha256, so any model problem
    is one ConfigError line when the workflow loads, before anything runs."""
    model = cfg["model"]
    if cfg["allow_download"]:  # a known checkpoint or a hub id that is not here: into the Hugging Face cache now
        from .model_download import fetch

        model = fetch(model, cfg["models_path"], cache_dir / DIGEST_CACHE.name)
    model = resolve_model_name(model, cfg["models_path"], cfg["custom_checkpoint_path"])
    location = model_location(model)
    if location is not None and location.is_file():
        checkpoint_config(location, cfg["model_config"], cache_dir / FAMILY_CACHE.name)
    check_checksum({**cfg, "model": model}, cache_dir / DIGEST_CACHE.name)
    if cfg["compile_unet"]:
        check_compiler()
    return model


def check_compiler() -> None:
    """torch.compile's inductor builds C++ (CPU) and Triton launchers (CUDA): without a compiler the first frame
    would fail, so say it now."""
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise ConfigError("compile_unet: torch.compile needs a C++ compiler (g++, clang++ or $CXX) and none is on "
                          "PATH; install one or set compile_unet: false")


def resolve_model_name(model: str, models_path: str = "", custom_checkpoint_path: str = "") -> str:
    """The guides' ways of naming a checkpoint: `custom` (the file is custom_checkpoint_path) and a bare file name
    (looked up in models_path when it is not in the working directory)."""
    model = str(model).strip()
    if model == "custom":
        if not str(custom_checkpoint_path).strip():
            raise ConfigError("custom_checkpoint_path: model_checkpoint is custom but no checkpoint path is given")
        return str(custom_checkpoint_path).strip()
    path = Path(model).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES and len(path.parts) == 1 and not path.exists() and models_path:
        candidate = Path(models_path).expanduser() / path
        if not candidate.is_file():
            raise ConfigError(f"model: no checkpoint {model} in models_path ({Path(models_path).expanduser()}) nor "
                              f"in the working directory: {where_to_get(model)} into models_path, or set "
                              "allow_download: true")
        return str(candidate)
    return model


def where_to_get(filename: str) -> str:
    """Where a checkpoint the guides name is published (model_download.KNOWN_CHECKPOINTS), as advice."""
    from .model_download import KNOWN_CHECKPOINTS

    known = KNOWN_CHECKPOINTS.get(filename)
    if known is None:
        return f"download it (e.g. v1-5-pruned-emaonly{Path(filename).suffix})"
    return f"download it from {known.url} (sha256 {known.sha256})"


def checkpoint_config(path: Path, model_config: str, cache_file: Path = FAMILY_CACHE) -> Path:
    """The config folder to load checkpoint `path` with: `model_config` when given (a diffusers config folder,
    one of FAMILIES, or an original LDM .yaml like v2-inference-v.yaml), else the shipped folder of the family its
    weights show. One-line ConfigError for a checkpoint that cannot be used."""
    try:
        described = describe_checkpoint(path, cache_file)
    except checkpoints.CheckpointError as e:
        raise ConfigError(f"model: {e}") from None
    model_config = str(model_config).strip()
    if not model_config:
        folder = CONFIGS_DIR / described["family"]
        expected = json.loads((folder / "unet" / "config.json").read_text())["block_out_channels"][0]
        if described["unet_channels"] != expected:  # a small test model, say: not the released SD size
            raise ConfigError(f"model_config: {path.name} has a {described['unet_channels']}-channel UNet, not the "
                              f"{expected} of {folder.name}; set model_config to this model's diffusers config folder")
        return folder
    if model_config in FAMILIES:
        return CONFIGS_DIR / model_config
    config = Path(model_config).expanduser()
    if config.suffix.lower() in (".yaml", ".yml") and config.is_file():
        return CONFIGS_DIR / ldm_yaml_family(config)
    if not (config / "unet" / "config.json").is_file():
        raise ConfigError(f"model_config: {model_config} is neither a diffusers config folder (unet/config.json, "
                          f"...), an original .yaml config nor one of {', '.join(FAMILIES)}")
    return config


def ldm_yaml_family(path: Path) -> str:
    """The family an original LDM/SGM config file (v1-inference.yaml, v2-inference-v.yaml, sd_xl_base.yaml)
    describes, from its text: the conditioner of SDXL, the v parameterization, the 1024-wide context of SD 2.x."""
    import yaml

    try:
        params = yaml.safe_load(path.read_text())["model"]["params"]
        unet = params["unet_config"]["params"] if "unet_config" in params else params["network_config"]["params"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ConfigError(f"model_config: {path} is not an original Stable Diffusion config file ({e})") from None
    if unet.get("in_channels", 4) != 4:
        raise ConfigError(f"model_config: {path} describes an inpainting/pix2pix model; animation needs text-to-image")
    if "network_config" in params:
        return "sdxl"
    if unet.get("context_dim") == 1024:
        return "sd2-v" if params.get("parameterization") == "v" else "sd2"
    return "sd1"


def describe_checkpoint(path: Path, cache_file: Path = FAMILY_CACHE) -> dict:
    """checkpoints.describe of `path`; for a .ckpt (a pickle to read) kept in `cache_file` per file version."""
    if path.suffix.lower() == ".safetensors":
        return checkpoints.describe(path)
    return _cached(path, cache_file, checkpoints.describe)


def model_location(model: str) -> Path | None:
    """Where the model that `model` names is, found when the workflow loads (never downloaded): None for
    builtin:tiny and builtin:tiny-xl (built in memory), else a single-file checkpoint or a diffusers folder.
    One-line ConfigError naming `model`, saying what to fetch, when it is not here."""
    model = str(model).strip()
    if model in BUILT_IN_MEMORY:
        return None
    path = Path(model).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES and not path.is_dir():
        if not path.is_file():
            raise ConfigError(
                f"model: no checkpoint at {path}: download the SD 1.x/2.x {path.suffix} file "
                f"(e.g. v1-5-pruned-emaonly{path.suffix}) and put it at that path"
            )
        return path
    return model_folder(model)


def model_folder(model: str) -> Path:
    """The diffusers folder that `model` (builtin:toy, a local folder or a cached hub id) names."""
    if model == "builtin:toy":
        if not (TOY_DIR / "model_index.json").is_file():
            raise ConfigError(
                f"model: builtin:toy needs the trained toy model as a diffusers folder in {TOY_DIR} "
                "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/); train or copy it there, "
                "or use model: builtin:tiny"
            )
        return TOY_DIR
    if model.startswith("builtin:"):
        raise ConfigError(f"model: unknown builtin model {model!r} (builtin:tiny, builtin:tiny-xl or builtin:toy)")
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"model: {model} is neither a diffusers folder nor a .safetensors/.ckpt checkpoint")
    if not HUB_ID.fullmatch(model):
        raise ConfigError(f"model: no such file or folder: {model}")
    folder = cached_hub_folder(model)
    if folder is None:
        raise ConfigError(
            f"model: {model!r} is not a local file or folder and not in the local Hugging Face cache; download it on "
            f"a connected machine with `hf download {model}` (into HF_HOME), set allow_download: true, or set model "
            "to a local folder or .safetensors/.ckpt file"
        )
    return folder


def cached_hub_folder(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local Hugging Face cache (None if absent); never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def check_checksum(cfg: Mapping, cache_file: Path = DIGEST_CACHE) -> None:
    """With check_sha256: the checkpoint `model` names must have the digest model_sha256. One-line ConfigError
    naming the key otherwise (only a .safetensors/.ckpt file can be checked)."""
    if not cfg["check_sha256"]:
        return
    path = Path(cfg["model"]).expanduser()
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES or not path.is_file():
        raise ConfigError(f"check_sha256: only a .safetensors/.ckpt checkpoint file can be checked, model is "
                          f"{cfg['model']!r}")
    expected = cfg["model_sha256"].strip().lower()
    if not expected:
        raise ConfigError("model_sha256: check_sha256 is true but no expected digest is given")
    digest = cached_sha256(path, cache_file)
    if digest != expected:
        raise ConfigError(f"model_sha256: {path} has sha256 {digest}, expected {expected}")


def cached_sha256(path: Path, cache_file: Path = DIGEST_CACHE) -> str:
    """file_sha256 of `path`, read from `cache_file` while the file's size and modification time are unchanged."""
    return _cached(path, cache_file, file_sha256)


def _cached(path: Path, cache_file: Path, compute):
    """compute(path) (a JSON value), kept in `cache_file` under the file's path, size and modification time."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if cache.get(key) is None:
        cache[key] = compute(path)
        io.write_text(cache_file, json.dumps(cache, indent=1))
    return cache[key]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
