"""Fusion of several maps: element-wise add and channel concatenation.

These are where encoder taps meet decoder paths, so they are where input
sizes that do not divide by the network's stride show up. Inputs must agree in
height and width exactly; a spec aligns them explicitly with ``crop``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import operator
from functools import reduce

from ..ir import TensorType
from .base import Cost, Field, FunctionCall, OpDef, OpError, register, same_spatial


def add_all(*xs: Any) -> Any:
    """Sum of the inputs, left to right (what a hand-written ``a + b`` computes)."""
    return reduce(operator.add, xs)


def add_into_first(*xs: Any) -> Any:
    """``add_all`` computed in the first input's storage, in the same order (bitwise equal).

    The memory pass (passes/inplace.py) selects this only when nothing else reads the first
    input. Mixed dtypes (autocast) fall back to ``add_all``: ``a.add_(b)`` keeps ``a``'s dtype
    where ``a + b`` would promote.
    """
    first = xs[0]
    if any(x.dtype != first.dtype for x in xs[1:]):
        return add_all(*xs)
    for x in xs[1:]:
        first = first.add_(x)
    return first


def _add_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    same_spatial("add", ins)
    channels = {t.channels for t in ins}
    if len(channels) > 1:
        raise OpError("add needs inputs with equal channels, got "
                      + " and ".join(str(t.channels) for t in ins), field="inputs",
                      hint="project one input with a 1x1 conv first")
    return ins[0]


def _add_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost(tf_flops=(len(ins) - 1) * out.numel)


def _add_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(add_into_first if attrs["inplace"] else add_all)


register(OpDef(name="add", summary="element-wise sum of two or more maps",
               fields={"inplace": Field("bool", False, doc="sum into the first input's storage; the "
                                        "compiler sets this where the graph proves it safe")},
               arity=(2, None), infer=_add_infer, count=_add_count, build=_add_build,
               saves_output=False))


def concat_channels(*xs: Any) -> Any:
    import torch
    return torch.cat(xs, 1)


def _concat_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    same_spatial("concat", ins)
    return TensorType(sum(t.channels for t in ins), ins[0].height, ins[0].width, ins[0].stride)


def _concat_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(concat_channels)


register(OpDef(name="concat", summary="concatenation along channels", fields={},
               arity=(2, None), infer=_concat_infer, build=_concat_build, saves_output=False))


