"""Snakemake logger plugin `deforum` (`--logger deforum`, set by the workflow profile): one line per finished job.

Snakemake's own output prints five lines or more per job (timestamp, "Finished jobid", "N of M steps",
"Select jobs to execute...", "Execute 1 jobs..."), thousands of lines for a long render, and `--quiet all`
hides errors too. With `rules` in `--quiet` (the profile's setting) this handler prints instead

    [13/51] frame 00012 done (420 ms) · frames 12/48 · about 16 s left

plus Snakemake's plain messages (the job stats table, "Nothing to be done", the log file, elapsed time).
Warnings and errors (the failed rule with its output and log files, the exception message) are always
printed in full, whatever `--quiet` says. Runs without `rules` in `--quiet` get Snakemake's standard output.

A dry run (`-n`) ends with the plan by frame, per stage (rule), instead of Snakemake's per-job parameter dumps:

    plan:
      frame      frames 16–47: prompt changed at 16
      video      made from files that change
      nothing else

Each job's reason is classified in O(1) string operations from the reason text Snakemake already made (a
changed param: the first key whose value differs between the recorded and the current params), so planning
thousands of frames stays fast.

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
import math
import re
import sys
from pathlib import Path

import yaml
from snakemake.settings.enums import Quietness
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
# Dry-run messages that point at per-job blocks the plan replaces (they are printed with `rules` not quiet).
_DRY_RUN_POINTERS = ("Some jobs were triggered by provenance information", "Rules with provenance triggered jobs")
_JOBS_ABOVE = "    (check individual jobs above for details)\n"
# Rules whose one job is a frame of another rule's numbering.
_FRAME_OF_RULE = {"first_frame": ("frame", 0)}
# Rules whose jobs write the output frames, for the progress line's frame count (with cadence > 1, `frame`
# writes diffusions and `blend` the frames).
_FRAME_RULES = ("first_frame", "frame", "video_input_frame", "interpolation_frame", "still")
# Rules whose jobs diffuse: the first of them loads the model, which the estimate of the time left leaves out.
_MODEL_RULES = ("first_frame", "frame", "video_input_frame", "interpolation_frame", "still")
# A batch's rules are named `<render>__<rule>` (rules/batch.smk): the plan and the frame counts go per render.
_RENDER_SEPARATOR = "__"
# A job that reruns only because a job before it does: it extends that job's range in the plan.
FOLLOWS = "made from files that change"
_PARAMS_CHANGED = "Params have changed since last execution: "
_PARAMS_BEFORE = " before: "
# Snakemake's reason texts (jobs.Reason.__str__), first match wins, and what the plan says for them.
_REASONS = (
    ("Forced execution", "forced"),
    ("Missing output files", "not made yet"),
    ("Incomplete output files", "interrupted last time"),
    ("Updated input files", "an input file is newer"),
    ("Input files updated by another job", FOLLOWS),
    ("Set of input files has changed", "a new set of input files"),
    ("Code has changed", "new code of its rule"),
    ("Software environment", "a new software environment"),
)
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


def first_difference(a: str, b: str) -> int:
    """Length of the common prefix of a and b, by bisection on slices (C comparisons, not a Python loop)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def changed_param(reason: str) -> str:
    """ "KEY changed" for Snakemake's params-changed reason, KEY being the innermost dict key at the first
    character where the recorded params (`before: ...`) and the current ones (`now: ...`) differ."""
    start = reason.find(_PARAMS_BEFORE, reason.find(_PARAMS_CHANGED)) + len(_PARAMS_BEFORE)
    split = reason.find("} now: {", start) + 1 or reason.find(" now: ", start)  # dict params: "...} now: {..."
    if split <= 0:
        return "settings changed"
    before, now = reason[start:split], reason[split + len(" now: "):]
    at = first_difference(before, now)
    key_end = before.rfind("': ", 0, at)
    if ", '" in before[key_end:at]:  # the difference is in a key's name: a key was added (or removed)
        added = now[now.rfind("'", 0, at) + 1:now.find("'", at)]
        return f"{added} added"
    key = before[before.rfind("'", 0, key_end) + 1:key_end] if key_end > 0 else ""
    return f"{key} changed" if key else "settings changed"


