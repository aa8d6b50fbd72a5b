"""Resampling: upsampling by a factor, to a given size or to another map's size, and cropping.

``upsample`` resizes by ``scale``, to ``size: [h, w]`` or to the size of a second input, with
nearest, bilinear or bicubic interpolation (torch's ``F.interpolate``). ``size`` items may be
expressions of the layer's input size, ``in_height`` and ``in_width``
(``size: ["ceil(in_height / 2)", "ceil(in_width / 2)"]``), evaluated for the input size the
network is compiled at. A size that is not a whole multiple has the fractional stride
``stride · H_in / h`` on both axes (a row or column map's strides scale per axis:
``shape_rules.resized``). By a ``scale`` both strides are divided; to a second input, the
output takes that input's strides. No resize has MACs (FlopCounterMode counts none) or ``tf`` FLOPs
(TensorFlow's ResizeBilinear/ResizeBicubic are not in its profiler's registry).

``crop`` is how a decoder aligns an upsampled map with an encoder tap when the
input size is not a multiple of the network stride (360 is not a multiple of
32): it keeps the first ``H x W`` rows and columns of its first input, where
``H x W`` is the size of its second input, which is also what TensorFlow's
'SAME' transposed convolution does with an explicit output shape.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import described
from .base import (BOOL, CHOICE, NUMBER, PAIR, AtRate, Cost, Field, FunctionCall, OpDef, OpError,
                   not_dilatable, register, unaffected)
from .shape_rules import resized, sampled

#: Interpolation modes that take align_corners (torch raises for the others).
_ALIGNABLE = ("bilinear", "bicubic")


def _upsample_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    given = [what for what, on in (("'scale'", attrs["scale"] is not None),
                                   ("'size'", attrs.get("size") is not None),
                                   ("a size reference input", len(ins) == 2)) if on]
    if not given:
        raise OpError("upsample needs a 'scale', a 'size', or a second input whose size it takes",
                      field="scale")
    if len(given) > 1:
        raise OpError(f"upsample takes one of 'scale', 'size' or a size reference input, got "
                      f"{' and '.join(given)}", field="size" if attrs.get("size") is not None else "scale")
    if attrs["scale"] is not None and attrs["scale"] <= 0:
        raise OpError(f"upsample scale={attrs['scale']} must be positive", field="scale",
                      hint="2 doubles height and width; 0.5 halves them")
    if attrs["mode"] not in _ALIGNABLE and attrs["align_corners"]:
        raise OpError("align_corners applies to bilinear and bicubic modes only", field="align_corners")
    return attrs


def _upsample_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    if len(ins) == 2:
        ref = ins[1]
        return sampled(ref, x.channels, ref.height, ref.width)
    if attrs.get("size") is not None:
        h, w = attrs["size"]
        return resized(x, x.channels, h, w)
    scale = attrs["scale"]
    h, w = math.floor(x.height * scale), math.floor(x.width * scale)
    # limit_denominator keeps 1/3-style scales readable; a tiny scale would round to 0.
    factor = Fraction(scale).limit_denominator(1000) or Fraction(scale)
    return sampled(x, x.channels, h, w, 1 / factor, 1 / factor)


def resize_like(x: Any, ref: Any, mode: str, align_corners: bool | None) -> Any:
    from torch.nn import functional as F
    return F.interpolate(x, size=ref.shape[-2:], mode=mode, align_corners=align_corners)


def _upsample_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    align = attrs["align_corners"] if attrs["mode"] in _ALIGNABLE else None
    if len(ins) == 2:
        return FunctionCall(resize_like, {"mode": attrs["mode"], "align_corners": align})
    from torch import nn
    if attrs.get("size") is not None:
        return nn.Upsample(size=tuple(attrs["size"]), mode=attrs["mode"], align_corners=align)
    return nn.Upsample(scale_factor=attrs["scale"], mode=attrs["mode"], align_corners=align)


@described("—", "by `scale` or to a `size`: error, no dilated form; to a reference input: follows the "
           "reference")
def _upsample_dilate(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """To a reference's size: follows the reference at any rate (a pyramid-pooling branch
    resized back onto a dilated map). By a scale or to a size: no dilated form past the
    output stride."""
    return attrs if attrs["scale"] is None and attrs.get("size") is None else not_dilatable(attrs, at)


register(OpDef(
    name="upsample",
    summary="nearest, bilinear or bicubic resize by 'scale', to 'size', or to the size of a second input",
    fields={
        "scale": Field(NUMBER, None, minimum=0),
        "size": Field(PAIR, None, minimum=1, doc="output [h, w]; items may use in_height, in_width"),
        "mode": Field(CHOICE, "nearest", choices=("nearest", "bilinear", "bicubic")),
        "align_corners": Field(BOOL, False),
    },
    arity=(1, 2), complete=_upsample_complete, infer=_upsample_infer, build=_upsample_build,
    dilate=_upsample_dilate,
    saves_output=False,
    notes="`inputs: [x, like]` takes like's height and width",
))


def crop_like(x: Any, ref: Any, center: bool = False) -> Any:
    """``x`` cut to ``ref``'s height and width (from the top-left, or centred)."""
    h, w = ref.shape[-2], ref.shape[-1]
    if not center:
        return x[:, :, :h, :w]
    top = (x.shape[-2] - h) // 2
    left = (x.shape[-1] - w) // 2
    return x[:, :, top:top + h, left:left + w]


def _crop_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x, ref = ins
    if x.height < ref.height or x.width < ref.width:
        # "input #k" becomes the layer's name when shapes.py reports the error.
        raise OpError(f"crop cannot enlarge input #0 ({x.height}x{x.width}) to the size of "
                      f"input #1 ({ref.height}x{ref.width})", field="inputs", spatial=True,
                      dims=("h" if x.height < ref.height else "") + ("w" if x.width < ref.width else ""),
                      hint="crop the larger map to the smaller one")
    return sampled(ref, x.channels, ref.height, ref.width)


def _crop_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(crop_like, {"center": attrs["align"] == "center"})


register(OpDef(
    name="crop",
    summary="cut the first input to the height and width of the second (inputs: [x, like])",
    fields={"align": Field(CHOICE, "start", choices=("start", "center"))},
    arity=(2, 2), infer=_crop_infer, build=_crop_build,
    count=lambda attrs, ins, out: Cost(),
    # Both inputs are at the same rate in a dilated encoder; the crop keeps the reference's size.
    dilate=unaffected,
    views_inputs=(0,), output_is_view=True, saves_output=False,  # a slice of input 0
    notes="`align: center` cuts equally from both sides",
))
