"""Batches (`--config batch=renders/`): many render configs in one invocation, each rendered exactly as it would be
alone, into the folder named after its file; --config pins apply to every render."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import SMALL_CONFIG, last_line, output, run_snakemake

from deforum_steps import batch, io
from deforum_steps.config import ConfigError, lock_output

SHARED_EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "deforum-examples"
# Applied to every render of the batch, the settings file's too (its own is 512 px, 5 frames).
PINS = ["width=64", "height=64", "max_frames=3", "model=builtin:tiny"]
LAKE = {k: v for k, v in SMALL_CONFIG.items() if k not in ("batch_name", "max_frames", "W", "H")}
SEA = {**LAKE, "animation_mode": "Interpolation", "interpolate_x_frames": 1,
       "animation_prompts": {0: "a red apple", 1: "a yellow banana"}}


def write_renders(workdir: Path) -> None:
    renders = workdir / "renders"
    renders.mkdir()
    (renders / "lake.yaml").write_text(yaml.safe_dump(LAKE))
    (renders / "sea.yml").write_text(yaml.safe_dump(SEA))
    shutil.copy(SHARED_EXAMPLES / "webui_simple_settings.txt", renders / "webui.txt")
    (renders / "notes.md").write_text("not a render")


def run_batch(workdir: Path, *args: str, spec: str = "renders", **kwargs):
    return run_snakemake(workdir, *args, "--config", f"batch={spec}", *PINS, configfile=None, **kwargs)


def frames(folder: Path) -> list[np.ndarray]:
    return [io.read_image(p) for p in sorted((folder / "frames").glob("*.png"))]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("batch")
    write_renders(workdir)
    proc = run_batch(workdir, "--cores", "2", check=True)
    return workdir, output(proc)


def copy_of(rendered, tmp_path) -> Path:
    shutil.copytree(rendered[0], tmp_path / "w")
    return tmp_path / "w"


def test_every_render_goes_to_the_folder_named_after_its_file_with_the_pins_applied(rendered):
    workdir, text = rendered
    assert sorted(p.name for p in (workdir / "output").iterdir()) == ["lake", "sea", "webui"]
    for name in ("lake", "sea", "webui"):
        out = workdir / "output" / name
        settings = yaml.safe_load((out / "settings.yaml").read_text())
        assert (settings["batch_name"], settings["W"], settings["H"], settings["model"]) == (name, 64, 64,
                                                                                             "builtin:tiny")
        assert [p.name for p in sorted((out / "frames").glob("*.png"))] == ["00000.png", "00001.png", "00002.png"]
        assert (out / "video.mp4").stat().st_size > 0
        # each render's files are recorded in its own records, none in another's
        records = (out / ".checksums").read_text()
        assert " frames/00002.png" in records and "output/" not in records
        assert f"{name}: frames 3/3" in text  # progress per render
    webui = yaml.safe_load((workdir / "output/webui/settings.yaml").read_text())
    assert (webui["steps"], webui["sampler"]) == (1, "euler_ancestral")  # the settings file's own values


def test_a_batch_render_is_bit_identical_to_the_same_render_alone(rendered, tmp_path):
    (tmp_path / "lake.yaml").write_text(yaml.safe_dump({**LAKE, "batch_name": "lake"}))
    run_snakemake(tmp_path, "--config", *PINS, configfile="lake.yaml", check=True)
    alone, batched = frames(tmp_path / "output/lake"), frames(rendered[0] / "output/lake")
    assert len(alone) == 3 and all(np.array_equal(a, b) for a, b in zip(alone, batched))


def test_an_edit_in_one_render_reruns_that_render_from_the_edited_frame_only(rendered, tmp_path):
    workdir = copy_of(rendered, tmp_path)
    unchanged = output(run_batch(workdir, "-n"))
    assert "Nothing to be done" in unchanged, unchanged[-3000:]
    (workdir / "renders/lake.yaml").write_text(yaml.safe_dump(
        {**LAKE, "animation_prompts": {**LAKE["animation_prompts"], 2: "a green tree"}}))
    text = output(run_batch(workdir, "-n"))
    plan = text.split("plan:\n", 1)[1].split("  nothing else", 1)[0] if "plan:\n" in text else text[-3000:]
    assert plan.split("\n")[:-1] == [
        "  lake: schedules  animation_prompts changed",
        "  lake: frame      frame 2: prompt changed",
        "  lake: video      made from files that change",
    ]


def test_a_render_that_another_run_holds_stops_the_batch_before_any_job(rendered, tmp_path):
    workdir = copy_of(rendered, tmp_path)
    (workdir / "output/sea/frames/00001.png").unlink()
    held = lock_output({**SMALL_CONFIG, "output_path": str(workdir / "output"), "batch_name": "sea",
                        "resume_from_timestring": False})
    try:
        proc = run_batch(workdir)
    finally:
        held.close()
    assert proc.returncode == 1
    assert "output/sea is being rendered by another run" in last_line(proc)
    assert not (workdir / "output/sea/frames/00001.png").exists()


def test_a_mistake_in_one_file_is_one_line_naming_it_and_nothing_is_written(tmp_path):
    write_renders(tmp_path)
    (tmp_path / "renders/bad.yaml").write_text(yaml.safe_dump({**LAKE, "zoom": "0:(1.0"}))
    proc = run_batch(tmp_path)
    assert proc.returncode == 1
    assert last_line(proc) == "config error: renders/bad.yaml: zoom: unbalanced '(' (missing ')') in '0:(1.0'"
    assert not (tmp_path / "output").exists()


# ---- unit level ----------------------------------------------------------------------------------------------


def test_batch_names_a_folder_a_file_or_a_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_renders(tmp_path)
    names = ["lake.yaml", "sea.yml", "webui.txt"]  # sorted; notes.md is not a render
    assert [p.name for p in batch.render_files("renders")] == names
    assert [p.name for p in batch.render_files("renders/sea.yml,renders/lake.yaml")] == ["sea.yml", "lake.yaml"]
    assert [p.name for p in batch.render_files(["renders"])] == names
    with pytest.raises(ConfigError, match="batch: renders/nope.yaml does not exist"):
        batch.render_files("renders/nope.yaml")
    with pytest.raises(ConfigError, match="neither a render config"):
        batch.render_files("renders/notes.md")


def test_two_files_of_one_name_would_share_a_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="would both render into the folder 'x'"):
        batch.module_names([tmp_path / "x.yaml", tmp_path / "a" / "x.txt"])
    assert batch.module_names([Path("my-render.yaml"), Path("2.yaml"), Path("my_render.yml")]) == [
        "my_render", "render_2", "my_render_"]


def test_pins_apply_to_each_render_but_not_batch_name(tmp_path):
    (tmp_path / "lake.yaml").write_text(yaml.safe_dump({**LAKE, "W": 128, "batch_name": "other"}))
    raw = batch.render_config(tmp_path / "lake.yaml", {"batch": "x", "width": 64})
    assert (raw["W"], raw["batch_name"], "batch" in raw) == (64, "lake", False)
    with pytest.raises(ConfigError, match="^batch_name: every render of a batch goes to the folder named after"):
        batch.render_config(tmp_path / "lake.yaml", {"batch_name": "x"})


def test_renders_side_by_side_share_the_cores():
    try:
        batch.set_renders_in_batch(8)
        assert [batch.cores_per_render(c) for c in (1, 2, 8, 16)] == [1, 1, 1, 2]
        batch.set_renders_in_batch(2)
        assert [batch.cores_per_render(c) for c in (1, 2, 8)] == [1, 1, 4]
    finally:
        batch.set_renders_in_batch(1)
    assert batch.cores_per_render(8) == 8
