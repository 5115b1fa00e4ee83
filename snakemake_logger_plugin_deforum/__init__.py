"""Snakemake logger plugin `deforum` (`--logger deforum`, set by the workflow profile): one line per finished job.

Snakemake's own output prints five lines or more per job (timestamp, "Finished jobid", "N of M steps",
"Select jobs to execute...", "Execute 1 jobs..."), thousands of lines for a long render, and `--quiet all`
hides errors too. With `rules` in `--quiet` (the profile's setting) this handler prints instead

    [13/51] frame 00012 done (420 ms, about 16 s left)

plus Snakemake's plain messages (the job stats table, "Nothing to be done", the log file, elapsed time).
Warnings and errors (the failed rule with its output and log files, the exception message) are always
printed in full, whatever `--quiet` says. Dry runs, and runs without `rules` in `--quiet`, get Snakemake's
standard output unchanged.

A config file that Snakemake cannot load (missing, not UTF-8, a YAML syntax error, no keys at the top level)
fails before the workflow loads, with a traceback or a message that names neither the file nor the line; this
handler prints one `config error:` line naming both instead.

Snakemake finds the plugin by its module name prefix (snakemake_logger_plugin_), so it is a top-level
package of this project.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from pathlib import Path

import yaml
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

# Events that the one-line-per-job output replaces or leaves out.
_DROPPED_EVENTS = {
    LogEvent.JOB_STARTED,  # "Execute 1 jobs..."
    LogEvent.RESOURCES_INFO,  # "Provided cores: 1", "Rules claiming more threads..."
    LogEvent.WORKFLOW_STARTED,  # host banner
    LogEvent.SHELLCMD,
    LogEvent.GROUP_INFO,
    LogEvent.DEBUG_DAG,
    LogEvent.RULEGRAPH,
}
_DROPPED_MESSAGES = ("Select jobs to execute...", "Assuming unrestricted shared filesystem usage.", "Using shell: ")
# A job failed with one of the workflow's own one-line errors (a write that failed, a damaged file, a config
# mistake found by a job): Snakemake prints it with the rule's stack, which says nothing more to a user.
_ONE_LINE_JOB_ERROR = re.compile(
    r'RuleException:\n(?:WriteError|DamagedFile|ConfigError) in file "[^"\n]*", line \d+:\n([^\n]+)\n(?:  File .*\n?)*',
)


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def config_file_problem(path: str) -> str | None:
    """What stops Snakemake from loading config file `path` (it reads JSON or YAML, UTF-8, keys at the top), as
    "path: reason" (with the line for YAML and encoding errors); None when it loads."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return f"{path}: cannot read the config file ({e.strerror})"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        return f"{path}, line {line}, column {column}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"
    try:
        data = yaml.load(text, Loader=yaml.FullLoader)  # Snakemake's loader (JSON is YAML too)
    except yaml.MarkedYAMLError as e:
        return f"{path}, {yaml_error_place(e)}"
    except yaml.YAMLError as e:
        return f"{path}: YAML syntax: {e}"
    if data is None:
        return f"{path}: the config file is empty; it needs keys at the top level (key: value)"
    if not isinstance(data, dict):
        return f"{path}: the top level is a {type(data).__name__}, not keys (key: value)"
    return None


