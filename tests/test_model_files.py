"""Single-file checkpoints as users have them: original (LDM) key layout, .safetensors and .ckpt, SD 1.x / 2.x / XL,
found and checked when the workflow loads (no torch, no weights), loaded offline into exactly the weights of the
same model saved as a diffusers folder."""
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deforum_steps import checkpoints, ldm_checkpoint, model_files, models
from deforum_steps.config import ConfigError, load_config
from deforum_steps.dependencies import MODEL_SETTINGS, pick
from deforum_steps.diffusion import denoise

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = load_config({}, REPO / "config" / "schema.yaml")
SETTINGS = pick(DEFAULTS, MODEL_SETTINGS)


def build_tiny_sd2() -> models.Pipeline:
    """builtin:tiny with an OpenCLIP-style text encoder (gelu, "!" padding): the SD 2.x layout in small."""
    from transformers import CLIPTextConfig, CLIPTextModel

    pipe = models.build_tiny()
    tokenizer = models.build_tiny_tokenizer(pad_token="!")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, hidden_act="gelu", max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    return models._assemble(pipe.unet, pipe.vae, encoder, tokenizer, pipe.scheduler_config, pipe.device, pipe.dtype)


BUILDERS = {"sd1": models.build_tiny, "sd2": build_tiny_sd2, "sdxl": models.build_tiny_xl}


@pytest.fixture(scope="module", params=list(BUILDERS))
def tiny_model(request, tmp_path_factory):
    """(kind, pipeline, its diffusers folder)."""
    pipe = BUILDERS[request.param]()
    folder = tmp_path_factory.mktemp(f"tiny_{request.param}")
    models.save_pipeline(pipe, folder)
    return request.param, pipe, folder


