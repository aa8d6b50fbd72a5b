"""The spec expression evaluator: what it computes, what it refuses, and that it is bounded.

Spec files are untrusted, so ``rtseg_compiler.spec.expr`` walks the AST
itself: numbers, names, arithmetic, comparisons, ``a if c else b`` and eight
whitelisted functions. These tests pin the accepted language against values
computed independently (a hypothesis-built expression tree evaluated with
:mod:`operator`), check that every other construct is an ``ExprError`` with a
message naming it, and that no expression can run long or grow without bound.
"""

from __future__ import annotations

import math
import operator
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.pipeline import analyze
from rtseg_compiler.spec.expr import (MAX_EXPONENT, MAX_EXPRESSION_LENGTH, MAX_MAGNITUDE, ExprError,
                                      evaluate, make_divisible, names_in)

ENV = {"width": 0.75, "i": 2, "in_channels": 32, "encoder.stride16.channels": 512, "flag": True}


@pytest.mark.parametrize("text, expected", [
    ("make_divisible(32 * width)", 24),            # MobileNet 0.75: 24 channels
    ("make_divisible(1024 * 0.75)", 768),
    ("make_divisible(3)", 8),                      # never below the divisor
    ("make_divisible(20, 16)", 32),                # rounding down to 16 would lose 20%: round up
    ("2 if i == 0 else 1", 1),
    ("in_channels // 4", 8),
    ("encoder.stride16.channels // 2", 256),
    ("max(in_channels, 64) - min(8, 4)", 60),
    ("round(2.5) + round(3.14159, 2)", 2 + 3.14),
    ("int(7.9) + floor(-0.5) + ceil(0.2) + abs(-3)", 7 - 1 + 1 + 3),
    ("2 ** 10 % 1000", 24),
    ("1 < i <= 2 and not flag == False", True),
    ("0 or in_channels", 32),
    ("-(-i) + +i", 4),
    ("10 ** 12", 10**12),
])
def test_accepted_language(text, expected):
    assert evaluate(text, ENV) == pytest.approx(expected)


@pytest.mark.parametrize("text, fragment", [
    ("width[0]", "'width' is not a list"),  # only list parameters (test_list_params.py)
    ("(1, 2)[0]", "only a list parameter can be subscripted"),
    ("lambda: 1", "'Lambda' is not allowed"),
    ("(lambda: 1)()", "is not allowed"),
    ("[i for i in (1, 2)]", "'ListComp' is not allowed"),
    ("{i: 1 for i in (1,)}", "'DictComp' is not allowed"),
    ("sum(i for i in (1,))", "is not allowed"),
    ("width.__class__.__mro__", "unknown name 'width.__class__.__mro__'"),
    ("(1).real", "attribute access is not allowed"),
    ("__import__('os')", "call of '__import__' is not allowed"),
    ("eval('1')", "call of 'eval' is not allowed"),
    ("open('/etc/passwd')", "call of 'open' is not allowed"),
    ("max(*[1, 2])", "'max' takes positional arguments only"),
    ("round(2.5, ndigits=1)", "'round' takes positional arguments only"),
    ("'abc'", "literal 'abc' is not a number"),
    ("None", "literal None is not a number"),
    ("f'{1}'", "'JoinedStr' is not allowed"),
    ("1 if 1", "invalid expression"),
    ("x := 1", "invalid expression"),
    ("1 << 40", "bitwise and matrix operators are not allowed"),
    ("~1", "bitwise operators are not allowed"),
    ("1 in (1, 2)", "only ==, !=, <, <=, >, >= comparisons are allowed"),
    ("1 is 1", "only ==, !=, <, <=, >, >= comparisons are allowed"),
    ("", "empty expression"),
    ("   ", "empty expression"),
])
def test_refused_forms(text, fragment):
    with pytest.raises(ExprError) as err:
        evaluate(text, ENV)
    assert fragment in str(err.value)


