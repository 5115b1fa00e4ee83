"""Parseq documents (rewbs/sd-parseq) as our render config: the per-frame values of `rendered_frames` become
schedules with one keyframe per frame, read the way sd-webui-deforum's parseq_adapter feeds them to Deforum.

Alone (a .json Parseq file) or named by a webui settings file's `parseq_manifest` (JSON text or a path); then
merge_webui_parseq lays Parseq's keys over the webui file's mapping, as the adapter overrides the UI's values.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deforum_steps.config import ConfigError
from deforum_steps.settings_import import Imported, parse_json

# Fields the webui feeds as Deforum's per-frame motion: their `<field>_delta` when parseq_use_deltas (default).
MOTION_FIELDS = ("angle", "zoom", "translation_x", "translation_y", "translation_z", "rotation_3d_x",
                 "rotation_3d_y", "rotation_3d_z", "perspective_flip_theta", "perspective_flip_phi",
                 "perspective_flip_gamma")
# Parseq field -> our schedule, for the fields the adapter reads as absolute values (explicit renames, and the
# names its generic rule finds unchanged).
ABSOLUTE_FIELDS = {
    "perspective_flip_fv": "perspective_flip_fv",
    "transform_center_x": "transform_center_x",
    "transform_center_y": "transform_center_y",
    "noise": "noise_schedule",
    "strength": "strength_schedule",
    "contrast": "contrast_schedule",
    "scale": "cfg_scale_schedule",
    "seed": "seed_schedule",
    "fov": "fov_schedule",
    "near": "near_schedule",
    "far": "far_schedule",
    "antiblur_kernel": "kernel_schedule",
    "antiblur_sigma": "sigma_schedule",
    "antiblur_amount": "amount_schedule",
    "antiblur_threshold": "threshold_schedule",
}
_3D_MOTION = ("translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z")
EDITOR_DATA = "Parseq editor data (source only, the webui ignores it too)"
# Known Parseq fields without a counterpart here, by feature (src/data/fields.ts).
_FIELD_FEATURES = (
    (re.compile(r"cn_\d+_(weight|guidance_start|guidance_end)$"), "ControlNet"),
    (re.compile(r"hybrid_"), "hybrid video"),
    (re.compile(r"guided_"), "looper"),
    (re.compile(r"(cadence|redo)_flow_factor$"), "optical flow"),
    (re.compile(r"clipskip$"), "CLIP skip"),
    (re.compile(r"noise_multiplier$"), "noise multiplier"),
    (re.compile(r"subseed(_strength)?$"), "subseed"),
    (re.compile(r"prompt_weight_\d+$"), EDITOR_DATA),  # already applied to deforum_prompt by Parseq
)
_OPTIONS_USED = {"output_fps": "fps", "cadence": "diffusion_cadence"}
_WEIGHTED_PART = re.compile(r"^(?P<text>.*): *(?P<weight>[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)\s*$", re.DOTALL)
_AND = " AND "


def read_parseq(doc: Any, path: Path, *, use_deltas: bool = True, non_schedule_overrides: bool = True,
                standalone: bool = True) -> Imported:
    """Our config from a Parseq document. `use_deltas` and `non_schedule_overrides` are the webui's
    parseq_use_deltas and parseq_non_schedule_overrides (both default True). `standalone` (a Parseq file on its
    own, not a webui file's manifest) also picks the animation mode, which the webui file gives otherwise.
    Raises ConfigError with one line naming the field and frame of a malformed document."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: a Parseq document is a JSON object, got {type(doc).__name__}")
    frames = _rendered_frames(doc)
    n = len(frames)
    out = Imported(config={}, source="parseq")
    out.used += ["rendered_frames", "frame"]
    managed = [key for key in frames[0] if key != "frame"]
    for key in sorted({key for frame in frames[1:] for key in frame} - set(frames[0])):
        _report(out, "not in frame 0 (the webui takes its fields from frame 0)", f"rendered_frames[].{key}")

    taken: set[str] = set()
    for field in MOTION_FIELDS:
        if field in frames[0] or f"{field}_delta" in frames[0]:
            _motion(out, frames, field, use_deltas, taken)
    for field, key in ABSOLUTE_FIELDS.items():
        if field in frames[0]:
            values = _column(frames, field)
            out.config[key] = _schedule(values)
            taken.add(field)
            if field == key:
                out.used.append(field)
            else:
                out.mapped.append(f"{field} -> {key}: per-frame values, one keyframe per frame")
            if field == "seed":
                _seed(out, values)
            if field == "antiblur_kernel" and np.any(values != np.trunc(values)):
                out.differs.append("antiblur_kernel: fractional kernel sizes are truncated, as in the webui")
    if "deforum_prompt" in frames[0]:
        _prompts(out, frames)
        taken.add("deforum_prompt")
    for key in managed:
        if key not in taken:
            _report_field(out, key, taken)

    _options(out, doc.get("options"), n, non_schedule_overrides)
    if standalone:
        _animation_mode(out)
    for key in doc:
        if key not in ("rendered_frames", "options"):
            _report(out, EDITOR_DATA if key in _EDITOR_KEYS else "unknown Parseq keys", key)
    return out


