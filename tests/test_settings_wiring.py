"""Settings files wired into the workflow (issue 15): override_settings_with_file / custom_settings_file and their
precedence (defaults < render config < settings file < --config), the commented render config of
`deforum-import`, the webui-compatible twin of settings.yaml and both round trips, and every example settings
file of ../shared/deforum-examples rendered end to end with the tiny model, its schedules checked against values
computed here from the file itself."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import SHARED
from helpers import SCHEMA, SMALL_CONFIG, last_line, output, run_snakemake

from deforum_steps import schedules, settings_export, settings_import
from deforum_steps.config import ConfigError, load_config, load_schema
from deforum_steps.settings_export import render_yaml, webui_settings, write_webui_settings
from deforum_steps.settings_import import read_settings

EXAMPLES = SHARED / "deforum-examples"
EXAMPLE_FILES = ("runSettings_Animation.txt", "runSettings_StillImages.txt", "webui_default_settings.txt",
                 "webui_simple_settings.txt", "parseq.json")
DEFORUM_IMPORT = Path(sys.executable).with_name("deforum-import")
# What this machine renders quickly, pinned from the command line around each file: the trained toy model.
PINNED = ("width=64", "height=64", "max_frames=3", "steps=2", "model=builtin:toy", "depth_algorithm=tiny",
          "output_path=output")


def fake_import(monkeypatch, config: dict, summary: str = "imported: a fake") -> list:
    """read_settings replaced by one returning `config`; the list collects the paths it was asked for."""
    calls = []

    def read(path):
        calls.append(Path(path))
        return SimpleNamespace(config=dict(config), source="fake", summary=lambda: summary)

    monkeypatch.setattr(settings_import, "read_settings", read)
    return calls


def error_of(raw, pinned=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(raw, SCHEMA, pinned)
    assert "\n" not in str(info.value)
    return str(info.value)


# ---- the keys and their precedence ------------------------------------------------------------------------


def test_settings_file_keys_default_to_off():
    cfg = load_config({}, SCHEMA)
    assert (cfg["override_settings_with_file"], cfg["custom_settings_file"]) == (False, "")


def test_precedence_defaults_config_file_command_line(monkeypatch, capsys):
    """The file's keys beat the render config's, --config keys (an alias there included) beat the file's, keys
    nobody sets keep their defaults; the summary goes to stderr once; the two keys end at their defaults."""
    calls = fake_import(monkeypatch, {"max_frames": 30, "W": 256, "steps": 30, "zoom": "0:(1.1)"},
                        summary="imported: a fake\n  used: max_frames, W, steps, zoom")
    raw = {"override_settings_with_file": True, "custom_settings_file": "  run.txt ", "max_frames": 10,
           "angle": "0:(3)", "width": 128, "steps": 5}
    cfg = load_config(raw, SCHEMA, pinned=["width", "steps"])
    assert calls == [Path("run.txt")]  # relative: to the working directory, read once
    assert (cfg["max_frames"], cfg["zoom"], cfg["W"], cfg["steps"]) == (30, "0:(1.1)", 128, 5)
    assert (cfg["angle"], cfg["H"]) == ("0:(3)", 128)
    assert (cfg["override_settings_with_file"], cfg["custom_settings_file"]) == (False, "")
    assert capsys.readouterr().err == "imported: a fake\n  used: max_frames, W, steps, zoom\n"


def test_settings_file_keys_given_on_the_command_line(monkeypatch):
    """`--config override_settings_with_file=true custom_settings_file=...` arrive as strings."""
    calls = fake_import(monkeypatch, {"max_frames": 30})
    cfg = load_config({"override_settings_with_file": "true", "custom_settings_file": "~/run.txt"}, SCHEMA,
                      pinned=["override_settings_with_file", "custom_settings_file"])
    assert calls == [Path("~/run.txt").expanduser()] and cfg["max_frames"] == 30


def test_file_is_ignored_without_override(monkeypatch):
    calls = fake_import(monkeypatch, {"max_frames": 30})
    cfg = load_config({"custom_settings_file": "run.txt"}, SCHEMA)
    assert calls == [] and cfg["max_frames"] == 48 and cfg["custom_settings_file"] == "run.txt"


def test_override_without_a_file_is_one_line():
    assert error_of({"override_settings_with_file": True}) == (
        "custom_settings_file: must name a settings file when override_settings_with_file is true")


def test_a_bad_value_from_the_file_is_one_line(monkeypatch):
    fake_import(monkeypatch, {"max_frames": 0})
    assert error_of({"override_settings_with_file": True, "custom_settings_file": "x"}).startswith("max_frames: ")


def test_unreadable_settings_file_is_one_line(tmp_path):
    message = error_of({"override_settings_with_file": True, "custom_settings_file": str(tmp_path / "none.txt")})
    assert "none.txt" in message


# ---- deforum-import: the commented render config ----------------------------------------------------------


def test_render_yaml_lists_every_key_with_its_description():
    config = {"max_frames": 30, "zoom": "0:(1.1)", "animation_prompts": {0: "a", "max_f/2": "b"}}
    imported = SimpleNamespace(config={**config, "override_settings_with_file": True}, source="webui",
                               summary=lambda: "imported webui settings\n  used: max_frames")
    text = render_yaml(imported, origin="run.txt")
    lines = text.splitlines()
    assert lines[0] == "# Render config imported by deforum-import from run.txt (webui)."
    assert "# imported webui settings" in lines and "#   used: max_frames" in lines
    assert "max_frames: 30" in lines and "# model: builtin:toy" in lines
    assert "# ---- model " + "-" * 95 in lines and any(line.startswith("# ---- settings file -") for line in lines)
    props = load_schema(SCHEMA)["properties"]
    # every key once, in schema order, active or commented out, below its comment
    keys = [m[1] for line in lines if (m := re.match(r"^(?:# )?(\w+):( |$)", line)) and m[1] in props]
    assert keys == list(props)
    i = lines.index("max_frames: 30")
    assert lines[i - 1] == "# integer >= 1"
    assert lines[lines.index("# override_settings_with_file: false") - 1].startswith("# render custom_settings_file")
    assert all(len(line) <= 120 or "prompt" in line for line in lines)
    assert load_config(yaml.safe_load(text), SCHEMA) == load_config(config, SCHEMA)


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_imported_file_round_trips_through_our_yaml(name, tmp_path):
    """Must-show 4: the file imported, written as our YAML and read again = the file rendered directly."""
    path = EXAMPLES / name
    settings_export.write_render_yaml(read_settings(path), tmp_path / "render.yaml", origin=str(path))
    from_yaml = load_config(yaml.safe_load((tmp_path / "render.yaml").read_text()), SCHEMA)
    assert from_yaml == load_config({"override_settings_with_file": True, "custom_settings_file": str(path)},
                                    SCHEMA)


def test_deforum_import_script(tmp_path):
    """stdout by default, -o writes the file; the summary on stderr; exit 1 with one line on a bad file."""
    path = EXAMPLES / "webui_simple_settings.txt"
    summary = read_settings(path).summary()
    shown = subprocess.run([DEFORUM_IMPORT, str(path)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# Render config imported by deforum-import from ")
    assert shown.stderr == summary + "\n"
    written = subprocess.run([DEFORUM_IMPORT, str(path), "-o", str(tmp_path / "r.yaml")], capture_output=True,
                             text=True, timeout=120)
    assert written.returncode == 0 and written.stdout == ""
    assert (tmp_path / "r.yaml").read_text() == shown.stdout
    for bad in (tmp_path / "missing.txt", tmp_path / "broken.txt"):
        (tmp_path / "broken.txt").write_text('{"W": 512,\n "H": }\n')
        failed = subprocess.run([DEFORUM_IMPORT, str(bad)], capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1 and failed.stdout == ""
        assert len(failed.stderr.splitlines()) == 1 and failed.stderr.startswith("deforum-import: ")
        assert "Traceback" not in failed.stderr


def test_deforum_import_unwritable_output(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert settings_export.main([str(EXAMPLES / "parseq.json"), "-o", str(tmp_path / "a_file" / "r.yaml")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("deforum-import: ")


# ---- the webui twin of settings.yaml ------------------------------------------------------------------------


VARIANTS = {
    "defaults": {},
    "small": SMALL_CONFIG,
    "webui-like": {**SMALL_CONFIG, "animation_mode": "3D", "sampler": "DPM++ 2M Karras", "flip_2d_perspective": True,
                   "enable_schedule_samplers": True, "sampler_schedule": "0:('euler'), 2:('Euler a')",
                   "color_coherence": "None", "depth_algorithm": "tiny", "use_video_mask": False,
                   "skip_video": True, "noise_type": "perlin", "diffusion_cadence": 2,
                   "cfg_scale_schedule": "0:(7), 3:(9)", "seed_behavior": "schedule"},
    "ours only": {**SMALL_CONFIG, "neg_prompts": "blurry", "use_karras_sigmas": True, "sampler": "heun",
                  "scale": 5.5, "cfg_scale_schedule": "", "prompts": ["one", "two"], "crf": 20,
                  "depth_algorithm": "midas-3-large", "color_coherence": "Match Frame 0 RGB", "fps": 24.5,
                  "animation_prompts": {0: "a --neg b", "max_f/2": "c", 4: "d"}},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_webui_twin_reads_back_to_the_same_config(variant, tmp_path):
    cfg = load_config({**VARIANTS[variant], "seed": 7}, SCHEMA)
    write_webui_settings(cfg, tmp_path / "deforum_settings.txt")
    doc = json.loads((tmp_path / "deforum_settings.txt").read_text())
    assert "prompts" in doc and "W" in doc and "override_settings_with_file" not in doc
    assert all(isinstance(k, str) for k in doc["prompts"])
    imported = read_settings(tmp_path / "deforum_settings.txt")
    assert imported.source.startswith("webui")
    assert load_config(imported.config, SCHEMA) == cfg


def test_webui_twin_uses_webui_names_and_values():
    cfg = load_config({**VARIANTS["webui-like"], "seed": 7}, SCHEMA)
    doc = webui_settings(cfg)
    assert doc["sampler"] == "DPM++ 2M Karras" and doc["enable_perspective_flip"] is True
    assert doc["enable_sampler_scheduling"] is True and doc["skip_video_creation"] is True
    assert doc["color_coherence"] == "None" and doc["prompts"] == {"0": "a red apple", "3": "a yellow banana"}
    assert not {"flip_2d_perspective", "enable_schedule_samplers", "skip_video", "animation_prompts"} & set(doc)
    assert webui_settings(load_config({"sampler": "euler_ancestral", "color_coherence": "LAB",
                                       "depth_algorithm": "midas-3-hybrid"}, SCHEMA))["sampler"] == "Euler a"


def test_write_records_writes_the_webui_twin(tmp_path):
    cfg = load_config({**SMALL_CONFIG, "seed": 3}, SCHEMA)
    schedules.write_records(cfg, csv=tmp_path / "s.csv", png=tmp_path / "s.png", settings=tmp_path / "settings.yaml",
                            webui_settings=tmp_path / "deforum_settings.txt")
    assert json.loads((tmp_path / "deforum_settings.txt").read_text()) == json.loads(json.dumps(webui_settings(cfg)))


# ---- every example file rendered ------------------------------------------------------------------------------


def value_at(schedule: str, t: int) -> float:
    """A one-keyframe schedule "0: (expr)" evaluated at frame t, independently of keyframes.py."""
    match = re.fullmatch(r"\s*0\s*:\s*\((.*)\)\s*", str(schedule))
    assert match, schedule
    return eval(match[1], {"__builtins__": {}}, {"t": t, "sin": math.sin, "cos": math.cos})


def render_example(tmp_path, name, *extra):
    """The example file rendered through the workflow with override_settings_with_file, PINNED around it."""
    (tmp_path / "render.yaml").write_text(yaml.safe_dump({"override_settings_with_file": True,
                                                          "custom_settings_file": str(EXAMPLES / name)}))
    proc = run_snakemake(tmp_path, "--config", *PINNED, *extra)
    assert proc.returncode == 0, output(proc)[-6000:]
    assert output(proc).count(read_settings(EXAMPLES / name).summary()) == 1
    (out,) = {p.parent for p in (tmp_path / "output").glob("*/schedules.csv")}
    settings = load_config(yaml.safe_load((out / "settings.yaml").read_text()), SCHEMA)
    assert (settings["W"], settings["H"], settings["steps"], settings["model"]) == (64, 64, 2, "builtin:toy")
    table = pd.read_csv(out / "schedules.csv", index_col="frame", keep_default_na=False)
    return out, settings, table


def assert_twin_reads_back(out, settings):
    """Must-show 4: the render's deforum_settings.txt reads back to its settings.yaml."""
    assert load_config(read_settings(out / "deforum_settings.txt").config, SCHEMA) == settings


