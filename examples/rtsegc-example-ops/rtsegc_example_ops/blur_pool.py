"""``blur_pool``: anti-aliased downsampling (low-pass filter, then subsample).

Zhang 2019, "Making Convolutional Networks Shift-Invariant Again" (ICML,
arXiv:1904.11486): strided convs and pools alias, so a small shift of the
input changes the output a lot; blurring with a fixed binomial filter before
subsampling restores most of the shift invariance for a few percent of the
compute. The filter of size k is the outer product of the binomial row
``C(k-1, i)`` normalised to sum 1 (k=3: [1, 2, 1]/4), applied per channel
(a depthwise conv with a fixed, non-learned kernel), with padding
``dilation*(k-1)/2`` so that at stride 1 the map keeps its size.

Cost: a depthwise conv, ``C*Hout*Wout*k*k`` MACs and no parameters (the
filter is a buffer, and not saved in the state dict). FlopCounterMode counts
the ``conv2d`` as 2 FLOPs per MAC; TensorFlow's profiler counts a depthwise
conv the same way, so ``tf_flops = 2*MACs`` (no bias).

Dilated encoders: a blur pool is a strided op, so it must say what happens
when the compiler trades strides for dilations (``rtsegc --output-stride``).
It behaves like a conv with "same" padding: past the output stride its stride
becomes 1, and on a map at rate r its filter is dilated by r, so every output
pixel averages the same input pixels as in the strided network. With zero
padding this is exact (the dense map sampled every r pixels is the strided
map, borders included); with reflect padding the tests find it exact too on
64x64 and 65x65 inputs (tests/torch/test_example_ops_torch.py).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from rtseg_compiler.ir import TensorType
from rtseg_compiler.ops import CHOICE, INT, AtRate, Cost, Field, OpDef, OpError, conv_out, register

PAD_MODES = ("reflect", "zeros")


def binomial(k: int) -> list[float]:
    """The normalised binomial row of length k: [1, 2, 1]/4 for k=3."""
    row = [math.comb(k - 1, i) for i in range(k)]
    return [v / sum(row) for v in row]


def _padding(attrs: Mapping[str, Any]) -> int:
    return attrs["dilation"] * (attrs["kernel"] - 1) // 2


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    k = attrs["kernel"]
    if k % 2 == 0:
        raise OpError(f"blur_pool kernel must be odd, got {k}", field="kernel",
                      hint=f"use {k - 1} or {k + 1}; an even filter has no centre pixel")
    p, x = _padding(attrs), ins[0]
    if attrs["pad"] == "reflect" and p >= min(x.height, x.width):
        # torch's reflect padding needs padding < size along each dimension.
        raise OpError(f"reflect padding {p} needs a map larger than {p}x{p}, got "
                      f"{x.height}x{x.width}", field="pad", spatial=True,
                      dims=("h" if p >= x.height else "") + ("w" if p >= x.width else ""),
                      hint="use pad: zeros, or a larger input")
    return attrs


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    k, s, d, p = attrs["kernel"], attrs["stride"], attrs["dilation"], _padding(attrs)
    return TensorType(x.channels, conv_out(x.height, k, s, p, d), conv_out(x.width, k, s, p, d),
                      x.stride * s)


def _count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    macs = out.numel * attrs["kernel"] ** 2  # depthwise: one k*k window per output element
    return Cost(params=0, macs=macs, tf_flops=2 * macs)


def dilate(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """In an encoder run at a smaller output stride.

    Past the output stride: stride 1. Reading a map at rate r: dilation * r. The
    padding follows the dilation, so the map keeps its size and the result is exact.
    """
    if at.passes_output_stride:
        attrs["stride"] = 1
    attrs["dilation"] = attrs["dilation"] * at.rate
    return attrs


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from .modules import BlurPool2d  # torch is imported only when a module is built

    return BlurPool2d(ins[0].channels, attrs["kernel"], attrs["stride"], attrs["dilation"], attrs["pad"])


BLUR_POOL = register(OpDef(
    name="blur_pool",
    summary="anti-aliased downsampling: fixed binomial blur per channel, then stride (Zhang 2019)",
    fields={
        "kernel": Field(INT, 3, minimum=1, doc="odd filter size; 3 is [1, 2, 1]/4"),
        "stride": Field(INT, 2, minimum=1),
        "dilation": Field(INT, 1, minimum=1),
        "pad": Field(CHOICE, "reflect", choices=PAD_MODES, doc="border handling, as in the paper"),
    },
    complete=_complete,
    infer=_infer,
    count=_count,
    build=_build,
    dilate=dilate,
))
