"""Pass 2: link names into a graph; order it, find cycles and unused layers.

Edges come from each node's ``inputs``. The result keeps the declaration order
wherever the data flow allows (a stable topological sort), so tables and
emitted code read like the spec. Layers whose output reaches neither the
graph output nor an encoder tap are dead: they are reported as warnings and
left out, unless ``keep_unused`` is set (TensorFlow's profiler counted such
layers, and the RTSeg paper's UNet-MobileNet figure includes them).

The sort and the reachability walks are plain Python over dicts. networkx, which
took 0.20 s of the 0.5 s that importing the compiler cost, is imported only to name
the layers of a cycle (an invalid spec) and by :func:`to_networkx`.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ..diagnostics import Diagnostics
from ..ir import INPUT, Graph

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["link", "to_networkx"]


class _DataFlow:
    """The data-flow graph, with an ``input`` source node: the one ``to_networkx`` builds.

    Nodes keep their insertion order and edges are sets (``add`` of a layer with itself is
    one edge), as in ``networkx.DiGraph``, so the sort below gives networkx's order.
    """

    def __init__(self, graph: Graph) -> None:
        self.succ: dict[str, dict[str, None]] = {}
        self.pred: dict[str, dict[str, None]] = {}
        self.order: dict[str, int] = {}
        self._add_node(INPUT)
        for order, node in enumerate(graph.nodes):
            self._add_node(node.name)
            self.order[node.name] = order
        for skip in graph.skipped.values():  # an absent layer stands for its input
            self._add_edge(skip.passthrough, skip.name)
        for node in graph.nodes:
            for src in node.inputs:
                if src in self.succ:
                    self._add_edge(src, node.name)

    def __contains__(self, name: object) -> bool:
        return name in self.succ

    def _add_node(self, name: str) -> None:
        self.succ.setdefault(name, {})
        self.pred.setdefault(name, {})

    def _add_edge(self, src: str, dst: str) -> None:
        self._add_node(src)
        self._add_node(dst)
        self.succ[src][dst] = None
        self.pred[dst][src] = None

    def stable_order(self) -> list[str] | None:
        """Kahn's algorithm, always taking the ready node declared first; None if there is a cycle.

        Ready nodes are ordered by (declaration index, insertion index): ``input``, absent layers
        and their pass-through sources all have index -1, which is
        ``networkx.lexicographical_topological_sort(g, key=order.get(n, -1))`` exactly.
        """
        position = {name: i for i, name in enumerate(self.succ)}
        waiting = {name: len(srcs) for name, srcs in self.pred.items() if srcs}
        ready = [(self.order.get(n, -1), position[n], n) for n, srcs in self.pred.items() if not srcs]
        heapq.heapify(ready)
        out = []
        while ready:
            name = heapq.heappop(ready)[2]
            out.append(name)
            for child in self.succ[name]:
                waiting[child] -= 1
                if not waiting[child]:
                    del waiting[child]
                    heapq.heappush(ready, (self.order.get(child, -1), position[child], child))
        return None if waiting else out

    def ancestors_and_self(self, name: str) -> set[str]:
        seen = {name}
        stack = [name]
        while stack:
            for src in self.pred[stack.pop()]:
                if src not in seen:
                    seen.add(src)
                    stack.append(src)
        return seen


def to_networkx(graph: Graph) -> nx.DiGraph:
    """The data-flow graph, with an ``input`` source node."""
    import networkx as nx

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


def _report_cycles(graph: Graph, diags: Diagnostics) -> None:
    """One error per cycle, each naming its layers in declaration order."""
    import networkx as nx

    g = to_networkx(graph)
    for component in nx.strongly_connected_components(g):
        if len(component) > 1 or any(g.has_edge(n, n) for n in component):
            ordered = sorted(component, key=lambda n: g.nodes[n].get("order", -1))
            first = graph.node(next((n for n in ordered if n in graph), ordered[0]))
            diags.error("layers form a cycle: " + " -> ".join(ordered + ordered[:1]), first.loc,
                        hint="a layer cannot depend on its own output", notes=first.origin)


def link(graph: Graph, diags: Diagnostics, *, keep_unused: bool = False,
         warn_unused: bool = True, outputs: str = "all", why_unused: tuple[str, ...] = (),
         keep_taps: bool = False) -> Graph:
    """Topologically ordered (and, by default, pruned) copy of ``graph``.

    Every named output is a root. With ``outputs="main"`` only the main output is kept:
    layers needed only by auxiliary heads are left out quietly (they are not unused, just
    not wanted for inference), and the graph's named outputs are dropped.

    ``keep_taps``: every tap is a root too, so that an encoder analysed on its own keeps
    (and shapes, counts and checks) the layers a tap reads even when its output does not:
    a meta may read them. In a model only the taps its meta reads survive, as any layer.
    """
    if outputs not in ("all", "main"):
        raise ValueError(f"outputs must be 'all' or 'main', not {outputs!r}")
    known = {n.name for n in graph.nodes} | {INPUT} | set(graph.skipped)
    for node in graph.nodes:
        for src in node.inputs:
            if src not in known:  # expand reports unknown names; this guards hand-made graphs
                diags.error(f"layer '{node.name}' reads unknown layer '{src}'", node.loc, notes=node.origin)
    flow = _DataFlow(graph)
    topological = flow.stable_order()
    if topological is None:
        _report_cycles(graph, diags)
    if topological is None or diags.has_errors:
        return graph
    order = flow.order
    sorted_names = [n for n in topological if n != INPUT and n in order]
    wanted = (graph.output,) if outputs == "main" else graph.output_names
    if keep_taps:
        wanted = tuple(wanted) + tuple(t.node for t in graph.taps)
    roots = set(graph.output_names) | {t.node for t in graph.taps if t.node in flow}
    live = set()
    for root in roots:
        if root in flow:
            live |= flow.ancestors_and_self(root)
    needed = set()
    for root in wanted:
        if root in flow:
            needed |= flow.ancestors_and_self(root)
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
