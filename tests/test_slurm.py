"""A batch on a real SLURM (slurmctld + slurmd + munge on this machine, tests/slurm_cluster.py) through Snakemake's
slurm executor: one cluster job per render, in which the model loads once and every frame stays its own cached
job. Opt-in (each cluster run takes about a minute): DEFORUM_SLURM_TESTS=1, as .ci/run sets it."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import slurm_cluster
import yaml
from helpers import SMALL_CONFIG, SNAKEFILE, SNAKEMAKE, output, planned_jobs

pytestmark = pytest.mark.slow

LAKE = {**{k: v for k, v in SMALL_CONFIG.items() if k != "batch_name"}, "max_frames": 5}
SEA = {**LAKE, "animation_mode": "Interpolation", "interpolate_x_frames": 1,
       "animation_prompts": {0: "a red apple", 1: "a yellow banana"}}
BATCH = ["batch=renders", "render_mem_mb=1000"]


@pytest.fixture(scope="module")
def cluster():
    if not os.environ.get("DEFORUM_SLURM_TESTS"):
        pytest.skip("set DEFORUM_SLURM_TESTS=1 to start a SLURM here and render on it")
    if reason := slurm_cluster.why_not():
        pytest.skip(reason)
    slurm_cluster.ensure()


def write_renders(workdir: Path, lake: dict = LAKE) -> None:
    (workdir / "renders").mkdir(exist_ok=True)
    (workdir / "renders/lake.yaml").write_text(yaml.safe_dump(lake))
    (workdir / "renders/sea.yaml").write_text(yaml.safe_dump(SEA))


def command(*extra: str, cluster: bool = True) -> list[str]:
    executor = [*slurm_cluster.EXECUTOR_ARGS, "--jobs", "4"] if cluster else []
    return [str(SNAKEMAKE), "-s", str(SNAKEFILE), *executor, "--config", *BATCH,
            *(["render_jobs=cluster"] if cluster else []), *extra]


def run(workdir: Path, cluster: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEFORUM_MODEL_LOG": str(workdir / "model-loads.log")}
    proc = subprocess.run(command(cluster=cluster), cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, output(proc)[-4000:]
    return proc


def loads(workdir: Path) -> list[str]:
    path = workdir / "model-loads.log"
    return path.read_text().splitlines() if path.exists() else []


def written(workdir: Path, render: str) -> dict[str, float]:
    """{frame: when the job that wrote it started}, from the render jobs' own Snakemake records (their frames are
    kept under absolute paths; Snakemake touches the files it checks, so their times say nothing)."""
    frames = (workdir / "output" / render / "frames").resolve()
    times = {}
    for path in frames.glob("*.png"):
        record = workdir / ".snakemake/metadata" / base64.b64encode(str(path).encode()).decode()
        times[path.name] = json.loads(record.read_text())["starttime"]
    return times


def rewritten(before: dict[str, float], after: dict[str, float]) -> list[str]:
    return sorted(name for name in after if before.get(name) != after[name])


@pytest.fixture(scope="module")
def local(cluster, tmp_path_factory):
    """The same batch rendered locally: the frames the cluster must reproduce."""
    workdir = tmp_path_factory.mktemp("local")
    write_renders(workdir)
    run(workdir, cluster=False)
    return workdir


def frame_bytes(workdir: Path, render: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "output" / render / "frames").glob("*.png"))}


def test_a_batch_on_slurm(cluster, local, tmp_path):
    write_renders(tmp_path)
    proc = run(tmp_path)
    assert planned_jobs(proc) == {"lake__schedules": 1, "lake__render": 1, "lake__video": 1, "sea__schedules": 1,
                                  "sea__render": 1, "sea__video": 1, "all": 1}
    assert "submitted with SLURM jobid" in output(proc)
    # bit-identical to the local render; the model loaded once per render job (two processes), nowhere else
    for render in ("lake", "sea"):
        assert frame_bytes(tmp_path, render) == frame_bytes(local, render) != {}
    assert len(loads(tmp_path)) == 2 and len({line.split()[1] for line in loads(tmp_path)}) == 2

    # an edit at frame 3 of lake: lake's job again, rendering frames 3.. only; sea is not touched
    write_renders(tmp_path, {**LAKE, "animation_prompts": {**LAKE["animation_prompts"], 3: "a green tree"}})
    before = written(tmp_path, "lake"), written(tmp_path, "sea")
    proc = run(tmp_path)
    assert planned_jobs(proc) == {"lake__schedules": 1, "lake__render": 1, "lake__video": 1, "all": 1}
    assert rewritten(before[0], written(tmp_path, "lake")) == ["00003.png", "00004.png"]
    assert rewritten(before[1], written(tmp_path, "sea")) == []
    assert len(loads(tmp_path)) == 3

    # kill -9 of the main Snakemake while lake's job runs; the same command again finishes the render without
    # redoing a finished frame, and its job waits for the killed run's job instead of rendering beside it
    write_renders(tmp_path, {**LAKE, "animation_prompts": {**LAKE["animation_prompts"], 1: "a blue lake"}})
    before = written(tmp_path, "lake")
    env = {**os.environ, "DEFORUM_MODEL_LOG": str(tmp_path / "model-loads.log")}
    main = subprocess.Popen(command(), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not squeue_running():
        assert time.monotonic() < deadline and main.poll() is None, "lake's cluster job never started"
        time.sleep(0.5)
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    assert squeue_running()  # the killed run's job goes on
    run(tmp_path)
    assert not squeue_running()
    assert rewritten(before, written(tmp_path, "lake")) == ["00001.png", "00002.png", "00003.png", "00004.png"]
    # the rerun's job waited for the killed run's job, then found every frame done: it loaded no model
    assert len(loads(tmp_path)) == 4
    assert frame_bytes(tmp_path, "lake")["00000.png"] == frame_bytes(local, "lake")["00000.png"]


def squeue_running() -> bool:
    proc = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%j"], capture_output=True, text=True)
    return bool(proc.stdout.strip())
