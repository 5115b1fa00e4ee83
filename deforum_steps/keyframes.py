"""The Deforum schedule language: keyframe strings, prompts and seeds evaluated for every frame
(schedules.build_table assembles them into the per-frame table).

Schedule syntax is the union of the two reference parsers (deforum-behaviour.md §1, decisions.md):
``"0:(1.0), 30: (1.04), "max_f-1":(s)"`` — keys are frame numbers or expressions of ``max_f`` and ``s``
(truncated to int), values are numbers or numexpr expressions of ``t``, ``max_f`` and ``s``.
A numeric key sets only its frame and frames between numeric keys are ramped linearly; an expression
key is evaluated at every frame up to the next key. Frames before the first key take its value.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from functools import lru_cache
from numbers import Real

import numexpr
import numpy as np

from deforum_steps.config import ConfigError

SEED_MODULUS = 2**32
SEED_BEHAVIORS = ("iter", "fixed", "random", "ladder", "alternate", "schedule")

# Element-wise real functions only: reductions (sum, prod, min, max) would mix frames once t is an array.
_DOCUMENTED_FUNCTIONS = frozenset({
    "where", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh",
    "arcsinh", "arccosh", "arctanh", "exp", "expm1", "log", "log10", "log1p", "log2", "sqrt", "abs",
    "floor", "ceil", "round", "trunc", "sign", "fmod", "hypot", "minimum", "maximum", "copysign",
})
FUNCTIONS = frozenset(_DOCUMENTED_FUNCTIONS & set(numexpr.expressions.functions))
VALUE_VARIABLES = ("t", "max_f", "s")
KEY_VARIABLES = ("max_f", "s")
PROMPT_VARIABLES = ("t", "max_f")  # backtick math in prompts
PROMPT_KEY_VARIABLES = ("max_f",)

# check_is_number of both references: `1`, `-1.5`, `.5` are numbers; `1.`, `1e-2` are expressions.
_NUMBER = re.compile(r"[+-]?[0-9]*(\.[0-9]+)?")
_QUOTES = "'\""
_ALLOWED_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod,
                   ast.BitAnd, ast.BitOr, ast.LShift, ast.RShift)
_ALLOWED_UNARY = (ast.UAdd, ast.USub, ast.Invert)
_ALLOWED_COMPARE = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


class _SyntaxProblem(Exception):
    """A schedule text problem found before evaluation; the caller adds the config key."""


def _is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text)) and any(c.isdigit() for c in text)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def schedule_error(name: str, text, reason: str, frame: int | None = None) -> ConfigError:
    where = f" at frame {frame}" if frame is not None else ""
    return ConfigError(f"{name}: {_one_line(reason)}{where} in {text!r}")


# --------------------------------------------------------------------------------------------
# expression safety


@lru_cache(maxsize=4096)
def _expression_problem(expr: str, variables: tuple[str, ...]) -> str | None:
    """Why `expr` may not be given to numexpr (None when it is safe): checked on the Python AST
    that numexpr itself compiles, so nothing the check misses can reach evaluation."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return f"invalid expression {expr.strip()!r}"
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop)):
            continue  # operators are judged at their parent node
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (str, bytes)):
                return f"strings are not allowed in expressions ({node.value!r})"
            if not isinstance(node.value, (int, float)):
                return f"constant {node.value!r} is not allowed"
        elif isinstance(node, ast.Name):
            if node.id.startswith("__"):
                return f"name {node.id!r} is not allowed"
            if id(node) in called:
                if node.id not in FUNCTIONS:
                    return f"unknown function {node.id!r} (allowed: {', '.join(sorted(FUNCTIONS))})"
            elif node.id not in variables:
                return f"unknown variable {node.id!r} (allowed: {', '.join(variables)})"
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return "only calls of plain function names are allowed"
            if node.keywords:
                return f"keyword arguments are not allowed in {node.func.id}()"
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.FloorDiv):
                return "'//' is not supported; use floor(a/b)"
            if not isinstance(node.op, _ALLOWED_BINOPS):
                return f"operator {type(node.op).__name__} is not supported"
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _ALLOWED_UNARY):
                return "'not' is not supported; use ~"
        elif isinstance(node, ast.Compare):
            if len(node.ops) > 1:
                return "chained comparisons are not supported; use (a < b) & (b < c)"
            if not isinstance(node.ops[0], _ALLOWED_COMPARE):
                return f"comparison {type(node.ops[0]).__name__} is not supported"
        elif isinstance(node, ast.BoolOp):
            return "'and'/'or' are not supported; use & and |"
        elif isinstance(node, ast.IfExp):
            return "'if ... else' is not supported; use where(cond, a, b)"
        elif isinstance(node, ast.Attribute):
            return f"attribute access ('.{node.attr}') is not allowed"
        else:
            return f"{type(node).__name__} is not allowed in expressions"
    return None


