"""Interpolation mode: the frame plan (key frames or x frames between prompts), slerp, the conditioning
override of diffusion.denoise, and a tiny render through the workflow: key frames are the key prompts'
txt2img, frames in between the slerped conditionings, all with one seed; an edited key prompt reruns only the
frames that show it."""
import re

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import SCHEMA, SMALL_CONFIG, last_line, output, planned_jobs, run_snakemake, write_config

from deforum_steps import diffusion, interpolation, io, models
from deforum_steps.config import ConfigError, load_config

OUT = "output/test"
PROMPTS = {0: "a red apple", 5: "a yellow banana --neg blurry", 9: "a green pear"}
RENDER = {"animation_mode": "Interpolation", "interpolate_x_frames": 3, "steps": 4, "seed_behavior": "iter",
          "animation_prompts": PROMPTS, "neg_prompts": {0: "ugly"}}
N = 2 * (3 + 1) + 1


def cfg(**overrides):
    return load_config({**SMALL_CONFIG, **RENDER, **overrides}, SCHEMA)


def test_x_frames_between_consecutive_prompts_whatever_their_keys():
    frames = interpolation.plan(cfg())
    assert len(frames) == N == interpolation.frame_count(cfg())
    assert [(f["a"], f["b"], f["t"]) for f in frames] == [
        (0, 1, 0.0), (0, 1, 0.25), (0, 1, 0.5), (0, 1, 0.75),
        (1, 2, 0.0), (1, 2, 0.25), (1, 2, 0.5), (1, 2, 0.75), (2, 2, 0.0)]
    assert interpolation.frame_count(cfg(interpolate_x_frames=0)) == 3
    assert interpolation.frame_count(cfg(animation_prompts={7: "one prompt"})) == 1


def test_key_frames_follow_the_prompt_keys():
    frames = interpolation.plan(cfg(interpolate_key_frames=True, animation_prompts={2: "a", 6: "b", 9: "c"}))
    assert len(frames) == 10
    assert [(f["a"], f["b"], f["t"]) for f in frames[:2]] == [(0, 0, 0.0)] * 2  # before the first key: prompt 0
    assert [f["t"] for f in frames[2:6]] == [0, 0.25, 0.5, 0.75] and frames[4]["b"] == 1
    assert [(f["a"], f["t"]) for f in frames[6:]] == [(1, 0.0), (1, 1 / 3), (1, 2 / 3), (2, 0.0)]


def test_key_prompts_carry_their_negatives():
    assert interpolation.key_prompts(cfg()) == [
        (0, "a red apple", "ugly"), (5, "a yellow banana", "blurry, ugly"), (9, "a green pear", "ugly")]
    with pytest.raises(ConfigError, match=r"^animation_prompts: Interpolation mode needs whole frame numbers"):
        interpolation.key_prompts(cfg(animation_prompts={0: "a", "max_f/2": "b"}))


def test_slerp_ends_norm_and_parallel_case():
    v0 = torch.tensor([[3.0, 0.0]])
    v1 = torch.tensor([[0.0, 3.0]])
    torch.testing.assert_close(interpolation.slerp(0.0, v0, v1), v0)
    torch.testing.assert_close(interpolation.slerp(1.0, v0, v1), v1, atol=1e-6, rtol=0)
    mid = interpolation.slerp(0.5, v0, v1)
    torch.testing.assert_close(mid, torch.tensor([[3 / 2**0.5, 3 / 2**0.5]]))  # on the circle, not the chord
    assert mid.dtype == torch.float32
    torch.testing.assert_close(interpolation.slerp(0.25, v0, 2 * v0), 1.25 * v0)  # parallel: linear


def test_denoise_conditioning_replaces_the_prompt():
    pipe = models.get_pipeline(cfg())
    common = dict(steps=4, cfg_scale=7.0, sampler="euler", seed=5, width=64, height=64)
    by_prompt = diffusion.denoise(pipe, prompt="a red apple", negative_prompt="ugly", **common)
    conditioning = diffusion.prompt_conditioning(pipe, "a red apple", "ugly")
    torch.testing.assert_close(diffusion.denoise(pipe, prompt="", conditioning=conditioning, **common), by_prompt,
                               rtol=0, atol=0)


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("interpolation")
    write_config(workdir, **RENDER)
    run_snakemake(workdir, check=True)
    return workdir


