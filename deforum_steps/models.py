"""Stable Diffusion model loading: one pipeline per process, built or loaded lazily on first use.

`model` in the render config picks the source:

* `builtin:tiny`    a small randomly initialised SD-architecture model built offline in about a second (tests, CI);
* `builtin:tiny-xl` the same for the SDXL architecture (two text encoders, size conditioning);
* `builtin:toy`     the trained toy model in `<repo>/models/toy/`, loaded like any diffusers folder;
* a local diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), SD or SDXL;
* a single-file SD 1.x/2.x/XL checkpoint (`.safetensors` / `.ckpt`, read with weights_only), loaded with the config
  folder model_files.checkpoint_config picks (shipped in model_configs/ for the released sizes);
* a hub id, read from the local Hugging Face cache only.

Nothing is downloaded here: a missing model is a ConfigError, when the workflow loads, that says what to fetch
and where to put it, or, with allow_download, model_download fetches it then.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import process
from .config import ConfigError
from .dependencies import MODEL_SETTINGS, pick
from .model_files import CONFIGS_DIR, checkpoint_config, model_location

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# SD 1.x noise schedule (what the v1 checkpoints ship as scheduler_config.json, minus the class name).
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
}


@dataclass(eq=False)
class Pipeline:
    """The components of a Stable Diffusion model, on one device in one dtype."""

    unet: Any  # UNet2DConditionModel
    vae: Any  # AutoencoderKL
    text_encoder: Any  # CLIPTextModel
    tokenizer: Any  # CLIPTokenizer
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    text_encoder_2: Any = None  # SDXL's second text encoder (CLIPTextModelWithProjection) and its tokenizer
    tokenizer_2: Any = None

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int, int]:
        f = self.vae_scale_factor
        if width % f or height % f:
            raise ValueError(f"image size {width}x{height} is not a multiple of the VAE factor {f}")
        return (1, self.unet.config.in_channels, height // f, width // f)


# ---- one pipeline per process ---------------------------------------------------------------------

_lock = threading.Lock()
_loaded: tuple[tuple, Pipeline] | None = None


def get_pipeline(cfg: Mapping) -> Pipeline:
    """The process-wide pipeline for `cfg`'s model settings, loaded on first use and shared by later jobs."""
    global _loaded
    settings = pick(cfg, MODEL_SETTINGS)
    key = tuple(settings.values())
    with _lock:
        if _loaded is None or _loaded[0] != key:
            if _loaded is not None:  # one model per process: free the previous one before loading the next
                _loaded = None
                process.release_frozen()
            started = time.perf_counter()
            with process.loading_model():
                _loaded = (key, load_pipeline(settings))
            log_load(settings["model"], time.perf_counter() - started)
        return _loaded[1]


def log_load(model: str, seconds: float) -> None:
    """With DEFORUM_MODEL_LOG set (a file), append a line per model load: host, process, model, seconds. On a
    cluster it tells how often each node loaded a model (bench/bench_scale.py, tests/test_slurm.py count them)."""
    path = os.environ.get("DEFORUM_MODEL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{socket.gethostname()} {os.getpid()} {model} {seconds:.2f}\n")


def load_pipeline(cfg: Mapping) -> Pipeline:
    """Load (uncached) the pipeline that `cfg`'s model settings (dependencies.MODEL_SETTINGS) describe; the
    checksum was verified when the workflow loaded (model_files.check_checksum)."""
    s = pick(cfg, MODEL_SETTINGS)
    device = resolve_device(s["map_location"])
    dtype = resolve_dtype(s["dtype"], device)
    location = model_location(s["model"])
    if location is None:
        pipe = (build_tiny_xl if s["model"].strip() == "builtin:tiny-xl" else build_tiny)(device, dtype)
    elif location.is_file():
        pipe = load_single_file(location, checkpoint_config(location, s["model_config"]), device, dtype)
    else:
        pipe = load_folder(location, device, dtype)
    return configure(pipe, vae_tiling=s["vae_tiling"], compile_unet=s["compile_unet"])


