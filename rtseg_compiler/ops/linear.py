"""Fully connected layer over a flattened C x H x W map.

The output is kept as an ``out x 1 x 1`` map so that every tensor in the IR
has the same rank. MACs are ``in·out`` (torch's addmm counts 2·in·out FLOPs).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import BOOL, INT, REQUIRED, Cost, Field, OpDef, register, size_independent


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    return TensorType(attrs["out"], 1, 1, ins[0].stride_h * ins[0].height)


def _count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    macs = ins[0].numel * attrs["out"]
    bias = attrs["out"] if attrs["bias"] else 0
    return Cost(params=macs + bias, macs=macs, tf_flops=2 * macs + bias)


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.Sequential(nn.Flatten(1), nn.Linear(ins[0].numel, attrs["out"], bias=attrs["bias"]),
                         nn.Unflatten(1, (attrs["out"], 1, 1)))


register(OpDef(
    name="linear", summary="fully connected layer on the flattened input",
    fields={"out": Field(INT, REQUIRED, minimum=1), "bias": Field(BOOL, True)},
    required=("out",), infer=_infer, count=_count, build=_build, dilate=size_independent,
    saves_output=False,
    notes="input C·H·W values; output `out`×1×1",
))
