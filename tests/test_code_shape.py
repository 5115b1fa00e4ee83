"""The workflow's shape, checked: rules are wiring (one call per run:), planning never imports torch, the
architecture doc lists every module, and key aliases only name other spellings of schema keys."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest
import yaml
from helpers import REPO, SCHEMA, SNAKEFILE, SNAKEMAKE, output, write_config

from deforum_steps.config import KEY_ALIASES, NO_EFFECT

RULE_FILES = sorted((REPO / "rules").glob("*.smk"))


def run_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(rule name, the statement lines of its run: block) for every rule of a .smk text."""
    blocks, rule = [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"\s*rule (\w+):", line):
            rule = m.group(1)
        elif line.strip() == "run:":
            indent = len(line) - len(line.lstrip())
            body = []
            for follow in lines[i + 1:]:
                if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                    break
                if follow.strip():
                    body.append(follow.strip())
            blocks.append((rule, body))
    return blocks


def test_every_run_block_is_one_call_into_the_stage_module():
    seen = 0
    for path in RULE_FILES:
        for rule, body in run_blocks(path.read_text()):
            seen += 1
            assert len(body) == 1, f"{path.name}: rule {rule} runs {len(body)} statements: {body}"
            call = ast.parse(body[0]).body[0]
            assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call), f"rule {rule}: {body[0]}"
            module = call.value.func.value.id
            # a stage module imported under another name (report: Snakemake's own `report` is a directive)
            aliases = dict(re.findall(r"^from deforum_steps import (\w+) as (\w+)$", path.read_text(), re.MULTILINE))
            module = {alias: name for name, alias in aliases.items()}.get(module, module)
            assert module == path.stem, f"{path.name}: rule {rule} calls into {module}, not {path.stem}"
    assert seen >= 12


def test_stage_files_match_their_modules():
    for path in RULE_FILES:
        if path.stem != "common":
            assert (REPO / "deforum_steps" / f"{path.stem}.py").is_file(), path.name


def test_architecture_doc_lists_every_module():
    doc = (REPO / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", doc, re.MULTILINE))
    modules = {p.stem for p in (REPO / "deforum_steps").glob("*.py")} - {"__init__"}
    assert listed == modules


def test_aliases_and_no_effect_keys_name_schema_keys():
    keys = set(yaml.safe_load(SCHEMA.read_text())["properties"])
    assert set(KEY_ALIASES.values()) <= keys and not set(KEY_ALIASES) & keys
    assert set(NO_EFFECT) <= keys


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """A PYTHONPATH entry whose `torch` fails to import, named first so it shadows the real one."""
    root = tmp_path_factory.mktemp("no_torch")
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text("raise ImportError('torch imported while planning')\n")
    check = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, "PYTHONPATH": str(root)},
                           capture_output=True, text=True)
    assert "torch imported while planning" in check.stderr  # the shadow works, so the test below can fail
    return str(root)


def video(path, ffmpeg_size="64x64"):
    from deforum_steps.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={ffmpeg_size}:rate=4:duration=1",
                    "-c:v", "ffv1", str(path)], check=True)
    return str(path)


@pytest.mark.parametrize("mode", ["2D", "3D", "Video Input", "Interpolation", "None"])
def test_planning_never_imports_torch(tmp_path, no_torch, mode):
    """A dry run of every mode plans its jobs with torch made unimportable."""
    settings = {"animation_mode": mode, "enable_schedule_samplers": True, "sampler_schedule": "0:('euler')",
                "diffusion_cadence": 2, "save_depth_maps": True}
    if mode == "Video Input":
        settings["video_init_path"] = video(tmp_path / "in.mkv")
    write_config(tmp_path, **settings)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([no_torch, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(SNAKEFILE), "-n", "--configfile", str(tmp_path / "render.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, output(proc)[-3000:]
    assert "torch imported while planning" not in output(proc)
    assert "Job stats" in output(proc)