def yaml_error_place(e: yaml.MarkedYAMLError) -> str:
    """ "line L, column C: YAML syntax: reason" for a yaml MarkedYAMLError."""

    def where(mark: yaml.Mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    if e.context_mark is not None and "end of stream" in (e.problem or ""):
        # The file ends inside a quote or bracket: the mistake is where that was opened, not the file's end
        return f"{where(e.context_mark)}: YAML syntax: {e.context} from here, {e.problem}"
    mark = e.problem_mark or e.context_mark
    context = f" ({e.context} at {where(e.context_mark)})" if e.context and e.context_mark and e.problem else ""
    return f"{where(mark)}: YAML syntax: {e.problem or e.context}{context}"


def config_files_problem() -> str | None:
    """The first problem among the config files of this Snakemake command line (its profiles included)."""
    from snakemake.cli import parse_args

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # parse_args prints the profile it uses again
            configfiles = parse_args(None)[1].configfile or []
    except (Exception, SystemExit):  # not Snakemake's command line (the Python API): keep Snakemake's message
        return None
    return next(filter(None, map(config_file_problem, map(str, configfiles))), None)


def is_config_file_error(record: logging.LogRecord) -> bool:
    """Snakemake failed to load a config file: its message names neither the file nor the line, or it is a
    traceback through snakemake/common/configfile.py."""
    message = record.getMessage()
    return getattr(record, "event", None) == LogEvent.ERROR and (
        "Config file " in message or "configfile.py" in message
    )


def one_line_job_error(message: str) -> str | None:
    """The error line of a job's exception record when it is one of the workflow's own one-line errors."""
    match = _ONE_LINE_JOB_ERROR.fullmatch(message.rstrip("\n") + "\n")
    return f"error: {match.group(1)}" if match else None


def job_error(record: logging.LogRecord) -> str:
    """The failed job's rule and files; the exception itself comes in its own record."""
    lines = [f"Error in rule {record.rule_name}:"]
    for key in ("input", "output", "log"):
        if getattr(record, key, None):
            lines.append(f"    {key}: {', '.join(getattr(record, key))}")
    return "\n".join(lines)


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter
        from snakemake.settings.enums import Quietness

        s = self.common_settings
        quiet = set(s.quiet or ())
        # Snakemake's own stream handler, for dry runs, non-quiet runs, and to format warnings and errors.
        self._default = ColorizingTextHandler(
            nocolor=s.nocolor,
            stream=sys.stdout if s.stdout else sys.stderr,
            formatter=DefaultFormatter(quiet, s.show_failed_logs),
            filter=DefaultFilter(quiet, s.debug_dag, s.verbose, s.dryrun, s.printshellcmds),
        )
        self._silent = Quietness.ALL in quiet and not s.dryrun  # Snakemake's dry runs ignore it too
        self._compact = self._silent or (Quietness.RULES in quiet and not (s.dryrun or s.verbose or s.debug_dag))
        self._quiet = quiet
        self._jobs: dict[int, tuple[str, float]] = {}  # jobid -> (label, start time) of running jobs
        self._finished: tuple[str, float] | None = None  # (label, seconds) of the job the next progress is for
        # (jobs done, time) when the first job finished: the time left is estimated from the jobs after it, as
        # the first one also loads the model
        self._first_done: tuple[int, float] | None = None

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:  # past every quiet setting
            problem = is_config_file_error(record) and config_files_problem()
            if problem:
                self._write(record, f"config error: {problem}")
                return
            if self._compact and getattr(record, "event", None) == LogEvent.JOB_ERROR:
                self._write(record, job_error(record))
            else:
                self._write(record, one_line_job_error(record.getMessage()) or self._default.format(record))
        elif self._silent:
            return
        elif self._compact:
            self._emit_compact(record)
        else:
            self._default.handle(record)

    def _write(self, record: logging.LogRecord, text: str) -> None:
        if text:
            self._default.stream.write(self._default.decorate(record, text) + "\n")
            self._default.stream.flush()

    def _emit_compact(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.JOB_INFO:
            if record.output:  # not the target rule `all`, which has no work of its own
                label = " ".join([record.rule_name, *map(str, record.wildcards.values())])
                self._jobs[record.jobid] = (label, record.created)
        elif event == LogEvent.JOB_FINISHED:
            job = self._jobs.pop(record.job_id, None)
            self._finished = (job[0], record.created - job[1]) if job else None
        elif event == LogEvent.PROGRESS:
            self._write(record, self._progress_line(record))
            self._finished = None
        elif event in _DROPPED_EVENTS or getattr(record, "quietness", None) in self._quiet:
            return
        else:
            message = record.getMessage()
            if message and message != "None" and not message.startswith(_DROPPED_MESSAGES):
                self._write(record, message)

    def _progress_line(self, record: logging.LogRecord) -> str:
        done, total = record.done, record.total
        if self._finished is None:  # a job without work of its own (the target rule `all`)
            return f"[{done}/{total}] all jobs done" if done == total else ""
        label, seconds = self._finished
        line = f"[{done:>{len(str(total))}}/{total}] {label} done ({format_seconds(seconds)}"
        if self._first_done is None:
            self._first_done = (done, record.created)
        elif done < total:
            first, at = self._first_done
            left = (record.created - at) / (done - first) * (total - done)
            line += f", about {format_seconds(left)} left"
        return line + ")"
