"""Pass 5 (optional): trade encoder strides for dilations, to reach an output stride of 8, 16 or 32.

The Dilation frontend (Yu & Koltun 2016, arXiv:1511.07122) and DeepLab keep
the encoder's receptive field while stopping its downsampling at ``output_stride``.
Each op declares what it becomes (``OpDef.dilate``, see
:class:`~rtseg_compiler.ops.base.AtRate`); this pass walks the *resolved*
encoder and asks every layer's op, with

* ``rate = max(1, in_stride / output_stride)``, where ``in_stride`` is the
  stride of the layer's finest input in the original network (maps of bins,
  after global or adaptive pooling, are not on the image grid and count as
  rate 1; see :func:`off_grid_maps`), and
* ``passes_output_stride``: the layer's output would pass the output stride.

The declared rules of the built-in ops:

* conv (``ops/conv.py``): past the output stride ``stride -> 1`` (keeping its
  input's rate, as timm's ``make_blocks`` does); kernel > 1 at rate r:
  ``dilation *= r``, ``padding *= r``; a strided conv without "same" padding is refused;
* max/avg pool (``ops/pool.py``): past the output stride, removed when it only
  downsamples (kernel == stride, no padding, VGG's 2x2/2), else stride 1 when
  its padding keeps the size (``2p == k-1``, 3x3/2 pad 1); kernel > 1 at rate r:
  ``dilation *= r``, ``padding *= r`` like conv;
* pad: borders scaled by the rate;
* pointwise ops (activations, bn, add, mul, concat, shuffle, crop ...): unaffected;
* size-independent ops (gap, adaptive_avgpool, linear): unaffected, and their
  outputs are off the image grid;
* deconv, unpool, upsample by a scale: an error at rate > 1 (upsample to a
  reference follows the reference);

An op without a declaration is left alone while its output stride equals its
input stride; a *strided* one that the rewrite reaches is an error at its
line (the issue-8 bug: a user's stride-2 op left a "stride 8" encoder at 32).
After the rewrite the pipeline re-infers shapes and :func:`check_encoder_stride`
asserts that the encoder ends at ``min(natural stride, output_stride)``.

Exactness, measured by tests/torch/test_output_stride_exact.py (shared weights,
eval-mode batch norm with random statistics, the dilated output taken every
``32/output_stride`` pixels against the strided output): MobileNet v1, ResNet-18
and ShuffleNet v1 at output stride 8 and 16 agree to float rounding (0 to 2.6e-7
relative), also at sizes that are not multiples of 32. ShuffleNet's 3x3/2 average
pools needed the pool dilation: made stride 1 only, as before, its encoder at
output stride 8 was 3.3e-2 relative away (128x128; the issue measured 2.4e-2). VGG-16 is not
exact (1.6e-1): removing its 2x2/2 max pools is the Dilation frontend's choice,
not an equivalent network.

So every encoder map keeps its channels and ends at ``min(stride, output_stride)``;
a ResNet-18 at output stride 8 gets dilation 2 in stage 3 and 4 in stage 4,
timm's and torchvision's ``replace_stride_with_dilation`` result.
Taps keep their names (``stride32`` now has stride 8), and the compiler stops
checking tap strides for the rewritten graph.
"""

from __future__ import annotations

from fractions import Fraction

from ..diagnostics import Diagnostics
from ..ir import Graph, Node, Resolved, TensorType, frozen_map, stride_text
from ..ops import REGISTRY, OpError
from ..ops.base import AtRate, Replace, size_independent

__all__ = ["dilate", "check_encoder_stride", "off_grid_maps", "VALID_OUTPUT_STRIDES"]

VALID_OUTPUT_STRIDES = (8, 16, 32)


def off_grid_maps(graph: Graph) -> set[str]:
    """Layers whose maps are not sampled on the image grid, so that no rate applies to them.

    The output of a size-independent op (``dilate=size_independent``: ``gap``,
    ``adaptive_avgpool``, ``linear``) is a fixed grid of bins whatever the input's
    sampling, and so is every map computed only from such maps (the 1x1 convs of
    a squeeze-excitation gate, a pyramid-pooling branch before it is resized back).
    The rewrite leaves those layers alone; their strides (``gap``: the pooled
    map's times its height) are not rates.
    """
    off: set[str] = set()
    for node in graph.nodes:
        op = REGISTRY.get(node.op)
        if (op is not None and op.dilate is size_independent) or (
                node.inputs and all(i in off for i in node.inputs)):
            off.add(node.name)
    return off


def _rate(t: TensorType, output_stride: int) -> Fraction:
    """How much denser than in the original network a map on the image grid is sampled after the rewrite."""
    return max(Fraction(1), t.stride / output_stride)


def _undeclared_error(node: Node, in_stride: Fraction, out_stride: Fraction, output_stride: int,
                      diags: Diagnostics) -> None:
    diags.error(f"op '{node.op}' (layer '{node.name}') is strided (stride {stride_text(in_stride)} "
                f"-> {stride_text(out_stride)}) where the encoder is rewritten to output stride "
                f"{output_stride}, and declares no dilation behaviour", node.loc, notes=node.origin,
                hint="declare it in the op's definition: OpDef(..., dilate=hook), where hook(attrs, "
                     "at) returns the attrs at rate at.rate (stride 1 when "
                     "at.passes_output_stride); rtseg_compiler.ops.unaffected for an op whose "
                     "result does not depend on the sampling grid, not_dilatable to refuse "
                     "(docs/extending.md)")


