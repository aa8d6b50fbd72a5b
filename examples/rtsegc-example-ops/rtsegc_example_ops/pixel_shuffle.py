"""``pixel_shuffle``: sub-pixel upsampling (depth to space).

Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network" (arXiv:1609.05158): a conv
produces ``C*r*r`` channels at low resolution and this op rearranges them
into ``C`` channels at ``r`` times the height and width. A segmentation head
written as ``conv (num_classes*r*r) -> pixel_shuffle r`` is DUpsampling's
learned upsampling (Tian et al. 2019, arXiv:1903.02120), at the cost of the
conv alone: the rearrangement moves data and computes nothing, so torch's
FlopCounterMode and TensorFlow's profiler both count 0 for it.

Dilated encoders: like a transposed conv, it upsamples, so it cannot read a
map that the rewrite to a smaller output stride has kept dense (the sizes the
encoder was written for would change); it declares ``not_dilatable``. In a
meta-architecture (the decoder) it is never rewritten.

torch: ``nn.PixelShuffle(r)``; TensorFlow: ``tf.nn.depth_to_space`` (same
channel order only with ``data_format='NCHW'``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rtseg_compiler.ir import TensorType
from rtseg_compiler.ops import INT, REQUIRED, Field, OpDef, OpError, not_dilatable, register


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    """Channels must split into ``factor*factor`` sub-pixel positions, as nn.PixelShuffle requires."""
    c, r = ins[0].channels, attrs["factor"]
    if c % (r * r):
        # field="factor" points the error at the layer's 'factor:' in the spec.
        raise OpError(f"pixel_shuffle by {r} needs channels divisible by {r}*{r}={r * r}, got {c}",
                      field="factor", hint=f"give the layer before it {(c // (r * r) + 1) * r * r} "
                                           f"output channels, or use a factor whose square divides {c}")
    return attrs


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    """C x H x W -> C/r^2 x rH x rW; the map becomes r times finer, so its stride divides by r."""
    x, r = ins[0], attrs["factor"]
    return TensorType(x.channels // (r * r), x.height * r, x.width * r, x.stride / r)


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn  # only here: validate/shapes/flops never import torch

    return nn.PixelShuffle(attrs["factor"])


PIXEL_SHUFFLE = register(OpDef(
    name="pixel_shuffle",
    summary="sub-pixel upsampling: C*r*r x H x W -> C x rH x rW (depth to space)",
    fields={"factor": Field(INT, REQUIRED, minimum=1, doc="upscale factor r")},
    required=("factor",),
    complete=_complete,
    infer=_infer,
    build=_build,
    # No count hook: the default Cost() (0 params, 0 MACs, 0 tf FLOPs) is exact here.
    # An upsampling op has no dilated form: in an encoder rewritten to a smaller output
    # stride, a pixel_shuffle reading a map past that stride is a located error.
    dilate=not_dilatable,
))
