"""Threads that fit the job: each job's torch and OpenCV threads are the threads Snakemake gives it, and the rules give
them by mode (a chain of diffusions all the cores, cadence > 1 half unless 3D depth chains the blends, independent
frames one each)."""
import re

import cv2
import pytest
import torch
from helpers import SCHEMA, SMALL_CONFIG, output, run_snakemake, write_config

from deforum_steps import animation, cpu_threads, io
from deforum_steps.config import load_config
from deforum_steps.schedules import build_table


@pytest.fixture
def one_thread_after():
    yield
    cpu_threads.limit(1)  # the tests' setting (conftest)


def test_limit_sets_torch_and_opencv_threads(one_thread_after):
    cpu_threads.limit(2)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    cpu_threads.limit(1)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)


def test_a_job_runs_on_the_threads_it_is_given(tmp_path, one_thread_after):
    cfg = load_config(dict(SMALL_CONFIG, steps=1), SCHEMA)
    image = tmp_path / "00000.png"
    animation.first_frame(init=[], mask=[], image=str(image), row=build_table(cfg).iloc[0].to_dict(), settings=cfg,
                          threads=2)
    assert io.read_image(image).shape == (64, 64, 3)
    assert torch.get_num_threads() == 2


def job_threads(workdir, *args, **config) -> dict[str, set[int]]:
    """{rule: the threads its planned jobs get} from a dry run's job blocks (Snakemake omits `threads: 1`)."""
    write_config(workdir, **config)
    text = output(run_snakemake(workdir, "-n", "--quiet", "host", *args, check=True))
    threads: dict[str, set[int]] = {}
    for block in re.split(r"\n(?=(?:local)?rule )", text):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        if rule:
            found = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
            threads.setdefault(rule.group(1), set()).add(int(found.group(1)) if found else 1)
    return threads


def test_threads_by_mode(tmp_path):
    chain = job_threads(tmp_path, "--cores", "4", max_frames=3)
    assert chain["first_frame"] == chain["frame"] == {4}  # each diffusion waits for the one before: every core
    cadence = job_threads(tmp_path, "--cores", "4", max_frames=5, diffusion_cadence=2)
    assert cadence["frame"] == {2} and cadence["blend"] == {1}  # blends run beside the next diffusion
    assert job_threads(tmp_path, "--cores", "1", max_frames=5, diffusion_cadence=2)["frame"] == {1}
    # 3D: each blend predicts the depth map the next blend and diffusion read, a chain again
    depth_chain = job_threads(tmp_path, "--cores", "4", max_frames=5, diffusion_cadence=2, animation_mode="3D",
                              depth_algorithm="tiny")
    assert depth_chain["frame"] == depth_chain["blend"] == {4}
    stills = job_threads(tmp_path, "--cores", "4", animation_mode="None")
    assert stills["still"] == {1}  # independent images: four at once
    pinned = job_threads(tmp_path, "--cores", "4", "--set-threads", "frame=3", max_frames=3)
    assert pinned["frame"] == {3} and pinned["first_frame"] == {4}
