"""Parseq documents as render configs (deforum_steps.parseq): per-frame values as the webui's adapter feeds them,
every key reported, one-line errors for malformed documents."""
import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from deforum_steps.config import ConfigError, load_config
from deforum_steps.parseq import EDITOR_DATA, merge_webui_parseq, read_parseq, read_parseq_manifest
from deforum_steps.schedules import build_table
from deforum_steps.settings_import import Imported

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
EXAMPLE = SHARED / "deforum-examples" / "parseq.json"
HERE = Path("doc.json")


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def table(imported: Imported, **pins):
    cfg = load_config({**imported.config, **pins}, SCHEMA)
    cfg["seed"] = 7  # resolved
    return build_table(cfg)


def document(frames: list[dict], **top) -> dict:
    """A rendered Parseq document whose frames are numbered 0, 1, ..."""
    return {"rendered_frames": [{"frame": i, **values} for i, values in enumerate(frames)], **top}


def reported(imported: Imported) -> set[str]:
    """Every source key the import names somewhere."""
    names = set(imported.used) | {key for keys in imported.unsupported.values() for key in keys}
    for line in imported.mapped:
        names |= {name.strip() for name in line.split(" -> ")[0].split(",")}
    return names


# --------------------------------------------------------------------------------------------
# the example document


def test_example_reproduces_the_per_frame_values_the_webui_feeds():
    doc = example()
    imported = read_parseq(doc, EXAMPLE)
    assert imported.source == "parseq"
    rows = table(imported)
    frames = doc["rendered_frames"]
    assert len(rows) == len(frames) == imported.config["max_frames"]
    assert imported.config["fps"] == doc["options"]["output_fps"]
    assert imported.config["diffusion_cadence"] == doc["options"]["cadence"]
    for f in (0, 1, 2, 7, 10):  # angle is motion: the webui feeds angle_delta
        assert rows["angle"][f] == pytest.approx(frames[f]["angle_delta"], rel=1e-12, abs=1e-12)
        assert rows["prompt"][f] == "Parseq prompt!"
        assert rows["negative_prompt"][f] == "neg parseq prompt!"
    cadence = doc["options"]["cadence"]
    for f in (0, 3, 10):  # seeds advance per diffusion: frame f carries diffusion f // cadence's seed
        assert rows["seed_schedule"][f] == int(frames[f - f % cadence]["seed"])
    assert imported.config["animation_prompts"] == {0: "Parseq prompt! --neg neg parseq prompt!"}


def test_example_reports_every_key():
    doc = example()
    imported = read_parseq(doc, EXAMPLE)
    names = reported(imported)
    missing = ({*doc, *doc["rendered_frames"][0]} - {"rendered_frames", "options"}) - names
    missing |= {f"options.{key}" for key in doc["options"]} - names - {"options.output_fps", "options.cadence"}
    assert not missing
    assert "meta" in imported.unsupported[EDITOR_DATA]
    assert imported.unsupported["subseed"] == ["subseed", "subseed_strength"]
    assert any(line.startswith("seed:") for line in imported.differs)  # fractional seeds


# --------------------------------------------------------------------------------------------
# rules


def test_motion_uses_deltas_and_zoom_delta_is_one_plus_the_change():
    zoom = [1.0, 1.5, 1.25, 1.25]
    frames = [{"zoom": z, "zoom_delta": z if i == 0 else 1 + z - zoom[i - 1]} for i, z in enumerate(zoom)]
    imported = read_parseq(document(frames), HERE)
    assert table(imported)["zoom"].tolist() == pytest.approx([1.0, 1.5, 0.75, 1.0])


def test_missing_delta_is_computed_as_parseq_does_and_reported():
    frames = [{"zoom": 1.0, "translation_x": 2}, {"zoom": 1.5, "translation_x": 5}, {"zoom": 1.25, "translation_x": 5}]
    imported = read_parseq(document(frames), HERE)
    rows = table(imported)
    assert rows["zoom"].tolist() == pytest.approx([1.0, 1.5, 0.75])
    assert rows["translation_x"].tolist() == pytest.approx([2, 3, 0])
    assert any(line.startswith("zoom: the document has no zoom_delta") for line in imported.differs)


def test_without_use_deltas_absolute_values_are_the_motion():
    frames = [{"angle": a, "angle_delta": a} for a in (0.0, 10.0, 30.0)]
    imported = read_parseq(document(frames), HERE, use_deltas=False)
    assert table(imported)["angle"].tolist() == pytest.approx([0, 10, 30])
    assert "angle_delta" in imported.unsupported[EDITOR_DATA]


