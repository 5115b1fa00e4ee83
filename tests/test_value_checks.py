"""Every value is checked before anything runs: schedules per frame against the schema's x-values ranges (where
the animation mode reads them) and for non-finite values, prompts at every frame, W x H, and the memory a plan
of this many frames needs. Each mistake is one line naming the key, the frame and the value."""
import pytest
from helpers import SCHEMA, SMALL_CONFIG, last_line, one_line_error, run_snakemake, write_config

from deforum_steps import config
from deforum_steps.config import ConfigError, load_config, load_schema
from deforum_steps.schedules import build_table


def table(**overrides):
    return build_table(load_config({**SMALL_CONFIG, **overrides}, SCHEMA))


def error_of(**overrides) -> str:
    return one_line_error(table, **overrides)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"strength_schedule": "0:(2.5)"}, "strength_schedule: must be within 0..1, got 2.5 at frame 0 in '0:(2.5)'"),
    ({"zoom": "0:(1e999)"}, "zoom: must be a finite number, got inf at frame 0 in '0:(1e999)'"),
    # 0/0 at frame 0 is NaN, filled from the first valid value (the references' rule): inf at every frame
    ({"angle": "0:(t/(t-t))"}, "angle: must be a finite number, got inf at frame 0 in '0:(t/(t-t))'"),
    ({"angle": "0:(log(t-5))"}, "angle: must be a finite number, got -inf at frame 0 in '0:(log(t-5))'"),
    ({"animation_mode": "3D", "fov_schedule": "0:(0)"},
     "fov_schedule: must be > -180 and < 180 and != 0, got 0 at frame 0 in '0:(0)'"),
    ({"animation_prompts": {-1: "a red apple"}}, "animation_prompts: no prompt at frame 0 (keys are frames from 0, "
                                                 "a prompt is the text before --neg) in {-1: 'a red apple'}"),
])
def test_the_issues_bad_values_are_one_line_naming_key_frame_and_value(overrides, message):
    assert error_of(**overrides) == message


@pytest.mark.parametrize(("overrides", "message"), [
    ({"zoom": "0:(1), 2:(0)"}, "zoom: must be > 0, got 0 at frame 2 in '0:(1), 2:(0)'"),
    ({"flip_2d_perspective": True, "perspective_flip_fv": "0:(180)"},
     "perspective_flip_fv: must be > -180 and < 180 and != 0, got 180 at frame 0 in '0:(180)'"),
    ({"noise_schedule": "0:(1.5)"}, "noise_schedule: must be within 0..1, got 1.5 at frame 0 in '0:(1.5)'"),
    # 1.0 at frame 2 is in range; 1.25 at frame 3 is the first frame out of it
    ({"strength_schedule": "0:(0.5), 4:(1.5)"},
     "strength_schedule: must be within 0..1, got 1.25 at frame 3 in '0:(0.5), 4:(1.5)'"),
    ({"contrast_schedule": "0:(1), 2:(-1)"}, "contrast_schedule: must be >= 0, got -1 at frame 2 in '0:(1), 2:(-1)'"),
    ({"cfg_scale_schedule": "0:(7), 3:(0)"}, "cfg_scale_schedule: must be > 0, got 0 at frame 3 in '0:(7), 3:(0)'"),
    ({"enable_steps_scheduling": True, "steps_schedule": "0:(0.5)"},
     "steps_schedule: must be >= 1, got 0 at frame 0 in '0:(0.5)'"),  # truncated to whole steps, as the webui
    ({"animation_mode": "3D", "fov_schedule": "0:(-180)"},
     "fov_schedule: must be > -180 and < 180 and != 0, got -180 at frame 0 in '0:(-180)'"),
    ({"animation_mode": "3D", "near_schedule": "0:(0)"}, "near_schedule: must be > 0, got 0 at frame 0 in '0:(0)'"),
    # near ramps 100, 150, 200, 250, 300: far 250 is not beyond it at frame 3
    ({"animation_mode": "3D", "near_schedule": "0:(100), 4:(300)", "far_schedule": "0:(250)"},
     "far_schedule: must be > near_schedule (250), got 250 at frame 3 in '0:(250)'"),
    ({"amount_schedule": "0:(-0.5)"}, "amount_schedule: must be >= 0, got -0.5 at frame 0 in '0:(-0.5)'"),
    # the anti-blur's kernel, sigma and threshold count where amount > 0: from frame 1 of the ramp
    ({"kernel_schedule": "0:(4)", "amount_schedule": "0:(0), 3:(0.6)"},
     "kernel_schedule: must be 0 or an odd number, got 4 at frame 1 in '0:(4)'"),
    ({"sigma_schedule": "0:(0)", "amount_schedule": "0:(0.5)"},
     "sigma_schedule: must be > 0, got 0 at frame 0 in '0:(0)'"),
    ({"threshold_schedule": "0:(-1)", "amount_schedule": "0:(0.5)"},
     "threshold_schedule: must be >= 0, got -1 at frame 0 in '0:(-1)'"),
    # Video Input diffuses every frame at its strength_schedule value
    ({"animation_mode": "Video Input", "strength_schedule": "0:(-0.1)"},
     "strength_schedule: must be within 0..1, got -0.1 at frame 0 in '0:(-0.1)'"),
    ({"animation_mode": "Interpolation", "cfg_scale_schedule": "0:(-2)"},
     "cfg_scale_schedule: must be > 0, got -2 at frame 0 in '0:(-2)'"),
    ({"animation_prompts": {0: "--neg blurry", 3: "a yellow banana"}},
     "animation_prompts: no prompt at frame 0 (keys are frames from 0, a prompt is the text before --neg) in "
     "{0: '--neg blurry', 3: 'a yellow banana'}"),
])
def test_each_range_is_checked_per_frame(overrides, message):
    assert error_of(**overrides) == message


