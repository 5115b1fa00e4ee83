"""The model's files, checked when the workflow loads, without torch: check_sha256 verifies a checkpoint before
any job runs, and a digest is computed once per file version (cached by path, size and modification time in
.snakemake/, the working directory's planning state), so replanning a render reads no checkpoint again."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from . import io
from .config import ConfigError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
DIGEST_CACHE = Path(".snakemake") / "sha256_digests.json"


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
