"""Render config: defaults from config/schema.yaml, validation, and the derived settings every stage reads."""
from __future__ import annotations

import copy
import difflib
import fcntl
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
    "enable_perspective_flip": "flip_2d_perspective",
    "enable_sampler_scheduling": "enable_schedule_samplers",
    "use_mask_video": "use_video_mask",
}
# Keys Deforum has that change nothing here, with the reason, warned about when set to the value given.
NO_EFFECT = {
    "display_samples": (True, "no live preview yet: finished frames are in the output folder's frames/"),
    "show_sample_per_step": (True, "no live preview yet: save_sample_per_step writes every step's image "
                                   "(None mode)"),
    "save_samples": (False, "every frame is kept: the frames are the render's cached stages and make the video"),
    "strength_0_no_init": (False, "a frame without an init image is always txt2img with all steps, as in the "
                                  "notebook"),
}
SEED_FILE = "resolved_seed.txt"
LOCK_FILE = ".render.lock"
MAX_SEED = 2**32 - 1

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
}


class ConfigError(ValueError):
    """A bad render config: the message is one line that names the config key."""


class OutputBusy(RuntimeError):
    """Another run holds the output folder's lock."""


def load_schema(schema_path: str | os.PathLike) -> dict:
    with open(schema_path) as f:
        return yaml.safe_load(f)


def load_config(raw: Mapping[str, Any], schema_path: str | os.PathLike, pinned: Iterable[str] = ()) -> dict:
    """Validated render config: every schema key, in schema order, defaults filled.

    `raw` is the merged YAML config and `--config` overrides (scalars there arrive as int/float/str); `pinned`
    names the keys set with `--config`, so that an alias given there (`width`) wins over the file's key (`W`).
    Raises ConfigError with one line naming the first bad key.
    """
    schema = load_schema(schema_path)
    props = schema["properties"]
    raw = translate_aliases(raw, set(pinned))
    for key in raw:
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


def lock_output(cfg: Mapping[str, Any]) -> IO:
    """Take the exclusive lock OUT/.render.lock for this process's lifetime (keep the returned file open).

    An flock dies with its process, so a killed run never leaves a stale lock (unlike Snakemake's own).
    """
    path = output_dir(cfg) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
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