def read_parseq_manifest(settings: Mapping[str, Any], settings_path: Path) -> Imported | None:
    """The Parseq document a webui settings file names in `parseq_manifest` (JSON text, or a path relative to
    the settings file), read with the file's parseq_use_deltas / parseq_non_schedule_overrides; None when the
    key is absent, null or empty. A URL is refused: renders here are offline."""
    manifest = settings.get("parseq_manifest")
    if manifest is None or (isinstance(manifest, str) and not manifest.strip()):
        return None
    if not isinstance(manifest, str):
        raise ConfigError(f"parseq_manifest: expected JSON text or a path, got {type(manifest).__name__}")
    text = manifest.strip()
    if text.startswith("{"):
        doc, where = parse_json(text, "parseq_manifest: inline JSON"), settings_path
    elif re.match(r"(?i)https?://", text):
        raise ConfigError(f"parseq_manifest: {text} is a URL and renders here are offline; save the Parseq "
                          f"document (Parseq's 'Copy/Download JSON') and give its path instead")
    else:
        where = settings_path.parent / text.strip("'\"")  # an absolute path replaces the folder
        if not where.is_file():
            raise ConfigError(f"parseq_manifest: {text} does not exist (looked for {where})")
        try:
            raw = where.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"parseq_manifest: cannot read {where}: {exc}") from None
        doc = parse_json(raw, f"parseq_manifest: {where}")
    try:
        return read_parseq(doc, where, use_deltas=_flag(settings, "parseq_use_deltas"),
                           non_schedule_overrides=_flag(settings, "parseq_non_schedule_overrides"),
                           standalone=False)
    except ConfigError as exc:
        raise ConfigError(f"parseq_manifest: {exc}") from None


def merge_webui_parseq(webui: Imported, parseq: Imported) -> Imported:
    """The webui file's mapping with the Parseq document's keys laid over it (the adapter's overrides). When
    Parseq renders the prompts, the webui's prompts and global negative prompts are not used (as in the webui,
    whose positive/negative suffixes only reach its own animation_prompts)."""
    config = {**webui.config, **parseq.config}
    differs = [*webui.differs, *parseq.differs]
    if "animation_prompts" in parseq.config:
        if config.pop("neg_prompts", None):
            differs.append("neg_prompts: the webui's global negative prompt is not added to Parseq's prompts "
                           "(as in the webui)")
    overridden = sorted(key for key in webui.config if key in parseq.config and webui.config[key] != config[key])
    mapped = [*webui.mapped, *(f"parseq_manifest -> {line}" for line in parseq.mapped)]
    if overridden:
        mapped.append(f"parseq_manifest -> {', '.join(overridden)}: Parseq's values replace the settings file's")
    unsupported = {feature: list(keys) for feature, keys in webui.unsupported.items()}
    for feature, keys in parseq.unsupported.items():
        unsupported.setdefault(feature, []).extend(f"parseq_manifest.{key}" for key in keys)
    used = [*webui.used, "parseq_manifest", *(f"parseq_manifest.{key}" for key in parseq.used)]
    return Imported(config=config, source=f"{webui.source} + parseq", used=used,
                    mapped=mapped, unsupported=unsupported, differs=differs)


