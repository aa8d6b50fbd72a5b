"""Max, average, global average and adaptive average pooling.

Output sizes use :func:`~rtseg_compiler.ops.base.conv_out`, including
``ceil_mode``'s rule that drops a window starting in the right padding.
Pooling has no MACs; TensorFlow's profiler counts k² FLOPs per output element,
which the ``tf`` convention keeps.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import (REQUIRED, AtRate, Cost, Field, OpDef, OpError, Replace, complete_window, conv_out,
                   register, size_independent)

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


def dilate_pool(attrs: dict[str, Any], at: AtRate) -> dict[str, Any] | Replace:
    """Max/avg pool in a dilated encoder.

    * past the output stride, a pool that only downsamples (kernel == stride, no
      padding: VGG's 2x2/2) is removed, the Dilation frontend's choice
      (Yu & Koltun 2016, Sec. 4: "we removed the last two pooling and striding
      layers"); it is not exact: the dense map keeps every pixel, not the window's maximum;
    * past the output stride, a pool with "same" padding (``2p == k-1``: 3x3/2 pad 1)
      gets stride 1;
    * otherwise the pool is unchanged (a pool reading a map at rate > 1 is not dilated).
    """
    if not at.passes_output_stride:
        return attrs
    kernel, stride, padding = attrs["kernel"], attrs["stride"], attrs["padding"]
    if tuple(kernel) == tuple(stride) and tuple(padding) == (0, 0):
        return Replace("identity")  # an unpool that reads its indices is refused by the pass
    if all(2 * p == k - 1 for k, p in zip(kernel, padding)):
        attrs["stride"] = (1, 1)
        return attrs
    raise OpError(f"kernel {tuple(kernel)}, stride {tuple(stride)}, padding {tuple(padding)}: at "
                  f"stride 1 it would change the map's size", field="stride",
                  hint="use kernel == stride without padding, or padding (kernel-1)/2")


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
               count=_window_count, build=_maxpool_build, dilate=dilate_pool,
               returns_extra=lambda attrs: bool(attrs["indices"])))

register(OpDef(name="avgpool", summary="average pooling",
               fields={**_WINDOW, "count_include_pad": Field("bool", True)}, required=("kernel",),
               complete=complete_window, infer=_window_infer, count=_window_count,
               build=_avgpool_build, dilate=dilate_pool))


def _gap_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    return TensorType(x.channels, 1, 1, x.stride * x.height)


def _gap_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost(tf_flops=ins[0].numel)  # TF's Mean: one add per input element


def _gap_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.AdaptiveAvgPool2d(1)


register(OpDef(name="gap", summary="global average pooling to 1x1", fields={},
               infer=_gap_infer, count=_gap_count, build=_gap_build, dilate=size_independent))


# --------------------------------------------------------------------------- adaptive average pooling
# torch.nn.AdaptiveAvgPool2d: output cell i of n along a side of length L averages rows
# [floor(i*L/n), ceil((i+1)*L/n)), so the bins overlap when n does not divide L and repeat
# rows when n > L (ATen's start_index/end_index). PSPNet's pyramid (Zhao et al. 2017,
# arXiv:1612.01105, Sec. 3.2) pools to 1, 2, 3 and 6 bins a side, as does Fast-SCNN's.


def adaptive_bins(length: int, n: int) -> list[tuple[int, int]]:
    """torch's [start, end) rows of each of ``n`` adaptive-pooling bins over ``length`` rows."""
    return [((i * length) // n, -(-((i + 1) * length) // n)) for i in range(n)]


def _adaptive_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    oh, ow = attrs["size"]
    # A bin's pitch in input pixels: H/oh rows of a map at stride s (gap's s*H for one bin). The
    # output is off the image grid (size_independent), so the dilation pass gives it no rate.
    return TensorType(x.channels, oh, ow, x.stride * Fraction(x.height, oh))


def _adaptive_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    """TF has no adaptive pooling; each bin is a Mean over its window (one FLOP per element read,
    the profiler's Mean), so the cost is the sum of the bins' areas per channel: ``numel(in)``
    when the size divides the input (like ``gap``), more when bins overlap."""
    x = ins[0]
    rows = sum(e - s for s, e in adaptive_bins(x.height, out.height))
    cols = sum(e - s for s, e in adaptive_bins(x.width, out.width))
    return Cost(tf_flops=x.channels * rows * cols)


def _adaptive_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.AdaptiveAvgPool2d(tuple(attrs["size"]))


register(OpDef(name="adaptive_avgpool",
               summary="average pooling to a fixed size [h, w] of bins (PSP pyramid pooling)",
               fields={"size": Field("pair", REQUIRED, minimum=1,
                                     doc="output height and width, n or [h, w] (torch's output_size)")},
               required=("size",), infer=_adaptive_infer, count=_adaptive_count,
               build=_adaptive_build, dilate=size_independent))
