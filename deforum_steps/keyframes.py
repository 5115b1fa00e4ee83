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
import operator
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

# Size limits, checked before numexpr sees an expression. numexpr compiles in pure Python and re-hashes every
# subtree, so compile time grows with operations x nesting depth (measured here: a sum of 200 terms 0.11 s, of
# 250 terms 0.25 s, of 4,000 terms 31 s; 62 terms t**49.5, which numexpr multiplies out, 0.7 s). Within these
# limits the worst expression we found compiles in 0.02-0.07 s (idle to busy machine), while real ones (tens to
# a few hundred characters) pass.
MAX_EXPRESSION_CHARS = 1000  # checked first: ast.parse itself fails on 50,000 nested unary minuses
MAX_EXPRESSION_DEPTH = 50  # operations nested in each other; each link of a chain a+b+c is one level
MAX_EXPRESSION_OPERATIONS = 200  # operators and calls; x**n counts n times x (numexpr multiplies it out)
# numexpr compiles each distinct expression of a schedule once, ~0.5 ms even for `t*2`: the distinct
# expressions of one schedule key (keys, values, prompt backticks) hold at most this many operations together,
# each counting _EXPRESSION_OVERHEAD more, so that the worst schedule compiles in 0.1-0.3 s.
MAX_SCHEDULE_OPERATIONS = 1000
# A whole schedule's text: a Parseq-style export of 50,000 numeric key frames is about 800,000 characters and parses
# in about a second; a longer text is a pasting accident, not a schedule.
MAX_SCHEDULE_CHARS = 1_000_000
_EXPRESSION_OVERHEAD = 2
_POWER_EXPANSION = 50  # numexpr ('aggressive') multiplies out x**n for whole or half n, |n| <= 50
_CONSTANT_BITS = 1024  # float64 range: numexpr's compile computes constants as exact Python ints
_MAX_FRAME_KEY = np.iinfo(np.int64).max - 1  # a key that holds over the render is evaluated at t = key
# Evaluation needs no timer: within these limits compiling a schedule takes well under a second and running
# it is one pass of at most MAX_EXPRESSION_OPERATIONS per frame. (A SIGALRM timer would also only work in the
# main thread and could not stop numexpr's C loop.)

# check_is_number of both references: `1`, `-1.5`, `.5` are numbers; `1.`, `1e-2` are expressions.
_NUMBER = re.compile(r"[+-]?(?=\.?[0-9])[0-9]*(\.[0-9]+)?")
_SPECIAL = re.compile(r"[(),:'\"]")  # what _scan_entries looks at: one regex step instead of a loop per character
_PARENS = re.compile(r"[()]")
_BIT_OPERATORS = re.compile(r"[&|~]|<<|>>")
_QUOTES = "'\""
_SHOWN_CHARS = 120  # longer texts are cut in error messages, which stay one readable line
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Invert: operator.invert}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_OPERATORS = {**_BINARY, **_UNARY, **_COMPARE}
_FOLDED_ELSEWHERE = object()  # a constant numexpr computes itself (a call such as sqrt(2))


class _SyntaxProblem(Exception):
    """A schedule text problem found before evaluation; the caller adds the config key."""


def _is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text))


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _shown(text) -> str:
    """repr of `text` (one line), cut to its first _SHOWN_CHARS characters when it is longer."""
    if isinstance(text, str) and len(text) > _SHOWN_CHARS:
        return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"
    return repr(text)


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def schedule_error(name: str, text, reason: str, frame: int | None = None) -> ConfigError:
    where = f" at frame {frame}" if frame is not None else ""
    return ConfigError(f"{name}: {_one_line(reason)}{where} in {_shown(text)}")


# --------------------------------------------------------------------------------------------
# expression safety


@lru_cache(maxsize=4096)
def _analyse(expr: str, variables: tuple[str, ...]) -> tuple[str | None, int]:
    """(why `expr` may not be given to numexpr or None, its operations). Checked on the Python AST that
    numexpr itself compiles, so nothing the check misses can reach evaluation."""
    expr = expr.strip()
    if len(expr) > MAX_EXPRESSION_CHARS:
        return f"expression is {len(expr)} characters long (limit {MAX_EXPRESSION_CHARS})", 0
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return f"invalid expression {_shown(expr)}", 0
    except (MemoryError, RecursionError):  # the parser's own stack limit, hit by a few hundred nested operators
        return f"expression {_shown(expr)} is nested too deeply (limit {MAX_EXPRESSION_DEPTH} levels)", 0
    problem = _forbidden_node(tree, variables)
    if problem:
        return problem, 0
    depth = _depth(tree)
    if depth > MAX_EXPRESSION_DEPTH:
        return (f"expression nests {depth} operations deep (limit {MAX_EXPRESSION_DEPTH}; each link of a chain "
                "like a+b+c is one level)"), 0
    try:
        operations, _ = _measure(tree.body, expr)
    except _SyntaxProblem as exc:
        return str(exc), 0
    if operations > MAX_EXPRESSION_OPERATIONS:
        return (f"expression has {operations} operations (limit {MAX_EXPRESSION_OPERATIONS}; a constant power "
                "x**n counts as n times x)"), operations
    return None, operations


