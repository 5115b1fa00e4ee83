"""Settings import (issue 15): every format recognised and mapped, nothing dropped silently, one-line errors."""
from __future__ import annotations

import functools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from deforum_steps import config
from deforum_steps.config import ConfigError, load_config
from deforum_steps.settings_import import Imported, read_settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "config" / "schema.yaml"
EXAMPLES = ROOT.parent / "shared" / "deforum-examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.txt"))


def write(tmp_path: Path, doc, name: str = "settings.txt") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=4))
    return path


def imported(tmp_path: Path, doc, name: str = "settings.txt") -> Imported:
    return read_settings(write(tmp_path, doc, name))


def mapped(imp: Imported) -> dict[str, str]:
    """{source key: "-> our_key: how"} of the mapped lines."""
    return {line.split(" -> ")[0]: line.split(" -> ", 1)[1] for line in imp.mapped}


def accounted(imp: Imported) -> Counter:
    """How often each source key appears in used, mapped and unsupported. A read manifest is used once; the
    lines and keys of its Parseq document ("parseq_manifest -> ...", "parseq_manifest.key") are left out."""
    parseq = ("(absent)", "parseq_manifest -> ") if "parseq_manifest" in imp.used else ("(absent)",)
    keys = [k for k in imp.used if not k.startswith("parseq_manifest.")]
    keys += [line.split(" -> ")[0] for line in imp.mapped if not line.startswith(parseq)]
    keys += [k for group in imp.unsupported.values() for k in group if not k.startswith("parseq_manifest.")]
    return Counter(keys)


def assert_every_key_once(imp: Imported, doc: dict) -> None:
    counts = accounted(imp)
    assert set(counts) == set(doc), f"missing {set(doc) - set(counts)}, extra {set(counts) - set(doc)}"
    assert [k for k, n in counts.items() if n != 1] == []


def loads(imp: Imported) -> dict:
    return load_config(imp.config, SCHEMA)


NOTEBOOK_V05 = {
    "W": 512, "H": 448, "seed": 42, "sampler": "dpm2_ancestral", "steps": 30, "scale": 9, "ddim_eta": 0.0,
    "dynamic_threshold": None, "static_threshold": None, "save_samples": True, "save_settings": True,
    "display_samples": True, "prompt_weighting": False, "normalize_prompt_weights": True,
    "log_weighted_subprompts": False, "n_batch": 1, "batch_name": "StableFun", "filename_format": "{timestring}.png",
    "seed_behavior": "iter", "make_grid": False, "grid_rows": 2, "outdir": "/content/drive/MyDrive/AI/out",
    "use_init": False, "strength": 0.0, "strength_0_no_init": True, "init_image": "https://x.org/a.png",
    "use_mask": False, "use_alpha_as_mask": False, "mask_file": "C:\\Users\\me\\mask.png", "invert_mask": False,
    "mask_brightness_adjust": 1.0, "mask_contrast_adjust": 1.0, "n_samples": 1, "precision": "autocast", "C": 4,
    "f": 8, "prompt": "", "timestring": "20221010101010", "init_latent": None, "init_sample": None, "init_c": None,
    "animation_mode": "3D", "max_frames": 100, "border": "wrap", "angle": "0:(0)", "zoom": "0:(1.02)",
    "translation_x": "0:(0)", "translation_y": "0:(0)", "translation_z": "0:(5)", "rotation_3d_x": "0:(0)",
    "rotation_3d_y": "0:(0)", "rotation_3d_z": "0:(0)", "flip_2d_perspective": False,
    "perspective_flip_theta": "0:(0)", "perspective_flip_phi": "0:(t%15)", "perspective_flip_gamma": "0:(0)",
    "perspective_flip_fv": "0:(53)", "noise_schedule": "0: (0.02)", "strength_schedule": "0: (0.65)",
    "contrast_schedule": "0: (1.0)", "color_coherence": "Match Frame 0 HSV", "diffusion_cadence": "2",
    "use_depth_warping": True, "midas_weight": 0.3, "near_plane": 200, "far_plane": 10000, "fov": 40,
    "padding_mode": "border", "sampling_mode": "bicubic", "save_depth_maps": False,
    "video_init_path": "/content/video_in.mp4", "extract_nth_frame": 1, "overwrite_extracted_frames": True,
    "use_mask_video": False, "video_mask_path": "/content/video_in.mp4", "interpolate_key_frames": False,
    "interpolate_x_frames": 4, "resume_from_timestring": False, "resume_timestring": "20220829210106",
    "prompts": {"0": "a beautiful apple", "50": "a beautiful banana"},
}


