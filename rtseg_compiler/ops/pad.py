"""Zero padding of channels and borders.

ENet's downsampling bottlenecks (Paszke et al. 2016, arXiv:1606.02147, Fig. 2b)
add a main branch that is max-pooled and then *zero-padded* from the input's
channels to the output's (16 -> 64, 64 -> 128), so the shortcut costs no
parameters; e-lab's ENet-training writes this as ``nn.Padding`` on the
channel dimension. ``out`` does that: the new channels come after the
existing ones. ``top``/``bottom``/``left``/``right`` pad the borders with
zeros, for aligning a map that is a row or column short.

No parameters and no MACs; every counter (torch, fvcore, ptflops, the
TensorFlow profiler's ``Pad``) gives it 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import described
from .base import INT, AtRate, Field, FunctionCall, OpDef, OpError, register
from .shape_rules import sampled


def zero_pad(x: Any, *, channels: int, top: int, bottom: int, left: int, right: int) -> Any:
    """``x`` with ``channels`` zero channels appended and zero borders."""
    from torch.nn import functional as F
    return F.pad(x, (left, right, top, bottom, 0, channels))


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    cin = ins[0].channels
    if attrs["out"] is None:
        attrs["out"] = cin
    if attrs["out"] < cin:
        raise OpError(f"pad cannot drop channels: out={attrs['out']} is below the input's {cin}",
                      field="out", hint=f"use out >= {cin}")
    return attrs


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    return sampled(x, attrs["out"], x.height + attrs["top"] + attrs["bottom"],
                   x.width + attrs["left"] + attrs["right"])


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(zero_pad, {"channels": attrs["out"] - ins[0].channels, "top": attrs["top"],
                                   "bottom": attrs["bottom"], "left": attrs["left"],
                                   "right": attrs["right"]})


@described("—", "borders `×= r`")
def _dilate(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Channel padding is pointwise; a border of b rows at rate r becomes r·b rows, so
    that the dense map, subsampled every r pixels, is the strided map's padded one."""
    for side in ("top", "bottom", "left", "right"):
        attrs[side] *= at.rate
    return attrs


register(OpDef(
    name="pad",
    summary="zero padding: extra channels up to 'out' (ENet shortcut) and/or zero borders",
    fields={
        "out": Field(INT, None, minimum=1, doc="output channels; zero channels are appended"),
        "top": Field(INT, 0, minimum=0),
        "bottom": Field(INT, 0, minimum=0),
        "left": Field(INT, 0, minimum=0),
        "right": Field(INT, 0, minimum=0),
    },
    complete=_complete, infer=_infer, build=_build, dilate=_dilate,
    saves_output=False,
))
