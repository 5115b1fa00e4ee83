import os
import re
import subprocess
import sys

import pytest
import yaml
from helpers import REPO, SCHEMA, one_line_error

from deforum_steps.config import (
    KEY_ALIASES,
    ConfigError,
    OutputBusy,
    load_config,
    load_schema,
    lock_output,
    output_dir,
    record_seed,
    resolve_seed,
)
from deforum_steps.schedules import build_table


def load(**raw):
    return load_config(raw, SCHEMA)


def error_of(**raw) -> str:
    return one_line_error(load, **raw)


def documented_keys() -> set[str]:
    """Backticked keys of the second column of docs/config-keys.md's key table (`_phi` abbreviates
    `perspective_flip_phi`); the sections after it (other spellings, ...) are not keys of the schema."""
    keys = set()
    table = (REPO / "docs" / "config-keys.md").read_text().split("\n## ", 1)[0]
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[2].strip().startswith("`"):
            continue
        names = re.findall(r"`([^`]+)`", cells[2])
        for name in names:
            keys.add(names[0].rsplit("_", 1)[0] + name if name.startswith("_") else name)
    return keys


def test_schema_has_a_default_for_every_documented_key():
    props = load_schema(SCHEMA)["properties"]
    documented = documented_keys()
    assert len(documented) > 100
    assert documented == set(props)
    assert [k for k, spec in props.items() if "default" not in spec] == []


def test_defaults_alone_are_a_valid_config():
    cfg = load()
    assert list(cfg) == list(load_schema(SCHEMA)["properties"])
    assert cfg["animation_mode"] == "2D" and cfg["max_frames"] == 48 and cfg["diffusion_cadence"] == 1
    assert cfg["seed"] == -1 and cfg["color_coherence"] == "Match Frame 0 LAB"
    assert output_dir(cfg) == output_dir({"output_path": "output", "batch_name": "deforum",
                                          "resume_from_timestring": False, "resume_timestring": ""})
    assert str(output_dir(cfg)) == "output/deforum"


def test_default_render_config(capsys):
    cfg = load_config(yaml.safe_load((REPO / "config" / "render.yaml").read_text()), SCHEMA)
    assert capsys.readouterr().err == ""
    assert (cfg["animation_mode"], cfg["max_frames"], cfg["W"], cfg["H"], cfg["model"]) == ("2D", 48, 128, 128,
                                                                                             "builtin:toy")
    assert sorted(cfg["animation_prompts"]) == [0, 24]
    table = build_table({**cfg, "seed": 1})
    assert table["zoom"].iloc[0] != 1 and table["angle"].iloc[0] != 0


def test_unknown_key_suggests_the_nearest_name():
    assert error_of(zoon="0:(1)") == "zoon: unknown key (did you mean 'zoom'?)"
    assert error_of(diffusion_cadance=2) == "diffusion_cadance: unknown key (did you mean 'diffusion_cadence'?)"
    assert error_of(totally_unrelated=1) == "totally_unrelated: unknown key"


def test_wrong_type():
    assert error_of(max_frames="abc") == "max_frames: 'abc' is not an integer"
    assert error_of(use_init="maybe") == "use_init: 'maybe' is not true or false"
    assert error_of(zoom=True) == "zoom: True is not a schedule (text or number)"
    assert error_of(neg_prompts={0: ["x"]}) == "neg_prompts[0]: ['x'] is not a string"


def test_out_of_range():
    assert error_of(diffusion_cadence=9) == "diffusion_cadence: 9 is greater than the maximum of 8"
    assert error_of(strength=-0.1) == "strength: -0.1 is less than the minimum of 0"
    assert error_of(W=32) == "W: 32 is less than the minimum of 64"
    assert error_of(fps=0) == "fps: 0 must be greater than 0"
    assert error_of(animation_prompts={}) == "animation_prompts: must not be empty"


def test_bad_enum_suggests_the_nearest_value():
    assert error_of(sampler="eular") == (
        "sampler: 'eular' is not one of 'klms', 'dpm2', 'dpm2_ancestral', 'heun', 'euler', 'euler_ancestral', "
        "'plms', 'ddim', 'dpmpp_2m', 'LMS Karras', 'DPM2 Karras', 'DPM2 a Karras', 'Heun Karras', 'Euler Karras', "
        "'Euler a Karras', 'DPM++ 2M Karras' (did you mean 'euler'?)")
    assert error_of(animation_mode="4D").startswith("animation_mode: '4D' is not one of 'None', '2D', '3D'")


def test_enum_case_and_aliases():
    cfg = load(color_coherence="lab", animation_mode="video input", border="Wrap")
    assert (cfg["color_coherence"], cfg["animation_mode"], cfg["border"]) == ("Match Frame 0 LAB", "Video Input",
                                                                              "wrap")


def test_first_bad_key_in_schema_order_is_reported():
    assert error_of(crf=99, diffusion_cadence=0).startswith("diffusion_cadence:")