def latent(pipe, init_latent=None, **kw):
    args = dict(prompt="a red cat", negative_prompt="blurry", steps=3, cfg_scale=7, sampler="euler", seed=5,
                width=64, height=64)
    return denoise(pipe, init_latent, **{**args, **kw})


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_original_layout_checkpoint_loads_the_same_weights(tiny_model, suffix, tmp_path):
    kind, pipe, folder = tiny_model
    path = ldm_checkpoint.save_checkpoint(pipe, tmp_path / f"model{suffix}")
    names = list(checkpoints.read_index(path).tensors)
    prefix = {"sd1": "cond_stage_model.transformer.", "sd2": "cond_stage_model.model.",
              "sdxl": "conditioner.embedders.1.model."}[kind]
    assert any(n.startswith("model.diffusion_model.input_blocks.") for n in names)
    assert any(n.startswith("first_stage_model.decoder.up.") for n in names)
    assert any(n.startswith(prefix) for n in names)
    if suffix == ".ckpt":  # the releases' .ckpt: {"state_dict": ...}; torch's safe loader reads it
        assert set(torch.load(path, weights_only=True)) == {"state_dict"}
    from_file = models.load_pipeline({**SETTINGS, "model": str(path), "model_config": str(folder)})
    from_folder = models.load_pipeline({**SETTINGS, "model": str(folder)})
    encoders = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if kind == "sdxl" else ())
    for name in encoders:
        a, b = getattr(from_file, name).state_dict(), getattr(from_folder, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert from_file.tokenizer("a cat").input_ids == from_folder.tokenizer("a cat").input_ids
    assert from_file.tokenizer.pad_token == pipe.tokenizer.pad_token
    assert from_file.scheduler_config == from_folder.scheduler_config
    frame = latent(from_file)
    assert torch.equal(frame, latent(from_folder)) and torch.equal(frame, latent(pipe))


def test_sdxl_conditioning_is_used(tmp_path):
    """SDXL's two encoders, pooled embedding and size conditioning all reach the UNet: each changes the frame."""
    pipe = models.build_tiny_xl()
    base = latent(pipe)
    emb = pipe.text_encoder_2.text_model.embeddings.token_embedding.weight
    with torch.no_grad():
        saved = emb.clone()
        emb.mul_(1.5)  # only the second encoder changes
        assert not torch.equal(latent(pipe), base)
        emb.copy_(saved)
    assert torch.equal(latent(pipe), base)
    assert latent(pipe, width=128, height=64).shape == (1, 4, 8, 16)  # any multiple of 64: its own size condition
    cond, uncond = models_conditioning(pipe, "a red cat")
    assert cond.shape == (1, 78, 80)  # 77 tokens of 32 + 48 features, then the pooled row (32, zero-padded)
    assert torch.count_nonzero(cond[0, -1, 32:]) == 0 and torch.count_nonzero(cond[0, -1, :32]) > 0


def models_conditioning(pipe, prompt):
    from deforum_steps.diffusion import prompt_conditioning

    return prompt_conditioning(pipe, prompt)


@pytest.mark.parametrize("mode", ["img2img", "mask", "interpolated"])
def test_sdxl_every_sampling_path(mode):
    """What the modes call: txt2img, img2img at a strength, masked img2img, and a blended conditioning."""
    from deforum_steps.diffusion import encode_image, prompt_conditioning

    pipe = models.build_tiny_xl()
    image = (np.indices((64, 64)).sum(0) % 256).astype(np.uint8)[..., None].repeat(3, -1)
    init = encode_image(pipe, image)
    if mode == "img2img":
        out = latent(pipe, init_latent=init, strength=0.5)
    elif mode == "mask":
        mask = torch.zeros(8, 8)
        mask[:, :4] = 1
        out = latent(pipe, init_latent=init, strength=0.3, mask=mask)
        free = latent(pipe, init_latent=init, strength=0.3)
        assert torch.allclose(out[..., :4], init[..., :4]) and not torch.allclose(free[..., :4], init[..., :4])
    else:
        a, b = prompt_conditioning(pipe, "a red cat"), prompt_conditioning(pipe, "a blue dog")
        out = latent(pipe, conditioning=tuple(0.5 * x + 0.5 * y for x, y in zip(a, b)))
        assert not torch.equal(out, latent(pipe, conditioning=a))
    assert out.shape == (1, 4, 8, 8) and out.isfinite().all()


# ---- the weights tell the family: what planning reads, without torch ---------------------------------------

# (the text encoders' tensors cut short: only their names are read)
SD1_KEYS = {checkpoints.UNET_INPUT: (320, 4, 3, 3), checkpoints.SD1_TEXT: (7, 768)}
SD2_KEYS = {checkpoints.UNET_INPUT: (320, 4, 3, 3), checkpoints.SD2_TEXT: (7, 1024)}
XL_KEYS = {checkpoints.UNET_INPUT: (320, 4, 3, 3), checkpoints.XL_TEXT_2: (7, 1280)}


def fake_checkpoint(path, shapes, bias_std=None, dtype=torch.float16, **extra):
    """A checkpoint holding only the keys the family test reads (real names, real shapes, zeros)."""
    tensors = {k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()}
    if bias_std is not None:
        rng = np.random.default_rng(0)
        tensors[checkpoints.V_PREDICTION_BIAS] = torch.tensor(rng.normal(0, bias_std, 320), dtype=dtype)
    if path.suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save({"state_dict": tensors, **extra}, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_family_from_the_weights(tmp_path, suffix, dtype):
    def family(name, shapes, **kw):
        return checkpoints.family(fake_checkpoint(tmp_path / f"{name}{suffix}", shapes, dtype=dtype, **kw))

    assert family("v1", SD1_KEYS) == "sd1"
    assert family("v2", SD2_KEYS, bias_std=0.03) == "sd2"
    assert family("v2v", SD2_KEYS, bias_std=0.2) == "sd2-v"
    assert family("xl", XL_KEYS) == "sdxl"
    if suffix == ".ckpt":  # the 512-base release records its training step: epsilon, whatever the spread
        assert family("v2base", SD2_KEYS, bias_std=0.2, global_step=875000) == "sd2"


@pytest.mark.parametrize("channels, words", [(9, "inpainting"), (8, "pix2pix")])
def test_inpainting_and_pix2pix_refused(tmp_path, channels, words):
    path = fake_checkpoint(tmp_path / "in.safetensors", {**SD1_KEYS, checkpoints.UNET_INPUT: (320, channels, 3, 3)})
    with pytest.raises(checkpoints.CheckpointError, match=words):
        checkpoints.family(path)
    message = one_line(lambda: model_files.checkpoint_config(path, ""), "model")
    assert "text-to-image" in message


def test_not_a_checkpoint(tmp_path):
    lora = fake_checkpoint(tmp_path / "lora.safetensors", {"lora_unet_down.weight": (4, 4)})
    assert "LoRA" in one_line(lambda: model_files.checkpoint_config(lora, ""), "model")
    refiner = fake_checkpoint(tmp_path / "refiner.safetensors", {**SD1_KEYS, checkpoints.XL_REFINER_TEXT: (4, 4)})
    assert "refiner" in one_line(lambda: model_files.checkpoint_config(refiner, ""), "model")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip")
    assert "not a zip-format" in one_line(lambda: model_files.checkpoint_config(junk, ""), "model")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 16)
    assert "not a readable .safetensors" in one_line(lambda: model_files.checkpoint_config(junk, ""), "model")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


PWNED = Path("/tmp/deforum_pickle_ran")


def test_a_pickle_runs_nothing(tmp_path):
    """A .ckpt whose pickle would run a command: refused by planning's reader, and by torch's safe load."""
    PWNED.unlink(missing_ok=True)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {checkpoints.UNET_INPUT: torch.zeros(1)}, "x": Exploit()}, path)
    message = one_line(lambda: model_files.checkpoint_config(path, ""), "model")
    assert "posix.system" in message and "safe load refuses" in message and not PWNED.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not PWNED.exists()
    # lightning's training state in a full (unpruned) release checkpoint is refused the same way
    with zipfile.ZipFile(path) as z:
        assert any(n.endswith("data.pkl") for n in z.namelist())


