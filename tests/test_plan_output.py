"""The plan by frame of a dry run (snakemake_logger_plugin_deforum.Plan): frame ranges per stage and why, from
Snakemake's reasons, without its parameter dumps."""
from __future__ import annotations

import time

from helpers import SMALL_CONFIG, output, run_snakemake, write_config
from render_fixture import RENDER, N, small_render

from snakemake_logger_plugin_deforum import Plan, changed_param, job_cause

PARAMS = "Params have changed since last execution: Union of exclusive params before and now across all output: "


def params_reason(before: dict, now: dict) -> str:
    return f"{PARAMS}before: {before!r} now: {now!r} "


def test_a_changed_param_is_named_by_its_innermost_key():
    row = {"angle": 0.0, "zoom": 1.04, "prompt": "a red apple", "seed_schedule": 42}
    before = {"row": row, "motion": {16: {"angle": 0.0, "zoom": 1.0}}, "settings": {"W": 64, "sampler": "euler"}}
    assert changed_param(params_reason(before, {**before, "row": {**row, "prompt": "a cat"}})) == "prompt changed"
    assert changed_param(params_reason(before, {**before, "motion": {16: {"angle": 0.0, "zoom": 1.1}}})) == (
        "zoom changed")
    assert changed_param(params_reason(before, {**before, "settings": {"W": 128, "sampler": "euler"}})) == "W changed"
    # a prompt may hold " now: " itself
    assert changed_param(params_reason({"prompt": "now: a cat", "fps": 12}, {"prompt": "now: a cat", "fps": 24})) == (
        "fps changed")
    assert changed_param(f"{PARAMS}before: 12 now: 24 ") == "settings changed"  # a param that is not a dict
    # a setting that a newer version of the workflow adds
    assert changed_param(params_reason({"model": "m", "fps": 12}, {"model": "m", "dtype": "auto", "fps": 12})) == (
        "dtype added")


def test_reasons_in_words():
    assert job_cause("Missing output files: output/test/frames/00003.png") == "not made yet"
    assert job_cause("Input files updated by another job: output/test/frames/00002.png") == (
        "made from files that change")
    assert job_cause("Forced execution") == "forced"
    assert job_cause("Incomplete output files: x.png") == "interrupted last time"
    assert job_cause("Updated input files: init.png; " + params_reason({"a": 1}, {"a": 2})) == (
        "an input file is newer")


def test_frames_group_into_ranges_with_their_cause():
    """Stages in the order of their first job in the DAG (Snakemake logs them in no fixed order)."""
    plan = Plan()
    plan.add("video", {}, params_reason({"fps": 12, "crf": 17}, {"fps": 24, "crf": 17}), jobid=99)
    changed = params_reason({"row": {"prompt": "a"}}, {"row": {"prompt": "b"}})
    follows = "Input files updated by another job: f.png"
    for i in range(16, 24):  # Video Input: independent frames, each with its own changed prompt
        plan.add("video_input_frame", {"i": f"{i:05d}"}, changed, jobid=i)
    plan.add("first_frame", {}, "Missing output files: frames/00000.png", jobid=50)
    plan.add("frame", {"i": "00001"}, follows, jobid=51)
    for i in (30, 31, 32):  # a 2D chain: the first frame changed, the rest are made from it
        plan.add("frame", {"i": f"{i:05d}"}, changed if i == 30 else follows, jobid=i)
    plan.add("frame", {"i": "00040"}, "Missing output files: frames/00040.png", jobid=60)
    assert plan.lines() == [
        "plan:",
        "  video_input_frame  frames 16–23: prompt changed at 16",
        "  frame              frames 0–1: not made yet",
        "                     frames 30–32: prompt changed at 30",
        "                     frame 40: not made yet",
        "  video              fps changed",
        "  nothing else",
    ]


def test_the_diffusions_of_cadence_group_in_steps():
    """With cadence 4 the diffusions are frames 0, 4, 8...: one line for them, not a line per diffusion."""
    plan = Plan()
    plan.add("first_frame", {}, "Missing output files: diffused/00000.png", jobid=1)
    for i in range(4, 2000, 4):
        plan.add("frame", {"i": f"{i:05d}"}, "Missing output files: x.png", jobid=i)
    for i in range(2000):
        plan.add("blend", {"i": f"{i:05d}"}, "Missing output files: x.png", jobid=3000 + i)
    assert plan.lines() == ["plan:", "  frame  frames 0, 4, …, 1996: not made yet",
                            "  blend  frames 0–1999: not made yet", "  nothing else"]

    changed = params_reason({"row": {"prompt": "a"}}, {"row": {"prompt": "b"}})
    follows = "Input files updated by another job: f.png"
    rerun = Plan()  # a prompt key at 16: diffusion 16 and every one after it
    for i in range(16, 48, 4):
        rerun.add("frame", {"i": f"{i:05d}"}, changed if i == 16 else follows, jobid=i)
    assert rerun.describe(rerun.stages["frame"]) == ["frames 16, 20, …, 44: prompt changed at 16"]
    short = {4: "not made yet", 8: "not made yet", 12: "not made yet", 20: "not made yet"}
    assert Plan.describe(short) == ["frames 4, 8, 12: not made yet", "frame 20: not made yet"]


def test_planning_a_job_costs_microseconds():
    """The plan must not slow down planning thousands of frames: a 6 kB params dump is classified in well under
    a millisecond (the bisection compares slices, not characters in Python)."""
    row = {f"key_{k}": k * 0.5 for k in range(150)}
    reason = params_reason({"row": row, "prompt": "a" * 2000}, {"row": row, "prompt": "a" * 1999 + "b"})
    assert len(reason) > 6000
    start = time.perf_counter()
    for _ in range(2000):
        job_cause(reason)
    assert (time.perf_counter() - start) / 2000 < 200e-6


def test_a_dry_run_says_which_frames_rerun_and_why(tmp_path_factory):
    workdir, _ = small_render(tmp_path_factory)
    up_to_date = output(run_snakemake(workdir, "-n", check=True))
    assert "Nothing to be done" in up_to_date and "plan:" not in up_to_date

    prompts = {**SMALL_CONFIG["animation_prompts"], 4: "a green pear"}
    write_config(workdir, "edited.yaml", **RENDER, animation_prompts=prompts)
    text = output(run_snakemake(workdir, "-n", configfile="edited.yaml", check=True))
    plan = text[text.index("plan:\n"):text.index("  nothing else\n")].splitlines()
    assert plan == ["plan:", "  schedules  animation_prompts changed",
                    f"  frame      frames 4–{N - 1}: prompt changed at 4", "  video      made from files that change"]
    # no parameter dumps, no pointers to per-job blocks that are not printed
    assert "before:" not in text and "check individual jobs above" not in text and len(text) < 2500

    write_config(workdir, "fps.yaml", **RENDER, fps=24)
    text = output(run_snakemake(workdir, "-n", configfile="fps.yaml", check=True))
    assert "  video      fps changed\n  nothing else\n" in text and "frame " not in text.split("plan:")[1]
