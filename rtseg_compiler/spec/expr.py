"""A small, safe evaluator for the arithmetic in spec files.

Spec fields that take numbers also take a string holding an expression over
spec parameters, e.g. ``out: "make_divisible(64 * width)"`` or
``stride: "2 if i == 0 else 1"``. Specs are untrusted, so Python's ``eval`` is
out of the question. The expression is parsed with :mod:`ast` and walked here;
only these forms are accepted:

* int, float and bool literals; names (``width``) and dotted names
  (``encoder.stride16.channels``), looked up in a flat environment, never
  as attributes of Python objects;
* an item of a list-valued parameter, ``dims[i]`` (a name, subscripted by an
  integer expression; negative indices count from the end, as in Python),
  and its length, ``len(dims)``; slices and subscripts of anything else are not
  allowed;
* ``+ - * / // % **``, unary ``- + not``, comparisons, ``and``/``or``,
  and ``a if cond else b``;
* calls of the functions in :data:`FUNCTIONS` with positional arguments.

Everything else (slices, lambdas, comprehensions, keyword arguments,
strings) is an :class:`ExprError`. Results are bounded: an integer beyond
:data:`MAX_MAGNITUDE` or an exponent beyond :data:`MAX_EXPONENT` is refused
before it is computed, so ``10**10**10`` fails at once instead of hanging.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from typing import Any, Callable, Mapping

__all__ = ["ExprError", "NonPositiveCount", "evaluate", "names_in", "FUNCTIONS", "make_divisible",
           "MAX_EXPRESSION_LENGTH", "MAX_MAGNITUDE", "MAX_EXPONENT"]

#: Real expressions are one short line; this stops pathological parse trees.
MAX_EXPRESSION_LENGTH = 256
#: No channel count, kernel or stride comes near 10^12; larger values are mistakes.
MAX_MAGNITUDE = 10**12
#: ``2**40`` is the largest power anyone would write in a layer spec.
MAX_EXPONENT = 64


class ExprError(ValueError):
    """An expression that cannot be evaluated; the message says why, for a person."""


class NonPositiveCount(ExprError):
    """A channel count computed as 0 or less, typically from a width multiplier of 0 or less."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    This is the channel-rounding rule of the MobileNet family (TensorFlow
    models' ``_make_divisible``), used with width multipliers below 1.
    """
    if divisor <= 0:
        raise ExprError(f"make_divisible: divisor must be positive, got {divisor}")
    if not value > 0:  # the floor below would turn a width multiplier of 0 or -1 into 8 channels
        raise NonPositiveCount(f"make_divisible: the channel count must be positive, got {value} "
                        "(a width multiplier of 0 or less?)")
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def _int(x: Any) -> int:
    return int(x)


#: ``round(5, -10**9)`` would compute 10**(10**9); no value in a spec has more than 12 digits.
MAX_NDIGITS = 16


def _round(x: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return round(x)
    if isinstance(ndigits, bool) or not isinstance(ndigits, int) or abs(ndigits) > MAX_NDIGITS:
        raise ExprError(f"round: ndigits must be an integer from -{MAX_NDIGITS} to {MAX_NDIGITS}, "
                        f"got {ndigits!r}")
    return round(x, ndigits)


#: How each function is called, for error messages (Python's own name the internal helpers).
USAGE = {
    "int": "int(x)", "round": "round(x) or round(x, ndigits)", "min": "min(a, b, ...)",
    "max": "max(a, b, ...)", "abs": "abs(x)", "floor": "floor(x)", "ceil": "ceil(x)",
    "make_divisible": "make_divisible(value, divisor=8, min_value=divisor)",
    "len": "len(list_parameter)",
}


#: The functions a spec may call. Each takes and returns plain numbers.
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "int": _int,
    "round": _round,
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "make_divisible": make_divisible,
}

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**"}


#: Items of a list parameter; spec lists are per-stage settings (widths, depths, heads), never data.
MAX_LIST_ITEMS = 1024


def _sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def parse(text: str) -> ast.Expression:
    """Parse and check an expression's form; raises :class:`ExprError`."""
    if not isinstance(text, str):
        raise ExprError(f"expected an expression string, got {type(text).__name__}")
    return _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> ast.Expression:
    # Cached: shape inference evaluates the same few dozen strings once per layer and per
    # candidate input size (suggest_input_sizes), and the trees are only read, never changed.
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExprError(f"expression is {len(text)} characters long, over the limit of "
                        f"{MAX_EXPRESSION_LENGTH}")
    if not text.strip():
        raise ExprError("empty expression")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression {text!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExprError(f"invalid expression {text!r}") from None
    for node in ast.walk(tree):
        _check_form(node)
    return tree


def _check_form(node: ast.AST) -> None:
    allowed = (ast.Expression, ast.Constant, ast.Name, ast.Attribute, ast.BinOp, ast.UnaryOp,
               ast.Compare, ast.BoolOp, ast.IfExp, ast.Call, ast.Load, ast.operator,
               ast.unaryop, ast.cmpop, ast.boolop, ast.Subscript)
    if not isinstance(node, allowed):
        raise ExprError(f"'{type(node).__name__}' is not allowed in a spec expression "
                        "(only arithmetic, comparisons, 'a if c else b' and "
                        f"{', '.join(FUNCTIONS)})")
    if isinstance(node, ast.Constant) and (
            not isinstance(node.value, (int, float)) or node.value is None):
        raise ExprError(f"literal {node.value!r} is not a number")
    if isinstance(node, ast.Attribute) and _dotted(node) is None:
        raise ExprError("attribute access is not allowed; dotted names such as "
                        "'encoder.stride16.channels' are plain names")
    if isinstance(node, ast.Subscript):
        if not isinstance(node.value, (ast.Name, ast.Attribute)) or _dotted(node.value) is None:
            raise ExprError("only a list parameter can be subscripted, as in 'dims[i]'")
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed; write one item, as in 'dims[i]'")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], (ast.Name, ast.Attribute)):
            raise ExprError(f"write {USAGE['len']}")
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            shown = ast.unparse(node.func) if hasattr(ast, "unparse") else "?"
            raise ExprError(f"call of '{shown}' is not allowed (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExprError(f"'{node.func.id}' takes positional arguments only")
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        raise ExprError("bitwise operators are not allowed")
    if isinstance(node, ast.BinOp) and type(node.op) not in _BINARY:
        raise ExprError("bitwise and matrix operators are not allowed")
    if isinstance(node, ast.Compare) and any(type(op) not in _COMPARE for op in node.ops):
        raise ExprError("only ==, !=, <, <=, >, >= comparisons are allowed")


def _dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a chain of attribute accesses ending in a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def names_in(text: str) -> set[str]:
    """The (dotted) names an expression refers to, function names excluded."""
    tree = parse(text)
    found: set[str] = set()
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted:
                found.add(dotted)
                return
        if isinstance(node, ast.Name) and id(node) not in calls:
            found.add(node.id)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def evaluate(text: str, env: Mapping[str, Any] | Callable[[str], Any]) -> Any:
    """Evaluate ``text`` with names from ``env`` (a mapping, or a lookup raising KeyError).

    >>> evaluate("make_divisible(32 * width)", {"width": 0.75})
    24
    >>> evaluate("2 if i == 0 else 1", {"i": 3})
    1
    """
    tree = parse(text)
    lookup = env.__getitem__ if isinstance(env, Mapping) else env
    try:
        return _bound(_eval(tree.body, lookup, text), text)
    except RecursionError:  # 256 characters nest at most ~128 deep; only a deep caller gets here
        raise ExprError(f"expression {text!r} nests too deeply") from None


def _bound(value: Any, text: str) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        raise ExprError(f"{text!r} evaluates to a number beyond {MAX_MAGNITUDE:.0e}")
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise ExprError(f"{text!r} evaluates to {value}, beyond the allowed range")
    return value


def _lookup(node: ast.AST, lookup: Callable[[str], Any]) -> tuple[str, Any]:
    name = node.id if isinstance(node, ast.Name) else _dotted(node)
    try:
        return name, lookup(name)
    except KeyError:
        raise ExprError(f"unknown name '{name}'") from None


def _eval(node: ast.AST, lookup: Callable[[str], Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Name, ast.Attribute)):
        name, value = _lookup(node, lookup)
        if _sequence(value):
            raise ExprError(f"'{name}' is a list; write one item, as in '{name}[i]'")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if not isinstance(value, bool):
                raise ExprError(f"'{name}' is {value!r}, not a number")
        return value
    if isinstance(node, ast.Subscript):
        name, items = _lookup(node.value, lookup)
        if not _sequence(items):
            raise ExprError(f"'{name}' is not a list, so '{name}[...]' has no value")
        if len(items) > MAX_LIST_ITEMS:
            raise ExprError(f"'{name}' has {len(items):,} items, over the limit of {MAX_LIST_ITEMS:,}")
        index = _eval(node.slice, lookup, text)
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ExprError(f"a list index must be an integer, got {index!r} in {text!r}")
        if not -len(items) <= index < len(items):
            raise ExprError(f"index {index} is out of range for '{name}', which has {len(items)} "
                            f"item{'s' if len(items) != 1 else ''} (0 to {len(items) - 1})")
        value = items[index]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExprError(f"'{name}[{index}]' is {value!r}, not a number")
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, lookup, text)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, lookup, text)
        right = _eval(node.right, lookup, text)
        op = type(node.op)
        if op is ast.Pow:
            if abs(right) > MAX_EXPONENT:
                raise ExprError(f"exponent {right} is beyond the limit of {MAX_EXPONENT}")
            if left == 0 and right < 0:
                raise ExprError(f"division by zero in {text!r}")
        if op in (ast.Div, ast.FloorDiv, ast.Mod) and right == 0:
            raise ExprError(f"division by zero in {text!r} ({_SYMBOL[op]} 0)")
        try:
            result = _BINARY[op](left, right)
        except (OverflowError, ValueError, ZeroDivisionError) as exc:
            raise ExprError(f"cannot compute {text!r}: {exc}") from None
        if isinstance(result, complex):
            raise ExprError(f"{text!r} has no real value")
        return _bound(result, text)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, lookup, text)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, lookup, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        value: Any = is_and
        for operand in node.values:
            value = _eval(operand, lookup, text)
            if bool(value) != is_and:
                return value
        return value
    if isinstance(node, ast.IfExp):
        branch = node.body if _eval(node.test, lookup, text) else node.orelse
        return _eval(branch, lookup, text)
    if isinstance(node, ast.Call) and node.func.id == "len":
        name, items = _lookup(node.args[0], lookup)
        if not _sequence(items):
            raise ExprError(f"len: '{name}' is not a list")
        return len(items)
    if isinstance(node, ast.Call):
        args = [_eval(a, lookup, text) for a in node.args]
        name = node.func.id
        if name in ("min", "max") and len(args) < 2:
            raise ExprError(f"{name} needs two or more numbers: {USAGE[name]}")
        try:
            return _bound(FUNCTIONS[name](*args), text)
        except ExprError:
            raise
        except TypeError:
            raise ExprError(f"{name} called with {len(args)} argument{'s' if len(args) != 1 else ''}"
                            f" in {text!r}; write {USAGE[name]}") from None
        except (ValueError, OverflowError, ZeroDivisionError) as exc:
            raise ExprError(f"{name}(...) failed in {text!r}: {exc}") from None
    raise ExprError(f"'{type(node).__name__}' is not allowed in a spec expression")
