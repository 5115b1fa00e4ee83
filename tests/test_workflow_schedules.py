import subprocess
import sys

import pandas as pd
import pytest
import yaml
from helpers import (
    SCHEMA,
    SMALL_CONFIG,
    last_line,
    output,
    planned_jobs,
    rerun_reasons,
    run_snakemake,
    write_config,
)

from deforum_steps import interpolation, schedules
from deforum_steps.config import load_config
from deforum_steps.schedules import build_table

OUT = "output/test"
# Runs target the schedules rule (not rule all) so that the rendering stages stay out of these tests.
TARGET = "schedules"


@pytest.fixture
def small_cfg():
    return load_config({**SMALL_CONFIG, "zoom": "0:(1.0), 4:(1.2)", "seed_behavior": "iter"}, SCHEMA)


def test_schedule_csv_has_one_row_per_frame_and_a_column_per_parameter(tmp_path, small_cfg):
    schedules.write_csv(build_table(small_cfg), tmp_path / "s.csv")
    csv = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert list(csv["frame"]) == [0, 1, 2, 3, 4, 5]
    # columns are named after the config key that drives them
    assert {"zoom", "angle", "noise_schedule", "strength_schedule", "contrast_schedule", "cfg_scale_schedule",
            "steps_schedule", "sampler_schedule", "seed_schedule", "fov_schedule", "kernel_schedule", "prompt",
            "negative_prompt", "denoise_steps"} <= set(csv)
    assert not {"noise", "strength", "contrast", "cfg_scale", "steps", "sampler", "seed", "fov", "kernel"} & set(csv)
    assert list(csv["zoom"]) == pytest.approx([1.0, 1.05, 1.1, 1.15, 1.2, 1.2])
    assert list(csv["prompt"]) == ["a red apple"] * 3 + ["a yellow banana"] * 3
    assert list(csv["seed_schedule"]) == [42, 43, 44, 45, 46, 47]
    assert list(csv["strength_schedule"]) == pytest.approx([0.65] * 6)
    assert list(csv["steps_schedule"]) == [20] * 6 and list(csv["cfg_scale_schedule"]) == pytest.approx([7.0] * 6)
    assert list(csv["denoise_steps"]) == [20] + [int((1 - 0.65) * 20)] * 5


def test_write_records_writes_csv_plot_and_settings(tmp_path, small_cfg):
    schedules.write_records(small_cfg, csv=tmp_path / "s.csv", png=tmp_path / "s.png",
                            settings=tmp_path / "settings.yaml")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv", index_col="frame", keep_default_na=False),
                                  schedules.record_table(small_cfg, build_table(small_cfg)), check_dtype=False)
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(yaml.safe_load((tmp_path / "settings.yaml").read_text()), SCHEMA) == small_cfg
    schedules.write_records(small_cfg, csv=tmp_path / "t.csv", png=tmp_path / "t.png")  # save_settings: false
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.png", "settings.yaml", "t.csv", "t.png"]


def test_the_csv_has_the_columns_of_the_mode_and_those_the_config_sets(small_cfg):
    columns = list(schedules.record_table(small_cfg, build_table(small_cfg)))
    assert columns == ["angle", "zoom", "translation_x", "translation_y", "transform_center_x", "transform_center_y",
                       "noise_schedule", "strength_schedule", "contrast_schedule", "cfg_scale_schedule",
                       "steps_schedule", "amount_schedule", "sampler_schedule", "prompt", "negative_prompt",
                       "seed_schedule", "denoise_steps"]  # 2D: no 3D keys, no perspective flip, no anti-blur
    cfg = load_config({**SMALL_CONFIG, "fov_schedule": "0:(50)", "flip_2d_perspective": True,
                       "amount_schedule": "0:(0.2)"}, SCHEMA)
    columns = set(schedules.record_table(cfg, build_table(cfg)))
    assert {"fov_schedule", "perspective_flip_theta", "kernel_schedule", "sigma_schedule"} <= columns
    assert "translation_z" not in columns
    cfg = load_config({**SMALL_CONFIG, "animation_mode": "3D"}, SCHEMA)
    columns = set(schedules.record_table(cfg, build_table(cfg)))
    assert {"translation_z", "rotation_3d_y", "fov_schedule", "near_schedule", "far_schedule"} <= columns
    assert not {"angle", "zoom", "transform_center_x"} & columns


def test_interpolation_csv_shows_the_prompt_pair_and_weight_each_frame_renders():
    cfg = load_config({**SMALL_CONFIG, "animation_mode": "Interpolation", "interpolate_x_frames": 2, "max_frames": 99,
                       "animation_prompts": {0: "a red apple", 10: "a yellow banana --neg blurry", 20: "a pear"}},
                      SCHEMA)
    cfg["max_frames"] = interpolation.frame_count(cfg)  # as the Snakefile does: 2 tweens x 2 pairs + 3 keys
    table = schedules.record_table(cfg, build_table(cfg))
    assert len(table) == 7
    assert list(table["prompt"]) == ["a red apple"] * 3 + ["a yellow banana"] * 3 + ["a pear"]
    assert list(table["next_prompt"]) == ["a yellow banana"] * 3 + ["a pear"] * 4
    assert list(table["tween_weight"]) == pytest.approx([0, 1 / 3, 2 / 3, 0, 1 / 3, 2 / 3, 0])
    assert list(table["negative_prompt"]) == [""] * 3 + ["blurry"] * 3 + [""]
    assert not {"strength_schedule", "angle", "zoom"} & set(table)


