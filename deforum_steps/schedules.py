"""Stage `schedules` (rules/schedules.smk): every schedule evaluated per frame into one table, and its records
(schedules.csv, schedules.png, settings.yaml and its webui twin deforum_settings.txt).

Each column is named after the config key that drives it, so a key keeps its name from the YAML file to the
step function that reads the column: `strength_schedule` is the per-frame strength of animation frames, never
confused with `strength`, the strength of an init image. `cfg_scale_schedule`, `steps_schedule`,
`sampler_schedule` and `seed_schedule` hold the value every frame really uses, also when the schedule itself is
off (then `scale`, `steps`, `sampler`, or the seeds that seed_behavior makes). `prompt` and `negative_prompt`
come from animation_prompts and neg_prompts; `denoise_steps` records how many steps each diffusion runs.

Every value is checked here, before anything runs: every schedule finite at every frame, and each schedule the
animation mode reads within its range (the schema's `x-values`) at every frame.
"""
from __future__ import annotations

import functools
import math
import os
import textwrap
from collections.abc import Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from deforum_steps import io, settings_export
from deforum_steps.config import SCHEMA_PATH, ConfigError, check_plan_memory, load_schema
from deforum_steps.dependencies import (
    CONDITION_COLUMNS,
    DIFFUSION_COLUMNS,
    INTERPOLATION_COLUMNS,
    MOTION_COLUMNS,
)
from deforum_steps.keyframes import (
    SEED_MODULUS,
    check_frames,
    evaluate_schedule,
    evaluate_string_schedule,
    prompts_per_frame,
    schedule_error,
    seed_sequence,
)
from deforum_steps.samplers import denoise_steps, resolve_sampler

if TYPE_CHECKING:  # planning reads schedule_columns, without pandas (0.4 s at every start); jobs import it
    import pandas as pd

# The numeric keyframe schedules, evaluated per frame into columns of the same name.
NUMERIC_SCHEDULES = (
    "angle", "zoom", "translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y",
    "rotation_3d_z", "transform_center_x", "transform_center_y", "perspective_flip_theta", "perspective_flip_phi",
    "perspective_flip_gamma", "perspective_flip_fv", "noise_schedule", "strength_schedule", "contrast_schedule",
    "cfg_scale_schedule", "steps_schedule", "fov_schedule", "near_schedule", "far_schedule", "kernel_schedule",
    "sigma_schedule", "amount_schedule", "threshold_schedule",
)
_PLOT_COLUMNS = 4
_PROMPT_ROWS = 3  # staggered lines of prompt labels above the plots
_PROMPT_LABELS = 24  # prompts written out; the plots mark every change
_FLIP_COLUMNS = ("perspective_flip_theta", "perspective_flip_phi", "perspective_flip_gamma", "perspective_flip_fv")
# The anti-blur reads these only at the frames whose amount_schedule is > 0 (color.unsharp_mask).
_ANTI_BLUR_COLUMNS = ("kernel_schedule", "sigma_schedule", "threshold_schedule")
# The keys that set the frame count where it is not max_frames: the video's frames, the key prompts' tweens.
_FRAME_COUNT_KEYS = {"Video Input": "video_init_path", "Interpolation": "interpolate_x_frames"}
# How the range keywords of x-values compare a value with their bound.
_COMPARISONS = {"minimum": (np.greater_equal, ">="), "maximum": (np.less_equal, "<="),
                "exclusiveMinimum": (np.greater, ">"), "exclusiveMaximum": (np.less, "<"), "const": (np.equal, "==")}


def build_table(cfg: Mapping) -> pd.DataFrame:
    """One row per frame 0..max_frames-1: every evaluated schedule, sampler, prompts, seed and denoising
    steps. `cfg` is a validated config with `seed` already resolved."""
    import pandas as pd

    columns = schedule_columns(cfg)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(columns["prompt"]), name="frame"))


