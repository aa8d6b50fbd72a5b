"""Name lookup for spec expressions: parameters, block arguments, channel counts.

Expressions are evaluated lazily in the scope where they were written (a block
argument in the caller's scope, a default in the block's), so a parameter can
depend on another and on channel counts that are known only during shape
inference. ``in_channels`` always means the channels of the first input of
the layer (or, in a block argument, of the block use) being evaluated.
"""

from __future__ import annotations

from typing import Any, Callable

from ..ir import ChannelsOf, Expr, Lazy, Literal, Scope
from ..spec.expr import ExprError, NonPositiveCount, evaluate

__all__ = ["Env", "StaticOnly", "evaluate_value", "MAX_EVALUATIONS", "IN_SIZE_NAMES"]

#: Names a layer's own fields may use for the height and width of its first input
#: (``size: ["ceil(in_height / 64)", "ceil(in_width / 64)"]``); not block arguments or parameters.
IN_SIZE_NAMES = ("in_height", "in_width")


class StaticOnly(Exception):
    """Raised when a value that must be known before shapes depends on channel counts."""


#: A backstop behind memoisation: a layer whose parameters need more evaluations than this
#: is reported, not computed. MobileNet v1 needs fewer than 10 per layer.
MAX_EVALUATIONS = 10_000


class _Memo:
    """Values of Lazy bindings already evaluated under one root Env, and a step count."""

    __slots__ = ("values", "keep", "steps", "read")

    def __init__(self) -> None:
        self.values: dict[tuple[int, int], Any] = {}
        self.keep: list[tuple[Any, Any]] = []
        self.steps = 0
        #: Every parameter value read, by name, with where it was written: an error that a value
        #: caused (a width multiplier of 0) is reported at the value, which may be in another file.
        self.read: dict[str, tuple[Any, Any]] = {}


class Env:
    """Evaluates names in one scope; ``channels_of`` maps a node name to its channel count."""

    def __init__(self, scope: Scope | None, channels_of: Callable[[str], int] | None,
                 in_channels: Callable[[], int] | None = None, depth: int = 0,
                 memo: _Memo | None = None, in_size: Callable[[], tuple[int, int]] | None = None):
        self.scope = scope or Scope()
        self.channels_of = channels_of
        self.in_channels = in_channels
        #: (height, width) of the layer's first input: ``in_height`` and ``in_width``.
        self.in_size = in_size
        self.depth = depth
        #: Shared by an Env and every Env it creates for the parameters it reads, so each
        #: parameter is evaluated once per root: without it, 7 parameters that each sum the
        #: previous one 40 times cost 40^6 = 4.1e9 evaluations (a hang) instead of 7.
        self.memo = memo if memo is not None else _Memo()

    def __call__(self, name: str) -> Any:
        if name == "in_channels":
            if self.in_channels is None:
                why = ("" if self.depth == 0 else
                       ": a file parameter or block parameter default belongs to no layer "
                       "(a block default can use 'block_in_channels')")
                raise ExprError(f"'in_channels' is not available here{why}")
            return self.in_channels()
        if name in IN_SIZE_NAMES and self.depth == 0:
            if self.in_size is None:
                raise ExprError(f"'{name}' is not available here: only a layer's own fields see "
                                "its input's size")
            return self.in_size()[IN_SIZE_NAMES.index(name)]
        found = _lookup_with_scope(self.scope, name)
        if found is None:
            raise KeyError(name)
        binding, home = found
        value = self.value_of(binding, home)
        if isinstance(binding, (Literal, Lazy)) and name not in self.memo.read:
            self.memo.read[name] = (value, binding.loc if isinstance(binding, Literal) else binding.expr.loc)
        return value

    def forget_reads(self) -> None:
        """Start a new record of parameter reads (one per layer field, so a culprit is that field's)."""
        self.memo.read.clear()

    def non_positive_parameter(self) -> tuple[str, Any, Any] | None:
        """(name, value, location) of the first parameter read so far whose value is a number <= 0.

        Such a value (``width: 0``, ``encoder_params: {width: -1}``) is the likely cause of a
        channel count that is not positive, so that error points at it rather than at the layer.
        """
        for name, (value, loc) in self.memo.read.items():
            if loc is not None and not isinstance(value, bool) and isinstance(value, (int, float)) and value <= 0:
                return name, value, loc
        return None

    def value_of(self, binding: Any, home: Scope) -> Any:
        if self.depth > 32:
            raise ExprError("parameters refer to each other in a loop (or nest over 32 deep)")
        if isinstance(binding, Literal):
            return binding.value
        if isinstance(binding, ChannelsOf):
            if self.channels_of is None:
                raise StaticOnly(binding.ref)
            return self.channels_of(binding.ref)
        if isinstance(binding, Lazy):
            # The value depends only on the binding, the scope it is read from and (for a
            # block argument) the channels of its input_ref, all fixed for this root Env.
            key = (id(binding), id(home))
            if key in self.memo.values:
                return self.memo.values[key]
            self.memo.steps += 1
            if self.memo.steps > MAX_EVALUATIONS:
                raise ExprError(f"parameter expressions are too costly to evaluate (over "
                                f"{MAX_EVALUATIONS:,} parameter evaluations for one layer)")
            scope = binding.scope if binding.scope is not None else home
            in_ch = None
            if binding.input_ref is not None and self.channels_of is not None:
                ref, lookup = binding.input_ref, self.channels_of
                in_ch = lambda: lookup(ref)  # noqa: E731
            inner = Env(scope, self.channels_of, in_ch, self.depth + 1, self.memo)
            try:
                value = evaluate_value(binding.expr.text, inner)
            except ExprError as exc:
                # Blame the text that failed (a block argument, a parameter), not the layer
                # field that used it; the innermost binding sets it first.
                # A count of 0 or less that a parameter of 0 or less caused is blamed on that
                # parameter instead (shapes.py), even through an argument that merely passes it on.
                blame_value = isinstance(exc, NonPositiveCount) and self.non_positive_parameter() is not None
                if getattr(exc, "loc", None) is None and not blame_value:
                    exc.loc = binding.expr.loc  # type: ignore[attr-defined]
                raise
            # Keep the binding and scope alive with the value, so their ids cannot be reused.
            self.memo.values[key] = value
            self.memo.keep.append((binding, home))
            return value
        raise ExprError(f"cannot evaluate binding {binding!r}")  # pragma: no cover


def _lookup_with_scope(scope: Scope, name: str) -> tuple[Any, Scope] | None:
    current: Scope | None = scope
    while current is not None:
        if name in current.bindings:
            return current.bindings[name], current
        current = current.parent
    return None


def evaluate_value(value: Any, env: Env) -> Any:
    """A literal as is; an expression string (or Expr) evaluated in ``env``."""
    if isinstance(value, Expr):
        value = value.text
    if isinstance(value, str):
        return evaluate(value, env)
    return value
