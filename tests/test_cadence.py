import json

import numpy as np
import pytest
from helpers import fake_diffusion_output

from deforum_steps.cadence import (
    blend,
    blend_job_plan,
    diffusion_frames,
    init_job_plan,
    init_plan,
    start,
    tween_plan,
)
from deforum_steps.motion2d import warp_2d


@pytest.fixture(scope="module")
def schedule(conformance):
    return json.loads((conformance / "cadence" / "schedule.json").read_text())


def _recorded_fields(plan):
    """Our plan without `depth_of` (not part of the recording)."""
    out = dict(plan)
    for side in ("prev", "next"):
        if out[side] is not None:
            out[side] = {k: v for k, v in out[side].items() if k != "depth_of"}
    return out


def test_every_recorded_run(schedule):
    """Both references (they agree on every recorded run): diffused frames, and for each written frame its
    sources, weights and warps."""
    assert schedule["runs"]
    for run in schedule["runs"]:
        n, c = run["max_frames"], run["cadence"]
        assert run["start_frame"] == 0
        assert diffusion_frames(n, c) == run["diffused_frames"]
        for frame in run["frames"]:
            assert _recorded_fields(tween_plan(frame["frame"], n, c)) == frame, (run["repo"], n, c, frame)


def test_tween_weights(schedule):
    for c, weights in schedule["tween_weights_by_cadence"].items():
        c = int(c)
        assert [tween_plan(i, 100, c)["tween"] for i in range(c, 2 * c)] == weights


def test_every_frame_is_written_and_the_tail_continues_the_loop(schedule):
    """Decision: all frames < max_frames are written (the references drop the last diffusion's interval).
    A tail frame is made as the reference makes that frame in a longer run (the loop going on)."""
    runs = {(r["repo"], r["max_frames"], r["cadence"]): r for r in schedule["runs"]}
    checked = 0
    for (repo, n, c), run in runs.items():
        plans = [tween_plan(i, n, c) for i in range(n)]
        assert [p["frame"] for p in plans] == list(range(n))
        for i in run["never_written"]:
            longer = [r for (rp, m, cc), r in runs.items() if rp == repo and cc == c and i in r["written_frames"]]
            for r in longer:
                recorded = next(f for f in r["frames"] if f["frame"] == i)
                assert _recorded_fields(plans[i]) == recorded
                checked += 1
    assert checked > 0


def test_tail_after_last_diffusion():
    # max_frames 10, cadence 4: diffusions 0, 4, 8; the references write frames 0..7 only
    assert diffusion_frames(10, 4) == [0, 4, 8]
    p8, p9 = tween_plan(8, 10, 4), tween_plan(9, 10, 4)
    assert (p8["prev"]["diffused_at"], p8["prev"]["warps"], p8["next"]["diffused_at"], p8["next"]["warps"]) == \
        (4, [5, 6, 7, 8], 8, [])
    assert (p9["prev_weight"], p9["next_weight"], p9["prev"]["warps"], p9["next"]["warps"]) == \
        (0.5, 0.5, [5, 6, 7, 8, 9], [9])
    # the plan of a frame never depends on how many frames are rendered
    for c in (1, 2, 3, 5):
        for i in range(12):
            assert tween_plan(i, 12, c) == tween_plan(i, 40, c)
    with pytest.raises(ValueError):
        tween_plan(10, 10, 4)


def test_init_plan():
    assert init_plan(0, 3) is None
    plan = init_plan(6, 3)
    assert plan == {"diffused_at": 3, "warps": [4, 5, 6], "depth_of": [3, 3, 3]}
    # = the image of the interval's last tween frame, warped once more with the diffused frame's keys
    last = tween_plan(5, 10, 3)
    assert last["prev"] is None and last["next"]["diffused_at"] == 3
    assert plan["warps"] == last["next"]["warps"] + [6]
    assert init_plan(4, 1) == {"diffused_at": 3, "warps": [4], "depth_of": [3]}
    with pytest.raises(ValueError):
        init_plan(5, 3)


def test_job_plans_resume_past_the_last_frame_of_an_interval():
    """A chain that runs past frame d - 1 (diffusion d - c warped up to it, at weight 1) starts from that frame."""
    assert init_job_plan(8, 4) == {"frame_at": 7, "warps": [8], "depth_of": [4]}
    p, ref = blend_job_plan(9, 20, 4), tween_plan(9, 20, 4)
    assert p["prev"] == {"frame_at": 7, "warps": [8, 9], "depth_of": [8, 8]}
    assert {**p, "prev": ref["prev"]} == ref
    assert start(p["prev"]) == 7 and start(p["next"]) == 8
    for i in (0, 3, 7, 11):  # the first interval, and the frames at weight 1: one chain, from its diffusion
        assert blend_job_plan(i, 20, 4) == tween_plan(i, 20, 4)
    for i in range(10):  # cadence 1: the frames are the diffusions
        assert blend_job_plan(i, 10, 1) == tween_plan(i, 10, 1)
    assert init_job_plan(4, 1) == init_plan(4, 1) and init_job_plan(0, 4) is None


def test_depth_of_follows_the_reference_loop():
    """Each tween step predicts depth once, on the `next` image, and warps both images with it."""
    p = tween_plan(9, 20, 4)  # interval [8, 12): prev = diffusion 4, next = diffusion 8
    assert p["prev"]["warps"] == [5, 6, 7, 8, 9] and p["prev"]["depth_of"] == [4, 4, 4, 8, 8]
    assert p["next"]["warps"] == [9] and p["next"]["depth_of"] == [8]


def test_bad_cadence():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="diffusion_cadence"):
            diffusion_frames(10, bad)


def test_blend_rounds_half_to_even():
    a, b = np.array([[[0, 1, 2]]], np.uint8), np.array([[[1, 2, 255]]], np.uint8)
    assert blend(a, b, 0.5, 0.5).tolist() == [[[0, 2, 128]]]
    assert blend(None, b, 0.0, 1.0).tolist() == b.tolist()


@pytest.mark.parametrize("cadence", [2, 4])
def test_numeric_2d_cadence_run(conformance, cadence):
    """Frames from the plan with uint8 warps and the float64 round-half-even blend equal the webui recording
    (uint8 PNG frames, as ours) exactly; the notebook truncates float32 turbo images (1-3 LSB apart)."""
    manifest = json.loads((conformance / "cadence" / "sim2d_manifest.json").read_text())
    case = next(c for c in manifest["cases"] if c["cadence"] == cadence)
    base = np.load(conformance / "inputs" / "test_image_64x64.npy")

    def source(src):
        img = fake_diffusion_output(base, src["diffused_at"])
        for _ in src["warps"]:  # same keys every frame: angle 3, zoom 1.02, translation_x 2
            img = warp_2d(img, angle=3, zoom=1.02, translation_x=2, translation_y=0, border="replicate")
        return img

    frames = []
    for i in range(case["max_frames"]):
        plan = tween_plan(i, case["max_frames"], cadence)
        prev = None if plan["prev"] is None else source(plan["prev"])
        frames.append(blend(prev, source(plan["next"]), plan["prev_weight"], plan["next_weight"]))
    frames = np.stack(frames)
    assert len(frames) == case["max_frames"]  # the references write only case["written_frames"]
    written = case["written_frames"]
    assert np.array_equal(frames[written], np.load(conformance / case["webui_file"]))
    notebook = np.load(conformance / case["notebook_file"])
    assert np.abs(frames[written].astype(int) - notebook).max() <= case["max_abs_diff_nb_vs_wu"]