def schedule_columns(cfg: Mapping) -> dict[str, list]:
    """build_table's columns as plain Python lists (ints, floats, strings), each max_frames long: what planning
    reads, thousands of jobs' params made of them."""
    n = int(cfg["max_frames"])
    check_frames(n)
    check_plan_memory(_FRAME_COUNT_KEYS.get(cfg["animation_mode"], "max_frames"), n)
    seed = int(cfg["seed"])
    columns = {key: _numeric_column(cfg, key, n, seed) for key in NUMERIC_SCHEDULES}
    for key in NUMERIC_SCHEDULES:
        _check_finite(columns[key], *_source(cfg, key))
    for key in ("steps_schedule", "kernel_schedule"):
        columns[key] = np.trunc(columns[key]).astype(np.int64)  # like the webui's astype(int)
    _check_ranges(cfg, columns)
    columns["sampler_schedule"] = _samplers(cfg, n, seed)
    columns["prompt"], columns["negative_prompt"] = prompts_per_frame(cfg["animation_prompts"],
                                                                      cfg["neg_prompts"], n)
    if cfg["animation_mode"] != "None":  # None mode renders its `prompts` list
        _check_prompts(columns["prompt"], cfg["animation_prompts"])
    columns["seed_schedule"] = _frame_seeds(cfg, n, seed)
    columns["denoise_steps"] = _denoise_column(cfg, columns["strength_schedule"], columns["steps_schedule"])
    return {key: values.tolist() if isinstance(values, np.ndarray) else list(values) for key, values in columns.items()}


def write_records(cfg: Mapping[str, Any], csv: str | os.PathLike, png: str | os.PathLike,
                  settings: str | os.PathLike | None = None, webui_settings: str | os.PathLike | None = None) -> None:
    """Rule schedules:
    1. evaluate the schedules of the resolved config;
    2. write the columns that apply (record_table) as CSV and as plots;
    3. write the settings snapshot and its webui-compatible twin when their paths are given (save_settings)."""
    table = record_table(cfg, build_table(cfg))
    write_csv(table, csv)
    plot(table, png)
    if settings is not None:
        write_settings(cfg, settings)
    if webui_settings is not None:
        settings_export.write_webui_settings(cfg, webui_settings)


def record_table(cfg: Mapping, table: pd.DataFrame) -> pd.DataFrame:
    """The table as schedules.csv shows it: the columns the animation mode reads (the anti-blur's only with
    amount_schedule > 0 somewhere) plus every schedule the config sets away from its default; in Interpolation
    mode each frame's pair of key prompts and the weight of the second (`tween_weight`, slerp's t), which the
    frame renders, instead of prompts keyed by frame."""
    used = set(_used_columns(cfg))
    if not (table["amount_schedule"] > 0).any():
        used -= set(_ANTI_BLUR_COLUMNS)
    defaults = {key: spec.get("default") for key, spec in load_schema(SCHEMA_PATH)["properties"].items()}
    set_by_user = {key for key in NUMERIC_SCHEDULES if cfg[key] != defaults.get(key)}
    keep = used | set_by_user | {"sampler_schedule", "seed_schedule", "denoise_steps"}
    if cfg["animation_mode"] != "Interpolation":
        return table[[c for c in table if c in keep or c in ("prompt", "negative_prompt")]]
    import pandas as pd

    from .interpolation import key_prompts, plan

    keys, frames = key_prompts(cfg), plan(cfg)
    pairs = pd.DataFrame({
        "prompt": [keys[f["a"]][1] for f in frames],
        "next_prompt": [keys[f["b"]][1] for f in frames],
        "tween_weight": [f["t"] for f in frames],
        "negative_prompt": [keys[f["a"]][2] for f in frames],
        "next_negative_prompt": [keys[f["b"]][2] for f in frames],
    }, index=table.index)
    return pd.concat([table[[c for c in table if c in keep]], pairs], axis=1)


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """One row per frame (column `frame`), one column per evaluated parameter."""
    io.write_text(path, table.to_csv(index_label="frame"))