def test_ckpt_family_is_cached_per_file_version(tmp_path, monkeypatch):
    path = fake_checkpoint(tmp_path / "v1.ckpt", SD1_KEYS)
    cache = tmp_path / "state" / "checkpoint_families.json"
    calls = []
    real = checkpoints.describe
    monkeypatch.setattr(checkpoints, "describe", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        assert model_files.checkpoint_config(path, "", cache) == model_files.CONFIGS_DIR / "sd1"
    assert len(calls) == 1 and list(json.loads(cache.read_text()).values()) == [
        {"family": "sd1", "unet_channels": 320}]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    model_files.checkpoint_config(path, "", cache)
    assert len(calls) == 2
    # a .safetensors header is read every time: a few KB, nothing to cache
    st = fake_checkpoint(tmp_path / "v1.safetensors", SD1_KEYS)
    model_files.checkpoint_config(st, "", cache)
    assert len(calls) == 3


def one_line(call, key):
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{key}:"), message
    return message


V2_V_YAML = """model:
  params:
    parameterization: "v"
    unet_config:
      params:
        in_channels: 4
        context_dim: 1024
"""


def test_model_config_choices(tmp_path):
    path = fake_checkpoint(tmp_path / "v2.safetensors", SD2_KEYS, bias_std=0.03)
    assert model_files.checkpoint_config(path, "") == model_files.CONFIGS_DIR / "sd2"
    assert model_files.checkpoint_config(path, "sd2-v") == model_files.CONFIGS_DIR / "sd2-v"  # the override
    (tmp_path / "v2-inference-v.yaml").write_text(V2_V_YAML)
    assert model_files.checkpoint_config(path, str(tmp_path / "v2-inference-v.yaml")).name == "sd2-v"
    (tmp_path / "v1-inference.yaml").write_text(V2_V_YAML.replace("1024", "768").replace('"v"', "eps"))
    assert model_files.checkpoint_config(path, str(tmp_path / "v1-inference.yaml")).name == "sd1"
    assert "neither" in one_line(lambda: model_files.checkpoint_config(path, str(tmp_path)), "model_config")
    (tmp_path / "bad.yaml").write_text("model: 3\n")
    one_line(lambda: model_files.checkpoint_config(path, str(tmp_path / "bad.yaml")), "model_config")


def test_small_checkpoint_needs_its_config(tmp_path):
    path = ldm_checkpoint.save_checkpoint(models.build_tiny(), tmp_path / "tiny.safetensors")
    message = one_line(lambda: model_files.checkpoint_config(path, ""), "model_config")
    assert "32-channel" in message and "320" in message


def test_shipped_configs_fit_the_released_shapes():
    """The shipped UNet configs have the released models' attention widths (the keys the family test reads)."""
    for name, context in {"sd1": 768, "sd2": 1024, "sd2-v": 1024, "sdxl": 2048}.items():
        unet = json.loads((model_files.CONFIGS_DIR / name / "unet" / "config.json").read_text())
        assert unet["cross_attention_dim"] == context and unet["in_channels"] == 4
    schedulers = {n: json.loads((model_files.CONFIGS_DIR / n / "scheduler" / "scheduler_config.json").read_text())
                  for n in ("sd2", "sd2-v")}
    assert schedulers["sd2"]["prediction_type"] == "epsilon"
    assert schedulers["sd2-v"]["prediction_type"] == "v_prediction"


def test_clip_tokenizer_is_openai_clip():
    tokenizer = models.clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert padded[3:] == [49407] * 74
    sd2 = models.load_tokenizer(model_files.CONFIGS_DIR / "sd2")
    assert sd2("a cat", padding="max_length", max_length=77).input_ids[3:] == [49407] + [0] * 73  # "!" is 0


# ---- the guides' keys: a checkpoint by file name in models_path, or custom ----------------------------------


def test_models_path_and_custom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_models").mkdir()
    ckpt = fake_checkpoint(tmp_path / "my_models" / "v1-5-pruned-emaonly.safetensors", SD1_KEYS)
    cfg = {**DEFAULTS, "model": "v1-5-pruned-emaonly.safetensors", "models_path": "my_models"}
    assert model_files.check_model(cfg) == str(Path("my_models") / ckpt.name)
    message = one_line(lambda: model_files.check_model({**cfg, "model": "other.ckpt"}), "model")
    assert "other.ckpt" in message and "my_models" in message
    custom = {**DEFAULTS, "model": "custom", "custom_checkpoint_path": str(ckpt)}
    assert model_files.check_model(custom) == str(ckpt)
    one_line(lambda: model_files.check_model({**custom, "custom_checkpoint_path": ""}), "custom_checkpoint_path")
    digest = model_files.file_sha256(ckpt)
    assert model_files.check_model({**custom, "check_sha256": True, "model_sha256": digest}) == str(ckpt)
    one_line(lambda: model_files.check_model({**custom, "check_sha256": True, "model_sha256": "0" * 64}),
             "model_sha256")


def test_guide_keys_in_the_config():
    cfg = load_config({"model_checkpoint": "custom", "custom_checkpoint_path": "/x/a.ckpt",
                       "custom_config_path": "/x/v1-inference.yaml", "models_path": "/x"}, REPO / "config" /
                      "schema.yaml")
    assert (cfg["model"], cfg["model_config"], cfg["custom_checkpoint_path"]) == (
        "custom", "/x/v1-inference.yaml", "/x/a.ckpt")
    with pytest.raises(ConfigError, match=r"^load_on_run_all: means nothing here"):
        load_config({"load_on_run_all": True}, REPO / "config" / "schema.yaml")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DEFORUM_SLOW"), reason="opt-in (DEFORUM_SLOW=1): writes a 4 GB checkpoint")
def test_full_size_sd15_checkpoint(tmp_path):
    """SD 1.5's full shapes, random weights: the shipped sd1 configs and CLIP vocabulary load it, family detected."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = model_files.CONFIGS_DIR / "sd1"
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    pipe = models._assemble(unet, vae, encoder, models.clip_tokenizer(), models.SD_SCHEDULER_CONFIG,
                            torch.device("cpu"), torch.float32)
    path = ldm_checkpoint.save_checkpoint(pipe, tmp_path / "v1-5-random.safetensors")
    assert checkpoints.family(path) == "sd1"
    loaded = models.load_pipeline({**SETTINGS, "model": str(path)})
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
