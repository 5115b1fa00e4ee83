"""Batches: many render configs in one Snakemake invocation (`--config batch=renders/`), each a module of the
Snakefile with its own config, output folder and rules (rules/batch.smk).

`batch` names a folder (its *.yaml/*.yml render configs and *.txt/*.json Deforum settings files), one such file,
or a list of them (comma-separated on the command line, a YAML list in a config file). Every render goes to
output_path/<its file's name without suffix>; keys given with --config apply to each render, over its file.
"""
from __future__ import annotations

import fcntl
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import LOCK_FILE, SCHEMA_PATH, ConfigError, apply_settings_file, load_schema, translate_aliases

KEY = "batch"
# Keys of the batch itself, not of its renders (how the render jobs run, rules/batch.smk).
BATCH_KEYS = (KEY, "render_jobs", "render_cpus", "render_mem_mb", "render_minutes", "render_gpus")
RENDER_SUFFIXES = (".yaml", ".yml")
SETTINGS_SUFFIXES = (".txt", ".json")
# Between a render's name and its rule's in the batch's rule names (`lake__frame`): no rule name holds it.
RULE_SEPARATOR = "__"

# How many renders the running batch has (rules/batch.smk sets it before the renders load): their model jobs
# share the cores (cores_per_render).
_renders_in_batch = 1


def render_files(spec: Any) -> list[Path]:
    """The render config and settings files that `batch` names, in order (a folder's sorted by name)."""
    items = spec if isinstance(spec, list) else [s for s in str(spec or "").split(",") if s.strip()]
    if not items:
        raise ConfigError("batch: names no render config (a folder, a file, or a list of them)")
    files = []
    for item in items:
        path = Path(str(item).strip()).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in RENDER_SUFFIXES + SETTINGS_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in RENDER_SUFFIXES + SETTINGS_SUFFIXES:
                raise ConfigError(f"batch: {path} is neither a render config (.yaml) nor a settings file "
                                  "(.txt, .json)")
            files.append(path)
        else:
            raise ConfigError(f"batch: {path} does not exist")
    if not files:
        raise ConfigError(f"batch: no render config (.yaml) or settings file (.txt, .json) in {spec}")
    return files


def module_names(files: Iterable[Path]) -> list[str]:
    """A Python name per render, from its file's name (Snakemake puts each module's namespace under it);
    two files of one name would share an output folder, which is an error."""
    names: dict[str, Path] = {}
    for path in files:
        if path.stem in {p.stem for p in names.values()}:
            other = next(p for p in names.values() if p.stem == path.stem)
            raise ConfigError(f"batch: {other} and {path} would both render into the folder {path.stem!r}; "
                              "rename one")
        name = re.sub(r"\W|__+", "_", path.stem).strip("_") or "render"
        name = name if name[0].isalpha() else f"render_{name}"
        while name in names:
            name += "_"
        names[name] = path
    return list(names)


def render_config(path: Path, pins: Mapping[str, Any]) -> dict:
    """The raw config of the render in `path`: its file (a settings file imported, its summary printed), the
    --config `pins` over it, batch_name its file's name. Validation is the render's own (load_config)."""
    pinned = set(pins) - set(BATCH_KEYS)
    if "batch_name" in pinned:
        raise ConfigError("batch_name: every render of a batch goes to the folder named after its file; "
                          "drop batch_name from --config")
    if path.suffix.lower() in SETTINGS_SUFFIXES:
        raw = {"override_settings_with_file": True, "custom_settings_file": str(path)}
    else:
        raw = _read_yaml(path)
    raw = {**raw, **{key: pins[key] for key in pinned}}
    # The settings file is applied here, not when the render loads, so that its batch_name gives way to the file's.
    raw = apply_settings_file(translate_aliases(raw, pinned), load_schema(SCHEMA_PATH)["properties"], pinned)
    return {**raw, "batch_name": path.stem}


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"batch: cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"batch: {path} holds no render config (key: value lines)")
    if KEY in raw:
        raise ConfigError(f"batch: {path} is itself a batch; list its files in the batch instead")
    return raw


def set_renders_in_batch(count: int) -> None:
    global _renders_in_batch
    _renders_in_batch = max(1, count)


def cores_per_render(cores: int) -> int:
    """A render's share of `cores` while the batch's renders run side by side: all of them for a render alone; one
    each when there are at least as many renders as cores (the jobs of a process share one torch thread pool, so
    every model job gets the same count)."""
    return max(1, cores // min(_renders_in_batch, cores)) if cores else 1


# ---- render jobs on a cluster (rules/batch.smk, render_jobs: cluster) -----------------------------------------

RENDER_JOBS = ("local", "cluster")
# The rules whose jobs load a model: on a cluster they run inside their render's one cluster job.
MODEL_RULES = ("first_frame", "frame", "blend", "depth", "depth_png", "video_input_frame", "interpolation_frame",
               "still")
# CPU-only rules whose outputs the model rules read: they run locally before the render's cluster job.
UPSTREAM_RULES = ("extract_video_frames", "extract_mask_frames")
# CPU-only rules made from the frames (and the schedules, which nothing reads): local, after or beside it.
DOWNSTREAM_RULES = ("schedules", "video", "gif", "grid", "still_table", "report_pages")


def render_jobs(cfg: Mapping[str, Any]) -> str:
    """`render_jobs`: local (every job in this process) or cluster (each render one cluster job)."""
    value = str(cfg.get("render_jobs", "local")).strip().lower()
    if value not in RENDER_JOBS:
        raise ConfigError(f"render_jobs: {value!r} is not one of {', '.join(RENDER_JOBS)}")
    return value


def target_renders(argv: list[str]) -> set[str] | None:
    """The renders a Snakemake process on a cluster node was started for (its `--target-jobs lake__render:`), or
    None in the main run: a render job loads its own render only, not the batch's others (whose folders it must
    neither check nor lock, and whose planning it need not pay for)."""
    if "--target-jobs" not in argv:
        return None
    specs = argv[argv.index("--target-jobs") + 1:]
    specs = specs[:next((i for i, arg in enumerate(specs) if arg.startswith("-")), len(specs))]
    return {spec.split(":", 1)[0].split(RULE_SEPARATOR, 1)[0] for spec in specs}


def render_on_node(snakefile: str, raw: Mapping[str, Any], out: str, threads: int, omit: Iterable[str]) -> None:
    """A render's cluster job: this workflow on the render's config alone (written beside .snakemake/), its jobs
    threads of one process, so the model loads once and every frame stays its own cached job; the CPU-only rules
    in `omit` are left to the main run. It first waits for any other run's hold on the render (a killed main
    run's job may still be rendering it), then renders what is left."""
    # Its outputs by absolute path: Snakemake keeps the metadata of a file under the path as written, so the
    # frames' own records (rule, params: what an edit is checked against) stay apart from those this main run
    # writes for the render job's outputs.
    output_path = raw.get("output_path", load_schema(SCHEMA_PATH)["properties"]["output_path"]["default"])
    configfile = Path(".snakemake") / "deforum-batch" / f"{Path(out).name}.yaml"
    configfile.parent.mkdir(parents=True, exist_ok=True)
    configfile.write_text(yaml.safe_dump({**raw, "output_path": str(Path(output_path).resolve())}, sort_keys=False,
                                         allow_unicode=True))
    lock = Path(out) / LOCK_FILE
    if lock.exists():
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
    omitted = ["--omit-from", *omit] if omit else []
    subprocess.run([sys.executable, "-m", "snakemake", "-s", snakefile, "--cores", str(threads), "--configfile",
                    str(configfile), *omitted], check=True)
