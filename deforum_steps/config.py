"""Render config: defaults from config/schema.yaml, validation, and the derived settings every stage reads."""
from __future__ import annotations

import copy
import difflib
import fcntl
import functools
import math
import os
import random
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import jsonschema
import yaml

from deforum_steps import io

# Other spellings of our keys that users bring (the guides', the notebook ports' and the webui's names for the
# same setting): translated here, when the config is loaded, and nowhere else. `width`/`height` can also be
# pinned from the command line, where Snakemake refuses the one-letter W and H.
KEY_ALIASES = {
    "width": "W",
    "height": "H",
    "model_checkpoint": "model",
    "custom_config_path": "model_config",
    "enable_perspective_flip": "flip_2d_perspective",
    "enable_sampler_scheduling": "enable_schedule_samplers",
    "use_mask_video": "use_video_mask",
}
# Keys of the guides that mean nothing here, refused with the reason.
REFUSED_KEYS = {
    "load_on_run_all": "means nothing here: each job loads the model when it first needs it (once per process); "
                       "remove the key",
}
# Keys Deforum has that change nothing here, with the reason, warned about when set to the value given.
NO_EFFECT = {
    "save_samples": (False, "every frame is kept: the frames are the render's cached stages and make the video"),
    "strength_0_no_init": (False, "a frame without an init image is always txt2img with all steps, as in the "
                                  "notebook"),
}
# config/schema.yaml: every key, its type, range and default (the workflow passes its own copy's path).
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
SEED_FILE = "resolved_seed.txt"
LOCK_FILE = ".render.lock"
MAX_SEED = 2**32 - 1
# Memory that planning a render costs per frame (the schedule table and Snakemake's DAG): peak RSS of
# `snakemake -n` grows by 27 KB a frame in 2D and by 53 KB a frame in 3D with depth maps and cadence 2
# (2.5 jobs a frame, the most of any mode), measured from 2,000 to 6,000 frames; 64 KiB leaves a margin.
PLAN_BYTES_PER_FRAME = 64 * 1024

_SCHEDULE_REF = "#/$defs/schedule"
_PLAIN_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


class ConfigError(ValueError):
    """A bad render config: the message is one line that names the config key."""


class OutputBusy(RuntimeError):
    """Another run holds the output folder's lock."""


def load_schema(schema_path: str | os.PathLike) -> dict:
    """The schema as a fresh dict (callers may change theirs); parsed once per file: planning reads it several times."""
    return copy.deepcopy(_parsed_schema(str(schema_path)))


@functools.cache
def _parsed_schema(schema_path: str) -> dict:
    with open(schema_path) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster


def load_config(raw: Mapping[str, Any], schema_path: str | os.PathLike, pinned: Iterable[str] = ()) -> dict:
    """Validated render config: every schema key, in schema order, defaults filled.

    `raw` is the merged YAML config and `--config` overrides (scalars there arrive as int/float/str); `pinned`
    names the keys set with `--config`, so that an alias given there (`width`) wins over the file's key (`W`).
    Raises ConfigError with one line naming the first bad key.
    """
    schema = load_schema(schema_path)
    props = schema["properties"]
    raw = apply_settings_file(translate_aliases(raw, set(pinned)), props, set(pinned))
    for key in raw:
        if key in REFUSED_KEYS:
            raise ConfigError(f"{key}: {REFUSED_KEYS[key]}")
        if key not in props:
            raise ConfigError(f"{key}: unknown key{_suggest(str(key), [*props, *KEY_ALIASES])}")
    cfg = {}
    for key, spec in props.items():
        value = copy.deepcopy(raw[key] if key in raw else spec["default"])
        cfg[key] = _coerce(value, _types(spec), spec)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(cfg),
        key=lambda e: (list(props).index(e.absolute_path[0]) if e.absolute_path else -1, len(e.absolute_path)),
    )
    if errors:
        raise ConfigError(_message(errors[0], schema))
    for key, value in cfg.items():
        if isinstance(value, float) and not math.isfinite(value):  # YAML .inf / .nan pass every JSON-schema range
            raise ConfigError(f"{key}: {value} is not a finite number")
    _check_image_size(cfg, schema["x-max-pixels"])
    if cfg["animation_mode"] != "Video Input":  # its frames are counted when the video is probed
        check_plan_memory(*_planned_frames(cfg))
    for key, spec in props.items():
        if spec.get("$ref") == _SCHEDULE_REF and _PLAIN_NUMBER.match(str(cfg[key])):
            cfg[key] = f"0:({str(cfg[key]).strip()})"  # a constant schedule
    for key in ("W", "H"):
        if cfg[key] % 64:
            rounded = cfg[key] - cfg[key] % 64
            print(f"config warning: {key}: {cfg[key]} rounded down to {rounded} (a multiple of 64)", file=sys.stderr)
            cfg[key] = rounded
    for key, (value, reason) in NO_EFFECT.items():
        if cfg[key] == value:
            print(f"config warning: {key}: {str(value).lower()} changes nothing here: {reason}", file=sys.stderr)
    _check_resume(cfg)
    return cfg


