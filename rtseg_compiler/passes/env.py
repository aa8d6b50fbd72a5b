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
from ..spec.expr import ExprError, evaluate

__all__ = ["Env", "StaticOnly", "evaluate_value"]


class StaticOnly(Exception):
    """Raised when a value that must be known before shapes depends on channel counts."""


class Env:
    """Evaluates names in one scope; ``channels_of`` maps a node name to its channel count."""

    def __init__(self, scope: Scope | None, channels_of: Callable[[str], int] | None,
                 in_channels: Callable[[], int] | None = None, depth: int = 0):
        self.scope = scope or Scope()
        self.channels_of = channels_of
        self.in_channels = in_channels
        self.depth = depth

    def __call__(self, name: str) -> Any:
        if name == "in_channels":
            if self.in_channels is None:
                raise ExprError("'in_channels' is not available here")
            return self.in_channels()
        found = _lookup_with_scope(self.scope, name)
        if found is None:
            raise KeyError(name)
        binding, home = found
        return self.value_of(binding, home)

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
            scope = binding.scope if binding.scope is not None else home
            in_ch = None
            if binding.input_ref is not None and self.channels_of is not None:
                ref, lookup = binding.input_ref, self.channels_of
                in_ch = lambda: lookup(ref)  # noqa: E731
            inner = Env(scope, self.channels_of, in_ch, self.depth + 1)
            try:
                return evaluate_value(binding.expr.text, inner)
            except ExprError as exc:
                # Blame the text that failed (a block argument, a parameter), not the layer
                # field that used it; the innermost binding sets it first.
                if getattr(exc, "loc", None) is None:
                    exc.loc = binding.expr.loc  # type: ignore[attr-defined]
                raise
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