def test_render_keys_are_txt2img_and_tweens_the_slerped_conditioning(render, tmp_path):
    out = render / OUT
    frames = [io.read_image(out / "frames" / f"{i:05d}.png") for i in range(N)]
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:05d}.png" for i in range(N)]
    table = pd.read_csv(out / "schedules.csv")
    assert len(table) == N and set(table["seed_schedule"]) == {42}  # seed_behavior iter → fixed in this mode

    config = cfg(max_frames=N)
    pipe = models.get_pipeline(config)
    common = dict(steps=4, cfg_scale=7.0, sampler=config["sampler"], seed=42, width=64, height=64)
    for i, (prompt, negative) in ((0, ("a red apple", "ugly")), (8, ("a green pear", "ugly"))):
        expected = diffusion.decode_latent(pipe, diffusion.denoise(pipe, prompt=prompt, negative_prompt=negative,
                                                                   **common))
        np.testing.assert_array_equal(frames[i], expected)
    apple = diffusion.prompt_conditioning(pipe, "a red apple", "ugly")
    banana = diffusion.prompt_conditioning(pipe, "a yellow banana", "blurry, ugly")
    halfway = tuple(interpolation.slerp(0.5, a, b) for a, b in zip(apple, banana))
    np.testing.assert_array_equal(
        frames[2], diffusion.decode_latent(pipe, diffusion.denoise(pipe, prompt="", conditioning=halfway, **common)))
    # the job function alone, with the params the workflow gives frame 2, makes the same image
    row = table.iloc[2].to_dict()
    params = interpolation.job_params(interpolation.plan(config)[2], interpolation.key_prompts(config), row, config)
    assert (params["a"], params["b"], params["t"]) == (["a red apple", "ugly"], ["a yellow banana", "blurry, ugly"],
                                                       0.5)
    interpolation.render_frame(image=str(tmp_path / "frame.png"), **params, threads=1)
    np.testing.assert_array_equal(io.read_image(tmp_path / "frame.png"), frames[2])
    # one seed: each step of the tween moves the image less than the whole way from one key to the next
    steps = [np.abs(frames[i + 1].astype(int) - frames[i]).mean() for i in range(4)]
    assert max(steps) < np.abs(frames[4].astype(int) - frames[0]).mean()


def test_edited_key_prompt_reruns_only_the_frames_showing_it(render):
    write_config(render, "edited.yaml", **{**RENDER, "animation_prompts": {**PROMPTS, 9: "a purple plum"}})
    proc = run_snakemake(render, "-n", "--quiet", "host", configfile="edited.yaml", check=True)
    assert planned_jobs(proc) == {"schedules": 1, "interpolation_frame": 4, "video": 1, "all": 1}
    planned = sorted(int(m) for m in re.findall(rf"output: {OUT}/frames/(\d{{5}})\.png", output(proc)))
    assert planned == [5, 6, 7, 8]  # banana → pear tweens and the pear; frame 4 is the banana alone
    assert planned_jobs(run_snakemake(render, "-n", check=True)) == {}


def test_more_tween_frames_is_a_longer_render(render):
    write_config(render, "edited.yaml", **{**RENDER, "interpolate_x_frames": 5})
    jobs = planned_jobs(run_snakemake(render, "-n", "--forceall", configfile="edited.yaml", check=True))
    assert jobs["interpolation_frame"] == 2 * 6 + 1


def test_expression_prompt_key_is_a_one_line_error(tmp_path):
    write_config(tmp_path, **{**RENDER, "animation_prompts": {0: "a red apple", "max_f/2": "a pear"}})
    proc = run_snakemake(tmp_path)
    assert proc.returncode != 0
    assert last_line(proc).startswith("config error: animation_prompts: Interpolation mode needs whole frame numbers")
