"""Import a Deforum settings file (notebook v0.5-v0.7, local notebook ports, the A1111 webui extension 2022-2025,
Parseq) into our render config. Every source key is used as it is, mapped (renamed or its value converted, and
reported how), or reported as unsupported under its feature: nothing is dropped or changed silently. Values that
render differently here than in the source tool are listed with the reason. The formats are described in
shared/reference/settings-formats.md; the tables below are that reading, as data."""
from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from deforum_steps import depth_models
from deforum_steps.config import SCHEMA_PATH, ConfigError, load_schema
from deforum_steps.samplers import SAMPLERS, WEBUI_SAMPLERS, resolve_sampler

# ---- recognising the format ----------------------------------------------------------------------------
# Keys only the A1111 extension writes (settings-formats 3.4, plus later webui-only keys).
WEBUI_MARKERS = {"deforum_git_commit_id", "cn_1_enabled", "controlnet_enabled", "animation_prompts_positive",
                 "positive_prompts", "enable_perspective_flip", "cfg_scale_schedule", "sd_model_name",
                 "depth_algorithm", "use_zoe_depth", "parseq_manifest", "skip_video_creation", "noise_type",
                 "transform_center_x", "seed_schedule", "fov_schedule"}
NOTEBOOK_V07_MARKERS = {"cond_prompts", "uncond_prompts", "add_init_noise", "enable_schedule_samplers",
                        "hybrid_motion", "hybrid_composite", "hybrid_comp_alpha_schedule"}
NOTEBOOK_V06_MARKERS = {"mean_scale", "clip_scale", "aesthetics_scale", "gradient_wrt", "bit_depth_output",
                        "seed_iter_N", "kernel_schedule", "hybrid_video_motion", "hybrid_video_composite"}
# A file with none of these is not a Deforum settings file.
CORE_KEYS = {"W", "H", "width", "height", "prompts", "animation_prompts", "cond_prompts", "max_frames",
             "animation_mode", "sampler", "seed", "steps", "scale", "strength"}

# ---- keys whose value is taken over unchanged under our name -------------------------------------------
RENAMED = {
    "width": "W",
    "height": "H",
    "enable_perspective_flip": "flip_2d_perspective",
    "enable_sampler_scheduling": "enable_schedule_samplers",
    "use_mask_video": "use_video_mask",
    "skip_video_creation": "skip_video",
    "skip_video_for_run_all": "skip_video",
}
# Notebook scalars that are schedules here.
SCALAR_SCHEDULES = {"fov": "fov_schedule", "near_plane": "near_schedule", "far_plane": "far_schedule"}

# ---- samplers --------------------------------------------------------------------------------------------
# The A1111 img2img sampler list of late 2022, the order a 2022 webui file's integer `sampler` indexes.
WEBUI_SAMPLER_INDEX = ("Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE",
                       "DPM fast", "DPM adaptive", "LMS Karras", "DPM2 Karras", "DPM2 a Karras", "DPM++ 2S a Karras",
                       "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM")
# Samplers we do not have (notebook, webui and ComfyUI names, normalised by _sampler_words) -> (ours, why).
APPROX_SAMPLERS = {
    "dpm++ 2s a": ("dpm2_ancestral", "DPM++ 2S a is not available: DPM2 a, the nearest second-order ancestral "
                                     "sampler"),
    "dpm++ sde": ("dpmpp_2m", "DPM++ SDE (stochastic) is not available: DPM++ 2M, deterministic"),
    "dpm++ 2m sde": ("dpmpp_2m", "DPM++ 2M SDE (stochastic) is not available: DPM++ 2M, deterministic"),
    "dpm++ 2m sde heun": ("dpmpp_2m", "DPM++ 2M SDE Heun is not available: DPM++ 2M, deterministic"),
    "dpm++ 3m sde": ("dpmpp_2m", "DPM++ 3M SDE is not available: DPM++ 2M, deterministic"),
    "dpm fast": ("dpmpp_2m", "DPM fast is not available: DPM++ 2M"),
    "dpm adaptive": ("dpmpp_2m", "DPM adaptive (its own step count) is not available: DPM++ 2M with `steps`"),
    "unipc": ("dpmpp_2m", "UniPC is not available: DPM++ 2M, the nearest multistep solver"),
    "lcm": ("euler_ancestral", "LCM needs an LCM model and sampler: Euler a"),
    "restart": ("heun", "Restart is not available: Heun, the second-order sampler it builds on"),
    "ddpm": ("euler_ancestral", "DDPM is not available: Euler a, ancestral like it"),
}
SAMPLER_ALIASES = {"klms": "lms", "dpm 2": "dpm2", "dpm 2 a": "dpm2 a", "uni pc": "unipc", "euler ancestral": "euler a",
                   "dpm2 ancestral": "dpm2 a", "dpm++ 2s ancestral": "dpm++ 2s a"}