def configure(pipe: Pipeline, *, vae_tiling: bool = False, compile_unet: bool = False) -> Pipeline:
    """The speed and memory switches. Attention is PyTorch's scaled_dot_product_attention (SDPA: its flash or
    memory-efficient kernels on CUDA) in every attention layer of the UNet and VAE, whatever a loader picked;
    vae_tiling encodes/decodes frames larger than the VAE's sample_size in overlapping tiles (diffusers' tiling,
    blended seams: a little different, much less memory); compile_unet wraps the UNet in torch.compile."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    (pipe.vae.enable_tiling if vae_tiling else pipe.vae.disable_tiling)()
    if compile_unet:
        if not torch._dynamo.is_dynamo_supported():
            raise ConfigError(f"compile_unet: torch {torch.__version__} cannot compile on this Python; set "
                              "compile_unet: false")
        pipe.unet = torch.compile(pipe.unet)
    return pipe


def resolve_device(map_location: str) -> torch.device:
    if map_location == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if map_location == "cuda" and not torch.cuda.is_available():
        raise ConfigError("map_location: cuda asked for but torch sees no CUDA device (use auto or cpu)")
    if map_location not in ("cuda", "cpu"):
        raise ConfigError(f"map_location: {map_location!r} is not one of auto, cuda, cpu")
    return torch.device(map_location)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype: {name!r} is not one of auto, fp32, fp16, bf16")
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("dtype: fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return DTYPES[name]


# ---- sources --------------------------------------------------------------------------------------


def load_folder(folder: str | Path, device: torch.device, dtype: torch.dtype) -> Pipeline:
    """Load a diffusers-format Stable Diffusion folder (also what builtin:toy and hub ids resolve to)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ConfigError(f"model: {folder} is not a diffusers folder (no model_index.json)")
    try:
        kw = dict(local_files_only=True)
        # without accelerate, diffusers warns and falls back to random init + load, so ask for that directly
        low_mem = dict(low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **kw, **low_mem)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **kw, **low_mem)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **kw)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw)
        scheduler_config = dict(DDIMScheduler.load_config(folder, subfolder="scheduler", **kw))
        xl = {}
        if (folder / "text_encoder_2").is_dir():
            xl = dict(text_encoder_2=CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2",
                                                                                 dtype=dtype, **kw),
                      tokenizer_2=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", **kw))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model: cannot load the diffusers folder {folder}: {_first_line(e)}") from e
    return _assemble(unet, vae, text_encoder, tokenizer, scheduler_config, device, dtype, **xl)


def load_single_file(path: Path, config: Path, device: torch.device, dtype: torch.dtype) -> Pipeline:
    """Load an SD 1.x/2.x/XL `.safetensors`/`.ckpt` checkpoint (a .ckpt with torch.load(weights_only=True)) with the
    component configs in the local folder `config` (model_files.checkpoint_config); the tokenizers come from its
    tokenizer folders, else from CLIP's vocabulary shipped in model_configs/."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.models.modeling_utils import no_init_weights

    xl = (config / "text_encoder_2").is_dir()
    tokenizers = {name: load_tokenizer(config, name) for name in ("tokenizer", "tokenizer_2")[: 1 + xl]}
    try:
        # Without accelerate diffusers builds each model with random weights before loading the file's over them:
        # skip that init, as its folder loader does (SD 1.5 from .safetensors on one thread: 44 s → 21 s).
        with no_init_weights():
            sd = (StableDiffusionXLPipeline if xl else StableDiffusionPipeline).from_single_file(
                str(path), config=str(config), local_files_only=True, torch_dtype=dtype, **tokenizers
            )
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
        reason = _first_line(e)
        raise ConfigError(f"model: cannot load the checkpoint {path} with the configs in {config}: {reason}") from e
    extra = dict(text_encoder_2=sd.text_encoder_2, tokenizer_2=sd.tokenizer_2) if xl else {}
    # the config file as a diffusers folder has it (sd.scheduler.config adds its class's defaults)
    scheduler_config = dict(DDIMScheduler.load_config(config, subfolder="scheduler", local_files_only=True))
    return _assemble(sd.unet, sd.vae, sd.text_encoder, sd.tokenizer, scheduler_config, device, dtype, **extra)


def load_tokenizer(config: Path, name: str = "tokenizer"):
    """The CLIP tokenizer `name` of a config folder: its own files, else CLIP's BPE (what every SD release uses),
    padded as its text encoder was trained: OpenCLIP encoders (SD 2.x, SDXL's second) pad with "!"."""
    from transformers import CLIPTokenizer

    if (config / name / "tokenizer_config.json").is_file():
        return CLIPTokenizer.from_pretrained(config, subfolder=name, local_files_only=True)
    encoder = json.loads((config / name.replace("tokenizer", "text_encoder") / "config.json").read_text())
    return clip_tokenizer(pad_token="!" if encoder.get("hidden_act") == "gelu" else "<|endoftext|>")


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """OpenAI CLIP's tokenizer (49,408 tokens), built from the merges shipped in model_configs/ as CLIP's own
    simple_tokenizer builds it: bytes, bytes at a word end, one token per merge, then the two special tokens."""
    from transformers import CLIPTokenizer

    merges = [tuple(line.split()) for line in gzip.decompress((CONFIGS_DIR / "clip_merges.txt.gz").read_bytes())
              .decode().splitlines()]
    chars = list(bytes_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=77,
                         pad_token=pad_token)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _assemble(unet, vae, text_encoder, tokenizer, scheduler_config, device, dtype, text_encoder_2=None,
              tokenizer_2=None) -> Pipeline:
    # torch's own Module.to: diffusers' override warns on every dtype cast, even with no fp32-kept modules
    unet, vae, text_encoder, text_encoder_2 = (
        m if m is None else torch.nn.Module.to(m, device=device, dtype=dtype).eval().requires_grad_(False)
        for m in (unet, vae, text_encoder, text_encoder_2)
    )
    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}  # drop _class_name etc.
    return Pipeline(unet, vae, text_encoder, tokenizer, config, device, dtype, text_encoder_2, tokenizer_2)


