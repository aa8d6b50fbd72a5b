"""Reductions over an axis of a map, keeping it as size 1.

``reduce`` takes the mean, maximum or sum over ``channel`` (1 x H x W: CBAM's and
BiSeNet V2's spatial statistics), ``height`` (C x 1 x W), ``width`` (C x H x 1: SeaFormer's
axial squeeze) or ``spatial`` (C x 1 x 1: ``gap`` for mean), the reduced axis staying as
size 1 (torch's ``keepdim=True``) so that ``add``/``mul`` broadcast the result back.

Stride: a channel reduction keeps the map's grid; a spatial one is a single bin, like
``gap`` (stride · H on both axes). A map reduced over one axis keeps the image grid along
the other and becomes one bin along the reduced axis: over ``width`` a C x H x W map of
stride s gives a row map with stride s along the height and s·W along the width (the
``rtsegc shapes`` text ``s|s·W``), over ``height`` the column map's strides are s·H and s.
Broadcasting ``add``/``mul`` of a row and a column map gives back a C x H x W map of stride
s (ops/merge.py). The output-stride rewrite leaves a reduction as it is (``unaffected``):
over channels it is pointwise, and over an axis or the whole map it reads every pixel at
any rate; a row map's rate is that of its height, its on-grid axis (passes/dilate.py).

Costs: no MACs (FlopCounterMode counts no reduction). ``tf`` follows TensorFlow's
``flops_registry.py`` reduction rule, ``in·reduce + out·(finalize − reduce)``: ``Mean``
(reduce 1, finalize 1) costs one per input element, ``Sum`` (1, 0) input minus output
elements, and ``Max`` is not registered: 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import CHOICE, REQUIRED, Cost, Field, FunctionCall, OpDef, register, unaffected
from .shape_rules import sampled

#: The tensor dimensions of each axis choice (N x C x H x W).
AXES = {"channel": (1,), "height": (2,), "width": (3,), "spatial": (2, 3)}


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    over = attrs["over"]
    if over == "channel":
        return sampled(x, 1, x.height, x.width)
    if over == "spatial":
        return TensorType(x.channels, 1, 1, x.stride_h * x.height)
    if over == "height":  # a column map: one bin as tall as the map
        return sampled(x, x.channels, 1, x.width, step_h=x.height)
    return sampled(x, x.channels, x.height, 1, step_w=x.width)  # a row map


def _count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    mode, n_in, n_out = attrs["mode"], ins[0].numel, out.numel
    return Cost(tf_flops={"mean": n_in, "sum": n_in - n_out, "max": 0}[mode])


def reduce_map(x: Any, *, mode: str, dims: tuple[int, ...]) -> Any:
    """``x`` reduced by mean, max or sum over ``dims``, keeping them as size 1."""
    if mode == "max":
        return x.amax(dim=dims, keepdim=True)
    if mode == "sum":
        return x.sum(dim=dims, keepdim=True)
    return x.mean(dim=dims, keepdim=True)


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(reduce_map, {"mode": attrs["mode"], "dims": AXES[attrs["over"]]})


register(OpDef(
    name="reduce",
    summary="mean, max or sum over channel, height, width or spatial, keeping the axis as size 1",
    fields={
        "mode": Field(CHOICE, REQUIRED, choices=("mean", "max", "sum")),
        "over": Field(CHOICE, REQUIRED, choices=tuple(AXES)),
    },
    required=("mode", "over"), infer=_infer, count=_count, build=_build, dilate=unaffected,
    # saves_output stays True: amax's backward compares the input with the saved result.
))
