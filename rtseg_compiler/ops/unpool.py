"""Max-unpooling: the decoder half of SegNet and ENet.

SegNet (Badrinarayanan et al. 2015, arXiv:1511.00561, Sec. 3) upsamples by
writing each value back to the position its encoder max-pool took it from,
zero elsewhere; ENet (Paszke et al. 2016, arXiv:1606.02147, Table 1) does the
same on the main branch of its upsampling bottlenecks. It stores 2 bits per
window instead of a feature map, and costs no multiply-accumulate.

Spec form::

    - {name: pool1, op: maxpool, kernel: 2, indices: true}
    ...
    - {op: unpool, kernel: 2, inputs: [x, pool1, conv1]}

The second input names the max-pool layer: the compiled module passes its
*indices* there (the pool declares ``returns_extra`` and this op
``extra_inputs=(1,)``). The optional third input is the map that was pooled:
its height and width are the output size, so a ceil-mode pool of an odd size
(SegNet at 360x640 pools 45 rows into 23) is undone exactly. Without it the
output is ``(in - 1)·s - 2p + k`` per side, PyTorch's default.

Costs: 0 in every convention. torch's FlopCounterMode, fvcore, ptflops and
TensorFlow's profiler register no FLOPs for unpooling (see
docs/counter-crosscheck.md for the measured ENet and SegNet rows).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import (PAIR, REQUIRED, Cost, Field, FunctionCall, OpDef, OpError, complete_window, not_dilatable,
                   register)
from .shape_rules import sampled


def max_unpool(x: Any, indices: Any, like: Any = None, *, kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int]) -> Any:
    """``x`` scattered to ``indices`` in a zero map of ``like``'s size (or the default size)."""
    from torch.nn import functional as F
    size = None if like is None else like.shape[-2:]
    return F.max_unpool2d(x, indices, kernel, stride, padding, output_size=size)


def _default_size(size: int, k: int, s: int, p: int) -> int:
    return (size - 1) * s - 2 * p + k


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    x, pooled = ins[0], ins[1]
    if x.channels != pooled.channels or x.spatial != pooled.spatial:
        raise OpError(f"unpool's values ({x}) and the pool's indices ({pooled}) must have the "
                      f"same shape", field="inputs", spatial=x.spatial != pooled.spatial,
                      dims=("h" if x.height != pooled.height else "")
                      + ("w" if x.width != pooled.width else ""),
                      hint="project the values to the pooled map's channels with a 1x1 conv first")
    defaults = [_default_size(n, k, s, p) for n, k, s, p in
                zip(x.spatial, attrs["kernel"], attrs["stride"], attrs["padding"])]
    if len(ins) == 2:
        return sampled(x, x.channels, defaults[0], defaults[1], *(Fraction(1, s) for s in attrs["stride"]))
    like = ins[2]
    bad = ""
    for dim, want, default, s in zip("hw", like.spatial, defaults, attrs["stride"]):
        # torch.nn.functional._unpool_output_size accepts only default - s < size < default + s.
        if not default - s < want < default + s:
            bad += dim
    if bad:
        raise OpError(f"cannot unpool {x.height}x{x.width} to {like.height}x{like.width}: with "
                      f"kernel {tuple(attrs['kernel'])} and stride {tuple(attrs['stride'])} the "
                      f"output must be within a stride of {defaults[0]}x{defaults[1]}",
                      field="inputs", spatial=True, dims=bad,
                      hint="the third input should be the map the max-pool read")
    return sampled(x, x.channels, like.height, like.width, *(Fraction(1, s) for s in attrs["stride"]))


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(max_unpool, {"kernel": tuple(attrs["kernel"]),
                                     "stride": tuple(attrs["stride"]),
                                     "padding": tuple(attrs["padding"])})


register(OpDef(
    name="unpool",
    summary="max-unpooling with a max-pool's indices (inputs: [x, pool, pooled_map?])",
    fields={
        "kernel": Field(PAIR, REQUIRED, minimum=1, doc="the max-pool's kernel"),
        "stride": Field(PAIR, None, minimum=1, doc="the max-pool's stride; defaults to the kernel"),
        "padding": Field(PAIR, 0, minimum=0, doc="the max-pool's padding"),
    },
    required=("kernel",),
    arity=(2, 3),
    extra_inputs=(1,),
    complete=complete_window,
    infer=_infer,
    count=lambda attrs, ins, out: Cost(),
    build=_build,
    dilate=not_dilatable,
    saves_output=False,  # backward gathers the gradient at the saved indices
    notes=("`pool` is a maxpool with `indices: true` (SegNet, ENet); the optional third input gives the "
           "output size"),
))