# --------------------------------------------------------------------------------------------
# the document

_EDITOR_KEYS = frozenset({"meta", "prompts", "managedFields", "displayedFields", "keyframes", "timeSeries",
                          "keyframeLock", "reverseRender", "rendered_frames_meta"})


def _rendered_frames(doc: Mapping) -> list[Mapping]:
    """rendered_frames, checked: a list of objects whose `frame` is 0, 1, 2, ... in order."""
    if "rendered_frames" not in doc:
        raise ConfigError("rendered_frames: missing (not a rendered Parseq document: render it in Parseq and "
                          "copy the JSON again)")
    frames = doc["rendered_frames"]
    if not isinstance(frames, list) or not frames:
        raise ConfigError(f"rendered_frames: expected a non-empty list of frames, got {_shown(frames)}")
    for i, frame in enumerate(frames):
        if not isinstance(frame, Mapping):
            raise ConfigError(f"rendered_frames[{i}]: expected an object with 'frame' and values, got "
                              f"{_shown(frame)}")
        number = frame.get("frame")
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int):
            raise ConfigError(f"rendered_frames[{i}].frame: expected a whole frame number, got {_shown(number)}")
        if number < i:  # frames 0..i-1 came before it
            raise ConfigError(f"rendered_frames[{i}].frame: frame {number} is duplicated")
        if number > i:
            later = any(isinstance(f, Mapping) and f.get("frame") == i for f in frames[i + 1:])
            what = f"out of order: frame {i} comes later" if later else f"a gap: frame {i} is missing"
            raise ConfigError(f"rendered_frames[{i}].frame: frame {number} where frame {i} belongs ({what})")
    return frames


def _column(frames: list[Mapping], field: str) -> np.ndarray:
    values = np.empty(len(frames))
    for i, frame in enumerate(frames):
        if field not in frame:
            raise ConfigError(f"rendered_frames[{i}].{field}: missing at frame {i} (frame 0 has it)")
        value = frame[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"rendered_frames[{i}].{field}: {_shown(value)} at frame {i} is not a finite number")
        values[i] = value
    return values


def _schedule(values: np.ndarray) -> str:
    """Our keyframe string for per-frame values. Inside a run of equal values only its ends are kept, which
    linear interpolation (and holding after the last key) turns back into the same values."""
    n = len(values)
    keep = [i for i in range(n)
            if i == 0 or values[i] != values[i - 1] or (i + 1 < n and values[i] != values[i + 1])]
    return ", ".join(f"{i}:({_number(values[i])})" for i in keep)


