import gc
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch

from deforum_steps import model_files, models
from deforum_steps.config import ConfigError, load_config
from deforum_steps.dependencies import MODEL_SETTINGS, pick
from deforum_steps.diffusion import denoise

REPO = Path(__file__).resolve().parents[1]
# The model settings' defaults live in the schema only; the tests load the offline builtin:tiny unless told.
DEFAULTS = load_config({}, REPO / "config" / "schema.yaml")
TINY = {**pick(DEFAULTS, MODEL_SETTINGS), "model": "builtin:tiny"}


def settings(**overrides):
    """The model settings load_pipeline reads (all of MODEL_SETTINGS): the schema defaults with `overrides`."""
    return {**TINY, **overrides}


@pytest.fixture(scope="module")
def tiny():
    return models.build_tiny()


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_diffusers")
    models.save_pipeline(tiny, folder)
    return folder


def one_line_error(cfg, key):
    """load_pipeline on `cfg` (over the default settings) fails with one line naming `key`."""
    with pytest.raises(ConfigError) as info:
        models.load_pipeline(settings(**cfg))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{key}:"), message
    return message


def small_latent(pipe, seed=3):
    return denoise(pipe, None, prompt="a cat", steps=3, cfg_scale=7, sampler="euler", seed=seed, width=64, height=64)