def test_every_schedule_must_be_finite_in_every_mode_even_where_unused():
    assert error_of(fov_schedule="0:(1e999)") == (
        "fov_schedule: must be a finite number, got inf at frame 0 in '0:(1e999)'")
    assert error_of(animation_mode="None", transform_center_x="0:(0), 5:(-1e999)") == (
        "transform_center_x: must be a finite number, got -inf at frame 1 in '0:(0), 5:(-1e999)'")


def test_ranges_apply_only_where_the_mode_reads_the_schedule():
    table(fov_schedule="0:(0)", near_schedule="0:(0)")  # 2D has no camera
    table(animation_mode="3D", zoom="0:(0)", flip_2d_perspective=True, perspective_flip_fv="0:(0)")
    table(perspective_flip_fv="0:(180)")  # 2D without flip_2d_perspective
    table(animation_mode="Interpolation", strength_schedule="0:(2.5)", noise_schedule="0:(-1)")
    table(kernel_schedule="0:(4)", sigma_schedule="0:(0)", threshold_schedule="0:(-1)")  # anti-blur off (amount 0)


def test_edge_values_pass():
    rows = table(strength_schedule="0:(0), 5:(1)", noise_schedule="0:(0), 5:(1)", contrast_schedule="0:(0)",
                 cfg_scale_schedule="0:(1), 5:(0.5)", enable_steps_scheduling=True, steps_schedule="0:(1.9)",
                 kernel_schedule="0:(0), 2:(0), 3:(3.9)", amount_schedule="0:(0.1)", threshold_schedule="0:(0)")
    assert list(rows["steps_schedule"]) == [1] * 6 and list(rows["kernel_schedule"]) == [0, 0, 0, 3, 3, 3]
    table(animation_mode="3D", fov_schedule="0:(-40), 5:(179.9)", near_schedule="0:(0.01)", far_schedule="0:(0.02)")
    table(flip_2d_perspective=True, perspective_flip_fv="0:(-179), 5:(30)", zoom="0:(1e-3)")
    table(animation_prompts={3: "a yellow banana"})  # frames before the first key take its prompt


def test_schema_defaults_satisfy_every_range():
    props = load_schema(SCHEMA)["properties"]
    ranged = [key for key, spec in props.items() if "x-values" in spec]
    assert len(ranged) == 14
    cfg = load_config({"seed": 1, "flip_2d_perspective": True, "amount_schedule": 0.5}, SCHEMA)
    for mode in ("2D", "3D", "Video Input", "Interpolation", "None"):
        build_table({**cfg, "animation_mode": mode})