def _evaluate(expr: str, t, max_f: int, s: int) -> np.ndarray:
    """numexpr with only the documented variables in scope (never the caller's frame)."""
    scope = {"t": t, "max_f": np.int64(max_f), "s": np.int64(s)}
    return numexpr.evaluate(expr, local_dict=scope, global_dict={})


# --------------------------------------------------------------------------------------------
# parsing


def _scan_entries(text: str) -> list[tuple[str, str]]:
    """Split at top-level commas, then each entry at its first top-level colon. Parentheses and
    quotes protect commas/colons (`where(t>5,1,0)`, `"C:/a.ckpt"`); a quote only opens a string at
    the start of a key or value, so an apostrophe inside a name stays a character."""
    entries: list[tuple[str, str]] = []
    depth, quote, prev, start, colon = 0, None, "", 0, None

    def close(end: int) -> None:
        entry = text[start:end]
        if not entry.strip():
            return  # empty entries (trailing comma, ",,") are harmless
        if colon is None:
            raise _SyntaxProblem(f"expected 'frame: (value)' but found {entry.strip()!r}")
        key, value = text[start:colon].strip(), text[colon + 1:end].strip()
        if not key:
            raise _SyntaxProblem("missing frame number before ':'")
        if not value:
            raise _SyntaxProblem(f"missing value after '{key}:'")
        entries.append((key, value))

    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in _QUOTES and prev in ("", "(", ":", ","):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _SyntaxProblem(f"unbalanced ')' at character {i}")
        elif depth == 0 and ch == ",":
            close(i)
            start, colon = i + 1, None
        elif depth == 0 and ch == ":" and colon is None:
            colon = i
        if not ch.isspace():
            prev = ch
    if quote:
        raise _SyntaxProblem(f"unterminated {quote} quote")
    if depth > 0:
        raise _SyntaxProblem("unbalanced '(' (missing ')')")
    close(len(text))
    if not entries:
        raise _SyntaxProblem("no key frames (expected 'frame: (value)')")
    return entries


def _matching_paren(text: str) -> int:
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return i
    return -1


def _unwrap(value: str) -> str:
    """Drop outer parentheses: `((1))` is the number 1 (webui). Spaces inside are kept, because
    both references then treat `( 1.0 )` as an expression, not a number."""
    value = value.strip()
    while value.startswith("(") and _matching_paren(value) == len(value) - 1:
        value = value[1:-1]
    return value


def _unquote(value: str) -> str | None:
    if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
        return value[1:-1]
    return None


def _parse_key(key: str, n_frames: int, seed: int, variables: tuple[str, ...] = KEY_VARIABLES) -> int:
    inner = _unquote(key)
    expr = _unwrap(key if inner is None else inner).strip()
    if _is_number(expr):
        if "." in expr:
            raise _SyntaxProblem(f"frame key {key!r} is not a whole number")
        return int(expr)
    problem = _expression_problem(expr, variables)
    if problem:
        raise _SyntaxProblem(f"frame key {key!r}: {problem}")
    try:
        value = float(_evaluate(expr, 0, n_frames - 1, seed))
    except Exception as exc:  # numexpr raises many types; all mean a bad key
        raise _SyntaxProblem(f"cannot evaluate frame key {key!r}: {exc}") from None
    if not np.isfinite(value):
        raise _SyntaxProblem(f"frame key {key!r} evaluates to {value}")
    return int(value)  # truncation, like the webui parser