def _forbidden_node(tree: ast.Expression, variables: tuple[str, ...]) -> str | None:
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop)):
            continue  # operators are judged at their parent node
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (str, bytes)):
                return f"strings are not allowed in expressions ({_shown(node.value)})"
            if not isinstance(node.value, (int, float)):
                return f"constant {node.value!r} is not allowed"
        elif isinstance(node, ast.Name):
            if node.id.startswith("__"):
                return f"name {_shown(node.id)} is not allowed"
            if id(node) in called:
                if node.id not in FUNCTIONS:
                    return f"unknown function {_shown(node.id)} (allowed: {', '.join(sorted(FUNCTIONS))})"
            elif node.id not in variables:
                return f"unknown variable {_shown(node.id)} (allowed: {', '.join(variables)})"
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return "only calls of plain function names are allowed"
            if node.keywords:
                return f"keyword arguments are not allowed in {node.func.id}()"
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.FloorDiv):
                return "'//' is not supported; use floor(a/b)"
            if type(node.op) not in _BINARY:
                return f"operator {type(node.op).__name__} is not supported"
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                return "'not' is not supported; use ~"
        elif isinstance(node, ast.Compare):
            if len(node.ops) > 1:
                return "chained comparisons are not supported; use (a < b) & (b < c)"
            if type(node.ops[0]) not in _COMPARE:
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


def _depth(tree: ast.Expression) -> int:
    """Operations nested in each other, counted without recursion (the tree may be thousands deep)."""
    deepest, stack = 0, [(tree.body, 0)]
    while stack:
        node, above = stack.pop()
        deepest = max(deepest, above)
        stack.extend((child, above + 1) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))
    return deepest


def _measure(node: ast.expr, expr: str) -> tuple[int, object]:
    """(operations numexpr compiles for `node`, its constant value or None where it depends on a variable).
    Constant parts are computed here as Python does inside numexpr's compile (see _fold)."""
    if isinstance(node, ast.Constant):
        return 0, node.value
    if isinstance(node, ast.Name):
        return 0, None
    if isinstance(node, ast.Call):
        args = [_measure(arg, expr) for arg in node.args]
        constant = all(value is not None for _, value in args)
        return 1 + sum(ops for ops, _ in args), _FOLDED_ELSEWHERE if constant else None
    if isinstance(node, ast.BinOp):
        op, operands = node.op, (node.left, node.right)
    elif isinstance(node, ast.UnaryOp):
        op, operands = node.op, (node.operand,)
    else:
        op, operands = node.ops[0], (node.left, node.comparators[0])
    measured = [_measure(operand, expr) for operand in operands]
    values = [value for _, value in measured]
    if None not in values and _FOLDED_ELSEWHERE not in values:
        return 0, _fold(op, values, ast.get_source_segment(expr, node))
    operations = 1 + sum(ops for ops, _ in measured)
    if isinstance(op, ast.Pow) and values[1] is not None:
        (base_ops, _), (exponent_ops, exponent) = measured
        operations = _expansion(exponent) * (base_ops + 1) + exponent_ops
    return operations, None if None in values else _FOLDED_ELSEWHERE


def _expansion(exponent) -> int:
    """How many times numexpr writes out the base of x**exponent (its 'aggressive' optimisation)."""
    if exponent is _FOLDED_ELSEWHERE:
        return _POWER_EXPANSION
    try:
        if int(2 * exponent) == 2 * exponent and abs(exponent) <= _POWER_EXPANSION:
            return max(1, int(abs(exponent) + 0.5))
    except (TypeError, ValueError, OverflowError):
        pass
    return 1


def _fold(op: ast.AST, values: list, source: str):
    """A constant operation's value as Python computes it in numexpr's compile, or None where Python fails
    (numexpr then reports it). Exact integer powers and shifts are sized first: 9**9**9 would run for hours."""
    if _exact_bits(op, *values) > _CONSTANT_BITS:
        raise _SyntaxProblem(f"constant {_shown(source)} is too large (beyond float64)")
    try:
        return _OPERATORS[type(op)](*values)
    except OverflowError:  # float powers and conversions of huge ints: 10.0**400, 10**400/3
        raise _SyntaxProblem(f"constant {_shown(source)} is too large (beyond float64)") from None
    except (ArithmeticError, TypeError, ValueError):
        return None


