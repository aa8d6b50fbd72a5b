"""Max, average, global average, adaptive average and adaptive max pooling.

Output sizes use :func:`~rtseg_compiler.ops.base.conv_out`, including
``ceil_mode``'s rule that drops a window starting in the right padding.
Pooling has no MACs; TensorFlow's profiler counts k² FLOPs per output element,
which the ``tf`` convention keeps.

Dilated pooling (``dilation: d``) reads every d-th pixel of a window ``d(k-1)+1``
wide. ``torch.nn.MaxPool2d`` has it but limits padding to half the (undilated)
kernel, and ``AvgPool2d`` has none, so a pool with ``dilation > 1`` is built as
:func:`dilated_pool`: the map padded explicitly (-inf for max, 0 for average)
and the k² strided views reduced; average pooling divides by k² with
``count_include_pad`` (torch's divisor without ``ceil_mode``) and by the taps
inside the map without. It is what the output-stride rewrite gives a pool
past the output stride (:func:`dilate_pool`), which makes ShuffleNet's 3x3/2
average pools exact at output stride 8.
"""

from __future__ import annotations

import operator
from functools import reduce
from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import described
from .base import (BOOL, PAIR, REQUIRED, AtRate, Cost, Field, FunctionCall, OpDef, OpError, Replace,
                   complete_window, conv_out, register, size_independent)
from .shape_rules import resized, sampled

_WINDOW = {
    "kernel": Field(PAIR, REQUIRED, minimum=1),
    "stride": Field(PAIR, None, minimum=1, doc="defaults to the kernel size"),
    "padding": Field(PAIR, 0, minimum=0),
    "dilation": Field(PAIR, 1, minimum=1, doc="spacing of the window's taps"),
    "ceil_mode": Field(BOOL, False),
}


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    if tuple(attrs["dilation"]) == (1, 1):
        return complete_window(attrs, ins)
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    for k, p, d in zip(attrs["kernel"], attrs["padding"], attrs["dilation"]):
        if 2 * p > d * (k - 1) + 1:
            raise OpError(f"padding={p} is more than half the dilated kernel size {d * (k - 1) + 1}",
                          field="padding", hint=f"use padding <= {(d * (k - 1) + 1) // 2}")
    if attrs["ceil_mode"]:
        raise OpError("ceil_mode is not supported with dilation > 1", field="ceil_mode",
                      hint="pad the input instead, or use dilation 1")
    if attrs.get("indices"):
        raise OpError("indices are not supported with dilation > 1", field="indices",
                      hint="unpool needs an undilated max pool")
    return attrs