def _number(value: float) -> str:
    """Shortest text that reads back as the same float, without an exponent (which the schedule parser
    counts as an expression)."""
    text = np.format_float_positional(value, trim="-")
    return "0" if text == "-0" else text


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (Mapping, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _report(out: Imported, feature: str, key: str) -> None:
    out.unsupported.setdefault(feature, []).append(key)


def _report_field(out: Imported, key: str, taken: set[str]) -> None:
    base = key.removesuffix("_delta").removesuffix("_pc")
    if key != base and (base in taken or base in ABSOLUTE_FIELDS or base in MOTION_FIELDS):
        _report(out, EDITOR_DATA, key)  # the variants Parseq writes beside each field
        return
    feature = next((feature for pattern, feature in _FIELD_FEATURES if pattern.match(base)), None)
    _report(out, feature or "Parseq custom fields (no Deforum schedule of that name)", key)


# --------------------------------------------------------------------------------------------
# fields


def _motion(out: Imported, frames: list[Mapping], field: str, use_deltas: bool, taken: set[str]) -> None:
    """A motion field as the webui feeds it: Parseq's per-frame change (`_delta`, zoom as 1 + change) or, with
    parseq_use_deltas off, the absolute value taken as the per-frame motion."""
    delta = f"{field}_delta"
    flip = " (the flip is not cumulative: each frame shows Parseq's change, as in the webui)" \
        if field.startswith("perspective_flip") else ""
    if not use_deltas:
        if field not in frames[0]:
            return  # the webui reads `field` only; the lone _delta is reported with the rest
        out.config[field] = _schedule(_column(frames, field))
        taken.add(field)
        out.used.append(field)
        out.differs.append(f"{field}: parseq_use_deltas is false, so Parseq's absolute values are each frame's "
                           f"motion (as in the webui){flip}")
        return
    if delta in frames[0]:
        values = _column(frames, delta)
        sources = f"{field}, {delta}" if field in frames[0] else delta
        out.mapped.append(f"{sources} -> {field}: the per-frame change {delta} (parseq_use_deltas){flip}")
        taken.update((field, delta))
    else:
        absolute = _column(frames, field)
        values = np.diff(absolute, prepend=0.0)
        if field == "zoom":
            values[1:] += 1.0
        taken.add(field)
        out.mapped.append(f"{field} -> {field}: per-frame change computed from the absolute values, as Parseq "
                          f"writes {delta}{flip}")
        out.differs.append(f"{field}: the document has no {delta}; the webui would ignore {field} and use its own "
                           f"schedule, here the change is computed from {field}")
    out.config[field] = _schedule(values)


def _seed(out: Imported, values: np.ndarray) -> None:
    out.config["seed_behavior"] = "schedule"
    out.mapped.append("seed -> seed_behavior: schedule (the webui takes each frame's seed from Parseq)")
    if np.any(values != np.trunc(values)):
        out.differs.append("seed: fractional Parseq seeds blend into the next seed in the webui (subseed, "
                           "subseed_strength); here each frame uses the whole part of its seed")


def _prompts(out: Imported, frames: list[Mapping]) -> None:
    """deforum_prompt -> animation_prompts at the frames where it changes. Overlapping Parseq prompts arrive
    as composable-diffusion text (`a: 0.7 AND b: 0.3`); they become our weighted sub-prompts."""
    prompts: dict[int, str] = {}
    weighted = False
    previous = None
    for i, frame in enumerate(frames):
        text = frame.get("deforum_prompt")
        if not isinstance(text, str):
            raise ConfigError(f"rendered_frames[{i}].deforum_prompt: expected text at frame {i}, got {_shown(text)}")
        if text != previous:
            converted = _composable_to_weighted(text)
            weighted |= converted is not None
            prompts[i] = converted if converted is not None else text
            previous = text
    out.config["animation_prompts"] = prompts
    out.config["prompt_weighting"] = weighted
    out.mapped.append(f"deforum_prompt -> animation_prompts: {len(prompts)} prompt(s), at the frames where the "
                      f"prompt changes ('positive --neg negative')")
    if weighted:
        out.config["normalize_prompt_weights"] = False
        out.mapped.append("deforum_prompt -> prompt_weighting: true, normalize_prompt_weights: false (overlapping "
                          "prompts written as 'text:weight' sub-prompts, weights as Parseq computed them)")
        out.differs.append("animation_prompts: where Parseq prompts overlap, the webui runs composable diffusion "
                           "(one guidance term per prompt, AND); here the prompts' text encodings are blended "
                           "with the same weights")
    else:
        out.mapped.append("deforum_prompt -> prompt_weighting: false (webui prompts have no 'text:weight' "
                          "sub-prompts: a ':' stays text)")


def _composable_to_weighted(text: str) -> str | None:
    """`a: 0.7 AND b: 0.3 --neg x: 0.7 AND y: 0.3` as `a:0.7 b:0.3 x:-0.7 y:-0.3` (negative weights go to
    the unconditional side); a shared negative stays after --neg. None when the text has no weighted parts."""
    positive, sep, negative = text.partition("--neg")
    pos_parts = _weighted_parts(positive)
    if pos_parts is None:
        return None
    neg_parts = _weighted_parts(negative) if sep else []
    if neg_parts is None:  # one negative for all prompts, unweighted
        neg_parts, shared = [], negative.strip()
    else:
        texts = {part for part, _ in neg_parts}
        shared = texts.pop() if len(texts) == 1 else ""
        neg_parts = [] if shared or not texts else neg_parts
    parts = [f"{_escape(part)}:{weight}" for part, weight in pos_parts]
    parts += [f"{_escape(part)}:-{weight}" for part, weight in neg_parts if part and float(weight) > 0]
    return " ".join(parts) + (f" --neg {shared}" if shared else "")


def _weighted_parts(side: str) -> list[tuple[str, str]] | None:
    """[(text, weight)] of `a: 0.7 AND b: 0.3`; None unless the side holds two or more weighted parts."""
    pieces = side.strip().split(_AND)
    if len(pieces) < 2:
        return None
    matches = [_WEIGHTED_PART.match(piece) for piece in pieces]
    if not all(matches):
        return None
    return [(m["text"].strip(), m["weight"].lstrip("+")) for m in matches]


def _escape(text: str) -> str:
    return text.replace(":", "\\:")


# --------------------------------------------------------------------------------------------
# options and mode


def _options(out: Imported, options: Any, n: int, overrides: bool) -> None:
    """max_frames = the rendered frames, fps and cadence from `options`, when parseq_non_schedule_overrides;
    like the adapter, a missing or zero cadence / output_fps leaves the setting alone."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"options: expected an object (output_fps, cadence, ...), got {_shown(options)}")
    if overrides:
        out.config["max_frames"] = n
        out.mapped.append(f"rendered_frames -> max_frames: {n} (one frame per rendered frame)")
    for key, value in options.items():
        ours = _OPTIONS_USED.get(key)
        if ours is None:
            _report(out, EDITOR_DATA, f"options.{key}")
            continue
        if value in (None, 0):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"options.{key}: expected a positive number, got {_shown(value)}")
        if not overrides:
            out.differs.append(f"options.{key}: not used (parseq_non_schedule_overrides is false), as in the webui")
            continue
        if ours == "diffusion_cadence":
            if not float(value).is_integer():
                raise ConfigError(f"options.cadence: expected a whole number of frames, got {_shown(value)}")
            value = int(value)
        out.config[ours] = value
        out.mapped.append(f"options.{key} -> {ours}: {value}")


def _animation_mode(out: Imported) -> None:
    """A Parseq document has no animation mode: 3D when its 3D motion moves, else our default (2D)."""
    moving = [key for key in _3D_MOTION if key in out.config and _moves(out.config[key])]
    if moving:
        out.config["animation_mode"] = "3D"
        out.mapped.append(f"{', '.join(moving)} -> animation_mode: 3D (Parseq has no animation mode; its 3D "
                          f"motion moves)")
    else:
        out.differs.append("animation_mode: Parseq has no animation mode; 2D (no 3D motion in the document)")
    out.differs.append("settings Parseq does not manage take this project's defaults, not the webui's UI values")


def _moves(schedule: str) -> bool:
    return any(float(value) != 0 for value in re.findall(r"\(([^)]*)\)", schedule))


def _flag(settings: Mapping[str, Any], key: str) -> bool:
    """A webui boolean: absent (older files) means True; strings 'True'/'False' as real files have them."""
    value = settings.get(key, True)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
        return lowered == "true"
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
    return bool(value)