# A1111 >= 1.9: the sigma schedule "Automatic" picks for a sampler (the old "X Karras" names became X + this).
AUTOMATIC_SCHEDULER = {"dpm++ 2m": "karras", "dpm++ sde": "karras", "dpm++ 2s a": "karras", "dpm2": "karras",
                       "dpm2 a": "karras", "restart": "karras", "dpm++ 2m sde": "exponential",
                       "dpm++ 2m sde heun": "exponential", "dpm++ 3m sde": "exponential"}
WEBUI_DISPLAY_NAMES = {"klms": "LMS", "dpm2": "DPM2", "dpm2_ancestral": "DPM2 a", "heun": "Heun", "euler": "Euler",
                       "euler_ancestral": "Euler a", "dpmpp_2m": "DPM++ 2M"}
DEFAULT_SIGMAS = {"automatic", "normal", "simple", "default", ""}

# ---- depth -----------------------------------------------------------------------------------------------
# webui depth_algorithm names: deforum_steps.depth_models.WEBUI_NAMES.
# The webui blends AdaBins into the depth by midas_weight only for these; the notebook always does.
ADABINS_BLENDS = {"midas+adabins (old)", "zoe+adabins (old)"}

COLOR_COHERENCE = {"lab": "Match Frame 0 LAB", "hsv": "Match Frame 0 HSV", "rgb": "Match Frame 0 RGB",
                   "match frame 0 lab": "Match Frame 0 LAB", "match frame 0 hsv": "Match Frame 0 HSV",
                   "match frame 0 rgb": "Match Frame 0 RGB", "none": "None", "image": "Image"}

# ---- keys with no equivalent here, by feature (full-match regular expressions) ----------------------------
UNSUPPORTED = {
    "ControlNet": (r"cn_\d+_\w+", r"controlnet_\w+"),
    "hybrid video": (r"hybrid_\w+",),
    "guided images (looper)": ("use_looper", "init_images", "image_strength_schedule", "blendFactorMax",
                               "blendFactorSlope", "tweening_frames_schedule", "color_correction_factor"),
    "upscaling": (r"r_upscale_\w+",),
    "frame interpolation": (r"frame_interpolation_\w+",),
    "soundtrack": ("add_soundtrack", "soundtrack_path"),
    "optical flow": ("optical_flow_cadence", "cadence_flow_factor_schedule", "optical_flow_redo_generation",
                     "redo_flow_factor_schedule", "diffusion_redo"),
    "subseeds": ("enable_subseed_scheduling", "subseed_schedule", "subseed_strength_schedule",
                 "seed_resize_from_w", "seed_resize_from_h"),
    "checkpoint and CLIP-skip scheduling": ("enable_checkpoint_scheduling", "checkpoint_schedule",
                                            "enable_clipskip_scheduling", "clipskip_schedule"),
    "noise multiplier and eta schedules": ("enable_noise_multiplier_scheduling", "noise_multiplier_schedule",
                                           "enable_ddim_eta_scheduling", "ddim_eta_schedule",
                                           "enable_ancestral_eta_scheduling", "ancestral_eta_schedule"),
    "mask options": ("use_alpha_as_mask", "mask_overlay_blur", "use_noise_mask", "mask_schedule",
                     "noise_mask_schedule", "fill", "full_res_mask", "full_res_mask_padding"),
    "init noise": ("add_init_noise", "init_noise"),
    "color coherence options": ("color_coherence_video_every_N_frames", "legacy_colormatch", "histogram_matching"),
    "3D aspect ratio": ("aspect_ratio_schedule", "aspect_ratio_use_old_formula"),
    "pix2pix": ("pix2pix_img_cfg_scale_schedule",),
    "webui-only": ("show_info_on_ui", "tiling", "restore_faces", "reroll_blank_frames", "reroll_patience",
                   "store_frames_in_ram", "delete_imgs", "delete_input_frames"),
    "notebook-only": ("bit_depth_output", "n_samples", "filename_format", "precision", "C", "f",
                      "dynamic_threshold", "static_threshold", "init_latent", "init_sample", "init_c", "outdir",
                      "timestring", "seed_internal", "prompt", "models_path", "custom_config_path",
                      "custom_checkpoint_path"),
    "provenance": ("sd_model_name", "sd_model_hash", "deforum_git_commit_id", "model_checkpoint",
                   "fetched_parseq_manifest_summary"),
    "fork-only": (r"wan_\w+", r"shake_\w+", r"freeu_\w+", r"kohya_hrfix_\w+", "keyframe_distribution"),
}
# Switches of unsupported features: a value other than these "off" values renders differently here.
SWITCHES = {
    r"cn_\d+_enabled|controlnet_enabled": ((False,), "ControlNet is not applied here"),
    r"hybrid_(video_)?motion": (("None",), "hybrid video motion is not applied here"),
    r"hybrid_(video_)?composite": (("None", False), "hybrid video compositing is not applied here"),
    "use_looper": ((False,), "guided images (looper) are not applied here"),
    "r_upscale_video": ((False,), "the video is not upscaled here"),
    "frame_interpolation_engine": (("None",), "no RIFE/FILM frame interpolation here"),
    "add_soundtrack": (("None",), "no soundtrack is added here"),
    "enable_subseed_scheduling": ((False,), "subseeds are not applied here"),
    r"enable_(checkpoint|clipskip|noise_multiplier|ddim_eta|ancestral_eta)_scheduling": (
        (False,), "this schedule is not applied here"),
    r"optical_flow_(cadence|redo_generation)": (("None", False), "no optical flow here"),
    "diffusion_redo": ((0,), "no redo diffusion here"),
    r"use_alpha_as_mask|use_noise_mask": ((False,), "not applied here"),
    "add_init_noise": ((False,), "no extra init noise here"),
    r"dynamic_threshold|static_threshold": ((None,), "no thresholding here"),
    "bit_depth_output": ((8,), "frames are 8-bit here"),
    r"restore_faces|tiling": ((False,), "not applied here"),
    "reroll_blank_frames": (("ignore",), "blank frames are not rerolled here"),
}
# Paths a render reads, with when it reads them.
PATH_KEYS: dict[str, tuple[Callable[[Callable[[str], Any]], bool], str]] = {
    "init_image": (lambda v: v("use_init"), "use_init is true"),
    "mask_file": (lambda v: v("use_mask"), "use_mask is true"),
    "video_init_path": (lambda v: v("animation_mode") == "Video Input", "animation_mode is Video Input"),
    "video_mask_path": (lambda v: v("animation_mode") == "Video Input" and v("use_video_mask"),
                        "use_video_mask is true in Video Input mode"),
    "color_coherence_image_path": (lambda v: v("color_coherence") == "Image", "color_coherence is Image"),
}
PROMPT_KEYS = ("prompts", "animation_prompts", "cond_prompts", "uncond_prompts", "positive_prompts",
               "negative_prompts", "animation_prompts_positive", "animation_prompts_negative")