def test_notebook_v05(tmp_path):
    imp = imported(tmp_path, NOTEBOOK_V05)
    assert imp.source == "notebook v0.5"
    cfg = imp.config
    assert cfg["animation_prompts"] == {"0": "a beautiful apple", "50": "a beautiful banana"}
    assert (cfg["fov_schedule"], cfg["near_schedule"], cfg["far_schedule"]) == ("0:(40)", "0:(200)", "0:(10000)")
    assert cfg["scale"] == 9 and cfg["diffusion_cadence"] == 2 and cfg["sampler"] == "dpm2_ancestral"
    assert cfg["depth_algorithm"] == "midas-3-large" and cfg["midas_weight"] == 0.3
    assert cfg["use_video_mask"] is False and cfg["resume_timestring"] == ""
    assert {"prompts", "fov", "diffusion_cadence", "use_mask_video"} <= set(mapped(imp))
    assert set(imp.unsupported["notebook-only"]) >= {"outdir", "timestring", "C", "f", "precision", "n_samples"}
    assert any(line.startswith("midas_weight: 0.3: AdaBins") for line in imp.differs)
    # unused paths that are not here are kept, with a note
    assert cfg["init_image"] == "https://x.org/a.png" and "not read unless use_init" in mapped(imp)["init_image"]
    assert "Windows path" in mapped(imp)["mask_file"] and "Colab" in mapped(imp)["video_init_path"]
    assert_every_key_once(imp, NOTEBOOK_V05)
    assert loads(imp)["fov_schedule"] == "0:(40)"


def test_notebook_still_run_inverted_prompts(tmp_path):
    doc = {k: v for k, v in NOTEBOOK_V05.items() if k in ("W", "H", "seed", "sampler", "steps", "scale", "n_batch")}
    doc["prompts"] = {"a red apple": "00001", "a green pear": "00000"}
    imp = imported(tmp_path, doc)
    assert imp.config["prompts"] == ["a green pear", "a red apple"]
    assert imp.config["animation_mode"] == "None" and "animation_prompts" not in imp.config
    assert "still run" in mapped(imp)["prompts"]
    assert_every_key_once(imp, doc)
    assert loads(imp)["prompts"] == ["a green pear", "a red apple"]


def test_notebook_v06_gradient_and_hybrid_video(tmp_path):
    doc = {**NOTEBOOK_V05, "mean_scale": 0, "clip_scale": 2, "gradient_wrt": "x0_pred", "sampler": "dpm_fast",
           "seed_iter_N": 1, "bit_depth_output": 16, "kernel_schedule": "0: (5)", "hybrid_video_motion": "Optical Flow",
           "hybrid_video_composite": False, "hybrid_video_flow_method": "DenseRLOF",
           "color_coherence_video_every_N_frames": 1.0}
    imp = imported(tmp_path, doc)
    assert imp.source == "notebook v0.6"
    assert imp.config["sampler"] == "dpmpp_2m"
    assert set(imp.unsupported["hybrid video"]) == {"hybrid_video_motion", "hybrid_video_composite",
                                                    "hybrid_video_flow_method"}
    # gradient conditioning is rendered here: its keys import as they are
    assert "gradient conditioning" not in imp.unsupported
    assert (imp.config["mean_scale"], imp.config["clip_scale"], imp.config["gradient_wrt"]) == (0, 2, "x0_pred")
    differs = "\n".join(imp.differs)
    assert "sampler: 'dpm_fast'" in differs and "clip_scale" not in differs and "bit_depth_output: 16" in differs
    assert "hybrid_video_motion: 'Optical Flow'" in differs and "mean_scale" not in differs
    assert "hybrid_video_composite" not in differs
    assert_every_key_once(imp, doc)
    loads(imp)