def test_tiny_is_deterministic_and_quick(tiny):
    start = time.perf_counter()
    again = models.build_tiny()
    print(f"\nbuiltin:tiny build {time.perf_counter() - start:.3f} s (diffusers/transformers already imported)")
    for a, b in zip(tiny.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(tiny.text_encoder.state_dict().values(), again.text_encoder.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(tiny.vae.state_dict().values(), again.vae.state_dict().values()):
        assert torch.equal(a, b)


def test_tiny_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.build_tiny()
    assert torch.equal(torch.rand(3), expected)


def test_tiny_has_sd_shape(tiny):
    assert tiny.vae_scale_factor == 8
    assert tiny.latent_shape(128, 64) == (1, 4, 8, 16)
    assert tiny.unet.config.cross_attention_dim == tiny.text_encoder.config.hidden_size
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32


TEXTS = ["", "a beautiful forest, trending on artstation", "日本語 émoji 🐱 <odd> \\:", "word " * 200]


@pytest.mark.parametrize("text", TEXTS)
def test_tiny_tokenizer_takes_any_text(tiny, text):
    ids = tiny.tokenizer(text, truncation=True, max_length=77).input_ids
    assert ids[0] == tiny.tokenizer.bos_token_id and ids[-1] == tiny.tokenizer.eos_token_id
    assert tiny.tokenizer.unk_token_id not in ids[1:-1] and len(ids) <= 77
    assert max(ids) < tiny.text_encoder.config.vocab_size


def test_common_words_are_single_tokens(tiny):
    assert len(tiny.tokenizer("forest").input_ids) == 3


def test_get_pipeline_loads_once_per_settings(monkeypatch):
    calls = []

    def fake_load(settings):
        calls.append(settings["model"])
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(models, "load_pipeline", fake_load)
    monkeypatch.setattr(models, "_loaded", None)
    cfg = {**TINY, "W": 64}
    results = []
    threads = [threading.Thread(target=lambda: results.append(models.get_pipeline(cfg))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(r is results[0] for r in results)
    assert models.get_pipeline({**cfg, "W": 128, "steps": 5}) is results[0]  # non-model keys do not reload
    # the checksum is checked when the workflow loads (model_files) and changes no image: no reload either
    assert models.get_pipeline({**cfg, "check_sha256": True, "model_sha256": "0" * 64}) is results[0]
    assert models.get_pipeline({**cfg, "model": "other"}) is not results[0]
    assert calls == ["builtin:tiny", "other"]
    for key in MODEL_SETTINGS:  # every model setting is required: no default outside the schema
        with pytest.raises(KeyError, match=key):
            models.get_pipeline({k: v for k, v in cfg.items() if k != key})


def test_the_process_pipeline_is_frozen_and_freed_when_replaced(monkeypatch):
    """The pipeline a render keeps is out of garbage collections (process.loading_model); a model switch frees the
    one it replaces, even one that only the cycle collector can free (as the first pipeline a process builds)."""

    class Pipeline:
        def __init__(self, settings):
            self.unet = {"pipeline": self, "model": settings["model"]}

    monkeypatch.setattr(models, "load_pipeline", Pipeline)
    monkeypatch.setattr(models, "_loaded", None)
    first = models.get_pipeline(TINY)
    assert not any(o is first.unet for o in gc.get_objects())
    replaced = weakref.ref(first)
    del first
    second = models.get_pipeline({**TINY, "model": "other"})
    assert replaced() is None and models._loaded[1] is second


def test_importing_loads_no_model():
    code = (
        "import sys, deforum_steps.diffusion as d, deforum_steps.models as m;"
        "assert m._loaded is None; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_diffusers_folder_loads_same_model(tiny, tiny_folder):
    loaded = models.load_pipeline(settings(model=str(tiny_folder)))
    assert torch.equal(small_latent(loaded), small_latent(tiny))


def test_builtin_toy_is_the_models_toy_folder(tiny, tiny_folder, monkeypatch, tmp_path):
    monkeypatch.setattr(model_files, "TOY_DIR", tiny_folder)
    assert torch.equal(small_latent(models.load_pipeline(settings(model="builtin:toy"))), small_latent(tiny))
    monkeypatch.setattr(model_files, "TOY_DIR", tmp_path / "models" / "toy")
    assert "models/toy" in one_line_error({"model": "builtin:toy"}, "model")


def test_bf16_on_cpu(tiny_folder):
    pipe = models.load_pipeline(settings(model=str(tiny_folder), dtype="bf16", map_location="cpu"))
    assert pipe.unet.dtype == torch.bfloat16
    latent = small_latent(pipe)
    assert latent.dtype == torch.float32 and latent.isfinite().all()


def test_missing_checkpoint(tmp_path):
    message = one_line_error({"model": str(tmp_path / "sd-v1-5.safetensors")}, "model")
    assert "download" in message and "sd-v1-5.safetensors" in message


def test_missing_hub_model():
    message = one_line_error({"model": "nobody-here/no-such-model-xyz"}, "model")
    assert "hf download nobody-here/no-such-model-xyz" in message


def test_unknown_builtin_and_non_model_paths(tmp_path):
    one_line_error({"model": "builtin:huge"}, "model")
    assert "model_index.json" in one_line_error({"model": str(tmp_path)}, "model")
    assert "no such file or folder" in one_line_error({"model": "./models/nothing"}, "model")
    (tmp_path / "notes.txt").write_text("x")
    one_line_error({"model": str(tmp_path / "notes.txt")}, "model")


def checksum_error(cfg, key, cache):
    """check_checksum on `cfg` (over the defaults) fails with one line naming `key`."""
    with pytest.raises(ConfigError) as info:
        model_files.check_checksum({**DEFAULTS, **cfg}, cache)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{key}:"), message
    return message


def test_checksum(tmp_path):
    cache = tmp_path / ".snakemake" / "sha256_digests.json"
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"not really a checkpoint")
    digest = model_files.file_sha256(ckpt)
    assert digest == hashlib.sha256(b"not really a checkpoint").hexdigest()
    message = checksum_error({"model": str(ckpt), "check_sha256": True, "model_sha256": "0" * 64}, "model_sha256",
                             cache)
    assert digest in message
    checksum_error({"model": str(ckpt), "check_sha256": True}, "model_sha256", cache)  # no digest given
    # right digest, in any letter case: the check passes
    assert model_files.check_checksum({**DEFAULTS, "model": str(ckpt), "check_sha256": True,
                                       "model_sha256": digest.upper()}, cache) is None
    # only a checkpoint file can be checked
    for model in ("builtin:tiny", str(tmp_path), str(tmp_path / "missing.ckpt")):
        message = checksum_error({"model": model, "check_sha256": True, "model_sha256": digest}, "check_sha256",
                                 cache)
        assert ".safetensors/.ckpt" in message
    # check_sha256 off: nothing is checked or read
    model_files.check_checksum({**DEFAULTS, "model": "builtin:tiny", "model_sha256": "0" * 64}, cache)
    model_files.check_checksum({**DEFAULTS, "model": str(ckpt), "model_sha256": "0" * 64}, cache)


def test_load_pipeline_leaves_the_checksum_to_the_workflow(tmp_path):
    # load_pipeline reads only MODEL_SETTINGS: a wrong model_sha256 does not stop it, the bogus file does
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"not really a checkpoint")
    message = one_line_error({"model": str(ckpt), "check_sha256": True, "model_sha256": "0" * 64}, "model")
    assert "not a readable .safetensors file" in message
    assert isinstance(models.load_pipeline(settings(check_sha256=True, model_sha256="0" * 64)), models.Pipeline)


def test_checksum_digest_cache(tmp_path, monkeypatch):
    """A digest is computed once per file version (path, size, modification time) and kept in the cache file."""
    cache = tmp_path / "state" / "sha256_digests.json"
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"version one")
    hashed = []
    real = model_files.file_sha256

    def counting(path, *args, **kwargs):
        hashed.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(model_files, "file_sha256", counting)
    digest = real(ckpt)
    cfg = {**DEFAULTS, "model": str(ckpt), "check_sha256": True, "model_sha256": digest}
    model_files.check_checksum(cfg, cache)
    assert hashed == [ckpt] and digest in json.loads(cache.read_text()).values()
    model_files.check_checksum(cfg, cache)  # replanning: the cached digest, the checkpoint is not read again
    assert model_files.cached_sha256(ckpt, cache) == digest and len(hashed) == 1
    assert [p.name for p in cache.parent.iterdir()] == ["sha256_digests.json"]  # written atomically

    # a new version of the file (other size and modification time) is hashed again and checked against the digest
    ckpt.write_bytes(b"version two, longer")
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    message = checksum_error({**cfg}, "model_sha256", cache)
    assert len(hashed) == 2 and real(ckpt) in message
    # the same size but a new modification time is a new version too
    ckpt.write_bytes(b"version one")
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    model_files.check_checksum(cfg, cache)
    assert len(hashed) == 3

    # an unreadable cache file is rebuilt, never an error
    cache.write_text("{not json")
    model_files.check_checksum(cfg, cache)
    assert len(hashed) == 4 and digest in json.loads(cache.read_text()).values()


def test_checksum_cache_is_planning_state(tmp_path, monkeypatch):
    """By default the digests are kept in the working directory's .snakemake/, beside Snakemake's own state."""
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    digest = model_files.file_sha256(ckpt)
    model_files.check_checksum({**DEFAULTS, "model": str(ckpt), "check_sha256": True, "model_sha256": digest})
    cached = json.loads((tmp_path / ".snakemake" / "sha256_digests.json").read_text())
    assert list(cached.values()) == [digest]


def test_device_and_dtype_errors():
    one_line_error({"dtype": "fp16", "map_location": "cpu"}, "dtype")
    one_line_error({"dtype": "fp8"}, "dtype")
    one_line_error({"map_location": "tpu"}, "map_location")
    if not torch.cuda.is_available():
        one_line_error({"map_location": "cuda"}, "map_location")
    assert models.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert models.resolve_dtype("auto", torch.device("cuda")) == torch.float16
