"""Inference pass: fold batch norm into the conv before it, and drop dropout.

In eval mode a batch norm is a per-channel affine map ``y = (x - mean)·s + beta`` with
``s = gamma / sqrt(var + eps)``; after a conv (or transposed conv) whose output nothing else
reads, it can be merged into that conv's weights and bias (Jacob et al. 2018, arXiv:1712.05877,
Sec. 3.2; torch.fx's ``fuse_conv_bn_eval`` does the same for modules). One read and one write of
every such map disappear: for SkipNet-MobileNet at 512x1024, 27 maps, 228 M floats.

The pass works on the IR, so the folded network is audited like any other: the conv nodes gain
``bias: true`` (a bias per output channel, and the TF convention's bias adds), the bn nodes and
their 2·C parameters disappear, MACs are unchanged. ``count`` on the result is exact against
FlopCounterMode on the folded module, like every other audit.

Which ops take part is declared on each op, not matched by name here: ``norm_folds_into``
(conv: "out", deconv: "in", the axis of the weight that is the output channel),
``folds_into_previous`` (bn) and ``inference_identity`` (dropout); see ``ops/registry.py``.

What it does not touch: a batch norm whose input is not an op it folds into (ENet's
pre-activation units), or whose conv output is also read elsewhere (a tap, a skip branch, the
network output); such a batch norm stays, running in eval mode. The weight arithmetic lives in
``rtseg_compiler/inference.py`` (it needs torch); this pass only records what folds into what.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir import INPUT, Graph, Node, Resolved, frozen_map
from ..ops import REGISTRY
from .inplace import value_consumers

__all__ = ["Fold", "InferencePlan", "fold_for_inference", "foldable_ops"]


def foldable_ops() -> tuple[str, ...]:
    """The registered ops a following batch norm can be folded into (``norm_folds_into``)."""
    return tuple(sorted(name for name, op in REGISTRY.items() if op.norm_folds_into))


@dataclass(frozen=True, slots=True)
class Fold:
    """One batch norm merged into the conv before it; what the weight transform needs."""

    conv: str
    bn: str
    transposed: bool
    groups: int
    conv_bias: bool
    affine: bool
    eps: float


@dataclass(frozen=True)
class InferencePlan:
    """The folded graph, and how to get its weights from the unfolded network's."""

    resolved: Resolved
    folds: tuple[Fold, ...]
    #: Dropout layers removed (identity at inference).
    dropped: tuple[str, ...]
    #: Batch norms left as they are, with the reason.
    kept: tuple[tuple[str, str], ...]


def fold_for_inference(resolved: Resolved) -> InferencePlan:
    """Remove the ops that are the identity at inference (dropout), then fold each foldable norm
    (batch norm) into the conv/deconv feeding only it."""
    graph = resolved.graph
    rename: dict[str, str] = {}
    dropped = []
    for node in graph.nodes:
        if REGISTRY[node.op].inference_identity:
            rename[node.name] = node.inputs[0]
            dropped.append(node.name)
    graph = _rewire(graph, rename, set(dropped))

    reads = value_consumers(graph)
    taps = {t.node for t in graph.taps}
    folds, kept = [], []
    rename = {}
    convs: dict[str, Node] = {}
    for node in graph.nodes:
        op = REGISTRY[node.op]
        if op.norm_folds_into:
            convs[node.name] = node
            continue
        if not op.folds_into_previous:
            continue
        src = node.inputs[0]
        conv = convs.get(src)
        if conv is None:
            kept.append((node.name, f"its input is not an op it folds into ({', '.join(foldable_ops())})"))
        elif reads[src] != 1 or src in taps or src == graph.output:
            kept.append((node.name, f"the output of '{src}' is also read elsewhere"))
        else:
            folds.append(Fold(conv=src, bn=node.name, transposed=REGISTRY[conv.op].norm_folds_into == "in",
                              groups=int(conv.attrs["groups"]), conv_bias=bool(conv.attrs["bias"]),
                              affine=bool(node.attrs["affine"]), eps=float(node.attrs["eps"])))
            rename[node.name] = src
    biased = {f.conv for f in folds}
    graph = graph.replace(nodes=tuple(
        n.replace(attrs=frozen_map({**n.attrs, "bias": True})) if n.name in biased else n
        for n in graph.nodes))
    graph = _rewire(graph, rename, {f.bn for f in folds})
    gone = set(dropped) | {f.bn for f in folds}
    types = frozen_map({k: v for k, v in resolved.types.items() if k not in gone})
    return InferencePlan(Resolved(graph, resolved.input, types), tuple(folds), tuple(dropped),
                         tuple(kept))


def _rewire(graph: Graph, rename: dict[str, str], remove: set[str]) -> Graph:
    """Drop ``remove`` and point every reference to a renamed node at its replacement."""
    if not rename:
        return graph

    def target(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    nodes = tuple(n.replace(inputs=tuple(target(i) for i in n.inputs))
                  for n in graph.nodes if n.name not in remove)
    taps = tuple(t if t.node not in rename else type(t)(t.name, target(t.node), t.loc)
                 for t in graph.taps)
    output = target(graph.output)
    assert output == INPUT or any(n.name == output for n in nodes)
    outputs = tuple((name, target(node)) for name, node in graph.outputs)
    # An absent layer standing for a removed one (Fast-SCNN's first bottleneck has no residual
    # 'sum', so its name stands for 'project_bn', which folds away) now stands for what replaced it.
    skipped = frozen_map({name: replace(skip, passthrough=target(skip.passthrough))
                          for name, skip in graph.skipped.items()})
    return graph.replace(nodes=nodes, taps=taps, output=output, outputs=outputs, skipped=skipped)