def _key_frames(text: str, n_frames: int, seed: int) -> dict[int, str]:
    """{frame: raw value text}; later duplicates win, negative keys are dropped (webui)."""
    frames: dict[int, str] = {}
    for key, value in _scan_entries(text):
        frame = _parse_key(key, n_frames, seed)
        if frame >= 0:
            frames[frame] = value
    if not frames:
        raise _SyntaxProblem("every frame key is negative")
    return frames


def _segments(frames: dict[int, str], n_frames: int) -> list[tuple[int, int, str]]:
    """(start, stop, value) for each key in range, stop = next key or n_frames. Keys >= n_frames are
    ignored unless no key is in range: then the earliest one holds (first key holds back)."""
    keys = sorted(frames)
    in_range = [k for k in keys if k < n_frames]
    if not in_range:
        return [(keys[0], keys[0] + 1, frames[keys[0]])]
    stops = in_range[1:] + [n_frames]
    return [(k, stop, frames[k]) for k, stop in zip(in_range, stops)]


def _hold(frames: dict[int, str], n_frames: int) -> list[str]:
    """Each value holds from its key to the next (ffill); frames before the first key take the first
    value (bfill)."""
    out: list[str] = []
    for i, (start, stop, value) in enumerate(_segments(frames, n_frames)):
        if start >= n_frames:
            return [value] * n_frames
        out.extend([value] * (stop - (0 if i == 0 else start)))
    return out


def check_frames(n_frames) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ConfigError(f"max_frames: must be a whole number >= 1, got {n_frames!r}")


# --------------------------------------------------------------------------------------------
# public evaluation


def evaluate_schedule(text, n_frames: int, *, name: str, seed: int = -1) -> np.ndarray:
    """Per-frame float64 values of a numeric keyframe schedule (or a plain number = constant)."""
    check_frames(n_frames)
    if isinstance(text, Real) and not isinstance(text, bool):
        if np.isnan(text):
            raise schedule_error(name, text, "value is NaN")
        return np.full(n_frames, float(text))
    if not isinstance(text, str):
        raise schedule_error(name, text, "expected a schedule string like '0:(1.0)' or a number")
    try:
        parsed = [(start, stop, *_numeric_value(raw))
                  for start, stop, raw in _segments(_key_frames(text, n_frames, seed), n_frames)]
    except _SyntaxProblem as exc:
        raise schedule_error(name, text, str(exc)) from None

    out = np.full(n_frames, np.nan)
    for start, stop, value, is_number in parsed:
        if start >= n_frames:  # only keys beyond the last frame: the earliest holds over every frame
            out[:] = float(value) if is_number else _evaluate_segment(value, start, start + 1, n_frames,
                                                                      seed, name, text)[0]
        elif is_number:
            out[start] = float(value)
        else:
            out[start:stop] = _evaluate_segment(value, start, stop, n_frames, seed, name, text)
    return _fill_missing(out, name, text)


def _numeric_value(raw: str) -> tuple[str, bool]:
    """(text, is_number). The number test is the references' check_is_number on the text inside
    the parentheses (and quotes, as the webui), so `1.`, `1e-2` and ` 1.0 ` are expressions."""
    value = _unwrap(raw)
    inner = _unquote(value)
    if inner is not None and _is_number(_unwrap(inner)):
        return _unwrap(inner), True
    if _is_number(value):
        return value, True
    value = value.strip()
    if not value:
        raise _SyntaxProblem(f"empty value {raw!r}")
    if ":" in value:
        raise _SyntaxProblem(f"value {raw!r} contains ':' (missing ',' between key frames?)")
    problem = _expression_problem(value, VALUE_VARIABLES)
    if problem:
        raise _SyntaxProblem(problem)
    return value, False


