"""Scalar arithmetic on a map: ``mul · x + add``.

One op covers the constant arithmetic of today's blocks: ``1 − x`` (``{op: scalar, mul: -1,
add: 1}``, the complementary gate of gated fusions), a fixed scale (``mul: 0.5``) or a
shift. Both fields are numbers or expressions over parameters; the defaults (1 and 0) leave
the map unchanged.

Costs: no MACs (FlopCounterMode counts neither). ``tf``: TensorFlow's ``Mul`` and
``AddV2`` count one per element each, and a graph writes only the ones it needs: one per
element for ``mul != 1``, one for ``add != 0``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import NUMBER, Cost, Field, FunctionCall, OpDef, register, unaffected


def scale_shift(x: Any, *, mul: float = 1.0, add: float = 0.0) -> Any:
    """``mul * x + add``, skipping a multiplication by 1 and an addition of 0."""
    if mul != 1:
        x = x * mul
    if add != 0:
        x = x + add
    return x


def _count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    per_element = (attrs["mul"] != 1) + (attrs["add"] != 0)
    return Cost(tf_flops=per_element * out.numel)


register(OpDef(
    name="scalar",
    summary="mul * x + add with constant mul and add (1 - x is mul: -1, add: 1)",
    fields={"mul": Field(NUMBER, 1.0, doc="constant factor"), "add": Field(NUMBER, 0.0, doc="constant term")},
    infer=lambda attrs, ins: ins[0], count=_count,
    build=lambda attrs, ins, out: FunctionCall(scale_shift, {"mul": attrs["mul"], "add": attrs["add"]}),
    dilate=unaffected, saves_output=False,
))
