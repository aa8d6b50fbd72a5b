"""Pass 1, expressions: the checks ``expand`` makes on values before shapes are known.

Expressions (``out: "2 * width"``) are evaluated by ``infer_shapes`` once channel counts
are known; here each is checked once for syntax and unknown names, where it was written
(a block's body is checked at its first use only: MobileNet v1 used to repeat one typo 13
times). Values that choose which layers exist (``repeat``, ``start``, a block use's
``when:``) must be known now, and are evaluated here (:meth:`ExpressionChecks.static_value`).
An ``op:`` that names a parameter holding an op name is resolved here too
(:meth:`ExpressionChecks.resolve_op`), and the layer's fields are then checked against
that op's schema.
"""

from __future__ import annotations

from typing import Any

from ..diagnostics import Diagnostics, Location, did_you_mean
from ..ir import BlockUse, ChannelsOf, Expr, Lazy, Literal, Scope
from ..ops import REGISTRY
from ..spec.expr import ExprError, names_in
from ..spec.load import location_of
from ..spec.schema import validate_layer_fields
from .env import Env, StaticOnly, _lookup_with_scope, evaluate_value
from .expand_refs import Body

__all__ = ["ExpressionChecks", "FAILED"]

#: A value that could not be computed (the reason is already reported).
FAILED = object()