def _rewrite(node: Node, at: AtRate, diags: Diagnostics) -> Node:
    op = REGISTRY[node.op]
    if op.dilate is None:
        if at.out_stride != at.in_stride:
            _undeclared_error(node, at.in_stride, at.out_stride, at.output_stride, diags)
        return node
    try:
        result = op.dilate(dict(node.attrs), at)
    except OpError as exc:
        what = ("cannot remove the stride of" if at.passes_output_stride
                else f"cannot run at rate {at.rate}:")
        loc = node.attr_loc(exc.field) if exc.field else node.loc
        diags.error(f"{what} {node.op} '{node.name}': {exc}", loc, hint=exc.hint, notes=node.origin)
        return node
    if isinstance(result, Replace):
        if result.op not in REGISTRY:  # a hook's mistake, not the spec's
            raise ValueError(f"op '{node.op}': its dilate hook replaced it by unknown op "
                             f"'{result.op}'")
        return node.replace(op=result.op, attrs=frozen_map(result.attrs))
    return node.replace(attrs=frozen_map(result))


def dilate(resolved: Resolved, output_stride: int, diags: Diagnostics,
           head: tuple[Node, ...] = ()) -> Graph:
    """The encoder of ``resolved`` rewritten to ``output_stride``; head layers are untouched.

    ``head``: layers to be appended after the rewrite (not in ``resolved``), checked
    only for reading what the rewrite removed (an unpool reading a removed pool's indices).
    """
    graph, types = resolved.graph, resolved.types
    off_grid = off_grid_maps(graph)
    nodes = []
    for node in graph.nodes:
        if node.part != "encoder" or not node.inputs or node.name in off_grid:
            nodes.append(node)  # heads, and maps of bins, which the rewrite does not change
            continue
        ins = [types[i] for i in node.inputs]
        gridded = [t for i, t in zip(node.inputs, ins) if i not in off_grid]
        rates = [Fraction(1) if i in off_grid else _rate(t, output_stride)
                 for i, t in zip(node.inputs, ins)]
        bad = next((t for t, r in zip(ins, rates) if r.denominator != 1), None)
        if bad is not None:
            diags.error(f"layer '{node.name}' reads a map of stride {stride_text(bad.stride)}, which "
                        f"output stride {output_stride} does not divide", node.loc, notes=node.origin)
            nodes.append(node)
            continue
        # A broadcast op's output follows its full-size input, not a 1x1 gate.
        finest = min(gridded or ins, key=lambda t: t.stride)
        in_stride, rate = finest.stride, int(_rate(finest, output_stride))
        out_stride = types[node.name].stride
        passes = out_stride > output_stride and out_stride > in_stride
        if rate == 1 and not passes and all(r == 1 for r in rates):
            nodes.append(node)  # before the output stride: nothing changes
            continue
        at = AtRate(rate=rate, passes_output_stride=passes, output_stride=output_stride,
                    in_stride=in_stride, out_stride=out_stride,
                    in_rates=tuple(int(r) for r in rates))
        nodes.append(_rewrite(node, at, diags))
    _check_lost_extras(graph, nodes, head, diags)
    return graph.replace(nodes=tuple(nodes))


def _check_lost_extras(graph: Graph, nodes: list[Node], head: tuple[Node, ...],
                       diags: Diagnostics) -> None:
    """A max pool with indices that the rewrite removed cannot feed an unpool any more."""
    lost = {old.name: old for old, new in zip(graph.nodes, nodes) if old.op != new.op
            and old.op in REGISTRY and REGISTRY[old.op].returns_extra(old.attrs)}
    for node in (*nodes, *head):
        for pos in REGISTRY[node.op].extra_inputs if node.op in REGISTRY else ():
            if pos < len(node.inputs) and node.inputs[pos] in lost:
                pool = lost[node.inputs[pos]]
                diags.error(f"cannot remove the stride of {pool.op} '{pool.name}': {node.op} "
                            f"'{node.name}' reads its indices", pool.loc, notes=pool.origin,
                            hint="use a larger output stride")


def encoder_output(graph: Graph) -> str | None:
    """The encoder's last map: the model's recorded encoder output, or an encoder graph's output."""
    name = graph.info.get("encoder_output")
    if name is None and "meta" not in graph.files:
        name = graph.output
    return name if name in graph else None


def check_encoder_stride(before: Resolved, after: Resolved, output_stride: int,
                         diags: Diagnostics) -> None:
    """Assert that the rewritten encoder ends at ``min(natural stride, output_stride)``.

    Each op's declaration is trusted to keep its own map at the right stride;
    this catches one that does not. Every encoder map on the image grid (see
    :func:`off_grid_maps`) must be at most at the output stride, and the
    encoder's last map at ``min(its original stride, output_stride)``. The error is
    located at the encoder's last layer and names the first layer past the output stride.
    """
    graph, types = after.graph, after.types
    off_grid = off_grid_maps(graph)
    culprit = next((n for n in graph.nodes if n.part == "encoder" and n.name in types
                    and n.name not in off_grid and types[n.name].stride > output_stride), None)
    end = encoder_output(graph)
    if end is None or end not in before.types or end not in types:
        return
    want = min(before.types[end].stride, Fraction(output_stride))
    have = types[end].stride
    if culprit is None and (have == want or end in off_grid):
        return
    node = graph.node(end)
    notes = tuple(node.origin)
    if culprit is not None:
        notes += (f"the first layer past it is '{culprit.name}' (op '{culprit.op}', stride "
                  f"{stride_text(types[culprit.name].stride)}) at {culprit.loc}",)
    diags.error(f"after the rewrite to output stride {output_stride} the encoder ends at stride "
                f"{stride_text(have)}, not {stride_text(want)}", node.loc, notes=notes,
                hint="an op's dilate hook must give stride 1 when at.passes_output_stride")