def _check_image_size(cfg: Mapping[str, Any], max_pixels: int) -> None:
    """W x H, as rendered (rounded down to multiples of 64), at most `max_pixels`."""
    w, h = (cfg[key] - cfg[key] % 64 for key in ("W", "H"))
    if w * h > max_pixels:
        side = math.isqrt(max_pixels)
        raise ConfigError(f"W: W x H = {w} x {h} is {w * h} pixels, more than the {max_pixels} "
                          f"({side} x {side}) a frame may have")


def _planned_frames(cfg: Mapping[str, Any]) -> tuple[str, int, str]:
    """(the key that sets it, the number of frames a render of this mode plans, what they are)."""
    mode = cfg["animation_mode"]
    if mode == "None":
        return "n_batch", len(cfg["prompts"]) * cfg["n_batch"], "images"
    if mode == "Interpolation":
        keys = cfg["animation_prompts"]
        if cfg["interpolate_key_frames"]:
            return "animation_prompts", max((k for k in keys if isinstance(k, int)), default=0) + 1, "frames"
        return "interpolate_x_frames", (len(keys) - 1) * (cfg["interpolate_x_frames"] + 1) + 1, "frames"
    return "max_frames", cfg["max_frames"], "frames"


def check_plan_memory(key: str, n_frames: int, what: str = "frames") -> None:
    """Refuse a render whose plan (PLAN_BYTES_PER_FRAME a frame) would not fit in the memory available now,
    before anything is allocated for it; `key` is the config key that sets `n_frames`."""
    needed, available = n_frames * PLAN_BYTES_PER_FRAME, available_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{key}: {n_frames} {what} would need about {needed / 2**30:.1f} GiB of memory to plan "
                          f"({PLAN_BYTES_PER_FRAME // 1024} KiB each), but {available / 2**30:.1f} GiB is "
                          "available")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable, else all physical memory); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def translate_aliases(raw: Mapping[str, Any], pinned: set[str] = frozenset()) -> dict:
    """`raw` with every KEY_ALIASES spelling renamed to our key. Both spellings of one key is an error, unless
    exactly one of them is `pinned` (given on the command line), which then wins."""
    out = dict(raw)
    for alias, key in KEY_ALIASES.items():
        if alias in out:
            if key in out and (alias in pinned) == (key in pinned):
                raise ConfigError(f"{alias}: the same setting as {key}, which is also given; keep one of them")
            value = out.pop(alias)
            if key not in pinned:
                out[key] = value
    return out


