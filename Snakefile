"""Deforum-style animation as a Snakemake workflow: one render config (config/render.yaml, keys in
docs/config-keys.md) -> the output folder output_path/batch_name. Stages live in rules/*.smk, their job
functions in deforum_steps/ (one module per stage, same name)."""

import sys
from pathlib import Path

from snakemake.utils import min_version

from deforum_steps import depth_models, gradient_settings, interpolation, masks, model_files, preview, process
from deforum_steps import stills, video_input
from deforum_steps import report as report_pages
from deforum_steps.config import ConfigError, check_output_folder, load_config, resolve_seed
from deforum_steps.schedules import schedule_columns

min_version("9.0")

# Snakemake walks the DAG recursively: a chain of per-frame jobs nests one call level per frame.
sys.setrecursionlimit(100_000)
# Before anything imports torch: idle OpenMP threads sleep; no full garbage collections while the plan is made.
process.prepare()

# A batch (`--config batch=renders/`): each render config it names is a module of this Snakefile, loaded by
# rules/batch.smk with its own config; the single-render workflow below is what each of them runs.
if "batch" in config:

    include: "rules/batch.smk"

else:

    # The config, checked and completed before any rule exists: a mistake is one line, with nothing written.
    try:
        # Keys given with --config are pinned: an alias there (width) wins over the config file's key (W).
        resolved = load_config(
            config, Path(workflow.basedir) / "config" / "schema.yaml", workflow.config_settings.config
        )
        config.clear()  # the resolved keys only, aliases translated
        config.update(resolved)
        RANDOM_SEED = config["seed"] == -1
        check_output_folder(config)
        config["seed"] = resolve_seed(config)
        masks.check_input_images(config)
        config["model"] = model_files.check_model(config)  # a bare file name or `custom`: the checkpoint's path
        DEPTH_MODEL = depth_models.resolve(config)  # 3D: the depth model, auto resolved, its weights here
        gradient_settings.check(config)  # gradient conditioning: its images, CLIP and aesthetic head here
        # These modes' frame counts come from the video (probed now) and from the key prompts, not max_frames.
        if config["animation_mode"] == "Video Input":
            VIDEO_PLAN = video_input.plan(config)
            config["max_frames"] = len(VIDEO_PLAN["video"]["extraction"]["indices"])
        elif config["animation_mode"] == "Interpolation":
            config["max_frames"] = interpolation.frame_count(config)
            config["seed_behavior"] = "fixed"  # one seed for every frame, as in the notebook: a smooth tween
        elif config["animation_mode"] == "None":
            STILLS = stills.plan(config)
        SCHEDULES = schedule_columns(config)  # {column: its value at every frame}
    except ConfigError as e:
        # One line and a non-zero exit; an exception escaping here would be printed with a traceback.
        sys.exit(f"config error: {e}")
    if DEPTH_MODEL:  # said once the whole config is right: a mistake stays one line
        print(DEPTH_MODEL.line, file=sys.stderr)

    include: "rules/common.smk"
    include: "rules/schedules.smk"

    # The frames, by animation_mode: each of these sets FINAL_FRAMES, the frames the video is made of.
    if ANIMATED:

        include: "rules/animation.smk"

        if USE_DEPTH:

            include: "rules/depth.smk"

    elif config["animation_mode"] == "Video Input":

        include: "rules/video_input.smk"

    elif config["animation_mode"] == "Interpolation":

        include: "rules/interpolation.smk"

    else:

        include: "rules/stills.smk"

    if config["animation_mode"] != "None":

        include: "rules/video.smk"

    # `snakemake --report`: the render's pages (contact sheet, video, tables) join the targets, captioned by report/.
    report: "report/workflow.rst"

    if report_pages.requested(sys.argv):

        include: "rules/report.smk"

    # motion_preview_mode: the camera path alone, into preview/; its targets replace the render's.
    if config["motion_preview_mode"]:

        include: "rules/preview.smk"

    onstart:
        process.start_jobs(workflow)
        start_run()
        preview.start_live(OUT, config)


# One render's targets, or every render's in a batch.
rule all:
    default_target: True
    input:
        TARGETS,