def test_renamed_fields_are_absolute_per_frame_schedules():
    values = {"scale": [7, 8.5, 6], "noise": [0.02, 0.03, 0.0], "strength": [0.6, 0.55, 0.7],
              "contrast": [1, 0.9, 1.1], "fov": [40, 50, 60], "near": [200, 210, 220], "far": [10000, 9000, 8000],
              "antiblur_kernel": [5, 7, 3], "antiblur_amount": [0.1, 0.2, 0], "transform_center_x": [0.5, 0.4, 0.3]}
    frames = [{field: column[i] for field, column in values.items()} for i in range(3)]
    imported = read_parseq(document(frames), HERE)
    rows = table(imported, animation_mode="3D", use_depth_warping=False)
    ours = {"scale": "cfg_scale_schedule", "noise": "noise_schedule", "strength": "strength_schedule",
            "contrast": "contrast_schedule", "fov": "fov_schedule", "near": "near_schedule", "far": "far_schedule",
            "antiblur_kernel": "kernel_schedule", "antiblur_amount": "amount_schedule",
            "transform_center_x": "transform_center_x"}
    for field, key in ours.items():
        assert rows[key].tolist() == pytest.approx(values[field]), field
    assert "transform_center_x" in imported.used
    assert "scale -> cfg_scale_schedule: per-frame values, one keyframe per frame" in imported.mapped


def test_schedules_are_compact_and_exact():
    values = [0.1, 0.1, 0.1, 1e-7, 0.30000000000000004, 2.0, 2.0, 2.0, -0.0, 1e20]
    imported = read_parseq(document([{"contrast": v} for v in values]), HERE)
    text = imported.config["contrast_schedule"]
    assert text.startswith("0:(0.1), 2:(0.1), 3:(0.0000001), 4:(0.30000000000000004), 5:(2), 7:(2), 8:(0), ")
    assert "e" not in text  # an exponent would be an expression to the schedule parser
    rows = table(imported)
    assert rows["contrast_schedule"].tolist() == [abs(v) for v in values]


def test_equal_runs_hold_after_the_last_change():
    imported = read_parseq(document([{"noise": v} for v in (0.1, 0.2, 0.2, 0.2, 0.2)]), HERE)
    assert imported.config["noise_schedule"] == "0:(0.1), 1:(0.2)"
    assert table(imported)["noise_schedule"].tolist() == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.2])


def test_prompts_only_where_they_change():
    prompts = ["a cat --neg blur", "a cat --neg blur", "a dog", "a dog", "a cat --neg blur"]
    imported = read_parseq(document([{"deforum_prompt": p} for p in prompts]), HERE)
    assert imported.config["animation_prompts"] == {0: "a cat --neg blur", 2: "a dog", 4: "a cat --neg blur"}
    assert imported.config["prompt_weighting"] is False
    rows = table(imported)
    assert rows["prompt"].tolist() == ["a cat", "a cat", "a dog", "a dog", "a cat"]
    assert rows["negative_prompt"].tolist() == ["blur", "blur", "", "", "blur"]


def test_overlapping_prompts_become_weighted_subprompts():
    text = "a cat: 0.70000 AND a dog (x:1.2): 0.30000 --neg blur: 0.70000 AND ugly: 0.30000"
    shared = "a cat: 0.5 AND a dog: 0.5 --neg blur: 0.5 AND blur: 0.5"
    imported = read_parseq(document([{"deforum_prompt": text}, {"deforum_prompt": shared}]), HERE)
    prompts = imported.config["animation_prompts"]
    assert prompts[0] == "a cat:0.70000 a dog (x\\:1.2):0.30000 blur:-0.70000 ugly:-0.30000"
    assert prompts[1] == "a cat:0.5 a dog:0.5 --neg blur"
    assert imported.config["prompt_weighting"] is True and imported.config["normalize_prompt_weights"] is False
    assert any(line.startswith("animation_prompts:") for line in imported.differs)
    table(imported)


def test_options_and_overrides():
    frames = [{"angle_delta": 0}, {"angle_delta": 1}]
    imported = read_parseq(document(frames, options={"output_fps": 24, "cadence": 3.0, "bpm": 120}), HERE)
    assert (imported.config["fps"], imported.config["diffusion_cadence"], imported.config["max_frames"]) == (24, 3, 2)
    assert type(imported.config["diffusion_cadence"]) is int
    assert "options.bpm" in imported.unsupported[EDITOR_DATA]
    kept = read_parseq(document(frames, options={"output_fps": 24, "cadence": 3}), HERE, non_schedule_overrides=False)
    assert not {"fps", "diffusion_cadence", "max_frames"} & set(kept.config)
    assert any(line.startswith("options.cadence: not used") for line in kept.differs)
    absent = read_parseq(document(frames, options={"cadence": 0}), HERE)  # like the adapter: 0 or absent = unset
    assert not {"fps", "diffusion_cadence"} & set(absent.config)