@pytest.mark.parametrize("text, fragment", [
    ("10 ** 10 ** 10", f"exponent 10000000000 is beyond the limit of {MAX_EXPONENT}"),
    ("2 ** 65", f"exponent 65 is beyond the limit of {MAX_EXPONENT}"),
    ("2 ** 2 ** 2 ** 2 ** 2", "exponent 65536 is beyond"),
    ("10 ** 12 + 1", "evaluates to a number beyond 1e+12"),
    ("999999 ** 64", "evaluates to a number beyond"),
    ("1e308 * 10", "evaluates to inf"),
    ("999999.0 ** 64", "cannot compute"),
    ("int(1e300)", "beyond 1e+12"),
    ("floor(1e300)", "beyond 1e+12"),
    ("round(5, -1000000000)", "ndigits must be an integer from -16 to 16"),
    ("round(5.5, 10 ** 9)", "ndigits must be an integer"),
    ("(-8) ** 0.5", "has no real value"),
    ("1 / 0", "division by zero in '1 / 0' (/ 0)"),
    ("in_channels // (i - 2)", "division by zero in 'in_channels // (i - 2)' (// 0)"),
    ("5 % 0.0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("make_divisible(8, 0)", "divisor must be positive"),
    ("max(1)", "max needs two or more numbers"),
    ("min()", "min needs two or more numbers"),
    ("int()", "int called with 0 arguments in 'int()'; write int(x)"),
    ("abs(1, 2)", "abs called with 2 arguments"),
    ("nope + 1", "unknown name 'nope'"),
])
def test_bounds_and_arithmetic_errors(text, fragment):
    with pytest.raises(ExprError) as err:
        evaluate(text, ENV)
    assert fragment in str(err.value)


def test_length_limit():
    ok = "+".join(["1"] * ((MAX_EXPRESSION_LENGTH + 1) // 2))
    assert len(ok) <= MAX_EXPRESSION_LENGTH and evaluate(ok, {}) == (MAX_EXPRESSION_LENGTH + 1) // 2
    with pytest.raises(ExprError, match=f"over the limit of {MAX_EXPRESSION_LENGTH}"):
        evaluate(ok + "+1", {})


def test_deep_nesting_within_the_length_limit():
    """256 characters nest at most ~250 deep: evaluated, or refused, but never a RecursionError."""
    assert evaluate("-" * 250 + "1", {}) == 1
    assert evaluate("(" * 127 + "1" + ")" * 127, {}) == 1
    assert evaluate("1" + "**1" * 84, {}) == 1  # right-nested powers, 84 deep
    assert evaluate("not " * 60 + "1", {}) is True


def test_names_are_looked_up_not_evaluated():
    """A dotted name is one key of the environment, never an attribute of a Python object."""

    class Probe:
        calls = 0

        @property
        def channels(self):
            Probe.calls += 1
            return 8

    with pytest.raises(ExprError, match="unknown name 'enc.channels'"):
        evaluate("enc.channels", {"enc": Probe()})
    assert Probe.calls == 0
    with pytest.raises(ExprError, match="is .*not a number"):
        evaluate("enc", {"enc": Probe()})
    assert evaluate("enc.channels", {"enc.channels": 8}) == 8


def test_names_in_and_non_string_input():
    assert names_in("make_divisible(out * width) + encoder.stride8.channels") == {
        "out", "width", "encoder.stride8.channels"}
    with pytest.raises(ExprError, match="expected an expression string, got list"):
        evaluate([1, 2], {})  # type: ignore[arg-type]


def test_make_divisible_matches_tensorflow_rule():
    """_make_divisible of TF-slim: nearest multiple of 8, bumped up when it loses over 10%."""
    assert [make_divisible(c * 0.5) for c in (32, 64, 128, 256, 512, 1024)] == [16, 32, 64, 128, 256, 512]
    assert make_divisible(36) == 40 and make_divisible(35) == 32  # 35 -> 32 loses 8.6%: kept


# ------------------------------------------------------------------- properties

_OPS = [("+", operator.add), ("-", operator.sub), ("*", operator.mul), ("//", operator.floordiv),
        ("%", operator.mod)]


@st.composite
def expression(draw, depth: int = 0) -> tuple[str, int]:
    """(text, value) of a random integer expression, the value computed here; None: must be refused."""
    if depth > 3 or draw(st.integers(0, 2)) == 0:
        if draw(st.booleans()):
            name, value = draw(st.sampled_from([("i", 2), ("in_channels", 32)]))
            return name, value
        n = draw(st.integers(0, 1000))
        return str(n), n
    kind = draw(st.sampled_from(["bin", "bin", "call", "if", "neg"]))
    if kind == "neg":
        text, value = draw(expression(depth + 1))
        return f"-({text})", None if value is None else -value
    if kind == "if":
        c, cv = draw(expression(depth + 1))
        a, av = draw(expression(depth + 1))
        b, bv = draw(expression(depth + 1))
        if cv is None:
            return f"({a} if {c} > 10 else {b})", None
        return f"({a} if {c} > 10 else {b})", av if cv > 10 else bv
    a, av = draw(expression(depth + 1))
    b, bv = draw(expression(depth + 1))
    if kind == "call":
        name, fn = draw(st.sampled_from([("max", max), ("min", min)]))
        return f"{name}({a}, {b})", None if None in (av, bv) else fn(av, bv)
    symbol, fn = draw(st.sampled_from(_OPS))
    if symbol in ("//", "%") and bv == 0:
        return f"({a} {symbol} {b})", None  # division by zero: must be refused
    value = fn(av, bv) if av is not None and bv is not None else None
    return f"({a} {symbol} {b})", value


@settings(max_examples=150, deadline=None)
@given(expression())
def test_random_expressions_match_their_reference_value(case):
    text, value = case
    if len(text) > MAX_EXPRESSION_LENGTH:
        with pytest.raises(ExprError):
            evaluate(text, ENV)
        return
    try:
        got = evaluate(text, ENV)
    except ExprError as exc:
        # Refused only for a reason: a zero divisor somewhere, or a bound.
        assert value is None or abs(value) > MAX_MAGNITUDE or "division by zero" in str(exc) \
            or "beyond" in str(exc), (text, str(exc))
        return
    assert value is not None and got == value, text


@settings(max_examples=150, deadline=None)
@given(st.text(string.printable, max_size=60))
def test_random_text_is_evaluated_or_refused(text):
    """No input makes the evaluator raise anything but ExprError, or return a non-number."""
    try:
        value = evaluate(text, ENV)
    except ExprError:
        return
    assert isinstance(value, (int, float, bool))
    if not isinstance(value, bool):
        assert math.isfinite(value) and abs(value) <= MAX_MAGNITUDE


# ------------------------------------------------------------------- located in the pipeline

def test_division_by_zero_in_a_block_argument_is_located_at_the_argument(write_spec):
    """The error points at the argument's text in the use, with the block noted."""
    path = write_spec("enc.yaml", """
        kind: encoder
        name: e
        input: [16, 16]
        params: {width: 1}
        blocks:
          unit:
            params: {out: ~}
            layers:
              - {name: c, op: conv, out: out, kernel: 1}
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3}
          - {name: u1, block: unit, out: "8 // (width - 1)"}
        """)
    with pytest.raises(SpecError) as err:
        analyze(path)
    (d,) = err.value.errors
    assert "division by zero in '8 // (width - 1)'" in d.message
    assert (d.loc.line, d.loc.col) == (12, 34)
    assert any("in block 'unit' used at" in n for n in d.notes)
