"""The Snakemake process a render runs in (deforum_steps/process.py): idle OpenMP threads sleep, full garbage
collections wait while the plan is made and while a model loads, jobs run at Python's pace with the plan and the
models frozen, no rate limiter for local jobs, no last garbage collection at exit, no library that only jobs use
imported while planning."""
import gc
import inspect
import subprocess
import sys
import threading
import weakref
from types import SimpleNamespace

import pytest
from helpers import SNAKEFILE, output, write_config

from deforum_steps import process


@pytest.fixture
def gc_settings_after():
    yield
    gc.set_threshold(*process.RUN_THRESHOLDS)
    gc.unfreeze()


def test_idle_openmp_threads_sleep_unless_the_user_says_otherwise(monkeypatch, gc_settings_after):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    process.prepare()
    assert process.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    process.prepare()
    assert process.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_full_collections_wait_for_the_plan_and_jobs_run_at_pythons_pace(gc_settings_after):
    default = gc.get_threshold()
    process.prepare()
    assert gc.get_threshold() == (*default[:2], 1000)
    process.start_jobs(SimpleNamespace(local_exec=True, scheduler=SimpleNamespace(job_rate_limiter=None)))
    assert gc.get_threshold() == default
    assert gc.get_freeze_count() > 0  # the plan, out of the render's collections


class Cycle:
    """An object only the cycle collector frees, as a diffusers pipeline."""

    def __init__(self):
        self.me = self


def test_full_collections_wait_while_a_model_loads_which_is_then_frozen(gc_settings_after):
    default = gc.get_threshold()
    with process.loading_model():
        assert gc.get_threshold() == (*default[:2], 1000)
        model = Cycle()
    assert gc.get_threshold() == default
    assert not any(o is model for o in gc.get_objects())  # frozen: no later collection walks it
    with pytest.raises(RuntimeError), process.loading_model():
        half_built = Cycle()
        raise RuntimeError("a load that fails")
    assert gc.get_threshold() == default
    assert any(o is half_built for o in gc.get_objects())  # garbage to collect, not frozen


def test_concurrent_loads_share_one_hold(gc_settings_after):
    """Jobs are threads: Python's pace is back when the last of two overlapping loads ends, not the first."""
    default = gc.get_threshold()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first_load():
        with process.loading_model():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    thread = threading.Thread(target=first_load)
    thread.start()
    first_in.wait(10)
    with process.loading_model():
        second_in.set()
        first_out.wait(10)
        assert gc.get_threshold() == (*default[:2], 1000)
    thread.join()
    assert gc.get_threshold() == default


def test_a_dropped_model_is_freed(gc_settings_after):
    with process.loading_model():
        model = Cycle()
    dropped = weakref.ref(model)
    del model
    gc.collect()
    assert dropped() is not None  # frozen: the collector skips it
    process.release_frozen()
    assert dropped() is None
    assert gc.get_freeze_count() > 0  # what is still alive frozen again


def test_local_jobs_are_not_rate_limited(gc_settings_after):
    """Snakemake's job rate limiter is switched off when jobs run in this process, kept for a cluster's."""
    for local, kept in ((True, False), (False, True)):
        limiter = object()
        workflow = SimpleNamespace(local_exec=local, scheduler=SimpleNamespace(job_rate_limiter=limiter))
        process.start_jobs(workflow)
        assert (workflow.scheduler.job_rate_limiter is limiter) == kept
    # the attribute is the one Snakemake's scheduler reads before each timer it starts
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert "if self.job_rate_limiter is not None:" in inspect.getsource(JobScheduler.schedule)


# snakemake's main() that reports, as the process ends, the full garbage collections made while Snakemake planned
# (in its DAG or scheduler code) and whether objects were frozen out of the last one (an exit handler registered
# first runs last: after ours, before Python's last collection). With "fixed", gc.set_threshold does nothing: the
# process keeps Python's pace, as it would without process.prepare.
COUNTED = """
import atexit, gc, sys, traceback
if sys.argv.pop(1) == "fixed":
    gc.set_threshold = lambda *thresholds: None
planning = []
def count(phase, info):
    if phase == "start" and info["generation"] == 2:
        planning.extend(1 for frame in traceback.extract_stack() if "snakemake/dag.py" in frame.filename)
gc.callbacks.append(count)
atexit.register(lambda: print(f"planning: {bool(planning)}, frozen: {gc.get_freeze_count() > 0}"))
from snakemake.cli import main
sys.argv[0] = "snakemake"
main()
"""


def test_a_dry_run_plans_without_full_collections_and_skips_the_last(tmp_path):
    write_config(tmp_path, max_frames=600)

    def dry_run(thresholds: str) -> str:
        proc = subprocess.run([sys.executable, "-c", COUNTED, thresholds, "-s", str(SNAKEFILE), "-n", "--configfile",
                               str(tmp_path / "render.yaml")], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, output(proc)[-3000:]
        return proc.stdout.splitlines()[-1]

    assert dry_run("fixed") == "planning: True, frozen: True"  # Python's pace: full collections while planning
    assert dry_run("ours") == "planning: False, frozen: True"


# snakemake's main() that prints, as the process ends, which of the libraries only jobs need were imported.
IMPORTED = """
import atexit, sys
atexit.register(lambda: print("imported:", sorted(m for m in ("pandas", "matplotlib", "torch") if m in sys.modules)))
from snakemake.cli import main
sys.argv[0] = "snakemake"
main()
"""


@pytest.mark.parametrize("mode", ["2D", "3D", "None"])
def test_planning_imports_no_library_only_jobs_need(tmp_path, mode):
    """pandas (0.4 s), matplotlib and torch (2-3 s) wait for the jobs that use them: a dry run imports none."""
    write_config(tmp_path, animation_mode=mode, depth_algorithm="tiny", diffusion_cadence=2)
    proc = subprocess.run([sys.executable, "-c", IMPORTED, "-s", str(SNAKEFILE), "-n", "--configfile",
                           str(tmp_path / "render.yaml")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, output(proc)[-3000:]
    assert proc.stdout.splitlines()[-1] == "imported: []"