def write_settings(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The resolved config as YAML, in schema order; it can be passed back with --configfile."""
    text = yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True, width=120)
    io.write_text(path, "# resolved render config (seed -1 resolved); reusable with --configfile\n" + text)


def plot(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """The table's plot_figure as a PNG."""
    png = BytesIO()
    plot_figure(table).savefig(png, format="png", dpi=100)
    io.write_bytes(path, png.getvalue())


def plot_figure(table: pd.DataFrame):
    """Small multiples of the numeric schedules that vary over the frames; the constant ones listed below.

    A strip above them (the figure's first axes) writes each prompt at the frame where it starts; dotted
    verticals mark those frames.
    """
    from matplotlib.figure import Figure  # here, not at the top: 0.3 s that every workflow start would pay

    numeric = table.select_dtypes("number")
    varying = [c for c in numeric if numeric[c].nunique(dropna=True) > 1]
    constant = [c for c in numeric if c not in varying]
    cols = min(_PLOT_COLUMNS, max(1, len(varying)))
    rows = max(1, math.ceil(len(varying) / cols))
    notes = textwrap.fill("constant: " + ", ".join(f"{c}={numeric[c].iloc[0]:g}" for c in constant),
                          width=45 * cols) if constant else ""
    marks = _prompt_marks(table)
    changes = [frame for frame, _ in marks[1:]]
    strip = 0.35 + 0.18 * min(len(marks), _PROMPT_ROWS)
    fig = Figure(figsize=(3.6 * cols, strip + 2.2 * rows + 0.2 * (notes.count("\n") + 1) + 0.5),
                 layout="constrained")
    fig.suptitle(f"schedules over {len(table)} frames" + (" (dotted: prompt changes)" if changes else ""),
                 fontsize=11)
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[strip] + [2.2] * rows)
    _prompt_strip(fig.add_subplot(grid[0, :]), marks, len(table))
    axes = np.array([fig.add_subplot(grid[1 + r, c]) for r in range(rows) for c in range(cols)])
    for ax, col in zip(axes, varying):
        ax.plot(numeric.index, numeric[col], lw=1.3, color="tab:blue")
        for frame in changes:
            ax.axvline(frame, color="grey", ls=":", lw=1)
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # seeds: whole numbers, no offset
        ax.grid(alpha=0.3)
    for ax in axes[len(varying):]:
        ax.set_axis_off()
    if not varying:
        axes[0].text(0.5, 0.5, "every schedule is constant", ha="center", va="center", transform=axes[0].transAxes)
    fig.supxlabel("frame" + (f"\n\n{notes}" if notes else ""), fontsize=8)
    return fig


def _prompt_marks(table: pd.DataFrame) -> list[tuple[int, str]]:
    """(frame, prompt) where each prompt starts: frame 0 and every frame whose prompt differs from the one before."""
    if "prompt" not in table or not len(table):
        return []
    prompts = table["prompt"].to_numpy()
    starts = [0, *(np.flatnonzero(prompts[1:] != prompts[:-1]) + 1)]
    return [(int(table.index[i]), str(prompts[i])) for i in starts]


def _prompt_strip(ax, marks: list[tuple[int, str]], frames: int) -> None:
    """The prompts written at their start frames, in up to _PROMPT_ROWS staggered lines so neighbours do not
    overlap; more changes than fit are numbered in the plots' dotted lines only."""
    ax.set_xlim(-0.5, max(frames - 1, 1) + 0.5)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    for k, (frame, prompt) in enumerate(marks[:_PROMPT_LABELS]):
        y = 1 - (k % _PROMPT_ROWS + 0.5) / _PROMPT_ROWS
        ax.axvline(frame, color="grey", ls=":", lw=1)
        ax.text(frame, y, f" {frame}: {textwrap.shorten(prompt, 60)}", fontsize=8, va="center", clip_on=False)
    if len(marks) > _PROMPT_LABELS:
        ax.text(1, 0, f"+{len(marks) - _PROMPT_LABELS} more prompt changes", fontsize=7, ha="right",
                transform=ax.transAxes)


