"""Gradient conditioning settings, without torch: the keys, the inject timing and clamp schedule rules, and the
checks the workflow runs when it loads (images there, CLIP and aesthetic head found locally, timing valid).

Departures from the reference (gradient-conditioning.md, decisions.md): inject timing and the schedule clamp count
the steps each image actually runs (img2img and animation frames after the first are conditioned), never σ values.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .config import ConfigError

SCALE_KEYS = ("clip_scale", "blue_scale", "mean_scale", "exposure_scale", "var_scale", "init_mse_scale",
              "colormatch_scale", "aesthetics_scale")  # the reference's loss order
GRADIENT_SETTINGS = (*SCALE_KEYS, "exposure_target", "colormatch_image", "colormatch_n_colors", "ignore_sat_weight",
                     "clip_name", "clip_prompt", "cutn", "cut_pow", "init_mse_image", "gradient_wrt", "gradient_add_to",
                     "decode_method", "grad_threshold_type", "clamp_grad_threshold", "clamp_start", "clamp_stop",
                     "grad_inject_timing", "cond_uncond_sync", "models_path")

BUILTIN_CLIP = Path(__file__).resolve().parents[1] / "models" / "tiny_clip"
# clip_name -> Hugging Face repository of the transformers port, and the SAC aesthetic head file fitted to it
CLIP_MODELS = {
    "ViT-L/14": ("openai/clip-vit-large-patch14", "sac_public_2022_06_29_vit_l_14_linear.pth"),
    "ViT-L/14@336px": ("openai/clip-vit-large-patch14-336", None),
    "ViT-B/16": ("openai/clip-vit-base-patch16", "sac_public_2022_06_29_vit_b_16_linear.pth"),
    "ViT-B/32": ("openai/clip-vit-base-patch32", "sac_public_2022_06_29_vit_b_32_linear.pth"),
}
AESTHETIC_HEAD = "aesthetic_head.safetensors"  # inside a CLIP folder (builtin and local folders)
SAC_URL = "https://github.com/crowsonkb/simulacra-aesthetic-models/raw/master/models/"


def enabled(settings: Mapping) -> bool:
    return any(float(settings.get(key) or 0) != 0 for key in SCALE_KEYS)


def inject_steps(timing, steps_run: int) -> set[int] | None:
    """The 1-based steps (of the `steps_run` steps an image runs) that are conditioned; None = every step.
    n: every n-th; ints: those steps; fractions f in [0, 1]: step int(f * steps_run) + 1, and 1.0 the last."""
    if timing is None:
        return None
    if isinstance(timing, int) and not isinstance(timing, bool):
        if timing < 1:
            raise ConfigError(f"grad_inject_timing: {timing} is not a positive step interval")
        return set(range(timing, steps_run + 1, timing))
    values = list(timing)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if any(v < 1 for v in values):
            raise ConfigError(f"grad_inject_timing: {values} has a step below 1 (steps count from 1)")
        return {v for v in values if v <= steps_run}
    if all(isinstance(v, float) for v in values):
        if any(not 0 <= v <= 1 for v in values):
            raise ConfigError(f"grad_inject_timing: {values} has a fraction outside [0, 1]")
        return {steps_run if v == 1.0 else int(v * steps_run) + 1 for v in values}
    raise ConfigError(f"grad_inject_timing: {values} mixes step numbers and fractions (use one kind)")


def schedule_clamp(k: int, steps_run: int, clamp_start: float, clamp_stop: float) -> float:
    """The schedule clamp at 1-based step k: linspace(clamp_start, clamp_stop, steps_run + 1)[k - 1]."""
    return clamp_start + (k - 1) / steps_run * (clamp_stop - clamp_start)


def clip_folder(settings: Mapping) -> Path:
    """The local transformers CLIP folder `clip_name` names; a one-line ConfigError saying what to fetch."""
    name = str(settings["clip_name"]).strip()
    if name == "builtin":
        if not (BUILTIN_CLIP / "config.json").is_file():
            raise ConfigError(f"clip_name: builtin needs the tiny CLIP in {BUILTIN_CLIP} (scripts/train_tiny_clip.py)")
        return BUILTIN_CLIP
    if name in CLIP_MODELS:
        repo = CLIP_MODELS[name][0]
        local = Path(settings.get("models_path") or "models") / repo.split("/")[1]
        if (local / "config.json").is_file():
            return local
        from .model_files import cached_hub_folder

        folder = cached_hub_folder(repo)
        if folder is None:
            raise ConfigError(f"clip_name: {name} is not here: fetch it with `hf download {repo}` (into HF_HOME) or "
                              f"put the folder at {local}; or use clip_name: builtin")
        return folder
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"clip_name: {name!r} is not ViT-L/14, ViT-L/14@336px, ViT-B/16, ViT-B/32, builtin or a "
                          "local transformers CLIP folder")
    return path


def aesthetic_head(settings: Mapping, folder: Path) -> Path:
    """The aesthetic head file for clip_name: the SAC linear head in models_path, or the folder's own head."""
    name = str(settings["clip_name"]).strip()
    if name in CLIP_MODELS:
        file = CLIP_MODELS[name][1]
        if file is None:
            raise ConfigError(f"clip_name: there is no aesthetic head for {name}; use ViT-L/14, ViT-B/16 or ViT-B/32")
        path = Path(settings.get("models_path") or "models") / file
        if not path.is_file():
            raise ConfigError(f"aesthetics_scale: the aesthetic head {file} is not in models_path; fetch "
                              f"{SAC_URL}{file} and put it at {path}")
        return path
    if not (folder / AESTHETIC_HEAD).is_file():
        raise ConfigError(f"aesthetics_scale: {folder} has no {AESTHETIC_HEAD} (Linear(d, 1): linear.weight/bias)")
    return folder / AESTHETIC_HEAD


