"""Settings files out: an imported settings file as a commented render config (`deforum-import`), and the resolved
config as a webui-compatible settings file beside settings.yaml (rule schedules, save_settings).

Both read back to the same resolved config: the render config through load_config, the webui file through
settings_import.read_settings."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Mapping
from functools import cache
from typing import Any

import yaml

from deforum_steps import io
from deforum_steps.config import SCHEMA_PATH, ConfigError, load_schema
from deforum_steps.settings_import import read_settings

# The keys that point load_config at a settings file: an imported config must not point at one again.
SETTINGS_FILE_KEYS = ("override_settings_with_file", "custom_settings_file")
# Our keys the webui spells differently (its DeforumArgs/DeforumAnimArgs/DeforumOutputArgs names).
WEBUI_NAMES = {
    "flip_2d_perspective": "enable_perspective_flip",
    "enable_schedule_samplers": "enable_sampler_scheduling",
    "use_video_mask": "use_mask_video",
    "skip_video": "skip_video_creation",
    "animation_prompts": "prompts",
}
# Our sampler names as the webui displays them; the "… Karras" names are the webui's already.
_WEBUI_SAMPLER_NAMES = {
    "klms": "LMS", "dpm2": "DPM2", "dpm2_ancestral": "DPM2 a", "heun": "Heun", "euler": "Euler",
    "euler_ancestral": "Euler a", "plms": "PLMS", "ddim": "DDIM", "dpmpp_2m": "DPM++ 2M",
}
_SECTION = re.compile(r"^  # -+ (.+?) -+$")
_KEY_LINE = re.compile(r"^  (\w+):")


# ---- commented render config ---------------------------------------------------------------------------


def render_yaml(imported, origin: str = "") -> str:
    """`imported` (a settings_import.Imported) as a render config in schema order, under its section headings:
    each key with its schema description as a comment above it; the keys the file sets active, the others
    commented out at their defaults. The import summary heads the file as a comment."""
    props = load_schema(SCHEMA_PATH)["properties"]
    sections = _schema_sections()
    lines = [f"# Render config imported by deforum-import from {origin or 'a settings file'} ({imported.source}).",
             "# Keys the file sets are active; the others are commented out at their defaults.",
             "#", *_commented(imported.summary()), ""]
    section = None
    for key, spec in props.items():
        if sections.get(key) != section:
            section = sections.get(key)
            lines += ["", f"# ---- {section} " + "-" * max(3, 100 - len(section))]
        lines += _commented(_key_comment(spec), wrap=True)
        active = key in imported.config and key not in SETTINGS_FILE_KEYS
        text = _dump({key: imported.config[key] if active else spec["default"]})
        lines += text.splitlines() if active else _commented(text)
    return "\n".join(lines) + "\n"


def write_render_yaml(imported, path: str | os.PathLike, origin: str = "") -> None:
    """render_yaml(imported) written to `path`."""
    io.write_text(path, render_yaml(imported, origin))


@cache
def _schema_sections() -> dict[str, str]:
    """{key: the `# ---- section ----` heading above it in config/schema.yaml}."""
    sections, section, in_properties = {}, "", False
    for line in SCHEMA_PATH.read_text().splitlines():
        in_properties = in_properties or line.startswith("properties:")
        if match := _SECTION.match(line):
            section = match[1]
        elif in_properties and (match := _KEY_LINE.match(line)):
            sections[match[1]] = section
    return sections


def _key_comment(spec: Mapping[str, Any]) -> str:
    """A key's description, else its values in words (the choices, the type and range)."""
    words = [spec["description"]] if "description" in spec else []
    if "enum" in spec:
        words.append("one of " + ", ".join(map(str, spec["enum"])))
    elif not words:
        kind = spec.get("type", "schedule")
        bounds = [f"{word} {spec[key]}" for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                          ("maximum", "<=")) if key in spec]
        words.append(" ".join([{"boolean": "true or false"}.get(kind, str(kind)), ", ".join(bounds)]).strip())
    return "; ".join(words)


def _commented(text: str, wrap: bool = False) -> list[str]:
    lines = textwrap.wrap(text, 116) if wrap else text.splitlines()
    return [f"# {line}".rstrip() for line in lines]


def _dump(mapping: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(mapping), sort_keys=False, allow_unicode=True, width=10**6).rstrip("\n")


# ---- webui-compatible settings file ----------------------------------------------------------------------


def webui_settings(cfg: Mapping[str, Any]) -> dict:
    """The resolved config as the A1111 extension's settings file: its key names and value forms (prompts as a
    {"frame": text} object, webui sampler and colour coherence names, enable_perspective_flip, ...) for every
    setting the webui has, and our own name for the ones it lacks (the webui ignores those). depth_algorithm keeps
    our name: the webui's (Midas-3-Hybrid) would tell the importer that midas_weight is not blended, as there."""
    out = {}
    for key, value in cfg.items():
        if key in SETTINGS_FILE_KEYS:
            continue
        if key == "prompts":  # the webui's `prompts` is the frame mapping: the list goes where notebook ports put it
            if value != _schema_default(key):
                out["animation_prompts"] = value
            continue
        if key == "animation_prompts":
            value = {str(frame): text for frame, text in value.items()}
        elif key == "sampler":
            value = _WEBUI_SAMPLER_NAMES.get(value, value)
        elif key == "color_coherence":
            value = value.removeprefix("Match Frame 0 ")
        out[WEBUI_NAMES.get(key, key)] = value
    # Global prompt parts the webui joins to every prompt: ours are in the prompts themselves and neg_prompts.
    out.update(positive_prompts="", negative_prompts="")
    return out


def _schema_default(key: str) -> Any:
    return load_schema(SCHEMA_PATH)["properties"][key]["default"]


def write_webui_settings(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """webui_settings(cfg) as the webui writes it: indented JSON."""
    io.write_text(path, json.dumps(webui_settings(cfg), ensure_ascii=False, indent=4) + "\n")


# ---- deforum-import --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """deforum-import SETTINGS_FILE [-o render.yaml]: the settings file as a commented render config, on
    standard output or in the -o file; the import summary on stderr. A file it cannot read: one line, exit 1."""
    parser = argparse.ArgumentParser(
        prog="deforum-import",
        description="Write a Deforum settings file (notebook, webui or Parseq) as a commented render config.")
    parser.add_argument("settings_file", help="the settings file to import")
    parser.add_argument("-o", "--output", help="the render config to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        imported = read_settings(args.settings_file)
        text = render_yaml(imported, origin=args.settings_file)
        if args.output:
            io.write_text(args.output, text)
        else:
            sys.stdout.write(text)
    except (ConfigError, OSError) as e:
        print(f"deforum-import: {e}", file=sys.stderr)
        return 1
    print(imported.summary(), file=sys.stderr)
    return 0