def test_the_plot_writes_each_prompt_where_it_starts(small_cfg):
    fig = schedules.plot_figure(schedules.record_table(small_cfg, build_table(small_cfg)))
    assert [t.get_text() for t in fig.axes[0].texts] == [" 0: a red apple", " 3: a yellow banana"]
    assert [ax.get_title() for ax in fig.axes[1:] if ax.get_title()] == ["zoom", "seed_schedule", "denoise_steps"]


def test_settings_snapshot_reads_back_as_the_same_config(tmp_path, small_cfg):
    schedules.write_settings(small_cfg, tmp_path / "settings.yaml")
    assert load_config(yaml.safe_load((tmp_path / "settings.yaml").read_text()), SCHEMA) == small_cfg


def test_schedule_plot_is_a_png(tmp_path, small_cfg):
    schedules.plot(build_table(small_cfg), tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedules_rule_end_to_end(tmp_path):
    write_config(tmp_path, seed=-1, zoom="0:(1.0)")
    first = run_snakemake(tmp_path, TARGET, "--config", "max_frames=5", check=True)
    assert planned_jobs(first) == {"schedules": 1}
    out = tmp_path / OUT
    seed = int((out / "resolved_seed.txt").read_text())
    settings = yaml.safe_load((out / "settings.yaml").read_text())
    assert settings["seed"] == seed and settings["max_frames"] == 5
    csv = pd.read_csv(out / "schedules.csv")
    assert len(csv) == 5 and csv["seed_schedule"].iloc[0] == seed
    assert (out / "schedules.png").stat().st_size > 0

    # unchanged config (and the recorded random seed): nothing to do
    assert planned_jobs(run_snakemake(tmp_path, TARGET, "-n", "--config", "max_frames=5", check=True)) == {}

    # an edited schedule reruns the schedules job, for its params
    write_config(tmp_path, seed=-1, zoom="0:(1.0), 2:(1.1)")
    dry = run_snakemake(tmp_path, TARGET, "-n", "--config", "max_frames=5", check=True)
    assert planned_jobs(dry) == {"schedules": 1}
    assert rerun_reasons(dry)["params have changed since last execution"] == {"schedules"}
    run_snakemake(tmp_path, TARGET, "--config", "max_frames=5", check=True)
    assert list(pd.read_csv(out / "schedules.csv")["zoom"]) == pytest.approx([1.0, 1.05, 1.1, 1.1, 1.1])
    assert int((out / "resolved_seed.txt").read_text()) == seed


def test_width_and_height_from_the_command_line(tmp_path):
    """Snakemake refuses `--config W=...`: the aliases width/height set them (as text, coerced and rounded)."""
    no_size = {k: v for k, v in SMALL_CONFIG.items() if k not in ("W", "H")}
    (tmp_path / "render.yaml").write_text(yaml.safe_dump(no_size, sort_keys=False))
    proc = run_snakemake(tmp_path, TARGET, "--config", "width=130", "height=64", "max_frames=3", check=True)
    assert "config warning: W: 130 rounded down to 128 (a multiple of 64)" in output(proc)
    settings = yaml.safe_load((tmp_path / OUT / "settings.yaml").read_text())
    assert (settings["W"], settings["H"], settings["max_frames"]) == (128, 64, 3)


def test_both_spellings_of_a_key_stop_the_workflow(tmp_path):
    write_config(tmp_path, width=128)  # and W: 64
    proc = run_snakemake(tmp_path, TARGET, "-n")
    assert proc.returncode != 0
    assert last_line(proc) == "config error: width: the same setting as W, which is also given; keep one of them"
    assert "Traceback" not in output(proc)


def test_default_target_includes_the_schedule_records(tmp_path):
    write_config(tmp_path)
    assert {"schedules", "all"} <= set(planned_jobs(run_snakemake(tmp_path, "-n", check=True)))


@pytest.mark.parametrize("override, message", [
    ("diffusion_cadence=9", "config error: diffusion_cadence: 9 is greater than the maximum of 8"),
    ("zoom=0:(1), 3:(t**-1)", "config error: zoom: cannot evaluate 't**-1': Integers to negative integer powers "
                              "are not allowed. at frame 3 in '0:(1), 3:(t**-1)'"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, override, message):
    write_config(tmp_path, seed=-1)
    proc = run_snakemake(tmp_path, TARGET, "--config", override)
    assert proc.returncode != 0
    assert last_line(proc) == message
    assert "Traceback" not in output(proc)
    assert not (tmp_path / "output").exists()


def test_second_run_on_a_locked_output_folder_is_refused(tmp_path):
    write_config(tmp_path, save_settings=False)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from deforum_steps.config import lock_output; "
        f"f = lock_output({{'output_path': {str(tmp_path / 'output')!r}, 'batch_name': 'test', "
        "'resume_from_timestring': False, 'resume_timestring': ''}); "
        "print('locked', flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = run_snakemake(tmp_path, TARGET)
        assert refused.returncode != 0
        assert last_line(refused) == (f"error: {OUT} is being rendered by another run (pid {holder.pid}); "
                                      "wait for it to finish or choose another batch_name")
        assert "Traceback" not in output(refused)
        assert not (tmp_path / OUT / "schedules.csv").exists()
        # a dry run takes no lock
        assert planned_jobs(run_snakemake(tmp_path, TARGET, "-n", check=True)) == {"schedules": 1}
    finally:
        holder.kill()  # SIGKILL: the lock must not outlive its holder
        holder.wait()
    run_snakemake(tmp_path, TARGET, check=True)
    assert (tmp_path / OUT / "schedules.csv").exists()
    assert not (tmp_path / OUT / "settings.yaml").exists()  # save_settings: false