def _window_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    dims = [conv_out(size, k, s, p, d, attrs["ceil_mode"]) for size, k, s, p, d in
            zip(x.spatial, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"])]
    return sampled(x, x.channels, dims[0], dims[1], *attrs["stride"])


def _window_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    kh, kw = attrs["kernel"]
    return Cost(tf_flops=kh * kw * out.numel)


def dilated_pool(x: Any, *, mode: str, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int],
                 count_include_pad: bool = True) -> Any:
    """Max or average pooling with dilated windows (no ceil_mode), from k² strided views.

    Element-wise maxima, sums and one division: torch's FlopCounterMode counts none of them,
    as it counts no pooling.
    """
    import torch
    from torch.nn import functional as F
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    fill = float("-inf") if mode == "max" else 0.0
    padded = F.pad(x, (pw, pw, ph, ph), value=fill)
    oh = (padded.shape[-2] - dh * (kh - 1) - 1) // sh + 1
    ow = (padded.shape[-1] - dw * (kw - 1) - 1) // sw + 1

    def taps(t: Any) -> list[Any]:
        return [t[..., i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                for i in range(kh) for j in range(kw)]

    if mode == "max":
        return reduce(torch.maximum, taps(padded))
    total = reduce(operator.add, taps(padded))
    if count_include_pad:
        return total / (kh * kw)
    inside = F.pad(x.new_ones((1, 1, *x.shape[-2:])), (pw, pw, ph, ph))
    return total / reduce(operator.add, taps(inside))


@described("kernel == stride, no padding: removed; padding `(k−1)/2`: stride 1; else an error",
           "kernel > 1: `dilation ×= r`, `padding ×= r`")
def dilate_pool(attrs: dict[str, Any], at: AtRate) -> dict[str, Any] | Replace:
    """Max/avg pool in a dilated encoder.

    * past the output stride, a pool that only downsamples (kernel == stride, no
      padding: VGG's 2x2/2) is removed, the Dilation frontend's choice
      (Yu & Koltun 2016, Sec. 4: "we removed the last two pooling and striding
      layers"); it is not exact: the dense map keeps every pixel, not the window's
      maximum (VGG-16's encoder at output stride 8 is 1.6e-1 relative away from the
      strided one on the subsampled grid);
    * past the output stride, a pool with "same" padding (``2p == k-1``: 3x3/2 pad 1)
      gets stride 1;
    * a pool with kernel > 1 reading a map at rate r gets ``dilation *= r``,
      ``padding *= r``, like conv, so that it averages (or maxes) the pixels it did
      in the strided network: exact on the subsampled grid. ``ceil_mode`` is dropped
      then: at stride 1 it changes nothing.
    """
    kernel, stride, padding = attrs["kernel"], attrs["stride"], attrs["padding"]
    if at.passes_output_stride:
        if tuple(kernel) == tuple(stride) and tuple(padding) == (0, 0):
            return Replace("identity")  # an unpool that reads its indices is refused by the pass
        if not all(2 * p == d * (k - 1) for k, p, d in zip(kernel, padding, attrs["dilation"])):
            raise OpError(f"kernel {tuple(kernel)}, stride {tuple(stride)}, padding "
                          f"{tuple(padding)}: at stride 1 it would change the map's size",
                          field="stride",
                          hint="use kernel == stride without padding, or padding (kernel-1)/2")
        attrs["stride"] = (1, 1)
    if at.rate > 1 and max(kernel) > 1:
        if attrs.get("indices"):
            raise OpError("its indices (for an unpool) have no dilated form", field="indices",
                          hint="use a larger output stride")
        attrs["dilation"] = tuple(d * at.rate for d in attrs["dilation"])
        attrs["padding"] = tuple(p * at.rate for p in padding)
        if tuple(attrs["stride"]) == (1, 1):
            attrs["ceil_mode"] = False
    return attrs


def _dilated_build(attrs: Mapping[str, Any], mode: str) -> FunctionCall:
    return FunctionCall(dilated_pool, {
        "mode": mode, "kernel": tuple(attrs["kernel"]), "stride": tuple(attrs["stride"]),
        "padding": tuple(attrs["padding"]), "dilation": tuple(attrs["dilation"]),
        "count_include_pad": bool(attrs.get("count_include_pad", True))})


def _maxpool_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    if tuple(attrs["dilation"]) != (1, 1):
        return _dilated_build(attrs, "max")
    from torch import nn
    return nn.MaxPool2d(attrs["kernel"], attrs["stride"], attrs["padding"],
                        ceil_mode=attrs["ceil_mode"], return_indices=attrs["indices"])


def _avgpool_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    if tuple(attrs["dilation"]) != (1, 1):
        return _dilated_build(attrs, "avg")
    from torch import nn
    return nn.AvgPool2d(attrs["kernel"], attrs["stride"], attrs["padding"],
                        ceil_mode=attrs["ceil_mode"], count_include_pad=attrs["count_include_pad"])


# With ``indices: true`` the pool also returns where each maximum was, which an
# ``unpool`` layer (ENet, SegNet) reads to put values back in place (ops/unpool.py).
register(OpDef(name="maxpool", summary="max pooling; indices: true also returns argmax indices for unpool",
               fields={**_WINDOW, "indices": Field(BOOL, False, doc="also return the argmax "
                                                   "indices, for an unpool layer")},
               required=("kernel",), complete=_complete, infer=_window_infer,
               count=_window_count, build=_maxpool_build, dilate=dilate_pool,
               returns_extra=lambda attrs: bool(attrs["indices"]), saves_output=False,
               notes=("`dilation` > 1 (what output stride gives a pool past it) excludes `ceil_mode` and "
                      "`indices`")))

register(OpDef(name="avgpool", summary="average pooling",
               fields={**_WINDOW, "count_include_pad": Field(BOOL, True)}, required=("kernel",),
               complete=_complete, infer=_window_infer, count=_window_count,
               build=_avgpool_build, dilate=dilate_pool, saves_output=False))


def _gap_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    return TensorType(x.channels, 1, 1, x.stride_h * x.height)  # one bin: its pitch along the height


def _gap_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost(tf_flops=ins[0].numel)  # TF's Mean: one add per input element


def _gap_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.AdaptiveAvgPool2d(1)


register(OpDef(name="gap", summary="global average pooling to 1x1", fields={},
               infer=_gap_infer, count=_gap_count, build=_gap_build, dilate=size_independent,
               saves_output=False,
               notes="output C×1×1"))


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
    # A bin's pitch in input pixels: H/oh rows of a map at stride s (gap's s*H for one bin), on
    # both axes; per axis for a row or column map (shape_rules.resized). The output is off the
    # image grid (size_independent), so the dilation pass gives it no rate.
    return resized(x, x.channels, oh, ow)


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
               fields={"size": Field(PAIR, REQUIRED, minimum=1,
                                     doc="output height and width, n or [h, w] (torch's output_size); "
                                         "items may use in_height, in_width")},
               required=("size",), infer=_adaptive_infer, count=_adaptive_count,
               build=_adaptive_build, dilate=size_independent, saves_output=False,
               notes=("torch's `AdaptiveAvgPool2d`; output stride = input stride × H/h (gap's s·H for "
                      "one bin; per axis for a row or column map); a grid of bins, unaffected by output "
                      "stride")))


# --------------------------------------------------------------------------- adaptive max pooling
# Same bins as adaptive average pooling (torch's AdaptiveMaxPool2d uses the same start/end
# indices). Each bin is a Max, which TensorFlow's profiler does not register: 0 tf FLOPs.


def _adaptive_max_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.AdaptiveMaxPool2d(tuple(attrs["size"]))


register(OpDef(name="adaptive_maxpool",
               summary="max pooling to a fixed size [h, w] of bins (torch's AdaptiveMaxPool2d)",
               fields={"size": Field(PAIR, REQUIRED, minimum=1,
                                     doc="output height and width, n or [h, w]; items may use "
                                         "in_height, in_width")},
               required=("size",), infer=_adaptive_infer, build=_adaptive_max_build,
               dilate=size_independent, saves_output=False,
               notes=("torch's `AdaptiveMaxPool2d`: the bins of `adaptive_avgpool`; a grid of bins, "
                      "unaffected by output stride")))
