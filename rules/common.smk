"""Shared by every stage: the output folder, per-frame schedule rows, the final targets, the run lock."""
import sys

from deforum_steps.config import OutputBusy, lock_output, output_dir, record_seed

OUT = str(output_dir(config))

# Final outputs per animation_mode, besides the schedule records: each stage's .smk appends its own
# (e.g. MODE_TARGETS["2D"].append(f"{OUT}/video.mp4")). rule all in the Snakefile reads them after
# every include.
MODE_TARGETS = {"None": [], "2D": [], "3D": [], "Video Input": [], "Interpolation": []}


def schedule_outputs():
    """The outputs of the schedules rule (settings.yaml only when save_settings)."""
    outputs = {"csv": f"{OUT}/schedules.csv", "png": f"{OUT}/schedules.png"}
    if config["save_settings"]:
        outputs["settings"] = f"{OUT}/settings.yaml"
    return outputs


def all_targets():
    return [*schedule_outputs().values(), *MODE_TARGETS[config["animation_mode"]]]


# Rows as plain Python values, converted once: thousands of per-frame jobs read them while the DAG is built.
_ROWS = SCHEDULES.to_dict("records")


def frame_params(frame):
    """Frame `frame`'s schedule row as one plain dict, meant as a per-frame rule's params: a job then
    reruns when its own row changes and only then. Don't make per-frame jobs depend on schedules.csv,
    which is rewritten whenever any setting changes."""
    return _ROWS[int(frame)]


_run_lock = None


def start_run():
    """onstart: a real run (not -n, not --list-*) starts: lock OUT against a concurrent run, record the drawn seed.

    Snakemake's own lock is off (nolock in the profile) because it stays behind after kill -9.
    """
    global _run_lock
    try:
        _run_lock = lock_output(config)
    except OutputBusy as e:
        sys.exit(f"error: {e}")
    if RANDOM_SEED:
        record_seed(config, config["seed"])