SAMPLER_KEYS = ("sampler", "sampler_name", "scheduler")
SUFFIX_KEYS = {"positive_prompts": "positive", "animation_prompts_positive": "positive",
               "negative_prompts": "negative", "animation_prompts_negative": "negative"}
# A1111 prompt syntax the text encoder here reads as plain text.
_WEBUI_PROMPT_SYNTAX = re.compile(r"\([^()]*:\s*-?\d+(\.\d+)?\s*\)|<(lora|lyco|hypernet):|\bAND\b")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WINDOWS = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")
_TRUE = {"true", "yes", "on", "1"}


@dataclass
class Imported:
    config: dict  # our config keys only (config/schema.yaml names), values in our form
    source: str  # what the file was recognised as: "notebook v0.5", "webui", "parseq", ...
    used: list[str] = field(default_factory=list)  # source keys taken as they are
    mapped: list[str] = field(default_factory=list)  # "source_key -> our_key: how"
    unsupported: dict[str, list[str]] = field(default_factory=dict)  # feature -> source keys
    differs: list[str] = field(default_factory=list)  # "key: why it renders differently here"

    def summary(self) -> str:
        """What the import did, for the user: keys used, mapped (how), unsupported by feature, differences."""
        n_unsupported = sum(len(keys) for keys in self.unsupported.values())
        lines = [f"imported {self.source} settings: {len(self.used)} keys used as they are, {len(self.mapped)} "
                 f"mapped, {n_unsupported} not supported here, {len(self.differs)} rendering differently"]
        if self.used:
            lines += [f"used as they are ({len(self.used)}):", _wrap(", ".join(self.used))]
        if self.mapped:
            lines += [f"mapped ({len(self.mapped)}):", *(f"  {line}" for line in self.mapped)]
        if self.unsupported:
            lines.append(f"not supported here, by feature ({n_unsupported}; kept out of the render):")
            lines += [_wrap(f"{feature} ({len(keys)}): {', '.join(keys)}", "  ")
                      for feature, keys in self.unsupported.items()]
        if self.differs:
            lines += [f"renders differently here than in the source tool ({len(self.differs)}):",
                      *(f"  {line}" for line in self.differs)]
        return "\n".join(lines)


def _wrap(text: str, indent: str = "  ") -> str:
    return textwrap.fill(text, 116, initial_indent=indent, subsequent_indent=indent + "  ", break_long_words=False,
                         break_on_hyphens=False)


def read_settings(path: str | os.PathLike) -> Imported:
    """The render config of a Deforum settings file of any supported format. Raises ConfigError with one line
    (naming the file, and the line and column of malformed JSON, or the key) for a file it cannot import."""
    path = Path(str(path).strip().strip("\"'"))
    doc = _load_json(path)
    source = detect_format(doc, path)
    if source == "parseq":
        from deforum_steps.parseq import read_parseq  # here: parseq imports Imported from this module
        return read_parseq(doc, path)
    try:
        return _Importer(doc, path, source).run()
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot import this settings file: {_one_line(exc)}") from None


def _load_json(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): a Deforum settings file is JSON") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the settings file: {exc.strerror or exc}") from None
    return parse_json(text, str(path))


