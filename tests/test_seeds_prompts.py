"""Seeds per diffusion, strength -> steps, and prompts per frame against the recorded references."""
import json

import pytest

from deforum_steps.config import ConfigError
from deforum_steps.keyframes import evaluate_schedule, prompts_per_frame, seed_sequence
from deforum_steps.samplers import denoise_steps


@pytest.fixture(scope="module")
def seeds_steps(conformance):
    return json.loads((conformance / "seeds_steps.json").read_text())


@pytest.fixture(scope="module")
def prompts_ref(conformance):
    return json.loads((conformance / "prompts.json").read_text())


# --------------------------------------------------------------------------------------------
# seeds


def test_seed_sequences_match_references(seeds_steps):
    for rec in seeds_steps["next_seed"]:
        assert rec["same"]
        got = seed_sequence(rec["start_seed"], rec["behavior"], len(rec["notebook"]), rec["seed_iter_N"])
        assert got == rec["notebook"], rec


def test_random_seeds_are_reproducible_and_prefix_stable():
    seeds = seed_sequence(100, "random", 50)
    assert seeds[0] == 100 and len(set(seeds)) == 50
    assert all(0 <= s < 2**32 for s in seeds)
    assert seed_sequence(100, "random", 50) == seeds       # rerun / resume: same seeds
    assert seed_sequence(100, "random", 10) == seeds[:10]   # a longer render extends, not reshuffles
    assert seed_sequence(101, "random", 50)[1:] != seeds[1:]


def test_seeds_wrap_into_32_bits():
    top = 2**32 - 1
    assert seed_sequence(top, "iter", 3) == [top, 0, 1]
    assert seed_sequence(top, "alternate", 4) == [top, 0, top, 0]
    assert seed_sequence(top - 1, "ladder", 4) == [top - 1, 0, top, 1]


def test_unknown_seed_behavior_is_a_config_error():
    with pytest.raises(ConfigError, match="^seed_behavior: unknown value 'sometimes'"):
        seed_sequence(1, "sometimes", 3)
    with pytest.raises(ConfigError, match="^seed_behavior: 'schedule'"):
        seed_sequence(1, "schedule", 3)


def test_seed_schedule_example(seeds_steps):
    ex = seeds_steps["webui_schedule_behavior_example"]
    values = evaluate_schedule(ex["seed_schedule"], ex["max_frames"], name="seed_schedule", seed=ex["seed"])
    assert [int(v) for v in values] == ex["per_frame_seed"]


# --------------------------------------------------------------------------------------------
# strength -> steps


def test_denoise_steps_notebook_formula(seeds_steps):
    for rec in seeds_steps["strength_to_steps"]:
        assert denoise_steps(rec["strength"], rec["steps"]) == rec["notebook_t_enc"], rec
    assert denoise_steps(0.65, 50) == 17
    assert denoise_steps(1.5, 20) == 0 and denoise_steps(-0.5, 20) == 20  # clamped like the notebook
    # no init image (txt2img): every step, whatever the strength
    assert denoise_steps(0.65, 50, has_init=False) == 50 and denoise_steps(1.0, 20, False) == 20
    assert denoise_steps(0.65, 50, has_init=True) == 17


# --------------------------------------------------------------------------------------------
# prompts


def test_notebook_prompt_forms(prompts_ref):
    for rec in prompts_ref["notebook_animation_prompts"]:
        pos, neg = prompts_per_frame(rec["input"]["prompt"], rec["input"]["neg_prompt"], rec["max_frames"])
        assert pos == rec["per_frame_cond"]
        assert neg == rec["per_frame_uncond"]


def test_webui_composition_and_backtick_math(prompts_ref):
    """Same prompt and negative text as the webui (after its strip); the inline negative and
    neg_prompts are joined by ', ' rather than the webui's double space."""
    ref = prompts_ref["webui_2d3d"]
    animation = {k: f"{ref['positive_prompts']} {v}" for k, v in ref["animation_prompts"].items()}
    pos, neg = prompts_per_frame(animation, ref["negative_prompts"], ref["max_frames"])
    for frame in ref["frames"]:
        assert pos[frame["frame"]] == frame["p_prompt"]
        webui_parts = [p.strip() for p in frame["p_negative_prompt"].split("  ") if p.strip()]
        assert neg[frame["frame"]] == ", ".join(webui_parts)
    assert neg[3] == "dog, nsfw, nude"


def test_backticks_bind_t_as_a_variable(prompts_ref):
    """The webui replaces every letter t textually, so `sqrt(t)` breaks; here t is a variable."""
    for rec in prompts_ref["webui_prepare_prompt_pitfalls"]:
        pos, _ = prompts_per_frame({0: rec["text"]}, "", rec["max_frames"])
        frame = rec["frame"]
        if "result" in rec:
            assert pos[frame] == rec["result"]
        else:
            assert pos[frame] == "x 2.0"  # sqrt(4)
    pos, neg = prompts_per_frame({0: "a `t*2` --neg b `max_f-t`"}, {0: "c `t`"}, 3)
    assert pos == ["a 0", "a 2", "a 4"] and neg == ["b 2, c 0", "b 1, c 1", "b 0, c 2"]


def test_prompt_keys_hold_and_expression_keys():
    pos, neg = prompts_per_frame({"max_f/2+3": "cherry --neg ugly", "4": "banana", 0: "apple"}, "", 12)
    assert pos == ["apple"] * 4 + ["banana"] * 4 + ["cherry"] * 4   # max_f = 11 -> key 8
    assert neg == [""] * 8 + ["ugly"] * 4
    pos, _ = prompts_per_frame({5: "late", 30: "never"}, "", 8)   # keys past the end are ignored
    assert pos == ["late"] * 8


def test_prompt_errors():
    with pytest.raises(ConfigError, match=r"^animation_prompts: more than one '--neg'"):
        prompts_per_frame({0: "a --neg b --neg c"}, "", 3)
    with pytest.raises(ConfigError, match=r"^animation_prompts: unknown function 'foo'"):
        prompts_per_frame({0: "a `foo(t)`"}, "", 3)
    with pytest.raises(ConfigError, match=r"^neg_prompts: attribute access"):
        prompts_per_frame({0: "a"}, "b `t.real`", 3)
    with pytest.raises(ConfigError, match=r"^animation_prompts: frame key 'end'"):
        prompts_per_frame({"end": "a"}, "", 3)
    with pytest.raises(ConfigError, match=r"^animation_prompts: prompt for frame 0 must be text"):
        prompts_per_frame({0: 5}, "", 3)