def test_notebook_v07_cond_uncond_and_sampler_schedule(tmp_path):
    doc = {k: v for k, v in NOTEBOOK_V05.items() if k not in ("prompts", "prompt_weighting", "normalize_prompt_weights",
                                                              "log_weighted_subprompts", "prompt")}
    doc |= {"cond_prompts": {"0": "a cat", "10": "a dog"}, "uncond_prompts": {"0": "blurry", "10": ""},
            "enable_schedule_samplers": True, "sampler_schedule": "0:('euler'),10:('dpmpp_2s_a'), 20:('klms')",
            "hybrid_motion": "None", "hybrid_composite": False, "add_init_noise": False, "init_noise": 0.01,
            "color_force_grayscale": False}
    imp = imported(tmp_path, doc)
    assert imp.source == "notebook v0.7"
    assert imp.config["animation_prompts"] == {"0": "a cat --neg blurry", "10": "a dog"}
    assert imp.config["sampler_schedule"] == "0:('euler'),10:('dpm2_ancestral'), 20:('klms')"
    assert "'dpmpp_2s_a' -> 'dpm2_ancestral'" in mapped(imp)["sampler_schedule"]
    assert any(line.startswith("sampler_schedule: 'dpmpp_2s_a'") for line in imp.differs)
    assert_every_key_once(imp, doc)
    cfg = loads(imp)
    assert cfg["animation_prompts"][0] == "a cat --neg blurry" and cfg["enable_schedule_samplers"] is True


def test_local_port(tmp_path):
    doc = {"batch_name": "Example", "n_batch": 1, "prompts": [], "width": 512, "height": 512, "seed": -1,
           "sampler": "klms", "steps": 50, "scale": 7, "animation_prompts": {"0": "a", "50": "b"},
           "animation_mode": "2D", "max_frames": 60, "diffusion_cadence": "3", "border": "warp", "fps": 24}
    imp = imported(tmp_path, doc)
    assert imp.source == "local notebook port (v0.5 keys)"
    cfg = imp.config
    assert (cfg["W"], cfg["H"], cfg["diffusion_cadence"], cfg["border"]) == (512, 512, 3, "replicate")
    assert cfg["animation_prompts"] == {"0": "a", "50": "b"} and "prompts" not in cfg
    assert "empty list" in mapped(imp)["prompts"] and "'warp' -> replicate" in mapped(imp)["border"]
    assert_every_key_once(imp, doc)
    loads(imp)


WEBUI_2022 = {
    "W": 512, "H": 512, "restore_faces": False, "tiling": False, "seed": 7, "sampler": 15, "steps": 20,
    "batch_name": "Deforum_{timestring}", "seed_behavior": "iter", "use_init": False, "strength": 0.5,
    "init_image": None, "use_mask": False, "mask_file": "", "fill": 1, "animation_mode": "2D", "max_frames": 30,
    "border": "replicate", "angle": "0:(0)", "zoom": "0:(1.04)", "translation_x": "0:(0)", "translation_y": "0:(0)",
    "flip_2d_perspective": True, "perspective_flip_theta": "0:(0)", "noise_schedule": "0: (0.02)",
    "strength_schedule": "0: (0.65)", "contrast_schedule": "0: (1.0)", "cfg_scale_schedule": "0: (7)",
    "color_coherence": "Match Frame 0 LAB", "diffusion_cadence": 1, "use_zoe_depth": True, "midas_weight": 0.3,
    "fov_schedule": "0: (40)", "hybrid_composite": True, "use_mask_video": False,
    "animation_prompts": "{\"0\": \"a castle\", \"max_f/2\": \"a ruin --neg fog\"}",
    "skip_video_for_run_all": False, "fps": 12, "deforum_git_commit_id": "Unknown",
}


def test_webui_2022_integer_sampler(tmp_path):
    imp = imported(tmp_path, WEBUI_2022)
    assert imp.source == "webui"
    cfg = imp.config
    assert cfg["sampler"] == "dpmpp_2m" and cfg["use_karras_sigmas"] is True
    assert "index 15" in mapped(imp)["sampler"] and "DPM++ 2M Karras" in mapped(imp)["sampler"]
    assert cfg["animation_prompts"] == {"0": "a castle", "max_f/2": "a ruin --neg fog"}
    assert cfg["flip_2d_perspective"] is True and cfg["skip_video"] is False
    assert cfg["batch_name"] == "Deforum" and cfg["init_image"] == "" and cfg["prompt_weighting"] is False
    assert "use_zoe_depth" in mapped(imp) and cfg["depth_algorithm"] == "zoedepth-nyu-kitti"
    assert cfg["midas_weight"] == 0.3  # 'Zoe+AdaBins (old)' blends by midas_weight
    assert any(line.startswith("hybrid_composite: True") for line in imp.differs)
    assert imp.unsupported["mask options"] == ["fill"]
    assert_every_key_once(imp, WEBUI_2022)
    cfg = loads(imp)
    assert cfg["color_coherence"] == "Match Frame 0 LAB" and "max_f/2" in cfg["animation_prompts"]