def test_bad_schedule_names_key_text_and_frame():
    cfg = load(zoom="0:(1), 5:(t**-1)", seed=1)
    with pytest.raises(ConfigError, match=r"^zoom: .*t\*\*-1.* at frame 5 in '0:\(1\), 5:\(t\*\*-1\)'$"):
        build_table(cfg)


def test_width_and_height_round_down_to_multiples_of_64_with_a_warning(capsys):
    cfg = load(W=130, H=200)
    assert (cfg["W"], cfg["H"]) == (128, 192)
    assert capsys.readouterr().err.splitlines() == [
        "config warning: W: 130 rounded down to 128 (a multiple of 64)",
        "config warning: H: 200 rounded down to 192 (a multiple of 64)",
    ]


def test_command_line_strings_are_coerced_to_the_schema_types():
    # what `snakemake --config k=v` hands over: int/float when they parse, otherwise text
    cfg = load(max_frames="12", use_init="true", make_gif="False", strength="0.5", fps=24, batch_name=2024,
               resume_timestring=20220829210106, diffusion_cadence="2", animation_prompts={"0": "a", "12": "b"},
               neg_prompts=None, video_init_path=None, prompts="one prompt")
    assert cfg["max_frames"] == 12 and cfg["use_init"] is True and cfg["make_gif"] is False
    assert cfg["strength"] == 0.5 and cfg["fps"] == 24 and cfg["diffusion_cadence"] == 2
    assert cfg["batch_name"] == "2024" and cfg["resume_timestring"] == "20220829210106"
    assert cfg["animation_prompts"] == {0: "a", 12: "b"} and cfg["neg_prompts"] == {}
    assert cfg["video_init_path"] == "" and cfg["prompts"] == ["one prompt"]


def test_none_from_the_command_line_is_null_where_the_schema_allows_null():
    # `--config grad_inject_timing=None`: Snakemake hands over the text; every step is conditioned, as with null
    assert load(grad_inject_timing="None")["grad_inject_timing"] is None
    assert load(grad_inject_timing="null")["grad_inject_timing"] is None
    with pytest.raises(ConfigError, match="steps: 'None' is not"):
        load(steps="None")  # no null there: still the key's own error


def test_constant_schedules_become_keyframe_strings():
    cfg = load(zoom=1.02, angle="3", translation_x=0, cfg_scale_schedule="")
    assert (cfg["zoom"], cfg["angle"], cfg["translation_x"]) == ("0:(1.02)", "0:(3)", "0:(0)")
    assert cfg["cfg_scale_schedule"] == ""


def test_loaded_config_is_a_fixed_point():
    cfg = load(zoom=1.02, color_coherence="HSV", W=100, animation_prompts={"0": "a"})
    assert load(**cfg) == cfg


def test_random_seed_is_read_back_from_the_output_folder(tmp_path):
    cfg = load(output_path=str(tmp_path), batch_name="b")
    drawn = resolve_seed(cfg)
    assert 0 <= drawn < 2**32
    assert not (tmp_path / "b").exists()  # resolving only reads: a dry run leaves no trace
    record_seed(cfg, drawn)
    record_seed(cfg, drawn + 1)  # recorded once: later runs keep the first
    assert (tmp_path / "b" / "resolved_seed.txt").read_text() == f"{drawn}\n"
    assert resolve_seed(cfg) == drawn
    assert resolve_seed({**cfg, "seed": 7}) == 7


def test_corrupt_seed_file_is_a_config_error(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "resolved_seed.txt").write_text("banana\n")
    with pytest.raises(ConfigError, match=r"^seed: .*resolved_seed.txt holds 'banana'"):
        resolve_seed(load(output_path=str(tmp_path), batch_name="b"))


def test_output_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    cfg = load(output_path=str(tmp_path), batch_name="b")
    held = lock_output(cfg)
    with pytest.raises(OutputBusy, match=rf"is being rendered by another run \(pid {os.getpid()}\)"):
        lock_output(cfg)
    held.close()
    lock_output(cfg).close()
    # a holder killed with SIGKILL leaves no stale lock
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from deforum_steps.config import lock_output; "
        f"f = lock_output({{'output_path': {str(tmp_path)!r}, 'batch_name': 'b', 'resume_from_timestring': False, "
        "'resume_timestring': ''}); print('locked', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=rf"\(pid {child.pid}\)"):
            lock_output(cfg)
    finally:
        child.kill()
        child.wait()
    lock_output(cfg).close()


# --------------------------------------------------------------------------------------------
# other spellings of our keys, keys that change nothing, resume