def job_cause(reason: str) -> str:
    """What the plan says for a job's reason text."""
    if reason.startswith(_PARAMS_CHANGED):
        return changed_param(reason)
    for start, cause in _REASONS:
        if reason.startswith(start):
            return cause
    return changed_param(reason) if _PARAMS_CHANGED in reason else reason.split(":", 1)[0].lower()


class Plan:
    """The jobs of a dry run, per stage and frame, printed as frame ranges with their cause."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[int | None, str]] = {}  # rule -> {frame (None: no frame): cause}
        self.order: dict[str, int] = {}  # rule -> its first job id: stages in the order of the DAG

    def add(self, rule: str, wildcards: dict, reason: str, jobid: int = 0) -> None:
        render, rule = split_rule(rule)
        stage, frame = _FRAME_OF_RULE.get(rule, (rule, None))
        stage = f"{render}: {stage}" if render else stage
        if frame is None and wildcards:
            value = next(iter(wildcards.values()))
            frame = int(value) if str(value).isdigit() else None
        self.stages.setdefault(stage, {})[frame] = job_cause(reason)
        self.order[stage] = min(jobid, self.order.get(stage, jobid))

    def lines(self) -> list[str]:
        width = max(map(len, self.stages), default=0)
        lines = ["plan:"]
        for stage in sorted(self.stages, key=self.order.__getitem__):
            jobs = self.stages[stage]
            label = stage.ljust(width)
            for what in self.describe(jobs):
                lines.append(f"  {label}  {what}")
                label = " " * width
        return [*lines, "  nothing else"]

    @staticmethod
    def describe(jobs: dict[int | None, str]) -> list[str]:
        """ "frames 16–47: prompt changed at 16" per run of the stage's frames that rerun for one cause (a job that
        only follows a rerun frame extends that frame's run). A stage whose jobs are every nth frame (the diffusions
        of cadence n) runs in steps of n: "frames 0, 4, …, 1996"."""
        if None in jobs:
            return [jobs[None]]
        frames = sorted(jobs)
        step = math.gcd(*(frame - frames[0] for frame in frames)) or 1
        runs: list[list] = []  # [first, last, cause]
        for frame in frames:
            cause = jobs[frame]
            if runs and frame == runs[-1][1] + step and cause in (FOLLOWS, runs[-1][2]):
                runs[-1][1] = frame
            else:
                runs.append([frame, frame, cause])
        return [f"{frame_run(first, last, step)}: {cause}" + (f" at {first}" if cause.endswith(" changed") and
                                                               first != last else "")
                for first, last, cause in runs]


def frame_run(first: int, last: int, step: int) -> str:
    """ "frame 4", "frames 16–47", "frames 0, 4, 8", "frames 0, 4, …, 1996"."""
    if first == last:
        return f"frame {first}"
    if step == 1:
        return f"frames {first}–{last}"
    shown = range(first, last + 1, step)
    return "frames " + (", ".join(map(str, shown)) if len(shown) <= 3 else f"{first}, {first + step}, …, {last}")


def split_rule(name: str) -> tuple[str, str]:
    """(render, rule) of a rule name: ("", "frame") for a single render's frame, ("lake", "frame") for lake__frame."""
    render, _, rule = name.rpartition(_RENDER_SEPARATOR)
    return render, rule


