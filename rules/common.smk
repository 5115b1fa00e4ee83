"""Shared by every stage: the output folder and its paths, per-frame schedule rows and the params and inputs
they feed, the threads and resources of per-frame jobs, the final targets, the run lock. Helpers live here, so the
stage files hold only rules."""

import inspect
import tempfile

from deforum_steps import animation, batch, io, masks, prompts
from deforum_steps.cadence import blend_job_plan, init_job_plan
from deforum_steps.config import ConfigError, OutputBusy, lock_output, output_dir, record_seed
from deforum_steps.dependencies import (
    ANIMATION_SETTINGS,
    DEPTH_SETTINGS,
    DIFFUSION_COLUMNS,
    DIFFUSION_SETTINGS,
    FIRST_FRAME_SETTINGS,
    MASK_SETTINGS,
    MOTION_COLUMNS,
    WARP_SETTINGS,
    diffusion_settings,
    pick,
)

OUT = str(output_dir(config))
MODE = config["animation_mode"]
ANIMATED = MODE in ("2D", "3D")
N_FRAMES = config["max_frames"]
CADENCE = config["diffusion_cadence"] if ANIMATED else 1
# 3D warps read depth maps; 2D ones, and 3D without use_depth_warping (a flat scene), none.
USE_DEPTH = MODE == "3D" and config["use_depth_warping"]
FRAMES = f"{OUT}/frames"
# With cadence 1 the diffusions are the frames; with cadence c > 1 they go to diffused/ and are blended.
DIFFUSED = FRAMES if CADENCE == 1 else f"{OUT}/diffused"
# The final outputs, the input of the rule named all; each stage file adds its own.
TARGETS = []
# Threads of the jobs that run a model (deforum_steps/cpu_threads.py): torch's pool is process-wide, so every model
# job that can run beside another gets the same count. With cadence 1 each diffusion (and 3D depth map) waits for
# the one before: all the cores; with cadence > 1 blends run beside the next diffusion: half each, except in 3D with
# depth warping, where each blend predicts the depth map the next blend and diffusion read: a chain again.
# Independent frames (Video Input, Interpolation, None) take one thread each, and --cores N renders N at once.
# `--set-threads frame=4` (or a profile's set-threads) overrides a rule's count.
# In a batch, the renders running side by side share the cores (batch.cores_per_render).
RENDER_CORES = batch.cores_per_render(workflow.cores)
MODEL_THREADS = RENDER_CORES if CADENCE == 1 or USE_DEPTH else max(1, RENDER_CORES // 2)
# Resources of per-frame jobs. Snakemake's default tmpdir is an expression evaluated for every job (a sixth of the
# time a bare chain of jobs takes to plan, measured); our jobs run in this process and read no $TMPDIR: the same
# value, computed once.
FRAME_RESOURCES = {"tmpdir": tempfile.gettempdir()}
# (where, prompt, negative prompt) of everything diffused, for log_weighted_subprompts; None and Interpolation
# mode replace it with their images' and key prompts'.
RENDERED_PROMPTS = [
    (f"frame {i}", p, n) for i, (p, n) in enumerate(zip(SCHEDULES["prompt"], SCHEDULES["negative_prompt"]))
]


def schedule_outputs():
    """The outputs of the schedules rule (settings.yaml and its webui twin only when save_settings)."""
    outputs = {"csv": f"{OUT}/schedules.csv", "png": f"{OUT}/schedules.png"}
    if config["save_settings"]:
        outputs["settings"] = f"{OUT}/settings.yaml"
        outputs["webui_settings"] = f"{OUT}/deforum_settings.txt"
    return outputs


def frame_path(i):
    return f"{FRAMES}/{int(i):05d}.png"


def diffused_path(d):
    return f"{DIFFUSED}/{int(d):05d}.png"


def depth_path(s):
    return f"{OUT}/depth/{int(s):05d}.npy"


# Each frame's row, made once: thousands of per-frame jobs read them while the DAG is built.
_ROWS = [dict(zip(SCHEDULES, values)) for values in zip(*SCHEDULES.values())]


def frame_params(frame):
    """Frame `frame`'s schedule row as one plain dict, meant as a per-frame rule's params: a job then
    reruns when its own row changes and only then. Don't make per-frame jobs depend on schedules.csv,
    which is rewritten whenever any setting changes."""
    return _ROWS[int(frame)]


def mask_settings():
    """With use_mask, how the mask file becomes a mask changes every masked diffusion."""
    return pick(config, MASK_SETTINGS) if config["use_mask"] else {}


def mask_input():
    return [config["mask_file"]] if config["use_mask"] else []


def known_signature(function):
    """For a per-frame rule's input or params function. Snakemake reads such a function's signature at every call
    (inspect.signature, thousands of times while it plans a long render: a twelfth of the time a 3D render with
    cadence 4 takes to plan, measured); read once here, it is kept where inspect.signature looks first."""
    function.__signature__ = inspect.signature(function)
    return function


# ---- 2D / 3D: rules/animation.smk and rules/depth.smk --------------------------------------------------
# One input and one params function per rule, each signature read once (known_signature).

ANIMATION_JOB_SETTINGS = {**diffusion_settings(config, ANIMATION_SETTINGS), **mask_settings()} if ANIMATED else {}
WARP_JOB_SETTINGS = pick(config, WARP_SETTINGS[MODE]) if ANIMATED else {}
DEPTH_JOB_SETTINGS = pick(config, DEPTH_SETTINGS) if USE_DEPTH else {}
# A blend job warps; in 3D with depth warping it also predicts its frame's depth map (animation.blend_frame), a
# second output, with the threads of a model job.
BLEND_JOB_SETTINGS = {**WARP_JOB_SETTINGS, **DEPTH_JOB_SETTINGS}
BLEND_DEPTH_OUTPUT = {"depth_map": f"{OUT}/depth/{{i}}.npy"} if USE_DEPTH else {}
BLEND_THREADS = MODEL_THREADS if USE_DEPTH else 1


def depth_inputs(maps):
    """The files of these depth maps, when the render's warps read depth maps."""
    return [depth_path(s) for s in maps] if USE_DEPTH else []


def motion_rows(*sources):
    """{frame: its motion columns} for every warp of these plan sources: a warp job's share of the schedule."""
    return {t: pick(frame_params(t), MOTION_COLUMNS[MODE]) for src in sources if src for t in src["warps"]}


def start_path(source):
    """The image a plan source's warp chain starts from: a diffusion, or the output frame it resumes from."""
    return frame_path(source["frame_at"]) if "frame_at" in source else diffused_path(source["diffused_at"])


def color_reference():
    """The image every diffusion's colors are matched to: frame 0 (= diffusion 0), or the configured image."""
    if config["color_coherence"] == "None":
        return []
    if config["color_coherence"] == "Image":
        return [config["color_coherence_image_path"]]
    return [diffused_path(0)]


@known_signature
def first_frame_inputs(wildcards):
    return {"init": masks.init_images(config)[:1], "mask": mask_input()}


@known_signature
def first_frame_params(wildcards):
    return {"row": frame_params(0), "settings": {**ANIMATION_JOB_SETTINGS, **pick(config, FIRST_FRAME_SETTINGS)}}


@known_signature
def diffusion_inputs(wildcards):
    plan = init_job_plan(int(wildcards.i), CADENCE)
    return {
        "previous": start_path(plan),
        "depth": depth_inputs(animation.depth_frames(plan)),
        "reference": color_reference(),
        "mask": mask_input(),
    }


@known_signature
def diffusion_params(wildcards):
    d = int(wildcards.i)
    plan = init_job_plan(d, CADENCE)
    return {"row": frame_params(d), "plan": plan, "motion": motion_rows(plan), "settings": ANIMATION_JOB_SETTINGS}


@known_signature
def blend_inputs(wildcards):
    plan = blend_job_plan(int(wildcards.i), N_FRAMES, CADENCE)
    chains = [src for src in (plan["prev"], plan["next"]) if src]
    return {"sources": [start_path(src) for src in chains], "depth": depth_inputs(animation.blend_depth_frames(plan))}


@known_signature
def blend_params(wildcards):
    plan = blend_job_plan(int(wildcards.i), N_FRAMES, CADENCE)
    return {"plan": plan, "motion": motion_rows(plan["prev"], plan["next"]), "settings": BLEND_JOB_SETTINGS}


# ---- the run ------------------------------------------------------------------------------------------


def take_output_folder():
    """Lock an existing OUT against a concurrent run and check it (io.check_render) before the DAG is built, so a
    damaged file is missing when Snakemake plans and is rendered again with what follows from it. Returns the
    lock, or None when OUT does not exist yet or another run holds it (that run's files are left alone; a real
    run then stops in start_run)."""
    if not Path(OUT).is_dir():
        return None
    try:
        lock = lock_output(config)
    except OutputBusy:
        return None
    for line in io.check_render(OUT):
        print(f"damaged: {line}", file=sys.stderr)
    return lock


_run_lock = take_output_folder()
io.record_in(OUT)


def start_run():
    """onstart: a real run (not -n, not --list-*) starts: lock OUT against a concurrent run (if take_output_folder
    could not), record the drawn seed, and with log_weighted_subprompts print how each prompt is weighted.

    Snakemake's own lock is off (nolock in the profile) because it stays behind after kill -9.
    """
    global _run_lock
    try:
        _run_lock = _run_lock or lock_output(config)
    except (OutputBusy, ConfigError) as e:
        sys.exit(f"error: {e}")
    if RANDOM_SEED:
        record_seed(config, config["seed"])
    if config["log_weighted_subprompts"]:
        for line in prompts.log_lines(RENDERED_PROMPTS, config):
            print(line, file=sys.stderr)
