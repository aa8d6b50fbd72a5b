"""Pass 3 at an output stride: trade encoder strides for dilations, to reach output stride 8, 16 or 32.

:func:`apply_output_stride` is shape inference (``infer_shapes``, pass 3) for a
model that is to run at an output stride, given by the caller (``--output-stride``)
or declared by its meta (``output_stride:``); it owns the whole policy: the valid
strides, the conflict between the two, the rewrite, the check after it, and the
warning about the taps a meta reads. The pipeline calls it in place of ``infer_shapes``.

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
After the rewrite the changed part of the encoder and the head are inferred and
:func:`check_encoder_stride` asserts that the encoder ends at
``min(natural stride, output_stride)``.

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
checking tap strides for the rewritten graph (they are checked at the natural
stride); a meta that does not declare the output stride gets a warning naming
the taps it reads whose stride changed, with their inferred strides.

Shapes are inferred once per network: the encoder at its natural stride (the
rewrite is decided from those strides), then, on top of the layers the rewrite
left as they were, the rewritten layers and the head. The head is never inferred
on the natural encoder: a head written for the dilated encoder need not fit it
(Dilation crops its 8x upsampling of the stride-8 map to the input; from stride 32
that map is 4x too small).
"""

from __future__ import annotations

from fractions import Fraction

from ..diagnostics import Diagnostics, Location
from ..ir import INPUT, Graph, Node, Resolved, TensorType, frozen_map, stride_text, strides_text
from ..ops import REGISTRY, OpError
from ..ops.base import AtRate, Replace, size_independent
from .check import check_between_passes
from .shapes import infer_shapes

__all__ = ["apply_output_stride", "dilate", "check_encoder_stride", "off_grid_maps", "on_grid_strides",
           "level", "VALID_OUTPUT_STRIDES"]

#: 32 is every zoo encoder's natural stride (it leaves them as they are); 8 and 16 are
#: DeepLab's and the Dilation frontend's.
VALID_OUTPUT_STRIDES = (8, 16, 32)


def apply_output_stride(graph: Graph, output_stride: int | None, input_size: tuple[int, int],
                        diags: Diagnostics) -> Resolved:
    """Shapes of a linked ``graph``, its encoder rewritten to the output stride asked for.

    The output stride is ``output_stride`` (the caller's) or else the one the meta declares;
    the two must agree when both are given. Without either, this is ``infer_shapes``. At an
    output stride at least the encoder's natural stride nothing is rewritten. Errors go to
    ``diags`` (raised at the end of each step); the result is the whole graph resolved.
    """
    declared = graph.meta_output_stride
    meta_loc = Location(graph.files.get("meta", ""))
    if output_stride and declared and output_stride != declared:
        diags.error(f"--output-stride {output_stride} conflicts with the meta-architecture, which is "
                    f"written for output stride {declared}", meta_loc,
                    hint=f"drop --output-stride, or use {declared}")
        diags.raise_if_errors()
    target = output_stride or declared
    if not target:
        resolved = infer_shapes(graph, input_size, diags)
        diags.raise_if_errors()
        return resolved
    if target not in VALID_OUTPUT_STRIDES:
        diags.error(f"output stride {target} is not one of {', '.join(map(str, VALID_OUTPUT_STRIDES))}")
        diags.raise_if_errors()
    head = tuple(n for n in graph.nodes if n.part != "encoder")
    natural = infer_shapes(graph.replace(nodes=tuple(n for n in graph.nodes if n.part == "encoder")),
                           input_size, diags)
    diags.raise_if_errors()
    natural_stride = max((level(natural.types[n.name]) for n in natural.graph.nodes), default=1)
    if target >= natural_stride:  # nothing to rewrite: the head on top of the encoder as it is
        whole = check_between_passes(natural.graph.replace(nodes=natural.graph.nodes + head))
        resolved = infer_shapes(whole, input_size, diags, check_taps=False, known=natural.types)
        diags.raise_if_errors()
        return resolved
    rewritten = dilate(natural, target, diags, head)
    diags.raise_if_errors()
    whole = check_between_passes(rewritten.replace(nodes=rewritten.nodes + head))
    resolved = infer_shapes(whole, input_size, diags, check_taps=False,
                            known=_left_as_they_were(natural, rewritten))
    diags.raise_if_errors()
    check_encoder_stride(natural, resolved, target, diags)
    diags.raise_if_errors()
    if not declared:
        _warn_about_taps(graph.meta_requires, natural, resolved, target, meta_loc, diags)
    return resolved


def _left_as_they_were(natural: Resolved, rewritten: Graph) -> dict[str, TensorType]:
    """Types of the layers the rewrite did not change and that read only such layers.

    These are the maps before the output stride: the same layers reading the same maps, so
    their types at the natural stride are their types in the rewritten encoder.
    """
    same = {INPUT}
    for old, new in zip(natural.graph.nodes, rewritten.nodes):
        if new is old and all(i in same for i in new.inputs):
            same.add(new.name)
    return {name: natural.types[name] for name in same}