def parse_json(text: str, where: str) -> Any:
    """JSON text read from `where` (a file, or the key holding it); one ConfigError line otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}, line {exc.lineno}, column {exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{where}: JSON nested too deeply to be a settings file") from None


def detect_format(doc: Any, path: Path) -> str:
    """What the document is: "parseq", "webui", "local notebook port (v0.x keys)" or "notebook v0.x"."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a Deforum settings file: the JSON is {_json_type(doc)}, not an object")
    if "rendered_frames" in doc:
        return "parseq"
    if not (CORE_KEYS | WEBUI_MARKERS) & doc.keys():
        keys = ", ".join(list(map(str, doc))[:5]) or "none"
        raise ConfigError(f"{path}: not a Deforum settings file (notebook, webui or Parseq): none of its keys "
                          f"({keys}) is a Deforum setting")
    if WEBUI_MARKERS & doc.keys():
        return "webui"
    version = "v0.7" if NOTEBOOK_V07_MARKERS & doc.keys() else "v0.6" if NOTEBOOK_V06_MARKERS & doc.keys() else "v0.5"
    if "width" in doc or "height" in doc or isinstance(doc.get("prompts"), list) and "animation_prompts" in doc:
        return f"local notebook port ({version} keys)"
    return f"notebook {version}"


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number")


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())[:200]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@cache
def _schema_props() -> dict:
    return load_schema(SCHEMA_PATH)["properties"]


def _is_on(value: Any, off_values: tuple) -> bool:
    """A switch value (bools possibly written as strings) that is not one of its off values."""
    def norm(v: Any) -> str:
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return str(v.strip().lower() == "true").lower()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(float(v))
        if isinstance(v, str):
            try:
                return str(float(v))
            except ValueError:
                return v.strip().lower()
        return str(v).lower()
    return norm(value) not in {norm(v) for v in off_values}


def _sampler_words(name: str) -> str:
    """A sampler name in one spelling: lower case, ' ' for '_', 'dpm++' for 'dpmpp', no 'k_' prefix."""
    words = " ".join(str(name).lower().replace("_", " ").split()).replace("dpmpp", "dpm++").removeprefix("k ")
    return SAMPLER_ALIASES.get(words, words)