def test_key_aliases_are_translated_at_load():
    assert KEY_ALIASES == {
        "width": "W", "height": "H", "model_checkpoint": "model", "custom_config_path": "model_config",
        "enable_perspective_flip": "flip_2d_perspective", "enable_sampler_scheduling": "enable_schedule_samplers",
        "use_mask_video": "use_video_mask",
    }
    cfg = load(width=192, height=256, model_checkpoint="builtin:tiny", enable_perspective_flip=True,
               enable_sampler_scheduling=True, use_mask_video=True)
    assert (cfg["W"], cfg["H"], cfg["model"]) == (192, 256, "builtin:tiny")
    assert cfg["flip_2d_perspective"] is True and cfg["enable_schedule_samplers"] is True
    assert cfg["use_video_mask"] is True
    assert not set(KEY_ALIASES) & set(cfg)  # only our spelling is kept, in schema order
    assert list(cfg) == list(load_schema(SCHEMA)["properties"])
    assert cfg == load(W=192, H=256, model="builtin:tiny", flip_2d_perspective=True, enable_schedule_samplers=True,
                       use_video_mask=True)


def test_key_aliases_from_the_command_line_are_coerced_and_rounded(capsys):
    # `snakemake --config width=200 height=128 enable_perspective_flip=true`: Snakemake refuses W=..., and hands
    # over what does not parse as a number as text
    cfg = load(width="200", height="128", enable_perspective_flip="true")
    assert (cfg["W"], cfg["H"], cfg["flip_2d_perspective"]) == (192, 128, True)
    assert capsys.readouterr().err.splitlines() == ["config warning: W: 200 rounded down to 192 (a multiple of 64)"]
    assert error_of(width="wide") == "W: 'wide' is not an integer"


@pytest.mark.parametrize("alias, key", list(KEY_ALIASES.items()))
def test_both_spellings_of_a_key_is_an_error(alias, key):
    value = load()[key]
    assert error_of(**{alias: value, key: value}) == (
        f"{alias}: the same setting as {key}, which is also given; keep one of them")


def test_unknown_key_suggests_an_alias_too():
    assert error_of(widht=128) == "widht: unknown key (did you mean 'width'?)"


def test_keys_that_change_nothing_warn(capsys):
    load()
    assert capsys.readouterr().err == ""
    load(display_samples=False, show_sample_per_step=False, save_samples=True, strength_0_no_init=True)
    assert capsys.readouterr().err == ""
    cfg = load(display_samples=True, show_sample_per_step="true", save_samples=False, strength_0_no_init="false")
    assert (cfg["display_samples"], cfg["show_sample_per_step"]) == (True, True)  # the live preview
    assert (cfg["save_samples"], cfg["strength_0_no_init"]) == (False, False)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" changes nothing here: ")[0] for line in lines] == [
        "config warning: save_samples: false",
        "config warning: strength_0_no_init: false",
    ]
    assert all(len(line.split(" changes nothing here: ")[1]) > 10 for line in lines)  # with the reason


def test_resume_timestring_renders_into_that_earlier_render(tmp_path, capsys):
    with pytest.raises(ConfigError) as info:
        load(output_path=str(tmp_path), resume_from_timestring=True, resume_timestring="20220829210106")
    assert str(info.value) == (f"resume_timestring: no earlier render '20220829210106' in {tmp_path} "
                               "(renders there: none)")
    (tmp_path / "deforum").mkdir()
    (tmp_path / "20220829210106").mkdir()
    (tmp_path / "a_file").write_text("")
    assert error_of(output_path=str(tmp_path), resume_from_timestring=True, resume_timestring="2022") == (
        f"resume_timestring: no earlier render '2022' in {tmp_path} (renders there: 20220829210106, deforum)")
    # a name is a folder of output_path, not a path
    assert error_of(output_path=str(tmp_path), resume_from_timestring=True,
                    resume_timestring="../" + tmp_path.name + "/deforum").startswith(
        "resume_timestring: no earlier render ")
    capsys.readouterr()
    cfg = load(output_path=str(tmp_path), resume_from_timestring=True, resume_timestring="20220829210106", seed=-1)
    assert capsys.readouterr().err == ""
    assert output_dir(cfg) == tmp_path / "20220829210106"
    # the seed, the lock and the output folder all follow it
    record_seed(cfg, 123)
    assert (tmp_path / "20220829210106" / "resolved_seed.txt").read_text() == "123\n"
    assert resolve_seed(cfg) == 123
    lock_output(cfg).close()
    assert (tmp_path / "20220829210106" / ".render.lock").exists()
    assert not (tmp_path / "deforum" / ".render.lock").exists()


def test_resume_settings_without_the_other_warn_and_keep_batch_name(tmp_path, capsys):
    cfg = load(output_path=str(tmp_path), batch_name="b", resume_timestring="20220829210106")
    assert output_dir(cfg) == tmp_path / "b"
    assert capsys.readouterr().err.splitlines() == [
        "config warning: resume_timestring: ignored without resume_from_timestring: true"]
    cfg = load(output_path=str(tmp_path), batch_name="b", resume_from_timestring=True)
    assert output_dir(cfg) == tmp_path / "b"
    err = capsys.readouterr().err
    assert err.startswith("config warning: resume_from_timestring: ") and str(tmp_path / "b") in err
