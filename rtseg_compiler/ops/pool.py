"""Max, average and global average pooling.

Output sizes use :func:`~rtseg_compiler.ops.base.conv_out`, including
``ceil_mode``'s rule that drops a window starting in the right padding.
Pooling has no MACs; TensorFlow's profiler counts k² FLOPs per output element,
which the ``tf`` convention keeps.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import REQUIRED, Cost, Field, OpDef, complete_window, conv_out, register

_WINDOW = {
    "kernel": Field("pair", REQUIRED, minimum=1),
    "stride": Field("pair", None, minimum=1, doc="defaults to the kernel size"),
    "padding": Field("pair", 0, minimum=0),
    "ceil_mode": Field("bool", False),
}


def _window_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    dims = [conv_out(size, k, s, p, 1, attrs["ceil_mode"])
            for size, k, s, p in zip(x.spatial, attrs["kernel"], attrs["stride"], attrs["padding"])]
    return TensorType(x.channels, dims[0], dims[1], x.stride * attrs["stride"][0])


def _window_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    kh, kw = attrs["kernel"]
    return Cost(tf_flops=kh * kw * out.numel)


def _maxpool_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.MaxPool2d(attrs["kernel"], attrs["stride"], attrs["padding"],
                        ceil_mode=attrs["ceil_mode"], return_indices=attrs["indices"])


def _avgpool_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.AvgPool2d(attrs["kernel"], attrs["stride"], attrs["padding"],
                        ceil_mode=attrs["ceil_mode"], count_include_pad=attrs["count_include_pad"])


# With ``indices: true`` the pool also returns where each maximum was, which an
# ``unpool`` layer (ENet, SegNet) reads to put values back in place (ops/unpool.py).
register(OpDef(name="maxpool", summary="max pooling; indices: true also returns argmax indices for unpool",
               fields={**_WINDOW, "indices": Field("bool", False, doc="also return the argmax "
                                                   "indices, for an unpool layer")},
               required=("kernel",), complete=complete_window, infer=_window_infer,
               count=_window_count, build=_maxpool_build,
               returns_extra=lambda attrs: bool(attrs["indices"]), saves_output=False))

register(OpDef(name="avgpool", summary="average pooling",
               fields={**_WINDOW, "count_include_pad": Field("bool", True)}, required=("kernel",),
               complete=complete_window, infer=_window_infer, count=_window_count,
               build=_avgpool_build, saves_output=False))


def _gap_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    return TensorType(x.channels, 1, 1, x.stride * x.height)


def _gap_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost(tf_flops=ins[0].numel)  # TF's Mean: one add per input element


def _gap_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.AdaptiveAvgPool2d(1)


register(OpDef(name="gap", summary="global average pooling to 1x1", fields={},
               infer=_gap_infer, count=_gap_count, build=_gap_build, saves_output=False))