class _Importer:
    """One import: walks the document's keys once, recording where each one went."""

    def __init__(self, doc: dict, path: Path, source: str):
        self.doc, self.path, self.source = doc, path, source
        self.webui = source == "webui"
        self.out = Imported(config={}, source=source)
        self.cfg = self.out.config
        self.paths: dict[str, tuple[Any, str]] = {}  # path key -> (value as given, what is wrong with it)

    # -- recording --
    def use(self, key: str, ours: str | None = None) -> None:
        self.cfg[ours or key] = self.doc[key]
        self.out.used.append(key)

    def map(self, key: str, ours: str | None, value: Any, how: str) -> None:
        if ours is not None:
            self.cfg[ours] = value
        self.out.mapped.append(f"{key} -> {ours or '-'}: {how}")

    def unsupported(self, key: str, feature: str) -> None:
        self.out.unsupported.setdefault(feature, []).append(key)

    def differ(self, key: str, why: str) -> None:
        self.out.differs.append(f"{key}: {why}")

    def value(self, key: str) -> Any:
        """Our key's value as imported, else its schema default; booleans and enum text normalised."""
        spec = _schema_props().get(key, {})
        value = self.cfg.get(key, spec.get("default"))
        if spec.get("type") == "boolean":
            return value is True or isinstance(value, str) and value.strip().lower() in _TRUE or value == 1
        if isinstance(value, str) and "enum" in spec:
            choices = {str(c).lower(): c for c in spec["enum"]} | {
                a.lower(): c for a, c in spec.get("x-aliases", {}).items()}
            return choices.get(value.strip().lower(), value)
        return value

    # -- the walk --
    def run(self) -> Imported:
        from deforum_steps.parseq import merge_webui_parseq, read_parseq_manifest  # parseq imports Imported
        parseq = read_parseq_manifest(self.doc, self.path)
        handlers = {"diffusion_cadence": self.cadence, "border": self.border, "color_coherence": self.coherence,
                    "batch_name": self.batch_name, "resume_timestring": self.resume_timestring,
                    "sampler_schedule": self.sampler_schedule, **dict.fromkeys(PATH_KEYS, self.path_value)}
        done = set(PROMPT_KEYS) | set(SAMPLER_KEYS) | {"depth_algorithm", "use_zoe_depth", "midas_weight"}
        for key in self.doc:
            if key in done:
                continue
            if key in handlers:
                handlers[key](key, self.doc[key])
            elif key in RENAMED:
                self.map(key, RENAMED[key], self.doc[key], "renamed")
            elif key in SCALAR_SCHEDULES:
                self.scalar_schedule(key, self.doc[key])
            elif key in _schema_props():
                self.use(key)
            elif key.startswith("parseq_"):
                self.parseq_option(key, parseq is not None)
            else:
                self.unsupported(key, self.feature(key))
        self.prompts()
        self.sampler()
        self.depth()
        for key, value in self.doc.items():
            self.switch(key, value)
        self.source_defaults()
        self.check_paths()
        self.check_size()
        return self.out if parseq is None else merge_webui_parseq(self.out, parseq)

    @staticmethod
    def feature(key: str) -> str:
        for feature, patterns in UNSUPPORTED.items():
            if any(re.fullmatch(p, key) for p in patterns):
                return feature
        return "unknown keys (typos or other tools)"

    def switch(self, key: str, value: Any) -> None:
        for pattern, (off_values, why) in SWITCHES.items():
            if re.fullmatch(pattern, key) and _is_on(value, off_values):
                self.differ(key, f"{_shown(value)} in the source: {why}")

    # -- prompts --
    def prompts(self) -> None:
        doc = self.doc
        frames, frames_key, stills = None, None, None  # our animation_prompts (and its source key), our prompts
        if "cond_prompts" in doc:
            frames, stills = self.cond_uncond()
            frames_key = "cond_prompts" if frames is not None else None
        for key in ("animation_prompts", "prompts"):
            if key not in doc:
                continue
            value = self.prompt_value(key)
            if isinstance(value, list):
                if not all(isinstance(p, str) for p in value):
                    raise ConfigError(f"{key}: every prompt must be text, got {_shown(value)}")
                if value:
                    stills = value
                    self.use(key, "prompts")
                else:
                    self.map(key, None, None, "an empty list, nothing to import")
            elif _is_inverted(value):  # a notebook still run: {prompt: "00000"}
                stills = sorted(value, key=lambda p: int(value[p]))
                self.map(key, "prompts", stills, "a still run's {prompt: index} mapping, read as the prompt list")
            elif frames is not None:
                self.map(key, None, None, f"not read: the prompts come from {frames_key}, as in the source tool")
            else:
                frames, frames_key = value, key
        joined = self.join_webui_suffixes(frames or {})
        if frames_key in ("animation_prompts", "prompts"):
            if frames_key == "animation_prompts" and joined is doc[frames_key]:
                self.use(frames_key)
            else:
                self.map(frames_key, "animation_prompts", joined, "the frame -> prompt mapping"
                         + (", with the webui's positive/negative prompts joined" if joined is not frames else ""))
        if frames is not None:
            self.cfg["animation_prompts"] = joined
            if self.webui and any(_WEBUI_PROMPT_SYNTAX.search(p) for p in joined.values()):
                self.differ("prompts", "A1111 prompt syntax ((word:1.2), <lora:...>, AND) is plain text here")
        if stills is not None:
            self.cfg["prompts"] = stills
        if isinstance(doc.get("negative_prompts"), dict):  # a fork's frame -> negative prompt
            self.map("negative_prompts", "neg_prompts", doc["negative_prompts"], "renamed (frame -> negative)")

    def prompt_value(self, key: str) -> dict | list:
        value = self.doc[key]
        if isinstance(value, str):  # the webui UI's JSON-text form
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ConfigError(f"{key}: not a JSON frame -> prompt mapping: {_one_line(exc)}") from None
        if isinstance(value, dict):
            for frame, text in value.items():
                if not isinstance(text, str):
                    raise ConfigError(f"{key}: the prompt of frame {frame!r} must be text, got {_shown(text)}")
            return value
        if isinstance(value, list):
            return value
        raise ConfigError(f"{key}: expected a frame -> prompt mapping or a list of prompts, got {_shown(value)}")

    def cond_uncond(self) -> tuple[dict | None, list | None]:
        """Notebook v0.7: cond_prompts and uncond_prompts (same keys or same positions) -> "pos --neg neg"."""
        cond = self.prompt_value("cond_prompts")
        uncond = self.prompt_value("uncond_prompts") if "uncond_prompts" in self.doc else type(cond)()
        how = "cond_prompts with uncond_prompts after --neg"
        if isinstance(cond, list):
            negs = list(uncond) if isinstance(uncond, list) else []
            stills = [_with_negative(p, negs[i] if i < len(negs) else "") for i, p in enumerate(cond)]
            self.map("cond_prompts", "prompts", stills, how)
            frames = None
        else:
            negs = uncond if isinstance(uncond, dict) else {}
            joined = {k: _with_negative(p, negs.get(k, "")) for k, p in cond.items()}
            self.map("cond_prompts", "animation_prompts", joined, how)
            frames, stills = joined, None
        if "uncond_prompts" in self.doc:
            self.map("uncond_prompts", "animation_prompts" if frames else "prompts", None,
                     "joined to cond_prompts after --neg")
        return frames, stills

    def join_webui_suffixes(self, prompts: dict) -> dict:
        """positive_prompts/negative_prompts (run-time save) or animation_prompts_positive/_negative (UI save):
        each prompt becomes f"{pos} {prompt} {'' if '--neg' in prompt else '--neg'} {neg}" (webui args.py)."""
        chosen: dict[str, tuple[str, str]] = {}  # side -> (source key, text)
        for key, side in SUFFIX_KEYS.items():
            value = self.doc.get(key)
            if key not in self.doc or isinstance(value, dict) and key == "negative_prompts":
                continue
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}: must be text, got {_shown(value)}")
            if side in chosen:
                self.map(key, None, None, f"not read: {chosen[side][0]} is given")
                continue
            chosen[side] = (key, value or "")
            where = "before each prompt" if side == "positive" else "after each prompt's --neg"
            self.out.mapped.append(f"{key} -> animation_prompts: joined {where}, as the webui does" if
                                   (value or "").strip() else f"{key} -> -: empty, nothing to join")
        pos, neg = (chosen.get(side, ("", ""))[1] for side in ("positive", "negative"))
        if not (pos.strip() or neg.strip()):
            return prompts
        return {k: f"{pos} {p} {'' if '--neg' in p else '--neg'} {neg}" for k, p in prompts.items()}

    # -- sampler --
    def sampler(self) -> None:
        doc = self.doc
        key = "sampler" if "sampler" in doc else "sampler_name" if "sampler_name" in doc else None
        scheduler = doc.get("scheduler")
        if scheduler is not None and not isinstance(scheduler, str):
            raise ConfigError(f"scheduler: must be text, got {_shown(scheduler)}")
        if key is None:
            if "scheduler" in doc:
                self.map("scheduler", None, None, "no sampler in the file: nothing to apply it to")
            return
        if key == "sampler_name" and "sampler" in doc:
            self.map("sampler_name", None, None, "not read: `sampler` is given")
        raw = doc[key]
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(f"{key}: {_shown(raw)} is not a sampler name or index")
        if scheduler is None and raw in _schema_props()["sampler"]["enum"]:  # our own name (a settings file we wrote)
            self.use(key, "sampler")
            return
        name, how = raw, ""
        if isinstance(raw, int) or raw.strip().isdigit():
            index = int(raw)
            if not 0 <= index < len(WEBUI_SAMPLER_INDEX):
                raise ConfigError(f"{key}: sampler index {index} is not in the webui's sampler list "
                                  f"(0-{len(WEBUI_SAMPLER_INDEX) - 1})")
            name = WEBUI_SAMPLER_INDEX[index]
            how = f"index {index} of the 2022 webui's img2img samplers = {name!r}, "
        ours, karras, why = _sampler(name)
        words = _sampler_words(name).removesuffix(" karras")
        if scheduler is not None:
            sigmas = _sampler_words(scheduler)
            sigmas = AUTOMATIC_SCHEDULER.get(words, "") if sigmas == "automatic" else sigmas
            if sigmas == "karras":
                karras = True
            elif sigmas not in DEFAULT_SIGMAS:
                self.differ("scheduler", f"{scheduler!r} sigmas ({sigmas}) are not available: the sampler's default "
                                         "sigmas")
            self.map("scheduler", "use_karras_sigmas", karras, f"{scheduler!r} -> Karras sigmas {str(karras).lower()}")
        if why:
            self.differ(key, f"{name!r}: {why}")
        if ours == raw and not karras:
            self.use(key, "sampler")
        else:
            self.map(key, "sampler", ours, f"{how}{name!r} -> {ours}" + (" with Karras sigmas" if karras else ""))
        if karras:
            self.cfg["use_karras_sigmas"] = True

    def sampler_schedule(self, key: str, value: Any) -> None:
        """Sampler names inside the schedule: those we cannot read are replaced by ours."""
        if not isinstance(value, str):
            self.use(key)
            return
        changes = []

        def replace(match: re.Match) -> str:
            name = match.group(2)
            try:
                resolve_sampler(name)
                return match.group(0)
            except ConfigError:
                pass
            ours, karras, why = _sampler(name)
            new = f"{_webui_name(ours)} Karras" if karras and _webui_name(ours) else ours
            changes.append(f"{name!r} -> {new!r}")
            if why:
                self.differ(key, f"{name!r}: {why}")
            return f"({match.group(1)}{new}{match.group(1)})"
        text = re.sub(r"\(\s*(['\"]?)([^'\"()]*?)\1\s*\)", replace, value)
        if changes:
            self.map(key, key, text, "sampler names: " + ", ".join(changes))
        else:
            self.use(key)

    # -- depth --
    def depth(self) -> None:
        doc = self.doc
        algorithm = doc.get("depth_algorithm")
        if "depth_algorithm" in doc:
            if not isinstance(algorithm, str):
                raise ConfigError(f"depth_algorithm: must be text, got {_shown(algorithm)}")
            if "use_zoe_depth" in doc:
                self.map("use_zoe_depth", None, None, "not read: depth_algorithm is given")
        elif "use_zoe_depth" in doc:  # handle_deprecated_settings
            algorithm = "Zoe+AdaBins (old)" if _is_on(doc["use_zoe_depth"], (False,)) else "Midas+AdaBins (old)"
            self.out.mapped.append(f"use_zoe_depth -> depth_algorithm: {_shown(doc['use_zoe_depth'])} = "
                                   f"{algorithm!r} (webui deprecation rule)")
        if algorithm is None:  # the notebook and the early webui: MiDaS DPT-Large blended with AdaBins
            algorithm = "Midas+AdaBins (old)"
        depth_read = self.value("animation_mode") == "3D" and self.value("use_depth_warping")
        key = algorithm.strip().lower()
        if key in _schema_props()["depth_algorithm"]["enum"]:  # our own name (or the webui's same spelling)
            ours = key
        elif depth_read or depth_models.WEBUI_NAMES.get(key, (None,))[0]:
            ours = depth_models.webui_name(algorithm)  # a name nothing here serves: one-line ConfigError
        else:
            ours = "auto"  # not read: no 3D depth warping
        self.cfg["depth_algorithm"] = ours
        if "depth_algorithm" in doc:
            if algorithm == ours:
                self.out.used.append("depth_algorithm")
            else:
                self.out.mapped.append(f"depth_algorithm -> depth_algorithm: {algorithm!r} -> {ours}")
        elif "use_zoe_depth" not in doc:
            self.out.mapped.append(f"(absent) -> depth_algorithm: {ours}: the source's MiDaS DPT-Large (with "
                                   "AdaBins by midas_weight)")
        if "midas_weight" not in doc:
            return
        weight = doc["midas_weight"]
        if algorithm in _schema_props()["depth_algorithm"]["enum"]:  # our own name: a settings file we wrote
            self.use("midas_weight")
            return
        blends = not self.webui or algorithm.strip().lower() in ADABINS_BLENDS
        if blends or not isinstance(weight, (int, float)) or weight == 1:
            self.use("midas_weight")
            if blends and isinstance(weight, (int, float)) and weight < 1 and depth_read:
                self.differ("midas_weight", f"{weight}: AdaBins is not shipped here: its share (1 - midas_weight) "
                                            "of the depth is a flat plane")
        else:
            self.map("midas_weight", "midas_weight", 1.0, f"{weight} -> 1.0: the webui blends by midas_weight only "
                                                          "for the '(old)' AdaBins algorithms")

    # -- other values --
    def cadence(self, key: str, value: Any) -> None:
        if isinstance(value, str) and value.strip().isdigit():
            self.map(key, key, int(value), f"{value!r} -> {int(value)}")
        else:
            self.use(key)

    def border(self, key: str, value: Any) -> None:
        if isinstance(value, str) and value.strip().lower() not in ("wrap", "replicate"):
            self.map(key, key, "replicate", f"{value!r} -> replicate: the tools replicate for any value but 'wrap'")
        else:
            self.use(key)

    def coherence(self, key: str, value: Any) -> None:
        if not isinstance(value, str):
            self.use(key)
            return
        lower = value.strip().lower()
        if lower == "video input":
            self.map(key, key, "Match Frame 0 LAB", f"{value!r} -> Match Frame 0 LAB")
            self.differ(key, "'Video Input': matching the input video's frames is not available: matches frame 0 "
                             "in LAB")
        elif COLOR_COHERENCE.get(lower, value) == value:
            self.use(key)
        else:
            self.map(key, key, COLOR_COHERENCE.get(lower, value), f"{value!r} -> {COLOR_COHERENCE.get(lower)}")

    def batch_name(self, key: str, value: Any) -> None:
        if not isinstance(value, str):
            self.use(key)
            return
        name = re.sub(r"[/\\]", "_", value.replace("{timestring}", "")).strip(" _-") or "deforum"
        if name == value:
            self.use(key)
        else:
            self.map(key, key, name, f"{value!r} -> {name!r}: no {{timestring}} (every run continues the render in "
                                     "its folder) and no / or \\")

    def resume_timestring(self, key: str, value: Any) -> None:
        if value and not _is_on(self.doc.get("resume_from_timestring", False), (False,)):
            self.map(key, key, "", f"{_shown(value)} -> '': the source wrote it but resume_from_timestring is off")
        else:
            self.use(key)

    def scalar_schedule(self, key: str, value: Any) -> None:
        ours = SCALAR_SCHEDULES[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.map(key, ours, f"0:({value})", f"{value} -> '0:({value})'")
        else:
            self.map(key, ours, value, "renamed")

    def parseq_option(self, key: str, manifest_given: bool) -> None:
        """The manifest itself is recorded by merge_webui_parseq; its two options are read by read_parseq_manifest."""
        if key == "parseq_manifest":
            if not manifest_given:
                self.map(key, None, None, "empty: no Parseq document")
        elif key in ("parseq_use_deltas", "parseq_non_schedule_overrides"):
            if manifest_given:
                self.out.used.append(key)
            else:
                self.map(key, None, None, "not read: no Parseq manifest")
        else:
            self.unsupported(key, self.feature(key))

    # -- paths --
    def resolve(self, text: str) -> Path:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
            if "\\" in text and not path.exists():
                path = self.path.parent / text.replace("\\", "/")
        return path

    def path_value(self, key: str, value: Any) -> None:
        """A path relative to the settings file resolves against its folder; one that is not here is an error
        when the render reads it (check_paths), else kept with a note."""
        if value is None or isinstance(value, str) and value.strip().strip("\"'").strip() in ("", "None", "none"):
            if value == "":
                self.use(key)
            else:
                self.map(key, key, "", f"{_shown(value)} -> '' (no file)")
            return
        if not isinstance(value, str):
            self.use(key)
            return
        text = value.strip().strip("\"'")
        if _URL.match(text):
            self.paths[key] = (value, "is a URL: nothing is downloaded here; download it and give its local path")
        elif _WINDOWS.match(text):
            self.paths[key] = (value, "is a Windows path, not on this machine")
        else:
            path = self.resolve(text)
            if path.exists():
                if str(path) == value:
                    self.use(key)
                else:
                    self.map(key, key, str(path), "relative to the settings file's folder" if not Path(text)
                             .is_absolute() else "quotes and spaces stripped")
                return
            colab = " (a Colab path)" if text.startswith("/content/") else ""
            self.paths[key] = (value, f"does not exist{colab}" + (f" (looked for {path})" if str(path) != text
                                                                  else ""))
        self.cfg[key] = value

    def check_paths(self) -> None:
        for key, (value, problem) in self.paths.items():
            needed, when = PATH_KEYS[key]
            if needed(self.value):
                raise ConfigError(f"{key}: {value} {problem}; the render reads it because {when}")
            self.out.mapped.append(f"{key} -> {key}: kept as given; it {problem}, but is not read unless {when}")

    # -- what the source tool assumes when a key is absent --
    def source_defaults(self) -> None:
        if "animation_mode" not in self.doc and not self.webui:
            self.map("(absent)", "animation_mode", "None", "the notebook's default: a still-images run")
        if self.webui and "prompt_weighting" not in self.doc:
            self.map("(absent)", "prompt_weighting", False, "the webui has no 'text:weight' sub-prompts; ':' is "
                                                            "text")
        if self.value("animation_mode") == "None" and "prompts" not in self.cfg and isinstance(
                self.cfg.get("animation_prompts"), dict):
            self.cfg["prompts"] = list(self.cfg["animation_prompts"].values())
            self.out.mapped.append("(absent) -> prompts: the frame prompts in order (animation_mode None renders the "
                                   "prompts list)")
        if self.webui and self.value("animation_mode") == "Interpolation":
            self.differ("animation_mode", "Interpolation here interpolates prompt embeddings as the notebook does; "
                                          "the webui blends composable prompts over max_frames")
        if self.webui and self.value("animation_mode") == "3D" and self.value("W") != self.value("H") and not \
                _is_on(self.doc.get("aspect_ratio_use_old_formula", False), (False,)):
            self.differ("aspect_ratio_schedule", "the 3D projection's aspect ratio is W/H here (the notebook's and "
                                                 "the webui's old formula), not the webui's aspect_ratio_schedule")
        model = self.doc.get("sd_model_name") or self.doc.get("model_checkpoint")
        if isinstance(model, str) and model:
            self.differ("model", f"the source rendered with {model!r}; here `model` of the render config is used")

    def check_size(self) -> None:
        for key in ("W", "H"):
            value = self.cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value % 64:
                self.differ(key, f"{value} is rounded down to {value - value % 64} (a multiple of 64) here")


def _is_inverted(value: Any) -> bool:
    """A notebook still run's prompts {prompt text: "00000"}: zero-padded indices as values, text as keys."""
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(v, str) and v.isdigit() for v in value.values())
            and not all(str(k).strip().isdigit() for k in value))


def _with_negative(prompt: Any, negative: Any) -> str:
    if not isinstance(prompt, str) or not isinstance(negative, str):
        raise ConfigError(f"cond_prompts: prompts must be text, got {_shown(prompt)} / {_shown(negative)}")
    return f"{prompt} --neg {negative}" if negative.strip() else prompt


def _sampler(name: str) -> tuple[str, bool, str | None]:
    """(our sampler, Karras sigmas, why it differs or None) for a notebook, webui or ComfyUI sampler name."""
    words = _sampler_words(name)
    karras = words.endswith(" karras")
    words = words.removesuffix(" karras")
    if words.replace(" ", "_") in SAMPLERS:
        return words.replace(" ", "_"), karras, None
    if words in WEBUI_SAMPLERS:
        return WEBUI_SAMPLERS[words], karras, None
    if words in APPROX_SAMPLERS:
        ours, why = APPROX_SAMPLERS[words]
        return ours, karras, why
    return "euler_ancestral", karras, "unknown sampler: Euler a"


def _webui_name(ours: str) -> str | None:
    """The webui display name of our sampler, which takes a " Karras" suffix (not PLMS, DDIM)."""
    return WEBUI_DISPLAY_NAMES.get(ours)