def apply_settings_file(raw: Mapping[str, Any], props: Mapping[str, Any], pinned: set[str] = frozenset()) -> dict:
    """`raw` (aliases translated) with, when override_settings_with_file is true, the settings of
    custom_settings_file over its own, and the `pinned` keys (given with --config, alias spellings included) over
    those; the import summary goes to stderr. Both keys are set back to their defaults: the imported values are
    the config now, so the resolved config (settings.yaml) renders the same without the file."""
    out = dict(raw)
    if _coerce(out.get("override_settings_with_file"), ["boolean"], {}) is not True:
        return out
    path = str(out.get("custom_settings_file") or "").strip()
    if not path:
        raise ConfigError("custom_settings_file: must name a settings file when override_settings_with_file is true")
    from deforum_steps.settings_import import read_settings  # not at the top: settings_import imports this module

    imported = read_settings(Path(path).expanduser())
    print(imported.summary(), file=sys.stderr)
    out.update(imported.config)
    out.update((key, raw[key]) for key in {KEY_ALIASES.get(k, k) for k in pinned} if key in raw)
    for key in ("override_settings_with_file", "custom_settings_file"):
        out[key] = props[key]["default"]
    return out


def _check_resume(cfg: Mapping[str, Any]) -> None:
    """Every run continues the render in its output folder already; resume_from_timestring with
    resume_timestring names another earlier render's folder (inside output_path) to continue instead."""
    if not cfg["resume_from_timestring"]:
        if cfg["resume_timestring"]:
            print("config warning: resume_timestring: ignored without resume_from_timestring: true",
                  file=sys.stderr)
        return
    name = cfg["resume_timestring"]
    if not name:
        print(f"config warning: resume_from_timestring: every run continues the render in {output_dir(cfg)}; "
              "set resume_timestring to continue another render's folder", file=sys.stderr)
        return
    folder = Path(cfg["output_path"]) / name
    if "/" in name or "\\" in name or not folder.is_dir():
        renders = sorted(p.name for p in Path(cfg["output_path"]).glob("*/") if p.is_dir())
        raise ConfigError(f"resume_timestring: no earlier render {name!r} in {cfg['output_path']} "
                          f"(renders there: {', '.join(renders) or 'none'})")


def output_dir(cfg: Mapping[str, Any]) -> Path:
    """The render's output folder, OUT = output_path/batch_name, or output_path/resume_timestring when
    resume_from_timestring continues that earlier render."""
    if cfg["resume_from_timestring"] and cfg["resume_timestring"]:
        return Path(cfg["output_path"]) / cfg["resume_timestring"]
    return Path(cfg["output_path"]) / cfg["batch_name"]


def resolve_seed(cfg: Mapping[str, Any]) -> int:
    """The configured seed, or for -1 the one recorded in OUT/resolved_seed.txt, else a fresh random one.

    Only reads: record_seed writes the drawn seed, once a real run starts, so that a dry run
    never fixes the seed a later real run uses.
    """
    if cfg["seed"] != -1:
        return cfg["seed"]
    path = output_dir(cfg) / SEED_FILE
    if not path.exists():
        return random.SystemRandom().randint(0, MAX_SEED)
    text = path.read_text().strip()
    if not text.isdigit() or int(text) > MAX_SEED:
        raise ConfigError(f"seed: {path} holds {text!r}, not a seed; delete it to draw a new one")
    return int(text)


def record_seed(cfg: Mapping[str, Any], seed: int) -> None:
    """Record the seed drawn for `seed: -1` in OUT/resolved_seed.txt, unless one is recorded already."""
    path = output_dir(cfg) / SEED_FILE
    if not path.exists():
        io.write_text(path, f"{seed}\n")


def check_output_folder(cfg: Mapping[str, Any]) -> None:
    """The output folder can be made and written: its nearest existing folder is a folder and writable."""
    folder = output_dir(cfg)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    key = "batch_name" if existing == folder else "output_path"
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder: the render goes to {folder}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {existing} is not writable: the render goes to {folder}")