def _evaluate_segment(expr, start, stop, n_frames, seed, name, text) -> np.ndarray:
    t = np.arange(start, stop, dtype=np.int64)
    try:
        result = np.asarray(_evaluate(expr, t, n_frames - 1, seed))
        if np.iscomplexobj(result):
            raise TypeError("complex result")
        return np.broadcast_to(result.astype(np.float64), t.shape)
    except Exception as exc:  # numexpr raises many types; re-run per frame to name the failing one
        for frame in t:
            try:
                _evaluate(expr, frame, n_frames - 1, seed)
            except Exception as frame_exc:
                raise schedule_error(name, text, f"cannot evaluate {expr!r}: {frame_exc}", int(frame)) from None
        raise schedule_error(name, text, f"cannot evaluate {expr!r}: {exc}", start) from None


def _fill_missing(values: np.ndarray, name: str, text) -> np.ndarray:
    """The references' NaN rule: first/last frame take the first/last valid value, then linear
    interpolation over the remaining gaps (pandas 'linear' == np.interp on the valid points)."""
    valid = ~np.isnan(values)
    if not valid.any():
        raise schedule_error(name, text, "evaluates to NaN at every frame")
    values[0] = values[np.argmax(valid)]
    values[-1] = values[len(values) - 1 - np.argmax(valid[::-1])]
    valid[[0, -1]] = True
    if not valid.all():
        idx = np.arange(len(values))
        values[~valid] = np.interp(idx[~valid], idx[valid], values[valid])
    return values


def evaluate_string_schedule(text, n_frames: int, *, name: str, seed: int = -1) -> list[str]:
    """Per-frame values of a string schedule such as `0:('euler'), 10:('dpm2')`, each held until the
    next key. Values are never evaluated: the text inside the parentheses with every quote removed
    (both references), so `0:("C:/a.ckpt")` keeps its colon."""
    check_frames(n_frames)
    if not isinstance(text, str):
        raise schedule_error(name, text, "expected a schedule string like \"0:('euler')\"")
    try:
        frames = _key_frames(text, n_frames, seed)
    except _SyntaxProblem as exc:
        raise schedule_error(name, text, str(exc)) from None
    return _hold({frame: _unwrap(raw).replace("'", "").replace('"', "") for frame, raw in frames.items()},
                 n_frames)


# --------------------------------------------------------------------------------------------
# prompts


_BACKTICK = re.compile(r"`(.*?)`")


def _keyed_prompts(prompts, n_frames: int, name: str) -> dict[int, str]:
    """{frame: text} from a mapping, a list (frame = position) or one string (frame 0), like the
    notebook's Prompts.as_dict; keys are ints, digit strings or expressions of max_f."""
    if prompts is None:
        return {}
    if isinstance(prompts, str):
        items = [(0, prompts)]
    elif isinstance(prompts, Mapping):
        items = list(prompts.items())
    elif isinstance(prompts, (list, tuple)):
        items = list(enumerate(prompts))
    else:
        raise ConfigError(f"{name}: expected a mapping frame -> prompt, got {type(prompts).__name__}")
    frames: dict[int, str] = {}
    for key, value in items:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: prompt for frame {key!r} must be text, got {value!r}")
        if isinstance(key, bool) or not isinstance(key, (int, np.integer, str)):
            raise ConfigError(f"{name}: frame key {key!r} must be a whole number or an expression of max_f")
        try:
            frame = int(key) if not isinstance(key, str) else _parse_key(key, n_frames, -1, PROMPT_KEY_VARIABLES)
        except _SyntaxProblem as exc:
            raise ConfigError(f"{name}: {_one_line(str(exc))}") from None
        if frame >= 0:
            frames[frame] = value
    return frames


def _split_negative(prompt: str) -> tuple[str, str]:
    positive, _, negative = prompt.partition("--neg")
    return positive.strip(), negative.strip()


def _format_number(value: np.generic) -> str:
    return str(value.item())


