"""Keys that change no image still do what a Deforum user expects: log_weighted_subprompts prints the weighted
sub-prompts in every mode, the resume keys continue an earlier render's folder, keys that change nothing warn."""
from __future__ import annotations

import hashlib

import pytest
from helpers import last_line, output, planned_jobs, run_snakemake, write_config
from test_code_shape import video

TINY = {"max_frames": 2, "steps": 2, "skip_video": True}


@pytest.mark.parametrize("mode", ["2D", "3D", "Video Input", "Interpolation", "None"])
def test_log_weighted_subprompts_prints_in_every_mode(tmp_path, mode):
    settings = {**TINY, "animation_mode": mode, "log_weighted_subprompts": True, "use_depth_warping": False,
                "animation_prompts": {0: "a red apple:2 a pear:-1 --neg blurry", 1: "a yellow banana"},
                "prompts": ["a red apple:2 a pear:-1 --neg blurry", "a yellow banana"],
                "interpolate_x_frames": 0}
    if mode == "Video Input":
        settings["video_init_path"] = video(tmp_path / "in.mkv")
    write_config(tmp_path, **settings)
    text = output(run_snakemake(tmp_path, check=True))
    where = "image 0" if mode == "None" else "key frame 0" if mode == "Interpolation" else "frame 0"
    assert f"weighted subprompts from {where}: +1 'a red apple'  -1 'a pear'  -1 'blurry'" in text
    assert "+1 'a yellow banana'" in text
    # off (the default): nothing printed
    write_config(tmp_path, **{**settings, "log_weighted_subprompts": False, "batch_name": "quiet"})
    assert "weighted subprompts" not in output(run_snakemake(tmp_path, check=True))


def digests(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_resume_timestring_continues_an_earlier_render(tmp_path):
    write_config(tmp_path, **TINY, batch_name="first")
    run_snakemake(tmp_path, check=True)
    before = digests(tmp_path / "output" / "first")
    # another batch_name, resuming "first": the finished render is found whole, no frame is planned (only the
    # records of the settings, whose batch_name changed)
    write_config(tmp_path, **TINY, batch_name="second", resume_from_timestring=True, resume_timestring="first")
    assert set(planned_jobs(run_snakemake(tmp_path, "-n", check=True))) == {"schedules", "all"}
    # and a longer render continues it: only the new frame 2 is made, in first/
    write_config(tmp_path, **{**TINY, "max_frames": 3}, batch_name="second", resume_from_timestring=True,
                 resume_timestring="first")
    assert planned_jobs(run_snakemake(tmp_path, "-n", check=True)).get("frame") == 1
    run_snakemake(tmp_path, check=True)
    assert not (tmp_path / "output" / "second").exists()
    after = digests(tmp_path / "output" / "first")
    assert {k: after[k] for k in before if k.parts[0] in ("frames", "latents")} == {
        k: v for k, v in before.items() if k.parts[0] in ("frames", "latents")}
    assert (tmp_path / "output" / "first" / "frames" / "00002.png").is_file()
    # a render that does not exist: one line naming the key, the renders there listed
    write_config(tmp_path, **TINY, resume_from_timestring=True, resume_timestring="nope")
    proc = run_snakemake(tmp_path, "-n")
    assert proc.returncode == 1
    assert last_line(proc) == ("config error: resume_timestring: no earlier render 'nope' in output "
                               "(renders there: first)")


def test_keys_that_change_nothing_warn(tmp_path):
    write_config(tmp_path, **TINY, display_samples=True, save_samples=False, resume_timestring="x")
    text = output(run_snakemake(tmp_path, "-n", check=True))
    assert "display_samples" not in text  # the live preview: OUT/preview.png
    assert "config warning: save_samples: false changes nothing here: every frame is kept" in text
    assert "config warning: resume_timestring: ignored without resume_from_timestring: true" in text
    write_config(tmp_path, **TINY)
    assert "config warning" not in output(run_snakemake(tmp_path, "-n", check=True))
