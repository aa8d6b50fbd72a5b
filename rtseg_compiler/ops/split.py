"""Channel slicing: ``split`` keeps channels ``[start, stop)`` of a map.

ShuffleNet V2 (Ma et al. 2018, arXiv:1807.11164, Sec. 3, Fig. 3c) splits the
input of each stride-1 unit into two halves along channels: one half passes
through, the other goes through the branch, and a concat + channel shuffle
joins them. Two ``split`` layers over the same input write that split::

    - {name: keep, op: split, stop: "in_channels // 2"}
    - {name: branch_in, op: split, start: "in_channels // 2"}

``stop`` defaults to the input's channels; both may be expressions. It is a
view (``x[:, start:stop]``), so it has no parameters and every counter,
TensorFlow's profiler included (``Slice``/``Split`` are not registered), gives 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import INT, Field, FunctionCall, OpDef, OpError, register, unaffected
from .shape_rules import sampled


def take_channels(x: Any, *, start: int, stop: int) -> Any:
    """Channels ``[start, stop)`` of ``x`` (a view, as ``torch.chunk`` returns)."""
    return x[:, start:stop]


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    cin = ins[0].channels
    if attrs["stop"] is None:
        attrs["stop"] = cin
    start, stop = attrs["start"], attrs["stop"]
    if stop > cin:
        raise OpError(f"split stop={stop} is beyond in_channels={cin}", field="stop",
                      hint=f"channels are numbered 0 to {cin - 1}; use stop <= {cin}")
    if start >= stop:
        raise OpError(f"split start={start} must be smaller than stop={stop} (in_channels={cin})",
                      field="start", hint="the layer keeps channels [start, stop)")
    return attrs


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x = ins[0]
    return sampled(x, attrs["stop"] - attrs["start"], x.height, x.width)


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(take_channels, {"start": attrs["start"], "stop": attrs["stop"]})


register(OpDef(
    name="split",
    summary="channels [start, stop) of a map (ShuffleNetV2's channel split)",
    fields={
        "start": Field(INT, 0, minimum=0, doc="first channel kept"),
        "stop": Field(INT, None, minimum=1, doc="one past the last channel kept; default in_channels"),
    },
    complete=_complete, infer=_infer, build=_build, dilate=unaffected,
    output_is_view=True,  # x[:, start:stop]
    notes="`start` and `stop` may be expressions; `stop` defaults to in_channels",
))