def _source(cfg: Mapping, key: str) -> tuple[str, Any]:
    """The config key a column comes from and its text: cfg_scale_schedule "" is `scale`, steps_schedule
    without enable_steps_scheduling is `steps`."""
    if key == "cfg_scale_schedule" and cfg[key] in ("", None):
        return "scale", cfg["scale"]
    if key == "steps_schedule" and not cfg["enable_steps_scheduling"]:
        return "steps", cfg["steps"]
    return key, cfg[key]


def _numeric_column(cfg: Mapping, key: str, n: int, seed: int) -> np.ndarray:
    source, text = _source(cfg, key)
    if source != key:
        return np.full(n, float(text))
    return evaluate_schedule(text, n, name=key, seed=seed)


def _check_finite(values: np.ndarray, key: str, text) -> None:
    """inf and -inf are kept by the references' NaN rule (keyframes); no step can use them."""
    bad = ~np.isfinite(values)
    if bad.any():
        frame = int(np.argmax(bad))
        raise schedule_error(key, text, f"must be a finite number, got {_number(values[frame])}", frame)


# ---- value ranges ----------------------------------------------------------------------------------------


@functools.cache
def _value_rules() -> dict[str, dict]:
    """{schedule key: its x-values rule} from config/schema.yaml."""
    props = load_schema(SCHEMA_PATH)["properties"]
    return {key: spec["x-values"] for key, spec in props.items() if "x-values" in spec}


def _used_columns(cfg: Mapping) -> tuple[str, ...]:
    """The schedule columns the animation mode reads (dependencies.py): only these must be in range."""
    mode = cfg["animation_mode"]
    if mode in ("2D", "3D"):
        motion = [c for c in MOTION_COLUMNS[mode] if cfg["flip_2d_perspective"] or c not in _FLIP_COLUMNS]
        return (*motion, *DIFFUSION_COLUMNS, *CONDITION_COLUMNS)
    return {"Video Input": DIFFUSION_COLUMNS, "Interpolation": INTERPOLATION_COLUMNS}.get(mode, ("steps_schedule",))


def _check_ranges(cfg: Mapping, columns: Mapping[str, np.ndarray]) -> None:
    """Every used column within its x-values rule at every frame; the first frame out of range is the error."""
    rules, used = _value_rules(), _used_columns(cfg)
    for key in (k for k in NUMERIC_SCHEDULES if k in used and k in rules):
        values = columns[key]
        bad = ~_satisfies(values, rules[key], columns)
        if key in _ANTI_BLUR_COLUMNS:
            bad &= columns["amount_schedule"] > 0
        if bad.any():
            frame = int(np.argmax(bad))
            source, text = _source(cfg, key)
            raise schedule_error(source, text, f"must be {_describe(rules[key], columns, frame)}, got "
                                 f"{_number(values[frame])}", frame)


def _bound(bound, columns: Mapping[str, np.ndarray]):
    """A rule's bound: a number, or {$data: key}, that column (compared frame by frame)."""
    return columns[bound["$data"]] if isinstance(bound, Mapping) else bound