class ExpressionChecks:
    """Checks of one document's expressions and parameter-named ops, each reported once."""

    def __init__(self, diags: Diagnostics):
        self.diags = diags
        #: (text, location) of expressions already checked: a block's body is checked at its
        #: first use only, not once per use.
        self.checked: set[tuple[str, Location, bool]] = set()
        #: (layer location, op) pairs whose fields were checked after resolving a parametric op.
        self.fields_checked: set[tuple[Location | None, str]] = set()
        self.ops_reported: set[Location | None] = set()

    def check_expression(self, text: str, loc: Location | None, body: Body | None,
                         extra: set[str] = frozenset(), origin: tuple[BlockUse, ...] = (),
                         in_channels: bool = True, scope: Scope | None = None) -> None:
        """Report a syntax error or unknown name in ``text``, once per place it is written.

        ``extra``: names bound where it is evaluated (``i``); ``in_channels``: False where no
        layer provides the channels (file parameters, block parameter defaults).
        """
        if loc is not None:
            key = (text, loc, in_channels)
            if key in self.checked:
                return
            self.checked.add(key)
        origin = origin or (body.origin if body is not None else ())
        try:
            used = names_in(text)
        except ExprError as exc:
            self.diags.error(str(exc), loc, notes=origin)
            return
        if not in_channels and "in_channels" in used:
            # Evaluation would fail with no layer to take the channels from; say so now.
            self.diags.error(f"'in_channels' is not available in {text!r}: file parameters and "
                             f"block parameter defaults belong to no layer", loc,
                             hint="a block default can use 'block_in_channels'; a layer field "
                                  "can use 'in_channels'", notes=origin)
            used = used - {"in_channels"}
        known = (scope or body.scope).names() | set(extra) | ({"in_channels"} if in_channels else set())
        for name in sorted(used - known):
            self.diags.error(f"unknown name '{name}' in expression {text!r}", loc,
                             hint=did_you_mean(name, known) or f"known: {', '.join(sorted(known))}",
                             notes=origin)

    def static_value(self, value: Any, what: str, loc: Location | None, body: Body,
                     scope: Scope | None = None) -> Any:
        """``value`` evaluated before shapes are known, or FAILED after reporting why not."""
        try:
            return evaluate_value(value, Env(scope or body.scope, None))
        except StaticOnly:
            self.diags.error(f"'{what}' must not depend on channel counts", loc,
                             hint=f"'{what}' is fixed before shapes are known: use numbers and "
                                  f"parameters", notes=body.origin)
        except (ExprError, KeyError) as exc:
            hint = (f"'{what}' is fixed before shapes are known: use numbers and parameters"
                    if "in_channels" in str(exc) else None)
            msg = str(exc) if isinstance(exc, ExprError) else f"unknown name {exc}"
            self.diags.error(f"'{what}': {msg}", loc, hint=hint, notes=body.origin)
        return FAILED

    def static_int(self, value: Any, what: str, loc: Location | None, body: Body,
                   extra: dict[str, Any] | None = None, minimum: int = 1) -> int | None:
        scope = body.scope.child({k: Literal(v) for k, v in (extra or {}).items()})
        result = self.static_value(value, what, loc, body, scope)
        if result is FAILED:
            return None
        if isinstance(result, float) and result.is_integer():
            result = int(result)
        if isinstance(result, bool) or not isinstance(result, int) or result < minimum:
            kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
                minimum, f"an integer of at least {minimum}")
            self.diags.error(f"'{what}' must be {kind}, got {result!r}", loc, notes=body.origin)
            return None
        return result

    def use_is_present(self, item: dict, caller: Scope, body: Body) -> bool:
        """A block use's ``when:``, decided while expanding: it chooses which layers exist."""
        value, where = item["when"], location_of(item, ("when",))
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            self.check_expression(value, where, body, {"i"})  # channels: static_value says why not
        result = self.static_value(value, "when", where, body, caller)
        if result is FAILED:
            return True
        if not isinstance(result, bool):
            self.diags.error(f"'when' must be true or false, got {result!r}", where,
                             hint="write a comparison, e.g. 'stride == 1'", notes=body.origin)
            return True
        return result

    def when_of(self, item: dict, body: Body) -> Any:
        """A layer's condition: None (always present), False, or an Expr for infer_shapes."""
        if "when" not in item:
            return None
        value, loc = item["when"], location_of(item, ("when",))
        if isinstance(value, bool):
            return None if value else False
        if isinstance(value, str):
            self.check_expression(value, loc, body, {"i"})
            return Expr(value, loc)
        return None  # the schema has reported it

    # -- ops chosen by parameters -----------------------------------------
    def resolve_op(self, item: dict, body: Body) -> tuple[str | None, str | None]:
        """The registered op a layer runs, and (for ``op: PARAM``) a note saying where it came from.

        ``op: act`` names a parameter (of the block, or of the file) whose value is an op name,
        e.g. ``act: hardswish`` at the block use. The value may itself name another parameter
        (a block forwarding ``act: act`` to an inner block); the chain is followed to an op.
        """
        written = item.get("op")
        if not isinstance(written, str):
            return None, None
        if written in REGISTRY:
            return written, None
        op_loc = location_of(item, ("op",))
        found = _lookup_with_scope(body.scope, written)
        if found is None:
            if op_loc not in self.ops_reported:
                self.ops_reported.add(op_loc)
                self.diags.error(f"unknown op '{written}'", op_loc,
                                 hint=did_you_mean(written, REGISTRY)
                                 or f"known ops: {', '.join(sorted(REGISTRY))}", notes=body.origin)
            return None, None
        binding, home = found
        param = written
        for _ in range(33):
            if isinstance(binding, Lazy):
                text, vloc = binding.expr.text.strip(), binding.expr.loc
                if text in REGISTRY:
                    return text, f"this layer's op '{text}' comes from parameter '{written}', set at {vloc}"
                scope = binding.scope if binding.scope is not None else home
                inner = _lookup_with_scope(scope, text) if text.isidentifier() else None
                if inner is None:
                    if vloc not in self.ops_reported:
                        self.ops_reported.add(vloc)
                        self.diags.error(
                            f"unknown op '{text}' (the value of parameter '{param}', used as "
                            f"the op of the layer at {op_loc})", vloc,
                            hint=did_you_mean(text, REGISTRY)
                            or f"known ops: {', '.join(sorted(REGISTRY))}", notes=body.origin)
                    return None, None
                binding, home = inner
                param = text
                continue
            what = (f"the channels of '{binding.ref}'" if isinstance(binding, ChannelsOf)
                    else repr(getattr(binding, "value", binding)))
            vloc = getattr(binding, "loc", None) or op_loc
            if vloc not in self.ops_reported:
                self.ops_reported.add(vloc)
                self.diags.error(f"parameter '{param}' holds {what}, not an op name (it is the op of "
                                 f"the layer at {op_loc})", vloc,
                                 hint="pass an op name, e.g. 'act: relu'", notes=body.origin)
            return None, None
        self.diags.error(f"'op: {written}': parameters name each other in a loop", op_loc,
                         notes=body.origin)
        return None, None

    def check_fields(self, item: dict, op_name: str, note: str, body: Body) -> bool:
        """Schema-check a layer whose op came from a parameter, once per (layer, op)."""
        key = (location_of(item, ()), op_name)
        if key in self.fields_checked:
            return True
        self.fields_checked.add(key)
        problems = validate_layer_fields(item, op_name)
        for d in problems:
            self.diags.add(d.__class__(d.message, d.loc, d.severity, d.hint,
                                       d.notes + (note,) + tuple(map(str, body.origin))))
        return not problems