def test_webui_2022_3d_depth_differs(tmp_path):
    imp = imported(tmp_path, {**WEBUI_2022, "animation_mode": "3D", "use_depth_warping": True})
    differs = "\n".join(imp.differs)
    assert "depth_algorithm" not in differs and "midas_weight: 0.3: AdaBins" in differs  # ZoeDepth is served


WEBUI_2025 = {
    "W": 768, "H": 432, "seed": -1, "sampler": "DPM++ 2M", "scheduler": "Karras", "steps": 25,
    "batch_name": "Deforum_{timestring}", "seed_behavior": "schedule",
    "seed_schedule": "0:(s), 1:(-1), \"max_f-2\":(-1), \"max_f-1\":(s)", "animation_mode": "3D", "max_frames": 120,
    "prompts": {"0": "a forest (glowing:1.2)", "max_f/2": "a lake --neg people"},
    "animation_prompts_positive": "masterpiece,", "animation_prompts_negative": "blurry",
    "enable_perspective_flip": False, "transform_center_x": "0: (0.5)", "transform_center_y": "0: (0.4)",
    "color_coherence": "Video Input", "noise_type": "perlin", "perlin_octaves": 4, "perlin_persistence": 0.5,
    "depth_algorithm": "Depth-Anything-V2-Small", "midas_weight": 0.2, "use_depth_warping": True,
    "video_init_path": "https://deforum.github.io/a1/V1.mp4", "init_images": "{\"0\": \"https://x/a.png\"}",
    "use_looper": True, "parseq_manifest": None, "parseq_use_deltas": True, "cn_1_enabled": True,
    "cn_1_model": "control_v11f1p_sd15_depth", "shake_name": "INVESTIGATION", "freeu_enabled": False,
    "optical_flow_cadence": "DIS Medium", "sd_model_name": "flux1-dev.safetensors", "strenght": 0.4,
}


def test_webui_2025_scheduler_suffixes_and_more(tmp_path):
    imp = imported(tmp_path, WEBUI_2025)
    cfg = imp.config
    assert cfg["sampler"] == "dpmpp_2m" and cfg["use_karras_sigmas"] is True
    assert cfg["animation_prompts"] == {"0": "masterpiece, a forest (glowing:1.2) --neg blurry",
                                        "max_f/2": "masterpiece, a lake --neg people  blurry"}
    assert cfg["color_coherence"] == "Match Frame 0 LAB" and cfg["depth_algorithm"] == "depth-anything-v2-small"
    assert cfg["midas_weight"] == 1.0 and "only for the '(old)'" in mapped(imp)["midas_weight"]
    assert cfg["seed_schedule"] == WEBUI_2025["seed_schedule"] and cfg["transform_center_y"] == "0: (0.4)"
    assert (cfg["noise_type"], cfg["perlin_octaves"]) == ("perlin", 4) and cfg["flip_2d_perspective"] is False
    assert cfg["video_init_path"] == WEBUI_2025["video_init_path"]  # not Video Input mode: kept
    assert imp.unsupported["fork-only"] == ["shake_name", "freeu_enabled"]
    assert imp.unsupported["unknown keys (typos or other tools)"] == ["strenght"]
    assert set(imp.unsupported["guided images (looper)"]) == {"init_images", "use_looper"}
    differs = "\n".join(imp.differs)
    for expected in ("color_coherence: 'Video Input'", "prompts: A1111 prompt syntax", "cn_1_enabled: True",
                     "use_looper: True", "optical_flow_cadence: 'DIS Medium'", "H: 432 is rounded down to 384",
                     "aspect_ratio_schedule:", "model: the source rendered with 'flux1-dev.safetensors'"):
        assert expected in differs
    assert_every_key_once(imp, WEBUI_2025)
    loads(imp)


