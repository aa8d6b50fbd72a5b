"""Fusion of several maps: element-wise add and multiply, and channel concatenation.

These are where encoder taps meet decoder paths, so they are where input
sizes that do not divide by the network's stride show up: a spec aligns two
full maps explicitly with ``crop``.

``add`` and ``mul`` broadcast by torch's rules over C x H x W: a dimension
broadcasts when both sizes are equal or one of them is 1, so a C x 1 x 1 gate
(squeeze-excitation, attention refinement) scales every pixel of a C x H x W
map and a 1 x H x W map every channel. The shape rule is the fold of
``torch.broadcast_shapes`` over the inputs (tests/torch compares the two on
random shapes). The output's stride, per axis, is the one of the input that has the
output's height and width (the full-size map), not of a 1x1 gate; without one, the one
of an input whose size along that axis is not 1, so a row map (C x H x 1) plus a column
map (C x 1 x W) is a C x H x W map with their common grid's stride.

TF-profiler FLOPs: TensorFlow's Add/AddV2 and Mul count one per element of
their (broadcast) output, and ``a + b + c`` is two of them, so an n-input op
costs the sum over k = 1..n-1 of the size of the broadcast of inputs 0..k.
MACs: 0 (FlopCounterMode registers neither add nor mul).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping, Sequence

import operator
from functools import reduce

from ..ir import TensorType
from .base import BOOL, Cost, Field, FunctionCall, OpDef, OpError, register, same_spatial, unaffected
from .shape_rules import sampled

_DIMS = ("channels", "height", "width")


def add_all(*xs: Any) -> Any:
    """Sum of the inputs, left to right (what a hand-written ``a + b`` computes)."""
    return reduce(operator.add, xs)


def mul_all(*xs: Any) -> Any:
    """Product of the inputs, left to right (``x * gate``)."""
    return reduce(operator.mul, xs)


def add_into_first(*xs: Any) -> Any:
    """``add_all`` computed in the first input's storage, in the same order (bitwise equal).

    The memory pass (passes/inplace.py) selects this only when nothing else reads the first
    input. Mixed dtypes (autocast) fall back to ``add_all``: ``a.add_(b)`` keeps ``a``'s dtype
    where ``a + b`` would promote.
    """
    first = xs[0]
    if any(x.dtype != first.dtype or not _broadcasts_into(x.shape, first.shape) for x in xs[1:]):
        return add_all(*xs)
    for x in xs[1:]:
        first = first.add_(x)
    return first


def _broadcasts_into(shape: Any, target: Any) -> bool:
    """Whether a map of ``shape`` broadcasts onto ``target`` without growing it (``target += x``
    works); a 1x1 gate does, a full map onto a 1x1 first input does not."""
    return len(shape) == len(target) and all(b in (1, a) for a, b in zip(target, shape))


def _dims(t: TensorType) -> tuple[int, int, int]:
    return (t.channels, t.height, t.width)


def _text(dims: Sequence[int]) -> str:
    return "x".join(map(str, dims))


def broadcast_dims(shapes: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
    """torch's broadcast of equal-rank shapes: each dimension equal, or 1 on one side; None if not."""
    out = list(shapes[0])
    for shape in shapes[1:]:
        for d, (a, b) in enumerate(zip(out, shape)):
            if a == b or b == 1:
                continue
            if a != 1:
                return None
            out[d] = b
    return tuple(out)


def _broadcast_error(op: str, ins: Sequence[TensorType], i: int, d: int) -> OpError:
    """The error for input #i, whose dimension ``d`` neither equals nor broadcasts with an earlier input's."""
    j = next(k for k in range(i) if _dims(ins[k])[d] not in (1, _dims(ins[i])[d]))
    a, b = ins[j], ins[i]
    if d > 0 and min(a.spatial + b.spatial) > 1:
        # Two full maps of different sizes: an alignment problem that crop (or another
        # input size) solves, reported as before broadcasting existed.
        try:
            same_spatial(op, [a, b], [f"input #{j}", f"input #{i}"])
        except OpError as exc:
            return exc
    if d == 0 and a.spatial == b.spatial:
        return OpError(f"{op} needs inputs with equal channels, got "
                       + " and ".join(str(t.channels) for t in ins) + " (or 1 channel, which broadcasts)",
                       field="inputs", hint="project one input with a 1x1 conv first")
    full = max((a, b), key=lambda t: t.numel)
    c, h, w = _dims(full)
    bad = ", ".join(f"{_DIMS[k]} {_dims(a)[k]} vs {_dims(b)[k]}" for k in range(3)
                    if 1 not in (_dims(a)[k], _dims(b)[k]) and _dims(a)[k] != _dims(b)[k])
    return OpError(f"{op} cannot broadcast input #{j} ({a}) with input #{i} ({b}): {bad}; a "
                   f"dimension broadcasts only when the sizes are equal or one of them is 1",
                   field="inputs",
                   hint=f"maps that broadcast with {_text((c, h, w))}: {c}x1x1 (a gate), 1x{h}x{w}, "
                        f"1x1x1, or {_text((c, h, w))} itself")


