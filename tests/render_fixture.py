"""One small 2D render shared by the plan, report and preview tests (`small_render(tmp_path_factory)`):
rendering it costs most of their time. Tests may add to its folder but must leave its frames and config as
they are: dry runs, --report, the motion preview (which writes only preview/)."""
from __future__ import annotations

from pathlib import Path

from helpers import output, run_snakemake, write_config

N = 6
OUT = "output/test"
RENDER = {"max_frames": N, "steps": 2, "zoom": "0:(1.02)"}
_rendered: list[tuple[Path, str]] = []  # the render of this test session, once made


def small_render(tmp_path_factory) -> tuple[Path, str]:
    """(workdir, the render's output text): SMALL_CONFIG (prompts keyed at 0 and 3) with RENDER, rendered once
    per test session."""
    if not _rendered:
        workdir = tmp_path_factory.mktemp("small_render")
        write_config(workdir, **RENDER)
        _rendered.append((workdir, output(run_snakemake(workdir, check=True))))
    return _rendered[0]
