"""Channel shuffle (ShuffleNet, Zhang et al. 2017, arXiv:1707.01083, Sec. 3.1).

Reshape ``C`` into ``(g, C/g)``, transpose, flatten: information crosses the
groups of the next grouped 1x1 convolution. No parameters, no MACs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import INT, REQUIRED, Field, FunctionCall, OpDef, OpError, register, unaffected


def channel_shuffle(x: Any, groups: int) -> Any:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    c, g = ins[0].channels, attrs["groups"]
    if c % g:
        raise OpError(f"groups={g} does not divide in_channels={c}", field="groups")
    return attrs


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(channel_shuffle, {"groups": attrs["groups"]})


register(OpDef(
    name="shuffle", summary="channel shuffle across groups",
    fields={"groups": Field(INT, REQUIRED, minimum=1)}, required=("groups",),
    complete=_complete, infer=lambda attrs, ins: ins[0], build=_build, dilate=unaffected,
    views_inputs=(0,), saves_output=False,  # view + transpose + reshape may share storage
))
