"""The model's files, found and checked when the workflow loads, without torch: model_location finds the model
`model` names (a missing one is a config error before anything runs), check_sha256 verifies a checkpoint before
any job runs, and a digest is computed once per file version (cached by path, size and modification time in
.snakemake/, the working directory's planning state), so replanning a render reads no checkpoint again."""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from . import io
from .config import ConfigError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
TOY_DIR = Path(__file__).resolve().parents[1] / "models" / "toy"
HUB_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")
DIGEST_CACHE = Path(".snakemake") / "sha256_digests.json"


def model_location(model: str) -> Path | None:
    """Where the model that `model` names is, found when the workflow loads (never downloaded): None for
    builtin:tiny (built in memory), else a single-file checkpoint or a diffusers folder. One-line ConfigError
    naming `model`, saying what to fetch, when it is not here."""
    model = str(model).strip()
    if model == "builtin:tiny":
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
        raise ConfigError(f"model: unknown builtin model {model!r} (builtin:tiny or builtin:toy)")
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
            f"a connected machine with `hf download {model}` (into HF_HOME) or set model to a local folder or "
            ".safetensors/.ckpt file"
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
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache.get(key), str):
        cache[key] = file_sha256(path)
        io.write_text(cache_file, json.dumps(cache, indent=1))
    return cache[key]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