def test_only_frame_and_prompt():
    imported = read_parseq(document([{"deforum_prompt": "x"}] * 3), HERE)
    assert set(imported.config) == {"animation_prompts", "prompt_weighting", "max_frames"}
    assert len(table(imported)) == 3


def test_3d_motion_selects_3d_standalone_only():
    frames = [{"rotation_3d_y": 0, "rotation_3d_y_delta": 0, "translation_z": 0, "translation_z_delta": 0},
              {"rotation_3d_y": 2, "rotation_3d_y_delta": 2, "translation_z": 0, "translation_z_delta": 0}]
    imported = read_parseq(document(frames), HERE)
    assert imported.config["animation_mode"] == "3D"
    assert "animation_mode" not in read_parseq(document(frames), HERE, standalone=False).config
    flat = [{"translation_z": 0, "translation_z_delta": 0}] * 2
    assert "animation_mode" not in read_parseq(document(flat), HERE).config


def test_fields_without_a_counterpart_are_grouped_by_feature():
    frame = {"cn_1_weight": 1, "hybrid_comp_alpha": 0.5, "guided_blendFactorMax": 0.3, "clipskip": 2,
             "noise_multiplier": 1.05, "cadence_flow_factor": 1, "prompt_weight_1": 1, "my_custom": 3,
             "my_custom_delta": 3}
    imported = read_parseq(document([frame, {**frame, "late_field": 1}]), HERE)
    u = imported.unsupported
    assert u["ControlNet"] == ["cn_1_weight"] and u["hybrid video"] == ["hybrid_comp_alpha"]
    assert u["looper"] == ["guided_blendFactorMax"] and u["CLIP skip"] == ["clipskip"]
    assert u["noise multiplier"] == ["noise_multiplier"] and u["optical flow"] == ["cadence_flow_factor"]
    assert "prompt_weight_1" in u[EDITOR_DATA]
    assert sorted(u["Parseq custom fields (no Deforum schedule of that name)"]) == ["my_custom", "my_custom_delta"]
    assert any("late_field" in key for keys in u.values() for key in keys)
    assert imported.config == {"max_frames": 2}


def test_seed_schedule_truncates_like_the_webui():
    frames = [{"seed": s} for s in (10, 10.5, 11.9, -1)]
    imported = read_parseq(document(frames), HERE)
    assert imported.config["seed_behavior"] == "schedule"
    seeds = table(imported, diffusion_cadence=1)["seed_schedule"].tolist()
    assert seeds[:3] == [10, 10, 11] and 0 <= seeds[3] < 2**32  # negative: random, as -1 in the webui


# --------------------------------------------------------------------------------------------
# parseq_manifest in a webui settings file and the merge


def test_manifest_inline_path_and_flags(tmp_path):
    doc = document([{"angle": 0, "angle_delta": 0}, {"angle": 5, "angle_delta": 5}, {"angle": 5, "angle_delta": 0}])
    settings = tmp_path / "settings.txt"
    inline = read_parseq_manifest({"parseq_manifest": json.dumps(doc, indent=1)}, settings)
    assert inline.config["angle"] == "0:(0), 1:(5), 2:(0)"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.json").write_text(json.dumps(doc))
    by_path = read_parseq_manifest({"parseq_manifest": " sub/p.json ", "parseq_use_deltas": "False",
                                    "parseq_non_schedule_overrides": False}, settings)
    assert by_path.config == {"angle": "0:(0), 1:(5)"}
    for empty in ({}, {"parseq_manifest": None}, {"parseq_manifest": "  "}):
        assert read_parseq_manifest(empty, settings) is None