@pytest.mark.parametrize(("sampler", "scheduler", "ours", "karras", "differs"), [
    ("DPM++ 2M", "Automatic", "dpmpp_2m", True, None),
    ("Euler a", "Automatic", "euler_ancestral", False, None),
    ("Euler", "Exponential", "euler", False, "'Exponential' sigmas"),
    ("DPM++ 2M SDE", "Automatic", "dpmpp_2m", False, "DPM++ 2M SDE (stochastic)"),
    ("DPM++ SDE Karras", None, "dpmpp_2m", True, "DPM++ SDE (stochastic)"),
    ("dpmpp_2m_sde", "karras", "dpmpp_2m", True, "DPM++ 2M SDE"),
    ("Euler a", None, "euler_ancestral", False, None),
    ("UniPC", None, "dpmpp_2m", False, "UniPC"),
    ("Brand New Sampler", None, "euler_ancestral", False, "unknown sampler"),
])
def test_webui_sampler_names(tmp_path, sampler, scheduler, ours, karras, differs):
    doc = {"W": 512, "H": 512, "sampler": sampler, "cfg_scale_schedule": "0:(7)"} | (
        {"scheduler": scheduler} if scheduler else {})
    imp = imported(tmp_path, doc)
    assert imp.config["sampler"] == ours and imp.config.get("use_karras_sigmas", False) is karras
    assert (differs is None) == (not imp.differs)
    if differs:
        assert differs in "\n".join(imp.differs)
    assert_every_key_once(imp, doc)
    loads(imp)


def test_comfyui_sampler_name(tmp_path):
    imp = imported(tmp_path, {"W": 512, "H": 512, "positive_prompts": "", "sampler_name": "euler_ancestral",
                              "scheduler": "normal", "prompts": {"0": "x"}})
    assert imp.config["sampler"] == "euler_ancestral" and imp.config["use_karras_sigmas"] is False


@pytest.mark.parametrize(("algorithm", "ours"), [
    ("Midas-3-Hybrid", "midas-3-hybrid"), ("Midas-3.1-BeitLarge", "midas-3.1-beit-large"),
    ("Zoe", "zoedepth-nyu-kitti"), ("Depth-Anything-V2-Small", "depth-anything-v2-small"),
    ("Midas+AdaBins (old)", "midas-3-large"), ("Leres", None), ("AdaBins", None), ("Something 3000", None),
])
def test_webui_depth_algorithms(tmp_path, algorithm, ours):
    """Mapped to the model it names, or refused in 3D with one line (tests/test_depth_models.py: the wording)."""
    settings = {"W": 512, "H": 512, "animation_mode": "3D", "depth_algorithm": algorithm, "prompts": {"0": "x"}}
    if ours is None:
        with pytest.raises(ConfigError, match=f"^depth_algorithm: .*'{algorithm}'"):
            imported(tmp_path, settings)
        return
    imp = imported(tmp_path, settings)
    assert imp.config["depth_algorithm"] == ours
    assert not any(line.startswith("depth_algorithm:") for line in imp.differs)
    loads(imp)


@pytest.mark.parametrize(("value", "ours"), [("LAB", "Match Frame 0 LAB"), ("Match Frame 0 RGB", "Match Frame 0 RGB"),
                                             ("HSV", "Match Frame 0 HSV"), ("None", "None"), ("Image", "Image")])
def test_color_coherence_spellings(tmp_path, value, ours):
    imp = imported(tmp_path, {"W": 512, "H": 512, "color_coherence": value, "prompts": {"0": "x"},
                              "cfg_scale_schedule": "0:(7)"})
    assert imp.config["color_coherence"] == ours