def frame_rules(stats: dict[str, int]) -> tuple[str, ...]:
    """The rules among a run's job `stats` whose jobs write the output frames: a render's blends when it has them,
    else its diffusions."""
    blended = {split_rule(rule)[0] for rule in stats if split_rule(rule)[1] == "blend"}
    return tuple(rule for rule in stats
                 if split_rule(rule)[1] in (("blend",) if split_rule(rule)[0] in blended else _FRAME_RULES))


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
        self._dry_plan = Plan() if s.dryrun else None
        self._frames: dict[str, tuple[int, int]] = {}  # render ("" alone) -> (done, total) output frames of this run
        self._frame_rules: tuple[str, ...] | None = None  # set by the run's first job stats
        self._loads_model = False
        self._jobs: dict[int, tuple[str, float]] = {}  # jobid -> (label, start time) of running jobs
        self._finished: tuple[str, float] | None = None  # (label, seconds) of the job the next progress is for
        # (jobs done, time) when the first job that loads the diffusion model finished (the first job of a run
        # without one): the time left is estimated from the jobs after it
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
        elif self._dry_plan is not None:
            self._emit_dry_run(record)
        else:
            self._default.handle(record)

    def _emit_dry_run(self, record: logging.LogRecord) -> None:
        """Snakemake's dry-run output, with the plan by frame after the jobs (replacing the repeated job
        stats), and without the pointers to per-job blocks that `rules` in --quiet hides."""
        event = getattr(record, "event", None)
        jobs_hidden = Quietness.RULES in self._quiet
        if event == LogEvent.JOB_INFO and record.output:
            self._dry_plan.add(record.rule_name, record.wildcards, record.reason, record.jobid)
        elif event == LogEvent.RUN_INFO and self._dry_plan.stages:
            self._write(record, "\n".join(self._dry_plan.lines()) + "\n")
            if jobs_hidden:
                return
        elif jobs_hidden and record.getMessage().startswith(_DRY_RUN_POINTERS):
            return
        elif jobs_hidden and _JOBS_ABOVE in record.getMessage():
            record.msg, record.args = record.getMessage().replace(_JOBS_ABOVE, ""), ()
        self._default.handle(record)

    def _write(self, record: logging.LogRecord, text: str) -> None:
        if text:
            self._default.stream.write(self._default.decorate(record, text) + "\n")
            self._default.stream.flush()

    def _emit_compact(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.RUN_INFO and getattr(record, "stats", None) and self._frame_rules is None:
            self._frame_rules = frame_rules(record.stats)
            for rule in self._frame_rules:
                render = split_rule(rule)[0]
                self._frames[render] = (0, self._frames.get(render, (0, 0))[1] + record.stats[rule])
            self._loads_model = any(split_rule(rule)[1] in _MODEL_RULES for rule in record.stats)
            self._write(record, record.getMessage())
        elif event == LogEvent.JOB_INFO:
            if record.output:  # not the target rule `all`, which has no work of its own
                label = " ".join([record.rule_name, *map(str, record.wildcards.values())])
                self._jobs[record.jobid] = (label, record.created)
        elif event == LogEvent.JOB_FINISHED:
            job = self._jobs.pop(record.job_id, None)
            self._finished = (job[0], record.created - job[1]) if job else None
            if job and job[0].split(" ", 1)[0] in (self._frame_rules or ()):
                render = split_rule(job[0].split(" ", 1)[0])[0]
                self._frames[render] = (self._frames[render][0] + 1, self._frames[render][1])
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
        line = f"[{done:>{len(str(total))}}/{total}] {label} done ({format_seconds(seconds)})"
        render, rule = split_rule(label.split(" ", 1)[0])
        frames_done, frames_total = self._frames.get(render, (0, 0))
        if frames_total:
            line += f" · {render + ': ' if render else ''}frames {frames_done}/{frames_total}"
        if self._first_done is None:
            if rule in _MODEL_RULES or not self._loads_model:
                self._first_done = (done, record.created)
        elif done < total:
            first, at = self._first_done
            left = (record.created - at) / (done - first) * (total - done)
            line += f" · about {format_seconds(left)} left"
        return line