def _exact_bits(op: ast.AST, left=None, right=None) -> int:
    """A lower bound of the bits of an exact integer power or left shift, found before computing it."""
    if not (isinstance(left, int) and isinstance(right, int)) or right <= 0 or not left:
        return 0
    if isinstance(op, ast.Pow):
        return (left.bit_length() - 1) * right  # |left| >= 2**(bits-1); 0 when |left| is 1
    return left.bit_length() + right if isinstance(op, ast.LShift) else 0


class _Budget:
    """The operations left to the distinct expressions of one schedule key (numexpr compiles each once)."""

    def __init__(self) -> None:
        self.left, self.seen = MAX_SCHEDULE_OPERATIONS, set()

    def problem(self, expr: str, variables: tuple[str, ...]) -> str | None:
        """Why `expr` may not be given to numexpr (None when it is safe); charges it to this budget."""
        problem, operations = _analyse(expr, variables)
        if problem or expr in self.seen:
            return problem
        self.seen.add(expr)
        self.left -= operations + _EXPRESSION_OVERHEAD
        if self.left < 0:
            return (f"its distinct expressions together hold more than {MAX_SCHEDULE_OPERATIONS} operations "
                    f"(limit {MAX_SCHEDULE_OPERATIONS}; each expression counts {_EXPRESSION_OVERHEAD} more)")
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
    if len(text) > MAX_SCHEDULE_CHARS:
        raise _SyntaxProblem(f"the schedule is {len(text)} characters long (limit {MAX_SCHEDULE_CHARS})")
    entries: list[tuple[str, str]] = []
    depth, quote, prev, start, colon = 0, None, "", 0, None

    def close(end: int) -> None:
        entry = text[start:end]
        if not entry.strip():
            return  # empty entries (trailing comma, ",,") are harmless
        if colon is None:
            raise _SyntaxProblem(f"expected 'frame: (value)' but found {_shown(entry.strip())}")
        key, value = text[start:colon].strip(), text[colon + 1:end].strip()
        if not key:
            raise _SyntaxProblem("missing frame number before ':'")
        if not value:
            raise _SyntaxProblem(f"missing value after {_shown(key + ':')}")
        entries.append((key, value))

    last = 0  # just after the previous special character
    for match in _SPECIAL.finditer(text):
        i, ch = match.start(), match.group()
        between = text[last:i].rstrip()
        prev, last = between[-1] if between else prev, i + 1  # the last non-space character before ch
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
        prev = ch
    if quote:
        raise _SyntaxProblem(f"unterminated {quote} quote")
    if depth > 0:
        raise _SyntaxProblem("unbalanced '(' (missing ')')")
    close(len(text))
    if not entries:
        raise _SyntaxProblem("no key frames (expected 'frame: (value)')")
    return entries


def _unwrap(value: str) -> str:
    """Drop outer parentheses: `((1))` is the number 1 (webui). Spaces inside are kept, because
    both references then treat `( 1.0 )` as an expression, not a number. One pass, however deep."""
    value = value.strip()
    if not value.startswith("("):
        return value
    closing, opened = {}, []
    for match in _PARENS.finditer(value):
        if match.group() == "(":
            opened.append(match.start())
        elif opened:
            closing[opened.pop()] = match.start()
    layers = 0
    while closing.get(layers) == len(value) - 1 - layers:
        layers += 1
    return value[layers:len(value) - layers]


def _unquote(value: str) -> str | None:
    if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
        return value[1:-1]
    return None


def _parse_key(key: str, n_frames: int, seed: int, budget: _Budget, variables: tuple[str, ...] = KEY_VARIABLES) -> int:
    if len(key) > MAX_EXPRESSION_CHARS:  # also keeps int() below within Python's 4300-digit limit
        raise _SyntaxProblem(f"frame key {_shown(key)} is too long (limit {MAX_EXPRESSION_CHARS} characters)")
    inner = _unquote(key)
    expr = _unwrap(key if inner is None else inner).strip()
    if _is_number(expr):
        if "." in expr:
            raise _SyntaxProblem(f"frame key {_shown(key)} is not a whole number")
        frame = int(expr)
    else:
        problem = budget.problem(expr, variables)
        if problem:
            raise _SyntaxProblem(f"frame key {_shown(key)}: {problem}")
        try:
            value = float(_evaluate(expr, 0, n_frames - 1, seed))
        except Exception as exc:  # numexpr raises many types; all mean a bad key
            raise _SyntaxProblem(f"cannot evaluate frame key {_shown(key)}: {exc}") from None
        if not np.isfinite(value):
            raise _SyntaxProblem(f"frame key {_shown(key)} evaluates to {value}")
        frame = int(value)  # truncation, like the webui parser
    if frame > _MAX_FRAME_KEY:
        raise _SyntaxProblem(f"frame key {_shown(key)} is beyond frame {_MAX_FRAME_KEY}")
    return frame