def test_webui_parseq_manifest_path_and_text(tmp_path):
    shutil.copy(EXAMPLES / "parseq.json", tmp_path / "doc.json")
    base = json.loads((EXAMPLES / "webui_simple_settings.txt").read_text())
    imp = imported(tmp_path, {**base, "parseq_manifest": "doc.json"})
    assert imp.source == "webui + parseq" and imp.config["fps"] == 60 and "parseq_manifest" in imp.used
    assert imp.config["angle"] == read_settings(EXAMPLES / "parseq.json").config["angle"]  # angle_delta
    assert any(line.startswith("parseq_manifest -> ") for line in imp.mapped)
    assert_every_key_once(imp, {**base, "parseq_manifest": "doc.json"})
    loads(imp)
    options = {"parseq_use_deltas": False, "parseq_non_schedule_overrides": False}
    kept = imported(tmp_path, {**base, "parseq_manifest": (EXAMPLES / "parseq.json").read_text(), **options})
    assert kept.config["fps"] == base["fps"] and kept.config["max_frames"] == base["max_frames"]
    angles = [frame["angle"] for frame in json.loads((EXAMPLES / "parseq.json").read_text())["rendered_frames"]]
    assert str(angles[-1]) in kept.config["angle"].split(", ")[-1]  # the absolute values, not the deltas
    assert "parseq_manifest.angle" in kept.used
    assert any(line.startswith("angle: parseq_use_deltas is false") for line in kept.differs)
    assert not any(line.startswith(("parseq_use_deltas", "parseq_non_schedule_overrides")) for line in kept.differs)
    assert_every_key_once(kept, {**base, "parseq_manifest": "", **options})
    with pytest.raises(ConfigError, match=r"^parseq_manifest: https://x\.org/p\.json is a URL"):
        imported(tmp_path, {**base, "parseq_manifest": "https://x.org/p.json"})


def test_parseq_document_goes_to_read_parseq():
    imp = read_settings(EXAMPLES / "parseq.json")
    assert imp.source == "parseq"
    loads(imp)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_files(path):
    imp = read_settings(path)
    assert_every_key_once(imp, json.loads(path.read_text()))
    cfg = loads(imp)
    assert cfg["animation_prompts"] or cfg["prompts"]


def test_example_webui_default_prompts_joined_as_the_webui_does():
    imp = read_settings(EXAMPLES / "webui_default_settings.txt")
    coconut = "  a beautiful coconut --neg photo, realistic  nsfw, nude  nsfw, nude"  # f"{pos} {prompt}  {neg}"
    assert imp.config["animation_prompts"]["60"] == coconut
    assert imp.config["depth_algorithm"] == "midas-3-hybrid" and imp.config["midas_weight"] == 1.0


def test_summary_lists_every_section():
    imp = read_settings(EXAMPLES / "webui_default_settings.txt")
    text = imp.summary()
    assert text.splitlines()[0].startswith(f"imported webui settings: {len(imp.used)} keys used as they are")
    for part in ("used as they are (", "mapped (", "  sampler -> sampler: 'Euler a' -> euler_ancestral",
                 "not supported here, by feature (", "  ControlNet (85): cn_1_overwrite_frames",
                 "  hybrid video (21):", "  soundtrack (2): add_soundtrack, soundtrack_path",
                 "renders differently here than in the source tool (",
                 "  enable_noise_multiplier_scheduling: True in the source"):
        assert part in text, part
    assert all(len(line) <= 240 for line in text.splitlines())


# ---- paths ------------------------------------------------------------------------------------------------
def test_relative_path_resolves_against_the_settings_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "start.png").write_bytes(b"png")
    imp = imported(tmp_path, {**WEBUI_2022, "use_init": True, "init_image": "in\\start.png"})
    assert imp.config["init_image"] == str(tmp_path / "in" / "start.png")
    assert "relative to the settings file" in mapped(imp)["init_image"]


@pytest.mark.parametrize(("key", "value", "switch", "problem"), [
    ("init_image", "C:\\Users\\me\\My Pictures\\start.png", {"use_init": True}, "a Windows path"),
    ("init_image", "/content/drive/MyDrive/start.png", {"use_init": "True"}, "does not exist (a Colab path)"),
    ("mask_file", "https://deforum.github.io/a1/M1.jpg", {"use_mask": True}, "is a URL"),
    ("video_init_path", "input/video.mp4", {"animation_mode": "Video Input"}, "does not exist (looked for"),
    ("video_mask_path", "vm.mp4", {"animation_mode": "Video Input", "video_init_path": str(EXAMPLES /
                                   "example_init_vid.mp4"), "use_mask_video": True}, "does not exist"),
    ("color_coherence_image_path", "ref.png", {"color_coherence": "Image"}, "does not exist"),
])
def test_missing_path_that_the_render_reads_is_one_error(tmp_path, key, value, switch, problem):
    with pytest.raises(ConfigError) as info:
        imported(tmp_path, {**WEBUI_2022, key: value, **switch})
    message = str(info.value)
    assert message.startswith(f"{key}: {value} ") and problem in message and "\n" not in message