@pytest.mark.parametrize("manifest, words", [
    ("https://sd-parseq.web.app/api/xyz", ["parseq_manifest", "https://sd-parseq.web.app/api/xyz", "offline"]),
    ("C:\\Users\\me\\parseq.json", ["parseq_manifest", "C:\\Users\\me\\parseq.json", "does not exist"]),
    ('{"rendered_frames": [{"frame": 0}\n,]}', ["parseq_manifest", "line 2, column 2"]),
    ('{"rendered_frames": [{"frame": 1}]}', ["parseq_manifest", "rendered_frames[0].frame"]),
    (42, ["parseq_manifest", "JSON text or a path"]),
])
def test_manifest_errors(tmp_path, manifest, words):
    with pytest.raises(ConfigError) as error:
        read_parseq_manifest({"parseq_manifest": manifest}, tmp_path / "settings.txt")
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_merge_parseq_overrides_the_webui_mapping():
    webui = Imported(config={"angle": "0:(3)", "zoom": "0:(1.1)", "animation_prompts": {0: "webui"},
                             "neg_prompts": "blurry", "max_frames": 100}, source="webui", used=["zoom"])
    manifest = json.dumps(document([{"angle_delta": 1, "deforum_prompt": "p"}]))
    parseq = read_parseq_manifest({"parseq_manifest": manifest}, Path("s.txt"))
    merged = merge_webui_parseq(webui, parseq)
    assert merged.config["angle"] == "0:(1)" and merged.config["zoom"] == "0:(1.1)"
    assert merged.config["animation_prompts"] == {0: "p"} and "neg_prompts" not in merged.config
    assert merged.config["max_frames"] == 1
    assert merged.source == "webui + parseq"
    assert any(line.startswith("neg_prompts:") for line in merged.differs)
    assert any("angle, animation_prompts, max_frames" in line for line in merged.mapped)


# --------------------------------------------------------------------------------------------
# malformed documents


@pytest.mark.parametrize("doc, words", [
    ({"meta": {}}, ["rendered_frames", "missing"]),
    ({"rendered_frames": []}, ["rendered_frames", "non-empty"]),
    ({"rendered_frames": {"0": {}}}, ["rendered_frames", "list"]),
    ({"rendered_frames": [{"frame": 0}, 3]}, ["rendered_frames[1]"]),
    ({"rendered_frames": [{"frame": "0"}]}, ["rendered_frames[0].frame"]),
    ({"rendered_frames": [{"frame": 0}, {"frame": 2}]}, ["rendered_frames[1].frame", "gap: frame 1 is missing"]),
    ({"rendered_frames": [{"frame": 0}, {"frame": 0}]}, ["rendered_frames[1].frame", "duplicated"]),
    ({"rendered_frames": [{"frame": 1}, {"frame": 0}]}, ["rendered_frames[0].frame", "out of order"]),
    (document([{"angle_delta": 0}, {"angle_delta": "5"}]), ["rendered_frames[1].angle_delta", "frame 1", "number"]),
    (document([{"noise": 0.1}, {"noise": None}]), ["rendered_frames[1].noise", "frame 1"]),
    (document([{"scale": 7}, {"scale": True}]), ["rendered_frames[1].scale"]),
    (document([{"scale": 7}, {"scale": float("nan")}]), ["rendered_frames[1].scale", "finite"]),
    (document([{"strength": 0.5}, {}]), ["rendered_frames[1].strength", "missing", "frame 1"]),
    (document([{"deforum_prompt": "a"}, {"deforum_prompt": 3}]), ["rendered_frames[1].deforum_prompt"]),
    (document([{}], options=[]), ["options", "object"]),
    (document([{}], options={"cadence": 1.5}), ["options.cadence", "whole"]),
    (document([{}], options={"output_fps": "60"}), ["options.output_fps"]),
    ([1, 2], ["Parseq document", "object"]),
])
def test_malformed_documents_are_one_line_errors(doc, words):
    with pytest.raises(ConfigError) as error:
        read_parseq(doc, HERE)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    yield path


def _replace(doc, path, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def test_fuzz_truncated_and_type_changed_variants_give_one_line_errors():
    rng = random.Random(15)
    doc = example()
    text = json.dumps(doc)
    replacements = [None, "x", [], {}, True, -1, 0, 1.5, 1e308, [1], {"frame": 0}]
    variants = [_replace(doc, path, rng.choice(replacements)) for path in _leaves(doc)]
    variants += [_replace(doc, ("rendered_frames",), doc["rendered_frames"][:k]) for k in range(0, 4)]
    variants += [_replace(doc, ("rendered_frames", rng.randrange(11)), {"frame": rng.randrange(11)})
                 for _ in range(20)]
    checked = 0
    for i, variant in enumerate(variants):
        try:
            imported = read_parseq(variant, HERE)
            if i % 7 == 0:  # a sample also through load_config and the schedule table
                checked += 1
                table(imported)
        except ConfigError as error:
            assert "\n" not in str(error) and str(error).strip(), repr(error)
    assert checked
    for cut in sorted(rng.sample(range(len(text)), 40)):
        with pytest.raises(ConfigError) as error:
            read_parseq_manifest({"parseq_manifest": text[:cut] or "{"}, Path("s.txt"))
        assert "\n" not in str(error.value)


def test_schedule_values_match_numpy_for_every_frame_of_the_example():
    doc = example()
    rows = table(read_parseq(doc, EXAMPLE))
    expected = np.array([f["angle_delta"] for f in doc["rendered_frames"]])
    assert np.array_equal(rows["angle"].to_numpy(), expected)
