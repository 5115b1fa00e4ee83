"""Run the workflow as a user would: the venv's snakemake on the repo's Snakefile (its workflow profile
included), in a temporary working directory that receives .snakemake/ and the output folder."""
from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SCHEMA = REPO / "config" / "schema.yaml"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

# Small and fast: the random tiny model (the workflow, not the picture, is under test), a few frames at the
# smallest size, fixed seed; OUT = output/test.
SMALL_CONFIG: dict[str, Any] = {
    "model": "builtin:tiny",
    "max_frames": 6,
    "W": 64,
    "H": 64,
    "seed": 42,
    "batch_name": "test",
    "animation_prompts": {0: "a red apple", 3: "a yellow banana"},
}


def write_config(workdir: Path, name: str = "render.yaml", **overrides: Any) -> Path:
    """SMALL_CONFIG with `overrides`, written to workdir/name."""
    path = Path(workdir) / name
    path.write_text(yaml.safe_dump({**SMALL_CONFIG, **overrides}, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, configfile: str | None = "render.yaml", check: bool = False,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """`snakemake -s Snakefile --configfile workdir/configfile ARGS` in workdir, output captured as text.

    check=True fails the test with Snakemake's output when the exit status is not 0.
    """
    cmd = [str(SNAKEMAKE), "-s", str(SNAKEFILE), *args]
    if configfile is not None:  # last: --configfile takes several values and would swallow a target
        cmd += ["--configfile", str(Path(workdir) / configfile)]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{output(proc)[-4000:]}")
    return proc


def output(proc: subprocess.CompletedProcess) -> str:
    """Everything Snakemake printed (its log goes to stderr)."""
    return (proc.stdout or "") + (proc.stderr or "")


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: job count} from the first "Job stats" table of a (dry) run; {} when nothing is to be done."""
    text = output(proc)
    if "Nothing to be done" in text:
        return {}
    match = re.search(r"^Job stats:\n.*\n-+\s+-+\n((?:\S+\s+\d+\n)+)", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"no job stats in snakemake output:\n{text[-4000:]}")
    counts = dict(line.split() for line in match.group(1).splitlines())
    counts.pop("total", None)
    return {rule: int(n) for rule, n in counts.items()}


def rerun_reasons(proc: subprocess.CompletedProcess) -> dict[str, set[str]]:
    """{reason: rules} from the "Reasons:" summary of a dry run, e.g. {"params have changed ...": {"schedules"}}."""
    match = re.search(r"^Reasons:\n((?:    .*\n)+)", output(proc), re.MULTILINE)
    reasons: dict[str, set[str]] = {}
    reason = None  # the reason whose rules the indented lines below it list
    if match:
        for line in match.group(1).splitlines():
            if line.startswith("        ") and reason is not None:
                reasons[reason].update(r.strip() for r in line.split(","))
            elif line.rstrip().endswith(":"):
                reason = line.strip().rstrip(":")
                reasons[reason] = set()
    return reasons


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The last non-empty line of stderr: where the workflow's one-line errors end up."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` and everything in it read-only for this process: by file mode, and for root (whom modes do not
    stop) by the immutable attribute where chattr may set it; skips the test when neither stops a write."""
    paths = [folder, *folder.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    immutable = writable(folder) and shutil.which("chattr") is not None and subprocess.run(
        ["chattr", "-R", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if writable(folder):
            pytest.skip("cannot make a folder read-only here (root, and chattr +i is not allowed)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def writable(folder: Path) -> bool:
    probe = folder / ".write-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def one_line_error(function, **kwargs) -> str:
    """The message of the ConfigError that function(**kwargs) raises, checked to be one line."""
    from deforum_steps.config import ConfigError

    with pytest.raises(ConfigError) as info:
        function(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def fake_diffusion_output(base, k):
    """The conformance runs' stand-in for diffusion k (conformance/README.md): `base` rolled 3k px along x, then 2k
    px along y; R ^= 17k % 256."""
    img = np.roll(np.roll(base, 3 * k, axis=1), 2 * k, axis=0)
    img[..., 0] ^= np.uint8(17 * k % 256)
    return img