# ---- errors -----------------------------------------------------------------------------------------------
def test_malformed_json_names_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "W": 512,\n  "H": 512\n  "seed": 1\n}')
    with pytest.raises(ConfigError,
                       match=r"^.*settings\.txt, line 4, column 3: malformed JSON: Expecting ',' delimiter$"):
        read_settings(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.txt: cannot read the settings file: No such file"):
        read_settings(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="cannot read the settings file: Is a directory"):
        read_settings(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes('{"prompts": {"0": "caf\xe9"}}'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt: not UTF-8 text \(byte 22\)"):
        read_settings(latin1)


def test_bom_crlf_tabs_and_quoted_path_are_read(tmp_path):
    path = tmp_path / "win settings.txt"
    path.write_bytes(b'\xef\xbb\xbf{\r\n\t"W": 512,\r\n\t"H": 512,\r\n\t"prompts": {"0": "x"}, "scale": 7}')
    assert read_settings(f'"{path}"').config["W"] == 512


@pytest.mark.parametrize(("doc", "message"), [
    ([1, 2], "not a Deforum settings file: the JSON is a list, not an object"),
    ({"foo": 1, "bar": 2}, r"not a Deforum settings file \(notebook, webui or Parseq\): none of its keys \(foo, bar\)"),
    ({**WEBUI_2022, "sampler": 40}, r"^sampler: sampler index 40 is not in the webui's sampler list \(0-17\)$"),
    ({**WEBUI_2022, "sampler": [1]}, r"^sampler: \[1\] is not a sampler name or index$"),
    ({**WEBUI_2022, "animation_prompts": "{0: x}"}, "^animation_prompts: not a JSON frame -> prompt mapping"),
    ({**WEBUI_2022, "animation_prompts": {"0": 5}}, "^animation_prompts: the prompt of frame '0' must be text"),
    ({**WEBUI_2022, "negative_prompts": 3}, "^negative_prompts: must be text, got 3$"),
    ({**WEBUI_2022, "parseq_manifest": "{\"rendered_frames\": "},
     "^parseq_manifest: inline JSON, line 1, column 20: malformed JSON"),
    ({**WEBUI_2022, "parseq_manifest": "nothere.json"}, "^parseq_manifest: nothere.json does not exist"),
])
def test_unknown_or_bad_documents(tmp_path, doc, message):
    with pytest.raises(ConfigError, match=message):
        imported(tmp_path, doc)


# ---- fuzz: truncated and type-changed example files give one-line errors only ---------------------------
OTHER_TYPES = (12345, "text", True, None, [1, "a"], {"k": 1}, -0.5, "")


@pytest.fixture
def cached_schema(monkeypatch):
    """load_config reads the schema on every call; the fuzz tests call it hundreds of times."""
    monkeypatch.setattr(config, "load_schema", functools.cache(config.load_schema))


def _one_line_or_ok(path: Path) -> None:
    try:
        imp = read_settings(path)
        load_config(imp.config, SCHEMA)
        imp.summary()
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


@pytest.mark.parametrize("path", [*EXAMPLE_FILES, EXAMPLES / "parseq.json"], ids=lambda p: p.name)
def test_fuzz_truncated(tmp_path, path, capsys):
    text = path.read_text()
    for i in range(20):
        cut = tmp_path / f"cut{i}.txt"
        cut.write_text(text[:len(text) * i // 20])
        with pytest.raises(ConfigError) as info:
            read_settings(cut)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_fuzz_type_changed(tmp_path, path, capsys, cached_schema):
    doc = json.loads(path.read_text())
    for i, key in enumerate(doc):
        for replacement in (OTHER_TYPES[i % len(OTHER_TYPES)], OTHER_TYPES[(i + 3) % len(OTHER_TYPES)]):
            if type(replacement) is type(doc[key]):
                replacement = OTHER_TYPES[(i + 1) % len(OTHER_TYPES)]
            _one_line_or_ok(write(tmp_path, {**doc, key: replacement}))
