"""Convolution and transposed convolution.

Shapes follow ``torch.nn.Conv2d`` / ``ConvTranspose2d`` exactly. MACs exclude
bias and count transposed convolution by its *input* size
(``Hin·Win·Cin·(Cout/g)·kh·kw``): each input pixel scatters one kernel, which
is what ``torch.utils.flop_counter`` and fvcore count. Counting by output size
(PyPI ``thop`` 0.1.1, torchinfo) inflates a 16x16/8 upsampling by 64x.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import described
from .base import (BOOL, INT, PAIR, REQUIRED, AtRate, Cost, Field, OpDef, OpError, conv_out, not_dilatable,
                   register, sampled)

_COMMON = {
    "out": Field(INT, REQUIRED, minimum=1, doc="output channels"),
    "kernel": Field(PAIR, REQUIRED, minimum=1, doc="kernel size, k or [kh, kw]"),
    "stride": Field(PAIR, 1, minimum=1),
    "padding": Field(PAIR, None, minimum=0),
    "dilation": Field(PAIR, 1, minimum=1),
    "groups": Field(INT, 1, minimum=1, doc="channel groups; in_channels for depthwise"),
    "bias": Field(BOOL, True),
}


def _divisors(n: int) -> list[int]:
    """Divisors of ``n`` in increasing order, in O(sqrt(n)) steps (channels may come from a hostile spec)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _check_groups(attrs: Mapping[str, Any], cin: int) -> None:
    g, out = attrs["groups"], attrs["out"]
    if cin % g:
        divisors = _divisors(math.gcd(cin, out))
        raise OpError(f"groups={g} does not divide in_channels={cin}", field="groups",
                      hint=f"groups that divide both {cin} and out={out}: "
                           f"{', '.join(map(str, divisors[-6:]))}")
    if out % g:
        raise OpError(f"groups={g} does not divide out={out}", field="groups",
                      hint=f"use out={(out // g + 1) * g} or a groups value dividing {out}")


# --------------------------------------------------------------------------- conv