def _expand_backticks(template: str, frames: np.ndarray, n_frames: int, name: str) -> list[str]:
    """Backtick math (webui prepare_prompt) with `t` bound as a variable rather than replaced as text,
    so `sqrt(t)` works. Evaluated once for all the frames that share the template."""
    pieces = _BACKTICK.split(template)
    columns: list[list[str]] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            columns.append([piece] * len(frames))
            continue
        piece = piece.strip()
        problem = _expression_problem(piece, PROMPT_VARIABLES)
        if problem:
            raise ConfigError(f"{name}: {problem} in `{piece}` of {template!r}")
        try:
            values = np.broadcast_to(np.asarray(_evaluate(piece, frames, n_frames - 1, -1)), frames.shape)
        except Exception as exc:
            frame = next((int(f) for f in frames if not _evaluates(piece, f, n_frames)), int(frames[0]))
            raise ConfigError(f"{name}: cannot evaluate `{piece}` at frame {frame} in {template!r}: "
                              f"{_one_line(exc)}") from None
        columns.append([_format_number(v) for v in values])
    return ["".join(parts) for parts in zip(*columns)]


def _evaluates(expr: str, frame, n_frames: int) -> bool:
    try:
        _evaluate(expr, frame, n_frames - 1, -1)
    except Exception:
        return False
    return True


def _per_frame_text(frames: dict[int, str], n_frames: int, name: str) -> list[str]:
    if not frames:
        return [""] * n_frames
    out = _hold(frames, n_frames)
    for template in {text for text in out if "`" in text}:
        idx = np.array([i for i, text in enumerate(out) if text == template], dtype=np.int64)
        for i, text in zip(idx, _expand_backticks(template, idx, n_frames, name)):
            out[i] = text
    return out


def prompts_per_frame(animation_prompts, neg_prompts, n_frames: int,
                      name: str = "animation_prompts") -> tuple[list[str], list[str]]:
    """(positive, negative) prompt of every frame. An `animation_prompts` value may carry its own
    negative after `--neg`; it comes first, joined with that frame's `neg_prompts` value by ', '.
    `name` is the config key that errors name (None mode passes its `prompts` list)."""
    check_frames(n_frames)
    keyed = _keyed_prompts(animation_prompts, n_frames, name)
    for frame, text in keyed.items():
        if text.count("--neg") > 1:
            raise ConfigError(f"{name}: more than one '--neg' in the prompt of frame {frame}: {text!r}")
    prompts = _per_frame_text(keyed, n_frames, name)
    extra = _per_frame_text(_keyed_prompts(neg_prompts, n_frames, "neg_prompts"), n_frames, "neg_prompts")
    positive, negative = [], []
    for text, extra_negative in zip(prompts, extra):
        pos, neg = _split_negative(text)
        positive.append(pos)
        negative.append(", ".join(part for part in (neg, extra_negative.strip()) if part))
    return positive, negative


# --------------------------------------------------------------------------------------------
# seeds


def seed_sequence(seed: int, behavior: str, n: int, seed_iter_N: int = 1) -> list[int]:
    """Seed of each of `n` diffusions (the references' next_seed), wrapped into [0, 2**32-1].
    'random' draws from a generator seeded with `seed`, so reruns and resumes get the same seeds."""
    seed, every = int(seed), int(seed_iter_N)
    if behavior == "iter":
        if every < 1:
            raise ConfigError(f"seed_iter_N: must be >= 1, got {seed_iter_N!r}")
        seeds = [seed + (k + every - 1) // every for k in range(n)]  # +1 after diffusions 0, N, 2N, ...
    elif behavior == "fixed":
        seeds = [seed] * n
    elif behavior == "ladder":  # +2, -1, +2, -1, ...
        seeds = [seed + k // 2 + 2 * (k % 2) for k in range(n)]
    elif behavior == "alternate":  # +1, -1, +1, ...
        seeds = [seed + k % 2 for k in range(n)]
    elif behavior == "random":
        draws = np.random.default_rng(seed % SEED_MODULUS).integers(0, SEED_MODULUS, size=max(n - 1, 0))
        seeds = ([seed] + [int(d) for d in draws])[:n]
    elif behavior == "schedule":
        raise ConfigError("seed_behavior: 'schedule' takes its seeds from seed_schedule (see build_table)")
    else:
        raise ConfigError(f"seed_behavior: unknown value {behavior!r} (one of {', '.join(SEED_BEHAVIORS)})")
    return [s % SEED_MODULUS for s in seeds]