def _warn_about_taps(requires: tuple[str, ...], natural: Resolved, resolved: Resolved, target: int,
                     meta_loc: Location, diags: Diagnostics) -> None:
    """Warn when taps the meta reads changed stride in a rewrite the meta did not ask for."""
    changed = []
    for name in requires:
        before, after = natural.graph.tap(name), resolved.graph.tap(name)
        if (before is None or after is None or before.node not in natural.types
                or after.node not in resolved.types):
            continue
        was, now = natural.types[before.node], resolved.types[after.node]
        if now.strides != was.strides:
            changed.append((name, strides_text(now)))
    if not changed:
        return
    strides = {now for _, now in changed}
    names = ", ".join(name for name, _ in changed)
    if len(strides) == 1:
        now = strides.pop()
        what = (f"the taps {names} all have stride {now}" if len(changed) > 1
                else f"the tap {names} has stride {now}")
    else:
        what = "the taps " + ", ".join(f"{name} (stride {now})" for name, now in changed)
        what += " have new strides"
    diags.warning(f"at output stride {target} {what}; a meta written for strided taps may not "
                  f"expect that", meta_loc)


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


def on_grid_strides(t: TensorType) -> tuple[Fraction, ...]:
    """The strides of a map's axes that lie on the image grid: those longer than 1.

    A row map (C x H x 1, ``reduce over: width``) is one bin along the width, whose stride
    (s·W) is the bin's extent, not a sampling step, so only its height's stride s counts; a
    map of one pixel (or one bin) on both axes counts its finer stride, which for an isotropic
    map is its stride.
    """
    sh, sw = t.stride_h, t.stride_w
    if t.isotropic:  # nearly every map
        return (sh,)
    on_grid = tuple(s for s, n in ((sh, t.height), (sw, t.width)) if n > 1)
    return on_grid or (min(sh, sw),)


def level(t: TensorType) -> Fraction:
    """A map's stride as the output stride measures it: its coarsest axis on the image grid."""
    return max(on_grid_strides(t))


def _rate(t: TensorType, output_stride: int) -> Fraction:
    """How much denser than in the original network a map on the image grid is sampled after the rewrite.

    One rate serves both axes: a map on the grid along both with strides whose rates differ
    (a conv with stride (2, 1) past the output stride) is refused by :func:`dilate`.
    """
    return max(Fraction(1), level(t) / output_stride)


def _anisotropic_rates(t: TensorType, output_stride: int) -> bool:
    rates = [max(Fraction(1), s / output_stride) for s in on_grid_strides(t)]
    return any(r != rates[0] for r in rates)


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
            diags.error(f"layer '{node.name}' reads a map of stride {strides_text(bad)}, which "
                        f"output stride {output_stride} does not divide", node.loc, notes=node.origin)
            nodes.append(node)
            continue
        skewed = next((t for i, t in zip(node.inputs, ins)
                       if i not in off_grid and _anisotropic_rates(t, output_stride)), None)
        if skewed is not None:
            diags.error(f"layer '{node.name}' reads a {skewed} map of stride {strides_text(skewed)} "
                        f"(height|width), which output stride {output_stride} would dilate by a "
                        f"different rate along each axis; the rewrite gives a layer one rate",
                        node.loc, notes=node.origin,
                        hint=f"use output stride {int(max(skewed.strides))} or more, or equal strides "
                             f"on both axes")
            nodes.append(node)
            continue
        # A broadcast op's output follows its full-size input, not a 1x1 gate; a row map's rate
        # is its height's (on_grid_strides).
        finest = min(gridded or ins, key=level)
        in_stride, rate = level(finest), int(_rate(finest, output_stride))
        out_stride = level(types[node.name])
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
    """The encoder's last map (``Graph.encoder_output``), when it is a layer of ``graph``."""
    name = graph.encoder_output
    return name if name is not None and name in graph else None


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
                    and n.name not in off_grid and level(types[n.name]) > output_stride), None)
    end = encoder_output(graph)
    if end is None or end not in before.types or end not in types:
        return
    want = min(level(before.types[end]), Fraction(output_stride))
    have = level(types[end])
    if culprit is None and (have == want or end in off_grid):
        return
    node = graph.node(end)
    notes = tuple(node.origin)
    if culprit is not None:
        notes += (f"the first layer past it is '{culprit.name}' (op '{culprit.op}', stride "
                  f"{strides_text(types[culprit.name])}) at {culprit.loc}",)
    diags.error(f"after the rewrite to output stride {output_stride} the encoder ends at stride "
                f"{stride_text(have)}, not {stride_text(want)}", node.loc, notes=notes,
                hint="an op's dilate hook must give stride 1 when at.passes_output_stride")
