"""Pass 2: link names into a graph; order it, find cycles and unused layers.

Edges come from each node's ``inputs``. The result keeps the declaration order
wherever the data flow allows (a stable topological sort), so tables and
emitted code read like the spec. Layers whose output reaches neither the
graph output nor an encoder tap are dead: they are reported as warnings and
left out, unless ``keep_unused`` is set (TensorFlow's profiler counted such
layers, and the RTSeg paper's UNet-MobileNet figure includes them).
"""

from __future__ import annotations

import networkx as nx

from ..diagnostics import Diagnostics
from ..ir import INPUT, Graph

__all__ = ["link", "to_networkx"]


def to_networkx(graph: Graph) -> nx.DiGraph:
    """The data-flow graph, with an ``input`` source node."""
    g = nx.DiGraph()
    g.add_node(INPUT)
    for order, node in enumerate(graph.nodes):
        g.add_node(node.name, order=order)
    for skip in graph.skipped.values():  # an absent layer stands for its input
        g.add_edge(skip.passthrough, skip.name)
    for node in graph.nodes:
        for src in node.inputs:
            if src in g:
                g.add_edge(src, node.name)
    return g


def link(graph: Graph, diags: Diagnostics, *, keep_unused: bool = False,
         warn_unused: bool = True, outputs: str = "all", why_unused: tuple[str, ...] = ()) -> Graph:
    """Topologically ordered (and, by default, pruned) copy of ``graph``.

    Every named output is a root. With ``outputs="main"`` only the main output is kept:
    layers needed only by auxiliary heads are left out quietly (they are not unused, just
    not wanted for inference), and the graph's named outputs are dropped.
    """
    if outputs not in ("all", "main"):
        raise ValueError(f"outputs must be 'all' or 'main', not {outputs!r}")
    known = {n.name for n in graph.nodes} | {INPUT} | set(graph.skipped)
    for node in graph.nodes:
        for src in node.inputs:
            if src not in known:  # expand reports unknown names; this guards hand-made graphs
                diags.error(f"layer '{node.name}' reads unknown layer '{src}'", node.loc, notes=node.origin)
    g = to_networkx(graph)
    cycles_reported = 0
    for component in nx.strongly_connected_components(g):
        if len(component) > 1 or any(g.has_edge(n, n) for n in component):
            ordered = sorted(component, key=lambda n: g.nodes[n].get("order", -1))
            first = graph.node(next((n for n in ordered if n in graph), ordered[0]))
            diags.error("layers form a cycle: " + " -> ".join(ordered + ordered[:1]), first.loc,
                        hint="a layer cannot depend on its own output", notes=first.origin)
            cycles_reported += 1
    if cycles_reported or diags.has_errors:
        return graph
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    sorted_names = [n for n in nx.lexicographical_topological_sort(g, key=lambda n: order.get(n, -1))
                    if n != INPUT and n in order]
    wanted = (graph.output,) if outputs == "main" else graph.output_names
    roots = set(graph.output_names) | {t.node for t in graph.taps if t.node in g}
    live = set()
    for root in roots:
        if root in g:
            live |= nx.ancestors(g, root) | {root}
    needed = set()
    for root in wanted:
        if root in g:
            needed |= nx.ancestors(g, root) | {root}
    nodes = []
    for name in sorted_names:
        node = graph.node(name)
        if name not in live and warn_unused:
            diags.warning(f"layer '{name}' is never used", node.loc,
                          hint="counted, as asked" if keep_unused else "it is left out of the compiled model",
                          notes=node.origin + why_unused)
        if keep_unused or name in needed:
            nodes.append(node)
    # A tap whose layer no output needs is left out with the layer (a dangling tap broke check()).
    kept = {n.name for n in nodes} | {INPUT} | set(graph.skipped)
    return graph.replace(nodes=tuple(nodes), outputs=graph.outputs if outputs == "all" else (),
                         taps=tuple(t for t in graph.taps if t.node in kept))
