"""Reductions over an axis of a map, keeping it as size 1.

``reduce`` takes the mean, maximum or sum over ``channel`` (1 x H x W: CBAM's and
BiSeNet V2's spatial statistics), ``height`` (C x 1 x W), ``width`` (C x H x 1: SeaFormer's
axial squeeze) or ``spatial`` (C x 1 x 1: ``gap`` for mean), the reduced axis staying as
size 1 (torch's ``keepdim=True``) so that ``add``/``mul`` broadcast the result back.

Stride: a channel reduction keeps the map's grid; a spatial one is a single bin, like
``gap`` (stride · H). A map reduced over one axis still lies on the image grid along the
other, and the IR has one stride per map, so it keeps its input's stride (what the
kept axis has). The output-stride rewrite leaves it as it is (``unaffected``): over
channels it is pointwise, and over an axis or the whole map it reads every pixel at any
rate (a 1x1 result has no grid, which the rewrite already knows).

Costs: no MACs (FlopCounterMode counts no reduction). ``tf`` follows TensorFlow's
``flops_registry.py`` reduction rule, ``in·reduce + out·(finalize − reduce)``: ``Mean``
(reduce 1, finalize 1) costs one per input element, ``Sum`` (1, 0) input minus output
elements, and ``Max`` is not registered: 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import CHOICE, REQUIRED, Cost, Field, FunctionCall, OpDef, register, unaffected

#: The tensor dimensions of each axis choice (N x C x H x W).
AXES = {"channel": (1,), "height": (2,), "width": (3,), "spatial": (2, 3)}


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    over = attrs["over"]
    if over == "channel":
        return TensorType(1, x.height, x.width, x.stride)
    if over == "spatial":
        return TensorType(x.channels, 1, 1, x.stride * x.height)
    if over == "height":
        return TensorType(x.channels, 1, x.width, x.stride)
    return TensorType(x.channels, x.height, 1, x.stride)


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