def _key_frames(text: str, n_frames: int, seed: int, budget: _Budget) -> dict[int, str]:
    """{frame: raw value text}; later duplicates win, negative keys are dropped (webui)."""
    frames: dict[int, str] = {}
    frame_of: dict[str, int] = {}  # a repeated expression key is evaluated once
    for key, value in _scan_entries(text):
        if key not in frame_of:
            frame_of[key] = _parse_key(key, n_frames, seed, budget)
        if frame_of[key] >= 0:
            frames[frame_of[key]] = value
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
    budget = _Budget()
    try:
        parsed = [(start, stop, *_numeric_value(raw, budget))
                  for start, stop, raw in _segments(_key_frames(text, n_frames, seed, budget), n_frames)]
    except _SyntaxProblem as exc:
        raise schedule_error(name, text, str(exc)) from None

    out = np.full(n_frames, np.nan)
    spans: dict[str, list[range]] = {}  # expression -> its segments, evaluated in one numexpr call
    for start, stop, value, is_number in parsed:
        if not is_number:
            spans.setdefault(value, []).append(range(start, stop))
        elif start >= n_frames:  # only keys beyond the last frame: the earliest holds over every frame
            out[:] = float(value)
        else:
            out[start] = float(value)
    for expr, ranges in spans.items():
        t = np.concatenate([np.arange(r.start, r.stop, dtype=np.int64) for r in ranges])
        values = _evaluate_frames(expr, t, n_frames, seed, name, text)
        if t[0] >= n_frames:  # the earliest key beyond the last frame, evaluated at its own frame
            out[:] = values[0]
        else:
            out[t] = values
    return _fill_missing(out, name, text)


def _numeric_value(raw: str, budget: _Budget) -> tuple[str, bool]:
    """(text, is_number). The number test is the references' check_is_number on the text inside
    the parentheses (and quotes, as the webui), so `1.`, `1e-2` and ` 1.0 ` are expressions."""
    if len(raw) > MAX_EXPRESSION_CHARS:  # as written: 5,000 parentheses around `t` or a 100,000-digit number
        raise _SyntaxProblem(f"value {_shown(raw)} is too long (limit {MAX_EXPRESSION_CHARS} characters)")
    value = _unwrap(raw)
    inner = _unquote(value)
    if inner is not None and _is_number(_unwrap(inner)):
        return _unwrap(inner), True
    if _is_number(value):
        return value, True
    value = value.strip()
    if not value:
        raise _SyntaxProblem(f"empty value {_shown(raw)}")
    if ":" in value:
        raise _SyntaxProblem(f"value {_shown(raw)} contains ':' (missing ',' between key frames?)")
    problem = budget.problem(value, VALUE_VARIABLES)
    if problem:
        raise _SyntaxProblem(problem)
    return value, False


def _evaluate_frames(expr, t: np.ndarray, n_frames, seed, name, text) -> np.ndarray:
    """`expr` at frames `t`. numexpr's errors come from compiling (they depend on the types, not on the
    values), so an error holds at every frame and names the first."""
    try:
        result = np.asarray(_evaluate(expr, t, n_frames - 1, seed))
        if np.iscomplexobj(result):
            raise TypeError("complex result")
        values = np.broadcast_to(result.astype(np.float64), t.shape)
    except Exception as exc:  # numexpr raises many types
        raise schedule_error(name, text, f"cannot evaluate {_shown(expr)}: {exc}", int(t[0])) from None
    _check_wraparound(expr, t, values, n_frames, seed, name, text)
    return values


