"""Deforum-style animation as a Snakemake workflow: one render config (config/render.yaml, keys in
docs/config-keys.md) -> the output folder output_path/batch_name. Stages live in rules/*.smk."""
import sys
from pathlib import Path

from deforum_steps.config import ConfigError, load_config, resolve_seed
from deforum_steps.schedules import build_table

# Snakemake walks the DAG recursively: a chain of per-frame jobs nests one call level per frame.
sys.setrecursionlimit(100_000)

try:
    config.update(load_config(config, Path(workflow.basedir) / "config" / "schema.yaml"))
    RANDOM_SEED = config["seed"] == -1
    config["seed"] = resolve_seed(config)
    SCHEDULES = build_table(config)
except ConfigError as e:
    # One line and a non-zero exit; an exception escaping here would be printed with a traceback.
    sys.exit(f"config error: {e}")


include: "rules/common.smk"
include: "rules/schedules.smk"
include: "rules/video.smk"
include: "rules/animation.smk"


onstart:
    start_run()


rule all:
    default_target: True
    input:
        all_targets(),
