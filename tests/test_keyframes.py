"""Keyframe schedules against the recorded reference outputs, the documented departures, the error
messages, and the per-frame schedule table."""
import json
import re
import time

import numpy as np
import pytest

from deforum_steps.config import ConfigError
from deforum_steps.keyframes import evaluate_schedule, evaluate_string_schedule, prompts_per_frame
from deforum_steps.schedules import build_table

# The table's columns, each named after the config key that drives it (schedules.build_table).
TABLE_COLUMNS = [
    "angle", "zoom", "translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y",
    "rotation_3d_z", "transform_center_x", "transform_center_y", "perspective_flip_theta", "perspective_flip_phi",
    "perspective_flip_gamma", "perspective_flip_fv", "noise_schedule", "strength_schedule", "contrast_schedule",
    "cfg_scale_schedule", "steps_schedule", "fov_schedule", "near_schedule", "far_schedule", "kernel_schedule",
    "sigma_schedule", "amount_schedule", "threshold_schedule",
    "sampler_schedule", "prompt", "negative_prompt", "seed_schedule", "denoise_steps",
]


def _values(record_side):
    return np.array([float(v) for v in record_side["values"]])


def _records(conformance, name):
    return json.loads((conformance / name).read_text())["records"]


# --------------------------------------------------------------------------------------------
# conformance: where the two references agree, the values are identical


def test_agreed_schedule_values_are_identical(conformance):
    checked = 0
    for rec in _records(conformance, "schedules.json"):
        if not rec["same"] or "values" not in rec["notebook"]:
            continue
        got = evaluate_schedule(rec["schedule"], rec["max_frames"], name="zoom", seed=rec["webui_seed"])
        assert got.dtype == np.float64 and got.shape == (rec["max_frames"],)
        np.testing.assert_array_equal(got, _values(rec["notebook"]), err_msg=rec["id"])
        checked += 1
    assert checked >= 60


def test_agreed_errors_are_config_errors_except_missing_frame_0(conformance):
    """Both references crash on these; we raise a ConfigError, except for a first key after frame 0,
    which decisions.md allows (see test_first_key_after_frame_0_holds_back)."""
    for rec in _records(conformance, "schedules.json"):
        if not rec["same"] or "error" not in rec["notebook"]:
            continue
        if rec["notebook"]["error"].startswith("UnboundLocalError"):
            values = evaluate_schedule(rec["schedule"], rec["max_frames"], name="zoom")
            assert np.isfinite(values).all()
            continue
        with pytest.raises(ConfigError, match=r"^zoom: "):
            evaluate_schedule(rec["schedule"], rec["max_frames"], name="zoom", seed=rec["webui_seed"])


# Where the references disagree, which one we follow and why (decisions.md: union of both syntaxes).
FOLLOW = {
    "0:(where(t>5,1,0))": "notebook",  # commas inside expressions; the webui splits on ','
    "0:( 1.0 ), 5:(2)": "webui",  # spaces inside (): the notebook crashes (IndentationError); held, not ramped
    '0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)': "webui",  # s and quoted expression keys are ours too
    "0:(0), max_f/2:(10)": "webui",  # expression key; the notebook's regex reads the '2' as the key
    "0:(max_frames)": "error",  # only the documented t, max_f, s (max_frames leaks from notebook locals)
    "": "error",
}


def test_disagreements_follow_the_documented_reference(conformance):
    for rec in _records(conformance, "schedules.json"):
        if rec["same"]:
            continue
        follow = FOLLOW[rec["schedule"]]
        if follow == "error":
            with pytest.raises(ConfigError):
                evaluate_schedule(rec["schedule"], rec["max_frames"], name="zoom", seed=rec["webui_seed"])
        else:
            got = evaluate_schedule(rec["schedule"], rec["max_frames"], name="zoom", seed=rec["webui_seed"])
            np.testing.assert_array_equal(got, _values(rec[follow]), err_msg=rec["id"])


def test_string_schedules_match_references(conformance):
    for rec in json.loads((conformance / "schedules_string.json").read_text())["records"]:
        n = rec["max_frames"]
        got = evaluate_string_schedule(rec["schedule"], n, name="sampler_schedule")
        if rec["same"] and "values" in rec["notebook"]:
            assert got == rec["notebook"]["values"]
        elif "C:/" in rec["schedule"]:  # the webui cuts at the colon; the notebook keeps the path
            assert got == rec["notebook"]["values"]
        else:  # both crash on a first key after frame 0: held back (decision)
            assert got == ["euler"] * n