def test_scalar_keys_reject_infinity_and_nan_and_cfg_scale_must_be_positive():
    with pytest.raises(ConfigError, match=r"^scale: inf is not a finite number$"):
        load_config({"scale": float("inf")}, SCHEMA)
    with pytest.raises(ConfigError, match=r"^mask_contrast_adjust: nan is not a finite number$"):
        load_config({"mask_contrast_adjust": float("nan")}, SCHEMA)
    with pytest.raises(ConfigError, match=r"^zoom: inf is not a finite number$"):
        load_config({"zoom": float("inf")}, SCHEMA)
    with pytest.raises(ConfigError, match=r"^scale: 0 must be greater than 0$"):
        load_config({"scale": 0}, SCHEMA)
    assert load_config({"scale": 1}, SCHEMA)["scale"] == 1  # CFG 1 (no guidance) works (decisions.md)


def test_huge_width_is_an_error_before_any_rounding_warning(capsys):
    with pytest.raises(ConfigError, match=r"^W: 100000 is greater than the maximum of 8192$"):
        load_config({"W": 100000}, SCHEMA)
    with pytest.raises(ConfigError) as info:
        load_config({"W": 8192, "H": 4100}, SCHEMA)
    assert str(info.value) == ("W: W x H = 8192 x 4096 is 33554432 pixels, more than the 16777216 (4096 x 4096) "
                               "a frame may have")
    assert capsys.readouterr().err == ""
    assert load_config({"W": 3840, "H": 2160}, SCHEMA)["W"] == 3840  # 4K UHD
    assert load_config({"W": 4100, "H": 4096}, SCHEMA)["W"] == 4096  # rendered at 4096 x 4096


@pytest.mark.parametrize(("raw", "message"), [
    ({"max_frames": 1_000_000_000}, "max_frames: 1000000000 frames would need about 61035.2 GiB of memory to plan "
                                    "(64 KiB each), but 8.0 GiB is available"),
    ({"animation_mode": "Interpolation", "interpolate_x_frames": 200_000},
     "interpolate_x_frames: 200002 frames would need about 12.2 GiB of memory to plan (64 KiB each), "
     "but 8.0 GiB is available"),
    ({"animation_mode": "None", "n_batch": 100_000}, "n_batch: 200000 images would need about 12.2 GiB of memory "
                                                     "to plan (64 KiB each), but 8.0 GiB is available"),
])
def test_a_plan_that_cannot_fit_in_memory_is_refused_before_it_is_built(monkeypatch, raw, message):
    monkeypatch.setattr(config, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(ConfigError) as info:
        load_config(raw, SCHEMA)
    assert str(info.value) == message
    assert load_config({"max_frames": 100_000}, SCHEMA)["max_frames"] == 100_000  # 6.1 GiB: fits


def test_video_input_frames_are_counted_when_the_table_is_built(monkeypatch):
    monkeypatch.setattr(config, "available_memory", lambda: 2**30)
    cfg = load_config({**SMALL_CONFIG, "animation_mode": "Video Input"}, SCHEMA)
    with pytest.raises(ConfigError, match=r"^video_init_path: 20000 frames would need about 1\.2 GiB of memory"):
        build_table({**cfg, "max_frames": 20_000})  # the Snakefile sets max_frames to the video's frame count


def test_real_memory_refuses_a_billion_frames():
    with pytest.raises(ConfigError, match=r"^max_frames: 1000000000 frames would need about 61035\.2 GiB .* is "
                                          r"available$"):
        load_config({"max_frames": 1_000_000_000}, SCHEMA)


@pytest.mark.parametrize(("override", "message"), [
    ({"W": 100000}, "config error: W: 100000 is greater than the maximum of 8192"),
    ({"strength_schedule": "0:(2.5)"},
     "config error: strength_schedule: must be within 0..1, got 2.5 at frame 0 in '0:(2.5)'"),
])
def test_the_workflow_stops_in_one_line_before_anything_is_written(tmp_path, override, message):
    write_config(tmp_path, **override)
    proc = run_snakemake(tmp_path, "-n")
    assert proc.returncode == 1 and last_line(proc) == message
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr
    assert not (tmp_path / "output").exists()