def _check_wraparound(expr, t: np.ndarray, values: np.ndarray, n_frames, seed, name, text) -> None:
    """t, max_f and s are integers, as in both references, so a product or power too large for int64 wraps around
    (`t**t**t**t` is 0 at frame 4) instead of reaching inf: evaluated again in float64, such a frame differs.
    Sums of a few hundred terms cannot leave int64, and bit operators need integers: both are left alone."""
    if "*" not in expr or _BIT_OPERATORS.search(expr):
        return
    scope = {"t": t.astype(np.float64), "max_f": np.float64(n_frames - 1), "s": np.float64(seed)}
    try:
        as_real = np.broadcast_to(numexpr.evaluate(expr, local_dict=scope, global_dict={}), t.shape)
    except Exception:  # a function that only takes integers: the integer result stands
        return
    wrapped = ~np.isclose(values, as_real, rtol=1e-9, equal_nan=True)
    if wrapped.any():
        i = int(np.argmax(wrapped))
        raise schedule_error(name, text, f"{_shown(expr)} is {as_real[i]:g}, beyond 64-bit integers (which wrap it "
                                         f"around to {values[i]:g})", int(t[i]))


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
        frames = _key_frames(text, n_frames, seed, _Budget())
    except _SyntaxProblem as exc:
        raise schedule_error(name, text, str(exc)) from None
    return _hold({frame: _unwrap(raw).replace("'", "").replace('"', "") for frame, raw in frames.items()},
                 n_frames)


# --------------------------------------------------------------------------------------------
# prompts


_BACKTICK = re.compile(r"`(.*?)`")


def _keyed_prompts(prompts, n_frames: int, name: str, budget: _Budget) -> dict[int, str]:
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
            raise ConfigError(f"{name}: prompt for frame {_shown(key)} must be text, got {_shown(value)}")
        if isinstance(key, bool) or not isinstance(key, (int, np.integer, str)):
            raise ConfigError(f"{name}: frame key {_shown(key)} must be a whole number or an expression of max_f")
        try:
            frame = int(key) if not isinstance(key, str) else _parse_key(key, n_frames, -1, budget,
                                                                          PROMPT_KEY_VARIABLES)
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


def _check_backticks(template: str, name: str, budget: _Budget) -> None:
    for piece in _BACKTICK.split(template)[1::2]:
        problem = budget.problem(piece.strip(), PROMPT_VARIABLES)
        if problem:
            raise ConfigError(f"{name}: {problem} in `{_cut(piece.strip())}` of {_shown(template)}")


def _expand_backticks(template: str, frames: np.ndarray, n_frames: int, name: str) -> list[str]:
    """Backtick math (webui prepare_prompt) with `t` bound as a variable rather than replaced as text,
    so `sqrt(t)` works. Evaluated once for all the frames that share the template; numexpr's errors come
    from compiling, so they hold at every frame and name the first."""
    pieces = _BACKTICK.split(template)
    columns: list[list[str]] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            columns.append([piece] * len(frames))
            continue
        piece = piece.strip()
        try:
            values = np.broadcast_to(np.asarray(_evaluate(piece, frames, n_frames - 1, -1)), frames.shape)
        except Exception as exc:  # numexpr raises many types
            raise ConfigError(f"{name}: cannot evaluate `{_cut(piece)}` at frame {int(frames[0])} in "
                              f"{_shown(template)}: {_one_line(exc)}") from None
        columns.append([_format_number(v) for v in values])
    return ["".join(parts) for parts in zip(*columns)]


def _per_frame_text(frames: dict[int, str], n_frames: int, name: str, budget: _Budget) -> list[str]:
    if not frames:
        return [""] * n_frames
    out = _hold(frames, n_frames)
    frames_of: dict[str, list[int]] = {}  # each template with backticks -> the frames that show it
    for i, text in enumerate(out):
        if "`" in text:
            frames_of.setdefault(text, []).append(i)
    for template in frames_of:  # every expression is checked before any is evaluated
        _check_backticks(template, name, budget)
    for template, idx in frames_of.items():
        for i, text in zip(idx, _expand_backticks(template, np.array(idx, dtype=np.int64), n_frames, name)):
            out[i] = text
    return out


def prompts_per_frame(animation_prompts, neg_prompts, n_frames: int,
                      name: str = "animation_prompts") -> tuple[list[str], list[str]]:
    """(positive, negative) prompt of every frame. An `animation_prompts` value may carry its own
    negative after `--neg`; it comes first, joined with that frame's `neg_prompts` value by ', '.
    `name` is the config key that errors name (None mode passes its `prompts` list)."""
    check_frames(n_frames)
    budget, neg_budget = _Budget(), _Budget()
    keyed = _keyed_prompts(animation_prompts, n_frames, name, budget)
    for frame, text in keyed.items():
        if text.count("--neg") > 1:
            raise ConfigError(f"{name}: more than one '--neg' in the prompt of frame {frame}: {_shown(text)}")
    prompts = _per_frame_text(keyed, n_frames, name, budget)
    extra = _per_frame_text(_keyed_prompts(neg_prompts, n_frames, "neg_prompts", neg_budget), n_frames,
                            "neg_prompts", neg_budget)
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

