"""Deforum-style animation as a Snakemake workflow: one render config (config/render.yaml, keys in
docs/config-keys.md) -> the output folder output_path/batch_name. Stages live in rules/*.smk."""
import sys
from pathlib import Path

from deforum_steps import interpolation, masks, video_input
from deforum_steps.config import ConfigError, load_config, resolve_seed
from deforum_steps.schedules import build_table

# Snakemake walks the DAG recursively: a chain of per-frame jobs nests one call level per frame.
sys.setrecursionlimit(100_000)

try:
    config.update(load_config(config, Path(workflow.basedir) / "config" / "schema.yaml"))
    RANDOM_SEED = config["seed"] == -1
    config["seed"] = resolve_seed(config)
    masks.check_input_images(config)
    # These modes' frame counts come from the video (probed now) and from the key prompts, not max_frames.
    if config["animation_mode"] == "Video Input":
        VIDEO_PLAN = video_input.plan(config)
        config["max_frames"] = len(VIDEO_PLAN["video"]["indices"])
    elif config["animation_mode"] == "Interpolation":
        config["max_frames"] = interpolation.frame_count(config)
        config["seed_behavior"] = "fixed"  # one seed for every frame, as in the notebook: a smooth tween
    SCHEDULES = build_table(config)
except ConfigError as e:
    # One line and a non-zero exit; an exception escaping here would be printed with a traceback.
    sys.exit(f"config error: {e}")


include: "rules/common.smk"
include: "rules/schedules.smk"
include: "rules/video.smk"
include: "rules/animation.smk"
include: "rules/video_input.smk"
include: "rules/interpolation.smk"
include: "rules/images.smk"


onstart:
    start_run()


rule all:
    default_target: True
    input:
        all_targets(),
