"""Human-readable records of a render: the schedule table as CSV and as plots, the resolved settings."""
from __future__ import annotations

import math
import os
import textwrap
from typing import Any, Mapping

import pandas as pd
import yaml

from deforum_steps import io
from deforum_steps.schedules import build_table

_COLS = 4


def write_schedule_records(cfg: Mapping[str, Any], csv: str | os.PathLike, png: str | os.PathLike,
                           settings: str | os.PathLike | None = None) -> None:
    """Rule schedules: evaluate the schedules of a resolved config, write the table as CSV and as plots,
    and the settings snapshot when a path is given."""
    table = build_table(dict(cfg))
    write_schedule_csv(table, csv)
    plot_schedules(table, png)
    if settings is not None:
        write_settings(cfg, settings)


def write_schedule_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """One row per frame (column `frame`), one column per evaluated parameter."""
    with io.atomic_path(path) as tmp:
        table.to_csv(tmp, index_label="frame")


def write_settings(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The resolved config as YAML, in schema order; it can be passed back with --configfile."""
    text = yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True, width=120)
    io.write_text(path, "# resolved render config (seed -1 resolved); reusable with --configfile\n" + text)


def plot_schedules(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Small multiples of the numeric schedules that vary over the frames; the constant ones listed below.

    Dotted verticals mark the frames where the prompt changes.
    """
    from matplotlib.figure import Figure  # here, not at the top: 0.3 s that every workflow start would pay

    numeric = table.select_dtypes("number")
    varying = [c for c in numeric if numeric[c].nunique(dropna=True) > 1]
    constant = [c for c in numeric if c not in varying]
    cols = min(_COLS, max(1, len(varying)))
    rows = max(1, math.ceil(len(varying) / cols))
    notes = textwrap.fill("constant: " + ", ".join(f"{c}={numeric[c].iloc[0]:g}" for c in constant),
                          width=45 * cols) if constant else ""
    fig = Figure(figsize=(3.6 * cols, 2.2 * rows + 0.2 * (notes.count("\n") + 1) + 0.5), layout="constrained")
    changes = _prompt_changes(table)
    fig.suptitle(f"schedules over {len(table)} frames" + (" (dotted: prompt changes)" if changes else ""),
                 fontsize=11)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
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
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def _prompt_changes(table: pd.DataFrame) -> list[int]:
    if "prompt" not in table:
        return []
    prompts = table["prompt"]
    return [int(f) for f in prompts.index[1:][(prompts.values[1:] != prompts.values[:-1])]]