# --------------------------------------------------------------------------------------------
# syntax: the union of both parsers


@pytest.mark.parametrize("text", [
    "0:(1), 5:(2)",
    "0 : (1) , 5 :(2)",          # spaces around ':' (webui)
    "0:(1),5:(2),",               # trailing comma (notebook)
    "0:(1),\n5:(2)",
    "'0':(1), \"5\":(2)",         # quoted keys (webui)
    "0:1, 5:2",                   # split form without parentheses (webui)
    "5:(2), 0:(1)",               # order irrelevant
    "0:(1), 5:(9), 5:(2)",        # duplicate key: last wins
    "0:(1), max_f-4:(2)",         # expression key (max_f = 9)
    "0:((1)), 5:(2)",             # redundant parentheses (webui sanitising): still numbers
    '0:("1"), 5:("2")',           # quoted numbers (webui sanitising)
])
def test_accepted_syntax_forms(text):
    np.testing.assert_allclose(evaluate_schedule(text, 10, name="zoom"),
                               [1, 1.2, 1.4, 1.6, 1.8, 2, 2, 2, 2, 2])


def test_commas_and_nested_parentheses_inside_expressions():
    expected = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    # the first form breaks the webui parser, the second breaks both references
    np.testing.assert_array_equal(evaluate_schedule("0:(where(t>5,1,0))", 10, name="zoom"), expected)
    np.testing.assert_array_equal(evaluate_schedule("0:(where((t>5), 1, 0))", 10, name="zoom"), expected)
    np.testing.assert_array_equal(
        evaluate_schedule("0:(where((t>5), 1, 0)), 8:(7)", 10, name="zoom"), expected[:8] + [7, 7])


def test_seed_and_max_f_variables_and_keys():
    got = evaluate_schedule('0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)', 10, name="seed_schedule", seed=100)
    np.testing.assert_array_equal(got, [100, -1, -1, -1, -1, -1, -1, -1, 100, 100])
    np.testing.assert_array_equal(evaluate_schedule("0:(max_f - t)", 4, name="zoom"), [3, 2, 1, 0])
    # a key past the end is ignored, one that truncates onto frame 0 replaces it
    np.testing.assert_array_equal(evaluate_schedule("0:(1), s:(5)", 3, name="zoom", seed=7), [1, 1, 1])
    np.testing.assert_array_equal(evaluate_schedule("0:(1), max_f/3:(5)", 3, name="zoom"), [5, 5, 5])


def test_plain_numbers_are_constant_schedules():
    np.testing.assert_array_equal(evaluate_schedule(1.04, 3, name="zoom"), [1.04] * 3)
    np.testing.assert_array_equal(evaluate_schedule(np.int64(5), 2, name="kernel_schedule"), [5.0, 5.0])
    with pytest.raises(ConfigError, match="zoom"):
        evaluate_schedule(True, 3, name="zoom")


# --------------------------------------------------------------------------------------------
# semantics


