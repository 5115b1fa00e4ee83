"""Which depth model a 3D render uses, decided when the config is read (deforum_steps.depth_models): auto picks
the best model whose weights are here, else the embedded one, and says so once; a named model whose weights are
missing, or a webui name nothing here serves, is one line before anything runs."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import REPO, output

from deforum_steps import depth_models
from deforum_steps.config import ConfigError, load_config
from deforum_steps.settings_import import read_settings

SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache; `add(name, weights=True)` puts a catalogue model's files in it."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def add(name, weights=True):
        spec = depth_models.CATALOGUE[name]
        repo = cache / f"models--{spec.hub_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        (snapshot / "config.json").write_text(json.dumps({"model_type": spec.model_type}))
        if weights:
            (snapshot / "model.safetensors").write_bytes(b"weights")
        return snapshot

    add.path = cache
    return add


def config_3d(**overrides):
    return load_config({"animation_mode": "3D", **overrides}, SCHEMA)


def test_default_is_auto_and_picks_the_embedded_model_on_a_fresh_machine(hf_cache, capsys):
    cfg = config_3d()
    assert cfg["depth_algorithm"] == "auto"
    chosen = depth_models.resolve(cfg)
    assert (chosen.name, chosen.source) == ("embedded", str(depth_models.EMBEDDED_DIR))
    assert cfg["depth_algorithm"] == "embedded"  # in settings.yaml and depth-predicting jobs' params
    assert chosen.line == ("depth model: embedded, the embedded depth model (models/depth) (auto: no other depth "
                           "model's weights are here; README, 3D depth, says which to fetch)")


def test_auto_picks_the_best_model_present_and_changes_when_better_weights_appear(hf_cache, capsys):
    hf_cache("midas-3-hybrid")
    hf_cache("depth-anything-v2-large", weights=False)  # a config without weights is not a model
    cfg = config_3d()
    assert depth_models.resolve(cfg).name == cfg["depth_algorithm"] == "midas-3-hybrid"
    snapshot = hf_cache("depth-anything-v2-small")
    cfg = config_3d()
    chosen = depth_models.resolve(cfg)
    assert (chosen.name, chosen.source) == ("depth-anything-v2-small", str(snapshot))
    assert chosen.line == (
        "depth model: depth-anything-v2-small, Depth-Anything v2 Small (auto: the best depth model in the Hugging "
        "Face cache, depth-anything/Depth-Anything-V2-Small-hf)")


def test_only_3d_with_depth_warping_resolves_anything(hf_cache, capsys):
    for cfg in (load_config({"animation_mode": "2D", "depth_algorithm": "midas-3-large"}, SCHEMA),
                config_3d(use_depth_warping=False, depth_algorithm="midas-3-large")):
        assert depth_models.resolve(cfg) is None and cfg["depth_algorithm"] == "midas-3-large"
    assert capsys.readouterr().err == ""


def test_a_named_model_whose_weights_are_missing_is_one_line_saying_what_to_fetch(hf_cache, tmp_path):
    with pytest.raises(ConfigError) as e:
        depth_models.resolve(config_3d(depth_algorithm="midas-3-large"))
    assert str(e.value) == ("depth_algorithm: midas-3-large needs Intel/dpt-large, which is not in the local "
                            "Hugging Face cache; fetch it on a connected machine (hf download Intel/dpt-large), set "
                            "depth_model_path to a folder holding it, or use depth_algorithm: auto")
    hf_cache("zoedepth-nyu-kitti", weights=False)
    with pytest.raises(ConfigError, match="^depth_algorithm: zoedepth-nyu-kitti needs Intel/zoedepth-nyu-kitti"):
        depth_models.resolve(config_3d(depth_algorithm="zoedepth-nyu-kitti"))
    with pytest.raises(ConfigError, match=r"^depth_model_path: no Depth-Anything v1 Large at .*nothing here"):
        depth_models.resolve(config_3d(depth_algorithm="depth-anything-large",
                                       depth_model_path=str(tmp_path / "nothing here")))
    with pytest.raises(ConfigError, match="^depth_model_path: .* holds no transformers depth model"):
        depth_models.resolve(config_3d(depth_model_path=str(tmp_path)))  # auto reads the folder's model


def test_embedded_weights_are_checksummed(tmp_path):
    assert depth_models.embedded_folder() == depth_models.EMBEDDED_DIR
    copy = shutil.copytree(depth_models.EMBEDDED_DIR, tmp_path / "depth")
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ConfigError, match="model.safetensors does not match .*SHA256SUMS; restore models/depth"):
        depth_models.embedded_folder(copy)
    weights.unlink()
    with pytest.raises(ConfigError, match="^depth_algorithm: the embedded depth model is missing"):
        depth_models.embedded_folder(copy)


def test_webui_names():
    assert {name: depth_models.webui_name(name) for name in (
        "Midas-3-Hybrid", "Midas-3.1-BeitLarge", "Zoe", "Zoe+AdaBins (old)", "Midas+AdaBins (old)",
        "Depth-Anything-V2-Small")} == {
        "Midas-3-Hybrid": "midas-3-hybrid", "Midas-3.1-BeitLarge": "midas-3.1-beit-large",
        "Zoe": "zoedepth-nyu-kitti", "Zoe+AdaBins (old)": "zoedepth-nyu-kitti",
        "Midas+AdaBins (old)": "midas-3-large", "Depth-Anything-V2-Small": "depth-anything-v2-small"}
    for name, why in (("Leres", "LeReS"), ("AdaBins", "AdaBins")):
        with pytest.raises(ConfigError, match=rf"^depth_algorithm: '{name}' is not available here \({why} has no "
                                              r"transformers port\); use auto"):
            depth_models.webui_name(name)


@pytest.mark.parametrize("algorithm, mode, expected", [
    ("Zoe", "3D", "zoedepth-nyu-kitti"), ("Midas-3.1-BeitLarge", "3D", "midas-3.1-beit-large"),
    ("Leres", "2D", "auto"), ("Leres", "3D", ConfigError)])
def test_webui_settings_file_names_are_mapped_or_refused(tmp_path, algorithm, mode, expected):
    settings = tmp_path / "deforum_settings.txt"
    settings.write_text(json.dumps({"animation_mode": mode, "depth_algorithm": algorithm, "use_depth_warping": True,
                                    "cfg_scale_schedule": "0: (7)", "midas_weight": 0.2}))
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=f"^depth_algorithm: '{algorithm}' is not available here"):
            read_settings(settings)
    else:
        assert read_settings(settings).config["depth_algorithm"] == expected


def test_config_time_module_is_torch_free():
    code = "import sys, deforum_steps.depth_models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_3d_from_the_default_config_plans_with_the_embedded_model_and_a_missing_one_stops_first(tmp_path):
    """The README's command with animation_mode 3D on a machine without any depth weights: one line says which
    model; a named model that is not here stops at config time, nothing written."""
    env_cache = tmp_path / "hf-cache"
    env_cache.mkdir()
    config = yaml.safe_load((REPO / "config" / "render.yaml").read_text())
    (tmp_path / "render.yaml").write_text(yaml.safe_dump({**config, "animation_mode": "3D"}))
    cmd = [str(REPO / ".venv" / "bin" / "snakemake"), "-s", str(REPO / "Snakefile"), "-n", "--configfile",
           "render.yaml"]
    env = {"HF_HUB_CACHE": str(env_cache), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, output(proc)[-3000:]
    assert [line for line in output(proc).splitlines() if line.startswith("depth model:")] == [
        "depth model: embedded, the embedded depth model (models/depth) (auto: no other depth model's weights are "
        "here; README, 3D depth, says which to fetch)"]
    proc = subprocess.run([*cmd, "--config", "depth_algorithm=depth-anything-v2-base"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "config error: depth_algorithm: depth-anything-v2-base needs depth-anything/Depth-Anything-V2-Base-hf, "
        "which is not in the local Hugging Face cache")
    assert not (tmp_path / "output").exists()


def test_the_choice_is_a_depth_job_setting(hf_cache):
    """The resolved name is what settings.yaml and the params of the jobs that predict depth hold (common.smk picks
    DEPTH_SETTINGS from the resolved config): other weights appearing change it, and so rerun depth."""
    from deforum_steps.dependencies import DEPTH_SETTINGS

    cfg = config_3d()
    depth_models.resolve(cfg)
    hf_cache("midas-3-large")
    later = config_3d()
    depth_models.resolve(later)
    assert "depth_algorithm" in DEPTH_SETTINGS
    assert (cfg["depth_algorithm"], later["depth_algorithm"]) == ("embedded", "midas-3-large")