def _satisfies(values: np.ndarray, rule: Mapping, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per frame, whether `values` meet `rule` (the JSON-schema keywords of x-values)."""
    ok = np.ones(len(values), dtype=bool)
    for word, bound in rule.items():
        if word in _COMPARISONS:
            ok &= _COMPARISONS[word][0](values, _bound(bound, columns))
        elif word == "multipleOf":
            ok &= values % bound == 0
        elif word == "not":
            ok &= ~_satisfies(values, bound, columns)
        elif word == "anyOf":
            ok &= np.logical_or.reduce([_satisfies(values, r, columns) for r in bound])
        elif word != "description":
            raise ValueError(f"x-values: unsupported keyword {word!r}")
    return ok


def _describe(rule: Mapping, columns: Mapping[str, np.ndarray], frame: int) -> str:
    """A rule in words: its description, else its comparisons, e.g. "within 0..1", "> -180 and != 0",
    "> near_schedule (200)"."""
    if "description" in rule:
        return rule["description"]
    if rule.keys() == {"minimum", "maximum"}:
        return f"within {rule['minimum']}..{rule['maximum']}"
    words = []
    for word, bound in rule.items():
        if word == "not" and bound.keys() == {"const"}:
            words.append(f"!= {bound['const']}")
        elif isinstance(bound, Mapping) and "$data" in bound:
            words.append(f"{_COMPARISONS[word][1]} {bound['$data']} ({_number(columns[bound['$data']][frame])})")
        else:  # a comparison; other keywords come with a description (a test checks every rule's words)
            words.append(f"{_COMPARISONS[word][1]} {bound}")
    return " and ".join(words)


def _number(value: np.generic) -> str:
    """A column's value as written in a schedule: 0 for 0.0, 2.5, inf."""
    value = value.item()
    return str(int(value) if isinstance(value, float) and value.is_integer() else value)


def _check_prompts(prompts: list[str], animation_prompts) -> None:
    """Every frame has a prompt: some key is a frame >= 0 (frames before the first take its prompt), and no
    key's text before --neg is empty."""
    frame = next((i for i, prompt in enumerate(prompts) if not prompt), None)
    if frame is not None:
        raise ConfigError(f"animation_prompts: no prompt at frame {frame} (keys are frames from 0, a prompt is the "
                          f"text before --neg) in {animation_prompts!r}")


def _samplers(cfg: Mapping, n: int, seed: int) -> list[str]:
    """Every frame's sampler: sampler_schedule with enable_schedule_samplers, else `sampler`. Scheduled names
    are checked now, before anything runs, rather than when their frame is diffused."""
    if not cfg["enable_schedule_samplers"]:
        return [cfg["sampler"]] * n
    text = cfg["sampler_schedule"]
    names = evaluate_string_schedule(text, n, name="sampler_schedule", seed=seed)
    for name in dict.fromkeys(names):
        try:
            resolve_sampler(name)
        except ConfigError:
            raise schedule_error("sampler_schedule", text, f"unknown sampler {name!r}", names.index(name)) from None
    return names


def _frame_seeds(cfg: Mapping, n: int, seed: int) -> np.ndarray:
    """Seeds advance once per diffusion: frame i carries the seed of diffusion i // cadence (cadence
    only applies to 2D/3D; Video Input forces 1 as in both references)."""
    cadence = int(cfg["diffusion_cadence"]) if cfg["animation_mode"] in ("2D", "3D") else 1
    diffused = np.arange(0, n, cadence)
    if cfg["seed_behavior"] == "schedule":
        schedule = evaluate_schedule(cfg["seed_schedule"], n, name="seed_schedule", seed=seed)
        _check_finite(schedule, "seed_schedule", cfg["seed_schedule"])
        scheduled = np.trunc(schedule).astype(np.int64)[diffused]
        # A negative seed means "random" as in the webui, drawn from (seed, frame) so reruns agree.
        random_draws = [np.random.default_rng((seed, int(f))).integers(0, SEED_MODULUS) for f in diffused]
        per_diffusion = np.where(scheduled < 0, random_draws, scheduled % SEED_MODULUS)
    else:
        per_diffusion = np.array(seed_sequence(seed, cfg["seed_behavior"], len(diffused), cfg["seed_iter_N"]),
                                 dtype=np.int64)
    return per_diffusion[np.arange(n) // cadence]


def _denoise_column(cfg: Mapping, strength_schedule: np.ndarray, steps_schedule: np.ndarray) -> np.ndarray:
    """The steps each frame's diffusion runs. Frames with no init image are txt2img and run all steps (the
    notebook's strength_0_no_init); 2D/3D frame 0 with an init image, and every None/Interpolation image,
    start from `strength`, the other frames from their strength_schedule value."""
    mode = cfg["animation_mode"]
    strength = strength_schedule.copy()
    has_init = np.ones(len(steps_schedule), dtype=bool)
    if mode in ("2D", "3D"):
        strength[0] = float(cfg["strength"])
        has_init[0] = cfg["use_init"]
    elif mode in ("None", "Interpolation"):
        strength[:] = float(cfg["strength"])
        has_init[:] = mode == "None" and cfg["use_init"]
    return np.array([denoise_steps(s, st, init) for s, st, init in zip(strength, steps_schedule, has_init)],
                    dtype=np.int64)
