"""Pass 5 (optional): trade encoder strides for dilations, to reach an output stride of 8 or 16.

The Dilation frontend (Yu & Koltun 2016, arXiv:1511.07122) and DeepLab keep
the encoder's receptive field while stopping its downsampling at ``output_stride``.
The rewrite is a rule table over the *resolved* encoder, applied node by node
with ``rate = max(1, in_stride / output_stride)``, where ``in_stride`` is the
stride of the node's input in the original network:

* conv whose output would pass the output stride  -> stride 1
  (``stride: s -> 1``; it keeps the rate of its input, as timm's ``make_blocks``
  gives the first block of a converted stage the previous dilation);
* conv with kernel > 1 reading a map past the output stride -> ``dilation *= rate``,
  ``padding *= rate`` (``d(k-1)/2`` "same" padding stays "same");
* max/avg pool that would pass the output stride -> removed when it only
  downsamples (kernel == stride, no padding, e.g. VGG's 2x2/2), else stride 1
  when its padding keeps the size (``2p == k-1``, e.g. 3x3/2 pad 1);
* everything else is unchanged.

So every encoder map keeps its channels and ends at ``min(stride, output_stride)``;
a ResNet-18 at output stride 8 gets dilation 2 in stage 3 and 4 in stage 4,
timm's and torchvision's ``replace_stride_with_dilation`` result.
Taps keep their names (``stride32`` now has stride 8), and the compiler stops
checking tap strides for the rewritten graph.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from ..diagnostics import Diagnostics
from ..ir import Graph, Node, Resolved, frozen_map

__all__ = ["dilate", "VALID_OUTPUT_STRIDES"]

VALID_OUTPUT_STRIDES = (8, 16, 32)


def _scaled(pair: tuple[int, int], factor: int) -> tuple[int, int]:
    return (pair[0] * factor, pair[1] * factor)


def _rewrite_conv(node: Node, rate: int, passes_os: bool, diags: Diagnostics) -> Node:
    attrs: dict[str, Any] = dict(node.attrs)
    if passes_os:
        attrs["stride"] = (1, 1)  # conv s2 past OS -> s1 (keeps its input's rate)
    if rate > 1 and max(attrs["kernel"]) > 1:
        attrs["dilation"] = _scaled(attrs["dilation"], rate)  # conv at rate r -> d*r
        attrs["padding"] = _scaled(attrs["padding"], rate)  # "same" padding d(k-1)/2 -> *r
    if passes_os and any(2 * p != d * (k - 1) for k, p, d in
                         zip(attrs["kernel"], attrs["padding"], attrs["dilation"])):
        # Without "same" padding the stride-1 conv would shrink the map instead of keeping it.
        diags.error(f"cannot remove the stride of conv '{node.name}' (kernel {attrs['kernel']}, "
                    f"padding {node.attrs['padding']}) without changing sizes", node.loc,
                    hint="output stride needs 'same' padding, d*(k-1)/2, on strided convs past it",
                    notes=node.origin)
        return node
    return node.replace(attrs=frozen_map(attrs))


def _rewrite_pool(node: Node, diags: Diagnostics) -> Node:
    attrs = dict(node.attrs)
    kernel, stride, padding = attrs["kernel"], attrs["stride"], attrs["padding"]
    if tuple(kernel) == tuple(stride) and tuple(padding) == (0, 0):
        return node.replace(op="identity", attrs=frozen_map({}))  # pool k/k -> identity
    if all(2 * p == k - 1 for k, p in zip(kernel, padding)):
        attrs["stride"] = (1, 1)  # pool k/s with same padding -> k/1
        return node.replace(attrs=frozen_map(attrs))
    diags.error(f"cannot remove the stride of pool '{node.name}' (kernel {kernel}, stride {stride}, "
                f"padding {padding}) without changing sizes", node.loc,
                hint="use kernel == stride without padding, or padding (kernel-1)/2", notes=node.origin)
    return node


def dilate(resolved: Resolved, output_stride: int, diags: Diagnostics) -> Graph:
    """The encoder of ``resolved`` rewritten to ``output_stride``; head layers are untouched."""
    graph, types = resolved.graph, resolved.types
    nodes = []
    for node in graph.nodes:
        if node.part != "encoder" or not node.inputs:
            nodes.append(node)
            continue
        in_stride = types[node.inputs[0]].stride
        out_stride = types[node.name].stride
        rate_fraction = max(Fraction(1), in_stride / output_stride)
        if rate_fraction.denominator != 1:
            diags.error(f"layer '{node.name}' reads a map of stride {in_stride}, which output stride "
                        f"{output_stride} does not divide", node.loc, notes=node.origin)
            nodes.append(node)
            continue
        rate = int(rate_fraction)
        passes_os = out_stride > output_stride and out_stride > in_stride
        if node.op == "conv":
            nodes.append(_rewrite_conv(node, rate, passes_os, diags))
        elif node.op in ("maxpool", "avgpool") and passes_os:
            nodes.append(_rewrite_pool(node, diags))
        elif node.op in ("deconv", "upsample") and rate > 1:
            diags.error(f"cannot dilate '{node.name}': the encoder upsamples past output stride "
                        f"{output_stride}", node.loc, notes=node.origin)
            nodes.append(node)
        else:
            nodes.append(node)
    return graph.replace(nodes=tuple(nodes))