def test_render_notebook_port_animation(tmp_path):
    doc = json.loads((EXAMPLES / "runSettings_Animation.txt").read_text())
    out, settings, table = render_example(tmp_path, "runSettings_Animation.txt")
    assert settings["animation_mode"] == "3D" and settings["diffusion_cadence"] == int(doc["diffusion_cadence"])
    assert len(table) == 3 and sorted(p.name for p in (out / "frames").glob("*.png")) == [
        "00000.png", "00001.png", "00002.png"]
    for key in ("translation_y", "translation_z", "noise_schedule", "strength_schedule"):
        assert list(table[key]) == pytest.approx([value_at(doc[key], t) for t in range(3)]), key
    assert "zoom" not in table  # a 2D key, at its default: the CSV has the columns of the mode
    assert list(table["fov_schedule"]) == pytest.approx([doc["fov"]] * 3)
    assert list(table["cfg_scale_schedule"]) == pytest.approx([doc["scale"]] * 3)
    assert list(table["seed_schedule"]) == [doc["seed"]] * 3  # cadence 3: one diffusion for frames 0-2
    assert table["prompt"][0] == doc["animation_prompts"]["0"].strip()
    assert_twin_reads_back(out, settings)


def test_render_notebook_port_still_images(tmp_path):
    doc = json.loads((EXAMPLES / "runSettings_StillImages.txt").read_text())
    out, settings, _ = render_example(tmp_path, "runSettings_StillImages.txt", "n_batch=1")
    assert settings["animation_mode"] == "None" and settings["prompts"] == [p.strip() for p in doc["prompts"]]
    images = pd.read_csv(out / "images" / "images.csv", keep_default_na=False)
    assert list(images["prompt"]) == [p.strip() for p in doc["prompts"]]
    assert (settings["scale"], settings["sampler"], settings["seed_behavior"]) == (doc["scale"], "klms", "iter")
    assert_twin_reads_back(out, settings)


