"""Opt-in download (allow_download: true) of a model that `model` names but this machine lacks: a hub id (a
diffusers repo: its configs, tokenizers and safetensors weights) or a checkpoint the guides name by file
(KNOWN_CHECKPOINTS), into the Hugging Face cache (HF_HOME). It runs when the workflow loads, before the DAG: a
download that fails is one config error line with nothing written, and planning a cached model reads the cache only.

huggingface_hub does the transfer, so HF_ENDPOINT (a mirror) and HF_TOKEN (gated repos) are honoured, a connection
dropped mid-file is resumed from the bytes received (a Range request, up to five times), and the cache keeps one
copy. What it does not do is checked here: every LFS file against its sha256 (the name of its blob in the cache),
a known checkpoint against its published digest; a file that fails is removed from the cache."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .model_files import HUB_ID, cached_sha256


@dataclass(frozen=True)
class Known:
    repo: str
    filename: str
    sha256: str

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.filename}"


# The checkpoints the guides and the notebook's model table name, where the hub has them now (runwayml's SD 1.5
# repo is gone; its files are mirrored by stable-diffusion-v1-5), with the digests the notebook checks.
KNOWN_CHECKPOINTS = {k.filename: k for k in (
    Known("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors",
          "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"),
    Known("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.ckpt",
          "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516"),
    Known("CompVis/stable-diffusion-v-1-4-original", "sd-v1-4.ckpt",
          "fe4efff1e174c627256e44ec2991ba279b3816e364b49f9be2abc0b3ff3f8556"),
    Known("stabilityai/stable-diffusion-2-1", "v2-1_768-ema-pruned.ckpt",
          "ad2a33c361c1f593c4a1fb32ea81afce2b5bb7d1983c6b94793a26a3b54b08a0"),
    Known("stabilityai/stable-diffusion-2-1-base", "v2-1_512-ema-pruned.ckpt",
          "88ecb782561455673c4b78d05093494b9c539fc6bfc08f3a9a4a0dd7b0b10f36"),
    Known("stabilityai/stable-diffusion-xl-base-1.0", "sd_xl_base_1.0.safetensors",
          "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"),
)}
# What models.load_folder reads of a diffusers repo: not its single-file copies, .bin or fp16 duplicates of the
# weights, nor the safety checker.
DIFFUSERS_FILES = ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                   "*/model.safetensors"]
NOT_LOADED = ["safety_checker/*", "feature_extractor/*"]
SHA256 = re.compile(r"[0-9a-f]{64}")


def fetch(model: str, models_path: str, digest_cache: Path, endpoint: str | None = None,
          cache_dir: str | Path | None = None) -> str:
    """`model`, or the cached copy of what it names when that is a known checkpoint file that is not in the
    working directory nor in models_path, or a hub id that is no local path: downloaded when not cached yet."""
    model = str(model).strip()
    known = KNOWN_CHECKPOINTS.get(model)
    if known and not (Path(model).exists() or (Path(models_path).expanduser() / model).is_file()):
        from huggingface_hub import hf_hub_download

        path = Path(_download(hf_hub_download, dict(repo_id=known.repo, filename=known.filename), endpoint,
                              cache_dir, f"{known.repo} {known.filename}"))
        verify(path, digest_cache, known.sha256)
        return str(path)
    if HUB_ID.fullmatch(model) and not Path(model).exists():
        from huggingface_hub import snapshot_download

        folder = Path(_download(snapshot_download, dict(repo_id=model, allow_patterns=DIFFUSERS_FILES,
                                                        ignore_patterns=NOT_LOADED), endpoint, cache_dir, model))
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            verify(path, digest_cache)
        return str(folder)
    return model


def _download(call, args: dict, endpoint: str | None, cache_dir, what: str) -> str:
    """call(**args): the cached copy if there is one (no network), else downloaded. One ConfigError line naming
    what to fetch and where when the hub cannot be reached or refuses."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    args = {**args, "endpoint": endpoint, "cache_dir": cache_dir}
    try:
        return call(**args, local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or HF_HUB_OFFLINE
        pass
    where = endpoint or constants.ENDPOINT
    fetch_it = (f"fetch it on a connected machine with `hf download {what}` (into the Hugging Face cache, HF_HOME), "
                "or set model to a local copy")
    try:
        return call(**args)
    except GatedRepoError:
        raise ConfigError(f"model: {where} refused {what}: the repo is gated; accept its terms on the hub and set "
                          "HF_TOKEN to a token of that account, or " + fetch_it) from None
    except HfHubHTTPError as e:  # no such repo, revision or file, or a private repo without a token
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise ConfigError(f"model: {where} has no {what} for this client (HTTP {status}; a private repo needs "
                          "HF_TOKEN); " + fetch_it) from None
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model: cannot download {what} from {where} ({reason}); " + fetch_it) from None


def verify(path: Path, digest_cache: Path, expected: str | None = None) -> None:
    """The cached file `path` has the sha256 its blob is named by (LFS files) and `expected`; otherwise it is
    removed from the cache (the next run downloads it again) and the error says so."""
    blob = path.resolve()
    expected = expected or (blob.name if SHA256.fullmatch(blob.name) else None)
    if expected is None:  # a small git file (a config): its blob is named by its git hash, checked by size only
        return
    digest = cached_sha256(blob, digest_cache)
    if digest != expected:
        blob.unlink()
        path.unlink(missing_ok=True)
        raise ConfigError(f"model: the download of {path.name} has sha256 {digest}, expected {expected}; removed "
                          "from the cache, run again to download it again")
