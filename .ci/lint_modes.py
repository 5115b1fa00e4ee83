"""`snakemake --lint` for a config of every animation mode; fails on any finding that docs/architecture.md does
not list under "Lint findings we keep" (a table of rules, finding and reason)."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio_ffmpeg
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
BASE = {"model": "builtin:tiny", "W": 64, "H": 64, "max_frames": 4, "seed": 1}
MODES = {
    "2D": {"animation_mode": "2D", "use_init": True, "use_mask": True},
    "3D + cadence": {"animation_mode": "3D", "diffusion_cadence": 2, "save_depth_maps": True, "make_gif": True},
    "Video Input": {"animation_mode": "Video Input", "use_video_mask": True},
    "Interpolation": {"animation_mode": "Interpolation"},
    "None": {"animation_mode": "None", "make_grid": True, "save_sample_per_step": True},
    "motion preview": {"animation_mode": "2D", "motion_preview_mode": True},
}


def kept_findings() -> set[tuple[str, str]]:
    """(rule or snakefile, finding title) pairs from the table under "## Lint findings we keep"."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Lint findings we keep", 1)[1].split("\n## ", 1)[0]
    kept = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and not set(cells[0]) <= set("-: ") and cells[0] != "rules":
            for rule in re.split(r",\s*", cells[0].replace("`", "")):
                kept.add((rule, cells[1]))
    return kept


def findings(text: str) -> set[tuple[str, str]]:
    """(rule or snakefile, finding title) pairs from snakemake --lint's text output."""
    found, where = set(), None
    for line in text.splitlines():
        header = re.match(r"Lints for (?:rule (\S+) \(|snakefile (\S+):)", line)
        if header:
            where = header.group(1) or Path(header.group(2)).name
        elif where and (item := re.match(r"    \* (.+?):?$", line)):
            found.add((where, item.group(1).rstrip(".")))
    return found


def main() -> int:
    kept = {(rule, title.rstrip(".")) for rule, title in kept_findings()}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        for name in ("in.mkv", "mask.mkv"):
            subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=4:duration=1",
                            "-c:v", "ffv1", work / name], check=True)
        cv2_png = work / "init.png"
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", cv2_png],
                       check=True)
        paths = {"video_init_path": str(work / "in.mkv"), "video_mask_path": str(work / "mask.mkv"),
                 "init_image": str(cv2_png), "mask_file": str(cv2_png)}
        for mode, settings in MODES.items():
            config = work / f"{mode.replace(' ', '_')}.yaml"
            config.write_text(yaml.safe_dump({**BASE, **paths, **settings}))
            proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--lint", "--configfile",
                                   str(config)], cwd=work, capture_output=True, text=True)
            output = proc.stdout + proc.stderr
            if "config error" in output or "Error" in output and "Lints for" not in output:
                print(f"lint {mode}: the workflow did not load:\n{output[-3000:]}")
                failed = True
                continue
            new = sorted(findings(output) - kept)
            for where, title in new:
                print(f"lint {mode}: {where}: {title}")
            failed |= bool(new)
            print(f"lint {mode}: {len(findings(output))} findings, {len(new)} not in docs/architecture.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