def _conv_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    _check_groups(attrs, ins[0].channels)
    if attrs["padding"] is None:
        # 'same' at stride 1: d*(k-1)/2 keeps the size. An odd span d*(k-1) has no symmetric
        # 'same' padding (torch pads both sides alike), and rounding it down silently shifted
        # a ViT patchify conv (kernel = stride = 8 got padding 3), so the spec must say. A
        # span of 1 (kernel 2) keeps padding 0, torch's default, which is also its floor.
        uneven = [(k, d) for k, d in zip(attrs["kernel"], attrs["dilation"]) if d * (k - 1) % 2
                  and d * (k - 1) > 1]
        if uneven:
            k, d = uneven[0]
            at = f" at dilation {d}" if d > 1 else ""
            span = d * (k - 1)
            raise OpError(f"kernel {k}{at} has no symmetric 'same' padding (d*(k-1) = {span} is "
                          f"odd), so the padding must be given", field="kernel",
                          hint=f"write 'padding: 0' (a patchify conv, kernel = stride), or "
                               f"{span // 2} or {span // 2 + 1} for a near-'same' size")
        attrs["padding"] = tuple(d * (k - 1) // 2 for k, d in zip(attrs["kernel"], attrs["dilation"]))
    return attrs


def _conv_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs["padding"], attrs["dilation"]
    h = conv_out(x.height, kh, sh, ph, dh)
    w = conv_out(x.width, kw, sw, pw, dw)
    return sampled(x, attrs["out"], h, w, sh, sw)


def _conv_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    kh, kw = attrs["kernel"]
    per_output = (ins[0].channels // attrs["groups"]) * kh * kw
    macs = out.numel * per_output
    bias = out.channels if attrs["bias"] else 0
    params = out.channels * per_output + bias
    return Cost(params, macs, 2 * macs + (out.numel if attrs["bias"] else 0))


def _conv_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.Conv2d(ins[0].channels, attrs["out"], attrs["kernel"], attrs["stride"],
                     attrs["padding"], attrs["dilation"], attrs["groups"], attrs["bias"])


@described('stride 1 (needs "same" padding `d·(k−1)/2`, else an error)',
           "kernel > 1: `dilation ×= r`, `padding ×= r`")
def dilate_conv(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Conv in a dilated encoder (DeepLab; timm's and torchvision's ``replace_stride_with_dilation``).

    * past the output stride: ``stride s -> 1``; the conv keeps its input's rate, as
      timm's ``make_blocks`` gives the first block of a converted stage the previous dilation;
    * kernel > 1 reading a map at rate r: ``dilation *= r``, ``padding *= r``, so
      "same" padding ``d(k-1)/2`` stays "same" and every output pixel reads the
      pixels it read in the strided network (exact on the subsampled grid);
    * a strided conv without "same" padding cannot lose its stride without
      shrinking the map (a k2/s2/p0 conv at stride 1 maps 8 to 7): refused.

    Usable by any op with ``kernel``, ``stride``, ``padding`` and ``dilation`` pair fields.
    """
    old_padding = attrs["padding"]
    if at.passes_output_stride:
        attrs["stride"] = (1, 1)
    if at.rate > 1 and max(attrs["kernel"]) > 1:
        attrs["dilation"] = tuple(d * at.rate for d in attrs["dilation"])
        attrs["padding"] = tuple(p * at.rate for p in attrs["padding"])
    if at.passes_output_stride and any(2 * p != d * (k - 1) for k, p, d in
                                       zip(attrs["kernel"], attrs["padding"], attrs["dilation"])):
        raise OpError(f"kernel {tuple(attrs['kernel'])}, padding {tuple(old_padding)}: at stride 1 "
                      f"it would change the map's size", field="padding",
                      hint="output stride needs 'same' padding, d*(k-1)/2, on strided convs past it")
    return attrs


register(OpDef(
    name="conv",
    summary="2-D convolution (grouped, depthwise, dilated, asymmetric kernels)",
    fields=_COMMON,
    required=("out", "kernel"),
    complete=_conv_complete,
    infer=_conv_infer,
    count=_conv_count,
    build=_conv_build,
    dilate=dilate_conv,
    saves_output=False,  # backward reads the input and the weight
    norm_folds_into="out",  # weight (out, in/groups, kh, kw)
    notes=("`groups: in_channels` makes it depthwise; `kernel: [1, 5]` is asymmetric; `padding` defaults"
           " to d·(k−1)/2; an odd d·(k−1) above 1 (an even kernel) has no such padding and needs"
           " it written"),
))


# --------------------------------------------------------------------------- deconv

def _deconv_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    _check_groups(attrs, ins[0].channels)
    pads, extras = [], []
    for i, (k, s, d) in enumerate(zip(attrs["kernel"], attrs["stride"], attrs["dilation"])):
        span = d * (k - 1) + 1
        if attrs["padding"] is None:
            # Default padding and output_padding make the output exactly s times
            # the input: (in-1)s - 2p + span + op = s*in  <=>  op = 2p - (span - s).
            p = max(0, -(-(span - s) // 2))
            op = 2 * p - (span - s) if attrs["output_padding"] is None else attrs["output_padding"][i]
        else:
            p = attrs["padding"][i]
            op = 0 if attrs["output_padding"] is None else attrs["output_padding"][i]
        if op >= max(s, d):
            raise OpError(f"output_padding={op} must be smaller than stride={s} or dilation={d}",
                          field="output_padding" if attrs["output_padding"] is not None else "padding",
                          hint="give padding explicitly, or change kernel and stride")
        pads.append(p)
        extras.append(op)
    attrs["padding"], attrs["output_padding"] = tuple(pads), tuple(extras)
    return attrs


def _deconv_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    dims = []
    for size, k, s, p, d, op in zip(x.spatial, attrs["kernel"], attrs["stride"], attrs["padding"],
                                    attrs["dilation"], attrs["output_padding"]):
        dims.append((size - 1) * s - 2 * p + d * (k - 1) + op + 1)
    sh, sw = attrs["stride"]
    return sampled(x, attrs["out"], dims[0], dims[1], Fraction(1, sh), Fraction(1, sw))


def _deconv_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    x = ins[0]
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    per_input = (out.channels // attrs["groups"]) * kh * kw
    macs = x.numel * per_input
    params = x.channels * per_input + (out.channels if attrs["bias"] else 0)
    # TensorFlow's Conv2DBackpropInput: 2·Hout·Wout·k²·Cin·Cout/s² (flops_registry.py).
    tf = 2 * out.height * out.width * kh * kw * x.channels * (out.channels // attrs["groups"])
    tf //= sh * sw
    return Cost(params, macs, tf + (out.numel if attrs["bias"] else 0))


def _deconv_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.ConvTranspose2d(ins[0].channels, attrs["out"], attrs["kernel"], attrs["stride"],
                              attrs["padding"], attrs["output_padding"], attrs["groups"],
                              attrs["bias"], attrs["dilation"])


register(OpDef(
    name="deconv",
    summary="2-D transposed convolution; default padding makes the output stride x input",
    fields={**_COMMON, "output_padding": Field(PAIR, None, minimum=0)},
    required=("out", "kernel"),
    complete=_deconv_complete,
    infer=_deconv_infer,
    count=_deconv_count,
    build=_deconv_build,
    dilate=not_dilatable,
    saves_output=False,
    norm_folds_into="in",  # weight (in, out/groups, kh, kw)
    notes="k4/s2 → padding 1; k16/s8 → padding 4; k3/s2 → padding 1 + output_padding 1",
))
