"""The `deforum` logger plugin (snakemake_logger_plugin_deforum): one line per finished job, errors always.
Unit tests feed it Snakemake's log records; the workflow tests run a failing render through the profile."""
from __future__ import annotations

import logging
import re

import pytest
from helpers import output, read_only, run_snakemake, write_config
from snakemake.settings.enums import Quietness
from snakemake.settings.types import OutputSettings
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

from snakemake_logger_plugin_deforum import LogHandler, format_seconds

PROFILE_QUIET = {Quietness.RULES, Quietness.HOST}
STATS = "Job stats:\njob      count\n-----  -------\nframe        9\ntotal       13"


def handler(quiet=PROFILE_QUIET, dryrun=False) -> LogHandler:
    return LogHandler(OutputSettings(quiet=set(quiet), dryrun=dryrun, stdout=dryrun, nocolor=True), None)


def record(msg, level=logging.INFO, created=0.0, **extra) -> logging.LogRecord:
    rec = logging.makeLogRecord({"msg": msg, "levelno": level, "levelname": logging.getLevelName(level), **extra})
    rec.created = created
    return rec


def job_info(jobid, rule, created, **wildcards):
    return record(f" Rule: {rule}, Jobid: {jobid}", created=created, event=LogEvent.JOB_INFO, jobid=jobid,
                  rule_name=rule, wildcards=wildcards, output=[f"out/{rule}.x"] if rule != "all" else [],
                  rule_msg=None, local=False, is_checkpoint=False, input=[], log=[], benchmark=None,
                  reason="Missing output files", resources={}, priority=0, threads=1, indent=False)


def finished(jobid, created):
    return record(f"Finished jobid: {jobid}", created=created, event=LogEvent.JOB_FINISHED, job_id=jobid)


def progress(done, total, created):
    return record(None, created=created, event=LogEvent.PROGRESS, done=done, total=total)


def job_error():
    return record("Error in rule frame, jobid: 4", logging.ERROR, event=LogEvent.JOB_ERROR, rule_name="frame",
                  rule_msg=None, jobid=4, input=["out/frames/00002.png"], output=["out/frames/00003.png"], log=[],
                  conda_env=None, container_img=None, aux={}, indent=False, shellcmd=None)


def feed(h: LogHandler, *records) -> None:
    for rec in records:
        h.handle(rec)


def test_the_plugin_is_found_by_snakemake():
    assert LoggerPluginRegistry().get_plugin("deforum").log_handler is LogHandler


def test_one_line_per_finished_job_and_no_scheduler_chatter(capsys):
    h = handler()
    feed(h, record("Building DAG of jobs..."), record("Select jobs to execute..."),
         record("Execute 1 jobs...", event=LogEvent.JOB_STARTED, jobs=[3]),
         record("Provided cores: 1", event=LogEvent.RESOURCES_INFO),
         record(STATS, event=LogEvent.RUN_INFO, stats={"schedules": 1, "first_frame": 1, "frame": 9, "video": 1,
                                                        "all": 1, "total": 13}),
         job_info(2, "schedules", 99.0), finished(2, 100.0), progress(1, 13, 100.0),
         job_info(3, "first_frame", 100.0), finished(3, 102.5), progress(2, 13, 102.5),
         job_info(4, "frame", 102.5, i="00001"), finished(4, 103.0), progress(3, 13, 103.0),
         job_info(5, "frame", 103.0, i="00002"), finished(5, 103.04), progress(4, 13, 103.04),
         job_info(0, "all", 110.0), finished(0, 110.0), progress(13, 13, 110.0),
         record("Complete log(s): /x/.snakemake/log/a.log"))
    assert capsys.readouterr().err.splitlines() == [
        "Building DAG of jobs...",
        *STATS.splitlines(),
        "[ 1/13] schedules done (1.0 s) · frames 0/10",
        # the first job that diffuses loads the model: the time left is estimated from the jobs after it
        "[ 2/13] first_frame done (2.5 s) · frames 1/10",
        "[ 3/13] frame 00001 done (500 ms) · frames 2/10 · about 5.0 s left",
        "[ 4/13] frame 00002 done (40 ms) · frames 3/10 · about 2.4 s left",
        "[13/13] all jobs done",
        "Complete log(s): /x/.snakemake/log/a.log",
    ]


@pytest.mark.parametrize("quiet", [PROFILE_QUIET, {Quietness.ALL}])
def test_errors_are_printed_whatever_the_quiet_setting(capsys, quiet):
    h = handler(quiet)
    feed(h, record("Select jobs to execute..."), job_error(),
         record('RuleException:\nFileNotFoundError in file "rules/animation.smk", line 42:\ncannot read image x.png',
                logging.ERROR, event=LogEvent.ERROR, exception="RuleException"),
         record("Exiting because a job execution failed. Look above for error messages", logging.ERROR))
    err = capsys.readouterr().err
    assert "Error in rule frame:\n    input: out/frames/00002.png\n    output: out/frames/00003.png" in err
    assert "cannot read image x.png" in err and "Exiting because a job execution failed" in err
    assert "Select jobs" not in err


def test_dry_runs_and_runs_without_quiet_rules_print_snakemakes_own_output(capsys):
    stats = "Job stats:\njob      count\n-----  -------\nframe        3\ntotal        3\n"
    feed(handler(dryrun=True), record(stats, event=LogEvent.RUN_INFO, stats={"frame": 3, "total": 3}))
    assert capsys.readouterr().out == stats + "\n"
    feed(handler({Quietness.HOST}), job_info(4, "frame", 1.0, i="00001"), finished(4, 2.0), progress(2, 12, 2.0))
    err = capsys.readouterr().err
    assert "rule frame:" in err and "wildcards: i=00001" in err and "2 of 12 steps (17%) done" in err


def test_durations():
    assert [format_seconds(s) for s in (0.0404, 1.04, 59.94, 61, 3600 * 2 + 65)] == [
        "40 ms", "1.0 s", "59.9 s", "1 min 01 s", "2 h 01 min"]


@pytest.mark.parametrize("quiet", [[], ["--quiet", "all"]])
def test_a_failing_render_names_the_rule_the_error_and_the_files(tmp_path, quiet):
    write_config(tmp_path, max_frames=2, steps=2, skip_video=True)
    run_snakemake(tmp_path, check=True)
    # Frame 1 to render again into a folder that may not be written (bad config and damaged files are caught
    # before any job runs): its job fails.
    (tmp_path / "output/test/frames/00001.png").unlink()
    with read_only(tmp_path / "output/test/frames"):
        proc = run_snakemake(tmp_path, *quiet)
    assert proc.returncode != 0
    text = output(proc)
    assert re.search(r"^error: cannot write output/test/frames/00001\.png: (Permission denied|Operation not "
                     r"permitted)$", text, re.M), text
    assert "Error in rule frame:" in text and "output/test/frames/00001.png" in text