def lock_output(cfg: Mapping[str, Any]) -> IO:
    """Take the exclusive lock OUT/.render.lock for this process's lifetime (keep the returned file open).

    An flock dies with its process, so a killed run never leaves a stale lock (unlike Snakemake's own). A lock file
    we may not write (copied read-only) still locks: it is opened to read, and the pid is not recorded.
    """
    path = output_dir(cfg) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = open(path, "a+")
        except PermissionError:
            f = open(path)
    except OSError as e:
        raise ConfigError(f"output_path: cannot use {path.parent} as the output folder: "
                          f"{e.strerror or e} ({e.filename or path})") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise OutputBusy(
            f"{path.parent} is being rendered by another run (pid {holder}); "
            "wait for it to finish or choose another batch_name"
        ) from None
    if f.writable():
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
    return f


def _types(spec: Mapping[str, Any]) -> list[str]:
    if spec.get("$ref") == _SCHEDULE_REF:
        return ["string", "number"]
    t = spec.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _coerce(value: Any, types: list[str], spec: Mapping[str, Any]) -> Any:
    """Bring `--config` strings and loose YAML scalars to the schema type; leave anything else to validation."""
    if value is None:
        return {} if "object" in types else "" if "string" in types else None  # a blank YAML value
    if isinstance(value, str) and "string" not in types:
        text = value.strip()
        if "null" in types and text.lower() in ("none", "null"):  # `--config key=None`, Python's and Deforum's word
            return None
        if "boolean" in types and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if "number" in types and _PLAIN_NUMBER.match(text):
            return float(text)
    if isinstance(value, bool):
        return value
    if "boolean" in types and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if "integer" in types and isinstance(value, float) and value.is_integer():
        return int(value)
    if types == ["string"] and isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and "enum" in spec:
        return _enum_value(value, spec)
    if isinstance(value, str) and "array" in types:
        return [value]
    if isinstance(value, dict) and "object" in types:
        item_types = _types(spec.get("additionalProperties", {}))
        return {_frame_key(k): _coerce(v, item_types, {}) for k, v in value.items()}
    if isinstance(value, list) and "array" in types:
        item_types = _types(spec.get("items", {}))
        return [_coerce(v, item_types, {}) for v in value]
    return value


def _enum_value(value: str, spec: Mapping[str, Any]) -> str:
    """Accept enum values in any letter case, and the schema's x-aliases (e.g. LAB)."""
    choices = {c.lower(): c for c in spec["enum"]}
    choices.update({a.lower(): c for a, c in spec.get("x-aliases", {}).items()})
    return choices.get(value.strip().lower(), value)


def _frame_key(key: Any) -> Any:
    """Prompt keys: frame numbers as int ("24" from --config included); expression keys stay text."""
    if isinstance(key, str) and re.fullmatch(r"\s*\d+\s*", key):
        return int(key)
    return key


def _suggest(word: str, choices) -> str:
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _message(error: jsonschema.ValidationError, schema: Mapping[str, Any]) -> str:
    path = list(error.absolute_path)
    where = str(path[0]) + "".join(f"[{p!r}]" for p in path[1:])
    value, v, expected = error.instance, error.validator, error.validator_value
    spec = schema["properties"].get(path[0], {}) if path else {}
    if v == "type":
        words = "a schedule (text or number)" if spec.get("$ref") == _SCHEDULE_REF and len(path) == 1 else None
        words = words or " or ".join(_TYPE_WORDS[t] for t in ([expected] if isinstance(expected, str) else expected))
        return f"{where}: {value!r} is not {words}"
    if v == "enum":
        return f"{where}: {value!r} is not one of {', '.join(map(repr, expected))}{_suggest(str(value), expected)}"
    if v == "exclusiveMinimum":
        return f"{where}: {value!r} must be greater than {expected}"
    if v in ("minimum", "maximum"):
        return f"{where}: {error.message}"
    if v in ("minLength", "minItems", "minProperties"):
        return f"{where}: must not be empty"
    if v == "pattern":
        return f"{where}: {value!r} is not valid ({spec.get('description', expected)})"
    return f"{where}: {error.message}"