def test_number_keys_ramp_expression_keys_hold():
    # `1.` and `1e-2` are not numbers for check_is_number: evaluated every frame, no ramp
    np.testing.assert_array_equal(evaluate_schedule("0:(1.), 4:(2.0)", 6, name="zoom"), [1, 1, 1, 1, 2, 2])
    # nor is ` 1 ` with spaces inside the parentheses (the webui holds it; the notebook crashes)
    np.testing.assert_array_equal(evaluate_schedule("0:( 1 ), 4:(2)", 6, name="zoom"), [1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(evaluate_schedule("0:(1.0), 4:(2.0)", 6, name="zoom"),
                                  [1, 1.25, 1.5, 1.75, 2, 2])
    # ramp from a number to an expression's value at its key, then the expression
    np.testing.assert_allclose(evaluate_schedule("0:(1), 5:(0.5*t)", 8, name="zoom"),
                               [1, 1.3, 1.6, 1.9, 2.2, 2.5, 3.0, 3.5])


def test_first_key_after_frame_0_holds_back():
    """decisions.md: allowed (both references crash, issue #482); the first key's value holds back."""
    np.testing.assert_array_equal(evaluate_schedule("5:(2)", 8, name="zoom"), [2] * 8)
    np.testing.assert_array_equal(evaluate_schedule("2:(0), 4:(10)", 6, name="zoom"), [0, 0, 0, 5, 10, 10])
    np.testing.assert_array_equal(evaluate_schedule("3:(t)", 6, name="zoom"), [3, 3, 3, 3, 4, 5])
    # no key inside the render: the earliest key still defines every frame
    np.testing.assert_array_equal(evaluate_schedule("20:(7), 30:(9)", 3, name="zoom"), [7, 7, 7])
    assert evaluate_string_schedule("3:('euler'), 6:('dpm2')", 8, name="sampler_schedule") == \
        ["euler"] * 6 + ["dpm2"] * 2


def test_nan_is_filled_like_the_reference_and_inf_kept():
    # NaN before the first valid value takes it; gaps are interpolated linearly
    got = evaluate_schedule("0:(1), 2:(sqrt(t-4))", 7, name="zoom")
    np.testing.assert_allclose(got, [1, 0.75, 0.5, 0.25, 0, 1, np.sqrt(2)])
    np.testing.assert_array_equal(evaluate_schedule("0:(sqrt(2-t))", 4, name="zoom"),
                                  [np.sqrt(2), 1, 0, 0])
    assert evaluate_schedule("0:(log(t))", 3, name="zoom")[0] == -np.inf
    with pytest.raises(ConfigError, match=r"^zoom: evaluates to NaN at every frame in '0:\(sqrt\(-1-t\)\)'$"):
        evaluate_schedule("0:(sqrt(-1-t))", 5, name="zoom")


def test_vectorised_evaluation_equals_per_frame_scalars():
    import numexpr
    expr = "10*sin(2*3.14*t/10) + (-t % 3) + t**2/100 + where(t > 5, 1, 0)"
    got = evaluate_schedule(f"0:({expr})", 50, name="zoom")
    for t in range(50):
        t = np.int64(t)
        assert got[t] == float(numexpr.evaluate(expr, local_dict={"t": t}, global_dict={}))


# --------------------------------------------------------------------------------------------
# errors: one line, the config key, the text, and the frame for evaluation errors


@pytest.mark.parametrize("text, reason", [
    ("0:(1), 5:(2", r"unbalanced '\('"),
    ("0:(1) 5:(2)", r"missing ',' between key frames"),
    ("0.5", r"expected 'frame: \(value\)'"),
    ("2.5:(1)", r"frame key '2.5' is not a whole number"),
    ("0:(foo(t))", r"unknown function 'foo'"),
    ("0:(sum(t))", r"unknown function 'sum'"),          # reductions would mix frames
    ("0:(t.real)", r"attribute access"),
    ("0:(__class__)", r"name '__class__' is not allowed"),
    ("0:('1' + t)", r"strings are not allowed"),
    ("0:(t//4)", r"'//' is not supported"),
    ("0:(t and 1)", r"'and'/'or' are not supported"),
    ("0:(frame)", r"unknown variable 'frame'"),
    ("0:()", r"empty value"),
])
def test_bad_schedules_raise_one_line_config_errors(text, reason):
    with pytest.raises(ConfigError) as info:
        evaluate_schedule(text, 10, name="angle")
    message = str(info.value)
    assert message.startswith("angle: ") and repr(text) in message and "\n" not in message
    assert re.search(reason, message)


def test_evaluation_error_names_the_frame():
    with pytest.raises(ConfigError, match=r"^angle: cannot evaluate 'where\(t>5,1\)'.* at frame 5 in "):
        evaluate_schedule("0:(1), 5:(where(t>5,1))", 10, name="angle")


def test_expression_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    for text in (f"0:(__import__('os').system('touch {marker}'))",
                 "0:((1).__class__.__bases__[0].__subclasses__())",
                 "0:(eval('1'))"):
        with pytest.raises(ConfigError):
            evaluate_schedule(text, 3, name="angle")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# hostile expressions: refused in one line naming the key, within a second (the issue's own requirement for
# what used to hang: 9**9**9 ran for hours, a 4,000-term sum compiled for 31 s, 50,000 unary minuses crashed)

SUM_20000 = "+".join(["t"] * 20000)
HOSTILE = [
    # values
    pytest.param("angle", "0:(9**9**9)", r"constant '9\*\*9\*\*9' is too large \(beyond float64\)", id="power tower"),
    pytest.param("angle", "0:(1), 5:(t*(9**9**9 % 7))", r"constant '9\*\*9\*\*9' is too large", id="tower in mod"),
    pytest.param("angle", "0:(t**(9**9**9))", r"constant '9\*\*9\*\*9' is too large", id="tower exponent"),
    pytest.param("angle", "0:(-2**(2**40))", r"constant '2\*\*\(2\*\*40\)' is too large", id="huge int power"),
    pytest.param("angle", "0:(1<<10**9)", r"constant '1<<10\*\*9' is too large", id="huge shift"),
    pytest.param("angle", "0:(10.0**400)", r"constant '10.0\*\*400' is too large", id="float power overflow"),
    pytest.param("angle", "0:((2**1000)**2)", r"constant '\(2\*\*1000\)\*\*2' is too large", id="nested powers"),
    pytest.param("angle", f"0:({SUM_20000})",
                 r"value '\(t\+t\+t.*'\.\.\. \(40001 characters\) is too long \(limit 1000 characters\)",
                 id="20000 terms"),
    pytest.param("angle", "0:(" + "+".join(["t"] * 4000) + ")", r"\(8001 characters\) is too long", id="4000 terms"),
    pytest.param("angle", "0:(" + "-" * 50000 + "1)", r"\(50003 characters\) is too long", id="50000 minuses"),
    pytest.param("angle", "0:(" + "-(" * 50000 + "t" + ")" * 50000 + ")", r"\(150003 characters\) is too long",
                 id="50000 nested negations"),
    pytest.param("angle", "0:(" + "(" * 5000 + "t" + ")" * 5000 + ")", r"\(10003 characters\) is too long",
                 id="5000 parentheses"),
    pytest.param("angle", "0:(" + "1" * 100000 + ")", r"\(100002 characters\) is too long", id="100000 digits"),
    pytest.param("angle", "0:(" + "~" * 900 + "t)", r"expression nests 900 operations deep \(limit 50;",
                 id="900 inversions"),
    pytest.param("angle", "0:(t+" + "(" * 199 + "-" * 590 + "t" + ")" * 199 + ")",
                 r"is nested too deeply|nests \d+ operations deep", id="parser stack"),  # CPython 3.11: the first
    pytest.param("angle", "0:(" + "+".join(["t"] * 60) + ")", r"expression nests 59 operations deep",
                 id="60-term chain"),
    pytest.param("angle", "0:(" + "+".join(["t**49.5"] * 5) + ")", r"expression has 254 operations \(limit 200;",
                 id="expanded powers"),
    pytest.param("angle", "0:(" + "+".join(["t**abs(49)"] * 5) + ")", r"expression has \d+ operations",
                 id="powers of a call"),
    pytest.param("angle", ", ".join(f"{i}:(t*{i})" for i in range(2000)),
                 r"its distinct expressions together hold more than 1000 operations", id="2000 expressions"),
    # frame keys
    pytest.param("zoom", "0:(1), 9**9**9:(2)", r"frame key '9\*\*9\*\*9': constant '9\*\*9\*\*9' is too large",
                 id="key tower"),
    pytest.param("zoom", '0:(1), "max_f+9**9**9":(2)', r"frame key '\"max_f\+9\*\*9\*\*9\"': constant",
                 id="quoted key tower"),
    pytest.param("zoom", f"0:(1), {SUM_20000.replace('t', 'max_f')}:(2)", r"frame key '.*\(119999 characters\) is too",
                 id="key 20000 terms"),
    pytest.param("zoom", "0:(1), " + "9" * 5000 + ":(2)", r"frame key '9+'\.\.\. \(5000 characters\) is too long",
                 id="5000-digit key"),
    pytest.param("zoom", "99999999999999999999999:(t)", r"frame key '9+' is beyond frame 9223372036854775806",
                 id="key beyond int64"),
    pytest.param("zoom", "0:(1), 1e308:(2)", r"frame key '1e308' is beyond frame", id="key 1e308"),
    pytest.param("zoom", ", ".join(f'"max_f-{i}":({i})' for i in range(2000)),
                 r"together hold more than 1000 operations", id="2000 expression keys"),
    pytest.param("sampler_schedule", "0:('euler'), 9**9**9:('dpm2')", r"frame key '9\*\*9\*\*9': constant",
                 id="string schedule key tower"),
    # prompt keys and backtick math
    pytest.param("animation_prompts", {"0": "a", "9**9**9": "b"}, r"frame key '9\*\*9\*\*9': constant",
                 id="prompt key tower"),
    pytest.param("animation_prompts", {"0": "a", SUM_20000.replace("t", "max_f"): "b"},
                 r"frame key .*\(119999 characters\) is too long", id="prompt key 20000 terms"),
    pytest.param("animation_prompts", {0: "a `9**9**9` b"}, r"constant '9\*\*9\*\*9' is too large .* of 'a `9",
                 id="backtick tower"),
    pytest.param("animation_prompts", {0: f"a `{SUM_20000}`"}, r"expression is 39999 characters long",
                 id="backtick 20000 terms"),
    pytest.param("animation_prompts", {0: "a `" + "-" * 50000 + "t`"}, r"expression is 50001 characters long",
                 id="backtick 50000 minuses"),
    pytest.param("animation_prompts", {0: " ".join(f"`t*{i}`" for i in range(2000))},
                 r"together hold more than 1000 operations", id="2000 backticks"),
    pytest.param("neg_prompts", {0: "`9**9**9`"}, r"constant '9\*\*9\*\*9' is too large", id="negative backtick"),
]


def _evaluate_key(name, value, n_frames=3000):
    if name == "sampler_schedule":
        return evaluate_string_schedule(value, n_frames, name=name)
    if name == "animation_prompts":
        return prompts_per_frame(value, None, n_frames)
    if name == "neg_prompts":
        return prompts_per_frame({0: "a"}, value, n_frames)
    return evaluate_schedule(value, n_frames, name=name)


@pytest.mark.parametrize("name, value, reason", HOSTILE)
def test_hostile_expressions_end_in_one_line_within_a_second(name, value, reason):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        _evaluate_key(name, value)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert message.startswith(f"{name}: ") and "\n" not in message and len(message) < 600, message
    assert re.search(reason, message), message


def test_a_huge_schedule_is_cut_in_the_message():
    with pytest.raises(ConfigError) as info:
        evaluate_schedule(f"0:({SUM_20000})", 10, name="angle")
    assert str(info.value).endswith(f" in {'0:(' + SUM_20000[:117]!r}... (40003 characters)")


@pytest.mark.parametrize("expr, frame, real", [
    ("t**t**t**t", 3, "inf"),  # 3**27 wraps to a negative number, 4**256 to 0
    ("2**(t*100)", 1, "1.26765e+30"),
    ("t*t*t*t*t*t*t*t*t*t*t*t*t*t*t*t*t*t*t*t*1000", 7, "7.97923e+19"),  # 7**20 * 1000
])
def test_integer_wraparound_is_an_error_at_its_frame(expr, frame, real):
    """t is an integer (both references): what int64 cannot hold is refused, not rendered as wrapped garbage."""
    with pytest.raises(ConfigError, match=rf"^angle: '{re.escape(expr)}' is {re.escape(real)}, beyond 64-bit "
                                          rf"integers \(which wrap it around to .*\) at frame {frame} in "):
        evaluate_schedule(f"0:({expr})", 12, name="angle")


def test_integer_semantics_stay_where_nothing_wraps():
    np.testing.assert_array_equal(evaluate_schedule("0:((t&1)*3 + (t%4)*2 + t*t)", 6, name="angle"),
                                  [0, 6, 8, 18, 16, 30])


def test_a_schedule_text_over_a_million_characters_is_refused_at_once():
    text = ", ".join(f"{i}:(1.0{i % 10})" for i in range(100_000))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^zoom: the schedule is {len(text)} characters long \(limit 1000000\)"):
        evaluate_schedule(text, 6, name="zoom")
    assert time.perf_counter() - start < 1


def test_expressions_within_the_limits_evaluate():
    t = np.arange(30.0)
    cases = {
        "1.0025+0.002*sin(1.25*3.14*t/30)": 1.0025 + 0.002 * np.sin(1.25 * 3.14 * t / 30),
        "t**2 + 2**0.5 + (1+t)**1.5": t**2 + 2**0.5 + (1 + t) ** 1.5,
        "9**9 + 10**300/10**299 + 1**(10**300) + (1<<40)/2**40 + 0*t": 387420489 + 10 + 1 + 1 + 0 * t,
        "where(t < 10, (t/10)**49.5, -(t**3))": np.where(t < 10, (t / 10) ** 49.5, -(t**3)),
        # a 20-term Fourier series: 407 characters, 140 operations, nested 27 deep
        " + ".join(f"{k / 10}*sin({k}*t/7)" for k in range(1, 21)): sum(k / 10 * np.sin(k * t / 7)
                                                                     for k in range(1, 21)),
        "+".join(["t"] * 51): 51 * t,  # the deepest chain allowed: 50 levels
        "+".join(["t**2"] * 40): 40 * t**2,  # 120 operations
    }
    for expr, expected in cases.items():
        np.testing.assert_allclose(evaluate_schedule(f"0:({expr})", 30, name="zoom"), expected, rtol=1e-12,
                                   err_msg=expr)


def test_long_schedules_stay_fast_and_right():
    parseq = ", ".join(f"{i}:({1 + i / 1000:.4f})" for i in range(20000))  # 320,000 characters
    start = time.perf_counter()
    values = evaluate_schedule(parseq, 20000, name="zoom")
    assert time.perf_counter() - start < 1.5
    np.testing.assert_allclose(values, 1 + np.arange(20000) / 1000)
    # 250 distinct expression keyframes: 1000 operations with their overhead, the most a schedule may hold
    frames = np.arange(2500)
    text = ", ".join(f"{10 * i}:(t*{i}+1)" for i in range(250))
    np.testing.assert_array_equal(evaluate_schedule(text, 2500, name="zoom"), frames * (frames // 10) + 1)
    # one expression in several segments, evaluated together; parentheses however deep around a value
    np.testing.assert_array_equal(evaluate_schedule("0:(t), 3:(1.), 5:(t)", 7, name="zoom"), [0, 1, 2, 1, 1, 5, 6])
    np.testing.assert_array_equal(evaluate_schedule("0:" + "(" * 499 + "t" + ")" * 499, 4, name="zoom"), [0, 1, 2, 3])
    assert evaluate_string_schedule("0:" + "(" * 50000 + "'euler'" + ")" * 50000, 2, name="sampler_schedule") == \
        ["euler", "euler"]


# --------------------------------------------------------------------------------------------
# the table


def full_config(**overrides):
    """Every key of docs/config-keys.md, notebook-like values, seed already resolved."""
    cfg = {
        "model": "builtin:tiny", "model_config": "", "check_sha256": False, "model_sha256": "",
        "map_location": "auto", "dtype": "auto",
        "animation_mode": "2D", "max_frames": 12, "border": "replicate",
        "angle": "0:(0)", "zoom": "0:(1.04)", "translation_x": "0:(10*sin(2*3.14*t/10))",
        "translation_y": 0, "translation_z": "0:(10)",
        "rotation_3d_x": "0:(0)", "rotation_3d_y": "0:(0)", "rotation_3d_z": "0:(0)",
        "transform_center_x": "0:(0.5)", "transform_center_y": "0:(0.5)",
        "flip_2d_perspective": False, "perspective_flip_theta": "0:(0)", "perspective_flip_phi": "0:(t%15)",
        "perspective_flip_gamma": "0:(0)", "perspective_flip_fv": "0:(53)",
        "noise_schedule": "0: (0.02)", "strength_schedule": "0: (0.65)", "contrast_schedule": "0: (1.0)",
        "cfg_scale_schedule": "", "enable_steps_scheduling": False, "steps_schedule": "0:(25)",
        "seed_schedule": '0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)',
        "fov_schedule": "0:(40)", "near_schedule": "0:(200)", "far_schedule": "0:(10000)",
        "enable_schedule_samplers": False, "sampler_schedule": "0:('euler'),10:('dpm2')",
        "kernel_schedule": "0:(5)", "sigma_schedule": "0:(1.0)", "amount_schedule": "0:(0.0)",
        "threshold_schedule": "0:(0.0)",
        "noise_type": "uniform", "perlin_w": 8, "perlin_h": 8, "perlin_octaves": 4, "perlin_persistence": 0.5,
        "color_coherence": "Match Frame 0 LAB", "color_coherence_image_path": "", "color_force_grayscale": False,
        "diffusion_cadence": 1,
        "use_depth_warping": True, "depth_algorithm": "midas-3-hybrid", "depth_model_path": "",
        "midas_weight": 0.3, "padding_mode": "border", "sampling_mode": "bicubic", "save_depth_maps": False,
        "video_init_path": "", "extract_nth_frame": 1, "extract_from_frame": 0, "extract_to_frame": -1,
        "overwrite_extracted_frames": False, "use_video_mask": False, "video_mask_path": "",
        "interpolate_key_frames": False, "interpolate_x_frames": 4,
        "resume_from_timestring": False, "resume_timestring": "",
        "prompts": ["a forest", "a woman"],
        "animation_prompts": {0: "a lake", "10": "a woman --neg blurry"}, "neg_prompts": {0: "mountain"},
        "W": 128, "H": 128, "seed": 100, "sampler": "euler_ancestral", "use_karras_sigmas": False,
        "steps": 20, "scale": 7, "ddim_eta": 0.0,
        "save_samples": True, "save_settings": True, "display_samples": False, "save_sample_per_step": False,
        "show_sample_per_step": False, "prompt_weighting": True, "normalize_prompt_weights": True,
        "log_weighted_subprompts": False, "n_batch": 1, "batch_name": "deforum", "output_path": "output",
        "seed_behavior": "iter", "seed_iter_N": 1, "make_grid": False, "grid_rows": 2,
        "use_init": False, "init_image": "", "strength": 0.65, "strength_0_no_init": True,
        "use_mask": False, "mask_file": "", "invert_mask": False, "mask_brightness_adjust": 1.0,
        "mask_contrast_adjust": 1.0, "overlay_mask": True, "skip_video": False,
        "fps": 12, "crf": 17, "preset": "veryfast", "codec": "libx264", "make_gif": False,
    }
    cfg.update(overrides)
    return cfg


def test_build_table_columns_and_values():
    table = build_table(full_config())
    assert list(table.index) == list(range(12))
    assert list(table.columns) == TABLE_COLUMNS
    # every column but prompt, negative_prompt and denoise_steps is named after a config key
    assert set(TABLE_COLUMNS) - set(full_config()) == {"prompt", "negative_prompt", "denoise_steps"}
    for col in ("seed_schedule", "steps_schedule", "denoise_steps", "kernel_schedule"):
        assert table[col].dtype == np.int64, col
    np.testing.assert_allclose(table["translation_x"][:3], [0, 5.875275257138918, 9.5085946050647])
    assert (table["translation_y"] == 0).all() and (table["zoom"] == 1.04).all()
    np.testing.assert_array_equal(table["perspective_flip_phi"], np.arange(12) % 15)
    assert (table["cfg_scale_schedule"] == 7.0).all() and (table["steps_schedule"] == 20).all()
    assert (table["sampler_schedule"] == "euler_ancestral").all()
    assert list(table["prompt"]) == ["a lake"] * 10 + ["a woman"] * 2
    assert list(table["negative_prompt"]) == ["mountain"] * 10 + ["blurry, mountain"] * 2
    np.testing.assert_array_equal(table["seed_schedule"], 100 + np.arange(12))
    # frame 0 has no init image: full steps; then int((1 - 0.65) * 20) = 7
    np.testing.assert_array_equal(table["denoise_steps"], [20] + [7] * 11)


def test_frames_without_init_run_full_steps_whatever_strength_0_no_init():
    """strength_0_no_init: false changes nothing (config warns about it): a frame without an init image is
    txt2img with all its steps."""
    for mode, expected in (("2D", [20] + [7] * 11), ("None", [20] * 12), ("Interpolation", [20] * 12)):
        tables = [build_table(full_config(animation_mode=mode, strength_0_no_init=flag)) for flag in (True, False)]
        np.testing.assert_array_equal(tables[0]["denoise_steps"], expected, err_msg=mode)
        np.testing.assert_array_equal(tables[1]["denoise_steps"], expected, err_msg=mode)
    # with an init image, None-mode stills start from `strength` (0.65 of 20 steps -> 7)
    table = build_table(full_config(animation_mode="None", use_init=True, strength_0_no_init=False))
    np.testing.assert_array_equal(table["denoise_steps"], [7] * 12)


def test_build_table_schedules_and_init_strength():
    table = build_table(full_config(
        cfg_scale_schedule="0:(5), 10:(10)", enable_steps_scheduling=True, steps_schedule="0:(10), 11:(40)",
        enable_schedule_samplers=True, strength_schedule="0:(0.5)", use_init=True, strength=0.2,
        kernel_schedule="0:(3.9)"))
    np.testing.assert_allclose(table["cfg_scale_schedule"][[0, 5, 10, 11]], [5, 7.5, 10, 10])
    np.testing.assert_array_equal(table["steps_schedule"], np.trunc(np.linspace(10, 40, 12)))  # truncated (webui)
    assert list(table["sampler_schedule"]) == ["euler"] * 10 + ["dpm2"] * 2
    assert (table["kernel_schedule"] == 3).all()
    # frame 0 diffuses the init image at `strength`, later frames at the schedule
    assert table["denoise_steps"][0] == int(0.8 * 10)
    np.testing.assert_array_equal(table["denoise_steps"][1:], (0.5 * table["steps_schedule"][1:]).astype(int))


def test_build_table_seeds_advance_per_diffusion():
    table = build_table(full_config(diffusion_cadence=3, max_frames=10))
    np.testing.assert_array_equal(table["seed_schedule"], [100, 100, 100, 101, 101, 101, 102, 102, 102, 103])
    # schedule behaviour: the seed of each diffusion, wrapped into [0, 2**32-1]
    # schedule behaviour: a negative seed is random as in the webui, but the same on every rerun
    table = build_table(full_config(seed_behavior="schedule", max_frames=10, seed=100))
    seeds = table["seed_schedule"].tolist()
    assert seeds[0] == seeds[8] == seeds[9] == 100
    assert len(set(seeds[1:8])) == 7 and all(0 <= x < 2**32 for x in seeds)
    again = build_table(full_config(seed_behavior="schedule", max_frames=10, seed=100))
    assert again["seed_schedule"].tolist() == seeds
    table = build_table(full_config(seed_behavior="schedule", max_frames=10, diffusion_cadence=2,
                                    seed_schedule="0:(t)"))
    np.testing.assert_array_equal(table["seed_schedule"], [0, 0, 2, 2, 4, 4, 6, 6, 8, 8])
    # Video Input diffuses every frame whatever the cadence
    table = build_table(full_config(animation_mode="Video Input", diffusion_cadence=3, max_frames=4))
    np.testing.assert_array_equal(table["seed_schedule"], [100, 101, 102, 103])
    np.testing.assert_array_equal(table["denoise_steps"], [7, 7, 7, 7])


def test_build_table_error_names_the_key():
    with pytest.raises(ConfigError, match=r"^noise_schedule: .*frame 3"):
        build_table(full_config(noise_schedule="0:(0.02), 3:(where(t>2))"))
    with pytest.raises(ConfigError, match=r"^steps_schedule: must be >= 1, got 0 at frame 2"):
        build_table(full_config(enable_steps_scheduling=True, steps_schedule="0:(2), 2:(0)"))


def test_build_table_2000_frames_is_fast():
    cfg = full_config(
        max_frames=2000, enable_schedule_samplers=True, enable_steps_scheduling=True,
        cfg_scale_schedule="0:(7), 500:(5+sin(t/30)), 1000:(9)", seed_behavior="random",
        angle="0:(0), 100:(3*sin(t/20)), 400:(1), 800:(where(t>900, -1, 1))", diffusion_cadence=2,
        zoom="0:(1.0025+0.002*sin(1.25*3.14*t/30))", animation_prompts={0: "a `t/10`", "max_f/2": "b"})
    start = time.perf_counter()
    table = build_table(cfg)
    assert time.perf_counter() - start < 1.0
    assert len(table) == 2000 and table["prompt"][998] == "a 99.8" and table["prompt"][999] == "b"