@pytest.mark.parametrize("name", ["webui_default_settings.txt", "webui_simple_settings.txt"])
def test_render_webui_settings(name, tmp_path):
    doc = json.loads((EXAMPLES / name).read_text())
    out, settings, table = render_example(tmp_path, name)
    assert settings["animation_mode"] == doc["animation_mode"] and len(table) == 3
    assert settings["diffusion_cadence"] == doc["diffusion_cadence"] and settings["noise_type"] == doc["noise_type"]
    for key in ("zoom", "translation_z", "noise_schedule", "strength_schedule", "cfg_scale_schedule",
                "amount_schedule", "kernel_schedule"):
        assert list(table[key]) == pytest.approx([value_at(doc[key], t) for t in range(3)]), key
    if doc["seed"] != -1:
        assert list(table["seed_schedule"]) == [doc["seed"] + t // doc["diffusion_cadence"] for t in range(3)]
    positive = doc["prompts"]["0"].split("--neg")[0].strip()
    assert table["prompt"][0].strip().endswith(positive) or positive in table["prompt"][0]
    suffix = doc.get("negative_prompts", doc.get("animation_prompts_negative", ""))
    assert suffix in table["negative_prompt"][0]
    assert_twin_reads_back(out, settings)


def test_render_parseq_document(tmp_path):
    doc = json.loads((EXAMPLES / "parseq.json").read_text())
    frames = doc["rendered_frames"]
    out, settings, table = render_example(tmp_path, "parseq.json")
    assert (settings["diffusion_cadence"], settings["fps"]) == (doc["options"]["cadence"], doc["options"]["output_fps"])
    assert list(table["angle"]) == pytest.approx([f["angle_delta"] for f in frames[:3]])  # deltas, as the webui
    assert list(table["prompt"]) == ["Parseq prompt!"] * 3
    assert list(table["negative_prompt"]) == ["neg parseq prompt!"] * 3
    assert_twin_reads_back(out, settings)


def test_workflow_refuses_a_missing_settings_file(tmp_path):
    (tmp_path / "render.yaml").write_text(yaml.safe_dump({**SMALL_CONFIG, "override_settings_with_file": True,
                                                          "custom_settings_file": "nowhere/settings.txt"}))
    proc = run_snakemake(tmp_path, "-n")
    assert proc.returncode != 0 and "Traceback" not in output(proc)
    assert last_line(proc).startswith("config error: ") and "nowhere/settings.txt" in last_line(proc)