# ---- builtin:tiny ---------------------------------------------------------------------------------

# Whole-word BPE merges for common prompt words keep prompts short; anything else falls back to bytes.
TINY_WORDS = """a an the of and in on with by at to from for is
beautiful portrait woman man girl boy cat dog bunny bird horse fish dragon robot face eyes hair
forest tree flower garden lake river sea ocean water mountain sky cloud clouds sun moon star stars night
day light dark fire city street house castle space planet desert snow rain landscape
apple banana coconut durian fruit
red green blue yellow orange purple pink black white gold silver colorful
painting photo art style oil watercolor digital concept illustration realistic detailed highly
trending artstation masterpiece cinematic lighting fantasy dream cute tiny anthropomorphic clean
blur blurry ugly nsfw nude text watermark""".split()


def build_tiny(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Pipeline:
    """A small SD-architecture pipeline with fixed random weights (same seed → same weights, on any device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):  # fixed weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(  # four blocks = three 2x downsamples: 8x to 4 latent channels, as in SD
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=128,
        )
    return _assemble(unet, vae, text_encoder, tokenizer, dict(SD_SCHEDULER_CONFIG), torch.device(device), dtype)


def build_tiny_xl(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Pipeline:
    """builtin:tiny's SDXL counterpart: two text encoders (the second with a projection, whose pooled output and
    the image size condition the UNet through its text_time embedding), fixed random weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    base = build_tiny(device, dtype, seed)  # its VAE and first text encoder
    tokenizer_2 = build_tiny_tokenizer(pad_token="!")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(
                vocab_size=len(tokenizer_2),
                hidden_size=48,  # unlike the first encoder's, as in SDXL (768, 1280): the loaders tell them apart by it
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=4,
                hidden_act="gelu",
                projection_dim=32,
                max_position_embeddings=tokenizer_2.model_max_length,
                bos_token_id=tokenizer_2.bos_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                pad_token_id=tokenizer_2.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32 + 48,  # both encoders' hidden states side by side
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled text + six size numbers
            norm_num_groups=8,
        )
    base.vae.register_to_config(scaling_factor=0.13025)  # SDXL's VAE scale
    return _assemble(unet, base.vae, base.text_encoder, base.tokenizer, dict(SD_SCHEDULER_CONFIG),
                     torch.device(device), dtype, text_encoder_2, tokenizer_2)


def build_tiny_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIP-style byte-level BPE tokenizer built in memory: every byte is a token, so any text encodes."""
    from transformers import CLIPTokenizer

    byte_char = bytes_to_unicode()
    chars = list(byte_char.values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = []
    for word in TINY_WORDS:
        symbols = [byte_char[b] for b in word.encode()]
        symbols[-1] += "</w>"
        merged = symbols[0]
        for sym in symbols[1:]:
            if merged + sym not in vocab:
                merges.append((merged, sym))
                vocab[merged + sym] = len(vocab)
            merged += sym
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token=pad_token)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character map."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def save_pipeline(pipe: Pipeline, folder: str | Path) -> None:
    """Write `pipe` as a diffusers folder that `load_folder` (and StableDiffusionPipeline) can read."""
    folder = Path(folder)
    pipe.unet.save_pretrained(folder / "unet")
    pipe.vae.save_pretrained(folder / "vae")
    pipe.text_encoder.save_pretrained(folder / "text_encoder")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    if pipe.is_sdxl:
        pipe.text_encoder_2.save_pretrained(folder / "text_encoder_2")
        pipe.tokenizer_2.save_pretrained(folder / "tokenizer_2")
    # the config as is: a scheduler's save_pretrained would add its own class defaults (timestep_spacing, ...)
    (folder / "scheduler").mkdir(exist_ok=True)
    scheduler = {"_class_name": "PNDMScheduler", **pipe.scheduler_config}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    if pipe.is_sdxl:
        index = {**index, "_class_name": "StableDiffusionXLPipeline",
                 "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                 "tokenizer_2": ["transformers", "CLIPTokenizer"]}
        del index["safety_checker"], index["feature_extractor"], index["requires_safety_checker"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
