"""Emit a Graphviz diagram of a resolved graph: one box per layer, edges labelled with shapes.

Block uses become clusters (``ds3`` holds ``ds3.dw`` ... ``ds3.pw_relu``), and
encoder and meta are coloured apart, so a diagram of SkipNet-MobileNet shows
where the decoder reads the encoder's taps. Writing DOT needs only the
``graphviz`` Python package; rendering to SVG/PNG/PDF needs the ``dot`` program.
"""

from __future__ import annotations

from typing import Any

import graphviz

from ..ir import INPUT, Resolved

__all__ = ["emit_dot"]

_COLORS = {"encoder": "#dbe9f6", "meta": "#fde7d0"}


def _label(name: str, op: str, attrs: Any, shape: str) -> str:
    bits = [op]
    kernel = attrs.get("kernel")
    if kernel:
        bits.append("x".join(map(str, kernel)))
    stride = attrs.get("stride")
    if stride and tuple(stride) != (1, 1):
        bits.append("/" + "x".join(map(str, stride)) if stride[0] != stride[1] else f"/{stride[0]}")
    dilation = attrs.get("dilation")
    if dilation and tuple(dilation) != (1, 1):
        bits.append(f"d{dilation[0]}")
    if attrs.get("groups", 1) != 1:
        bits.append(f"g{attrs['groups']}")
    # Inside a block's cluster the cluster already says "layer1.1"; show only "conv1".
    parts = name.split(".")
    short = parts[-1] if len(parts) > 2 else parts[1]
    return f"{short}\\n{' '.join(bits)}\\n{shape}"


def emit_dot(resolved: Resolved) -> graphviz.Digraph:
    """A graphviz.Digraph of the network: block uses as clusters, taps as notes."""
    g = resolved.graph
    dot = graphviz.Digraph(g.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                      "fontsize": "10"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "8"})
    image = resolved.types[INPUT]
    dot.node(INPUT, f"input\\n{image}", shape="oval", fillcolor="white")
    clusters: dict[str, Any] = {}
    for node in g.nodes:
        t = resolved.types[node.name]
        parts = node.name.split(".")
        label = _label(node.name, node.op, node.attrs, str(t))
        attrs = {"fillcolor": _COLORS.get(node.part, "white")}
        if len(parts) > 2:  # inside a block use: group it
            key = ".".join(parts[:-1])
            if key not in clusters:
                clusters[key] = []
            clusters[key].append((node.name, label, attrs))
        else:
            dot.node(node.name, label, **attrs)
    for key, members in clusters.items():
        with dot.subgraph(name=f"cluster_{key}") as sub:
            sub.attr(label=key.split(".", 1)[1], style="dashed", color="#888888", fontsize="9")
            for name, label, attrs in members:
                sub.node(name, label, **attrs)
    for node in g.nodes:
        for src in node.inputs:
            dot.edge(src, node.name, label=str(resolved.types[src]))
    taps = {t.node: t.name for t in g.taps if t.node in resolved.types}
    for node_name, tap in taps.items():
        if node_name in g:
            dot.node(f"tap_{tap}", tap, shape="note", fillcolor="#fff8c4")
            dot.edge(node_name, f"tap_{tap}", style="dotted", arrowhead="none")
    return dot
