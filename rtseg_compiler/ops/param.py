"""A learned tensor of a declared shape: positional embeddings, learned scales.

``{op: param, channels: C, height: H, width: W}`` is a C x H x W parameter (``fill`` gives
its initial value, 0 by default) that ``add`` or ``mul`` broadcast onto a map: a 1 x 1
param is a per-channel scale (layer scale, ``fill: 1.0e-5``), an H x W one a positional
embedding of a fixed input size. Its input only gives the batch size; the module
(:class:`~rtseg_compiler.ops.modules.LearnedTensor`) returns the parameter expanded over
the batch, a view.

Stride: the input's when the param has the input's height and width (an embedding on that
map's grid, or on a row map's), else the pitch of a grid of that size over the input, like
adaptive pooling's bins (``shape_rules.resized``: stride times H_in/H on both axes; per axis
for a row or column map), which the output-stride rewrite leaves alone (``size_independent``).

``trainable: false`` keeps the tensor out of training (``requires_grad`` false) while it stays a
parameter, in the state dict and in the count: PP-LiteSeg's UAFM computes ``x * a + y * (s - a)``
with a one-element ``s`` that PaddleSeg creates as a parameter set to 1 and never trains
(``stop_gradient``), and its checkpoints carry it.

Costs: C·H·W parameters (trainable or not); no MACs or FLOPs in any convention.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import BOOL, INT, NUMBER, REQUIRED, Cost, Field, OpDef, register, size_independent
from .shape_rules import resized, sampled


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    c, h, w = attrs["channels"], attrs["height"], attrs["width"]
    if (h, w) == x.spatial:
        return sampled(x, c, h, w)
    return resized(x, c, h, w)


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from .modules import LearnedTensor
    return LearnedTensor(attrs["channels"], attrs["height"], attrs["width"], float(attrs["fill"]),
                         bool(attrs["trainable"]))


register(OpDef(
    name="param",
    summary="a learned channels x height x width tensor (its input gives only the batch size); "
            "trainable: false keeps it fixed",
    fields={
        "channels": Field(INT, REQUIRED, minimum=1),
        "height": Field(INT, 1, minimum=1),
        "width": Field(INT, 1, minimum=1),
        "fill": Field(NUMBER, 0.0, doc="initial value of every element"),
        "trainable": Field(BOOL, True, doc="false: a fixed tensor (requires_grad false), still a parameter"),
    },
    required=("channels",), infer=_infer,
    count=lambda attrs, ins, out: Cost(params=out.numel),
    build=_build, dilate=size_independent,
    # The output is a view of the parameter itself: saves_output (True) keeps the memory pass
    # from letting an add overwrite it.
    saves_output=True,
))