def broadcast_type(op: str, ins: Sequence[TensorType]) -> TensorType:
    """The output type of an element-wise op over ``ins``, by torch's broadcasting rules."""
    out = list(_dims(ins[0]))
    for i, t in enumerate(ins[1:], start=1):
        for d in (1, 2, 0):  # sizes before channels, the order of the errors before broadcasting
            a, b = out[d], _dims(t)[d]
            if a == b or b == 1:
                continue
            if a != 1:
                raise _broadcast_error(op, ins, i, d)
            out[d] = b
    c, h, w = out
    return TensorType(c, h, w, stride_h=_broadcast_stride(ins, h, w, 0),
                      stride_w=_broadcast_stride(ins, h, w, 1))


def _broadcast_stride(ins: Sequence[TensorType], h: int, w: int, axis: int) -> Fraction:
    """The stride along ``axis`` (0: height, 1: width) of the broadcast of ``ins`` to h x w.

    An input of the output's full height and width gives it (the first such: a C x H x W map
    that a C x 1 x 1 gate scales); otherwise the first input whose size along the axis is
    not 1 (numpy's rule: a size-1 axis is stretched and tells nothing of the grid), so a
    C x H x 1 row map plus a C x 1 x W column map, both from a stride-s map, is a C x H x W
    map of stride s. An axis of size 1 in every input takes the finest of their strides.
    """
    full = next((t for t in ins if t.spatial == (h, w)), None)
    if full is not None:
        return full.strides[axis]
    sized = next((t for t in ins if t.spatial[axis] != 1), None)
    return sized.strides[axis] if sized is not None else min(t.strides[axis] for t in ins)


def _elementwise_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    total = 0
    for k in range(1, len(ins)):
        c, h, w = broadcast_dims([_dims(t) for t in ins[:k + 1]])  # type: ignore[misc]
        total += c * h * w
    return Cost(tf_flops=total)


def _add_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(add_into_first if attrs["inplace"] else add_all)


register(OpDef(name="add", summary="element-wise sum of two or more maps (broadcasts 1-sized dims)",
               fields={"inplace": Field(BOOL, False, doc="sum into the first input's storage; the "
                                        "compiler sets this where the graph proves it safe")},
               arity=(2, None), infer=lambda attrs, ins: broadcast_type("add", ins),
               count=_elementwise_count, build=_add_build, dilate=unaffected, saves_output=False,
               source_expression=lambda attrs, args: None if attrs["inplace"] else " + ".join(args),
               notes=("2+ inputs, broadcast by torch's rules: each of C, H, W equal or 1 on one side (a "
                      "C×1×1 gate or a 1×H×W map onto C×H×W, a C×H×1 row map plus a C×1×W column map); "
                      "each axis of the output has the stride of an input that is not 1 along it")))

register(OpDef(name="mul", summary="element-wise product of two or more maps (x * gate; broadcasts)",
               fields={}, arity=(2, None), infer=lambda attrs, ins: broadcast_type("mul", ins),
               count=_elementwise_count, build=lambda attrs, ins, out: FunctionCall(mul_all),
               dilate=unaffected, saves_output=False, source_expression=lambda attrs, args: " * ".join(args),
               notes="2+ inputs, broadcast as for `add`"))


def concat_channels(*xs: Any) -> Any:
    import torch
    return torch.cat(xs, 1)


def _concat_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    same_spatial("concat", ins)
    return sampled(ins[0], sum(t.channels for t in ins), ins[0].height, ins[0].width)


def _concat_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(concat_channels)


register(OpDef(name="concat", summary="concatenation along channels", fields={},
               arity=(2, None), infer=_concat_infer, build=_concat_build, dilate=unaffected,
               saves_output=False,
               source_expression=lambda attrs, args: f"torch.cat([{', '.join(args)}], dim=1)",
               notes="2+ inputs, equal height and width"))