def check(settings: Mapping) -> None:
    """Config-time checks (the Snakefile's try block): only when some scale is not 0."""
    if not enabled(settings):
        return
    inject_steps(settings["grad_inject_timing"], int(settings.get("steps") or 1))  # the forms are valid
    if settings["grad_threshold_type"] == "dynamic" and settings["clamp_grad_threshold"] > 100:
        raise ConfigError(f"clamp_grad_threshold: {settings['clamp_grad_threshold']} is a percentile for dynamic "
                          "(0-100; 0.2 = a +-1 clamp, 99.5 = Imagen-like)")
    for scale, image in (("colormatch_scale", "colormatch_image"), ("init_mse_scale", "init_mse_image")):
        if settings[scale] != 0:
            if not settings[image]:
                raise ConfigError(f"{image}: {scale} is {settings[scale]}, so it needs an image")
            if not Path(settings[image]).is_file():
                raise ConfigError(f"{image}: no such file: {settings[image]}")
    if settings["decode_method"] == "linear" and "model" in settings:
        from .model_files import model_location

        location = model_location(settings["model"])
        linear_decode_source(location if location is not None and location.is_dir() else None)
    if settings["clip_scale"] != 0 or settings["aesthetics_scale"] != 0:
        folder = clip_folder(settings)
        if settings["aesthetics_scale"] != 0:
            aesthetic_head(settings, folder)


SD_SCALING_FACTOR = 0.18215  # SD 1.x/2.x's KL-f8 VAE: the latent space the reference's linear decode fits
LINEAR_DECODE_FILE = "linear_decode.json"  # a model folder's own 4x3 latent -> RGB matrix ({"matrix": [[...]]})


def linear_decode_source(model_folder: Path | None, vae_config: Mapping | None = None) -> Path | str:
    """"sd" (the reference matrix) or the folder's own matrix file; ConfigError when linear decode does not fit."""
    if model_folder is not None and (model_folder / LINEAR_DECODE_FILE).is_file():
        return model_folder / LINEAR_DECODE_FILE
    if vae_config is None and model_folder is not None and (model_folder / "vae" / "config.json").is_file():
        import json

        vae_config = json.loads((model_folder / "vae" / "config.json").read_text())
    if vae_config is None or (abs(float(vae_config.get("scaling_factor", 0)) - SD_SCALING_FACTOR) < 1e-6
                              and vae_config.get("latent_channels") == 4):
        return "sd"
    raise ConfigError(f"decode_method: linear fits SD 1.x/2.x latents only (this VAE's scaling_factor is "
                      f"{vae_config.get('scaling_factor')}); use decode_method: autoencoder or add "
                      f"{LINEAR_DECODE_FILE} to the model folder")
