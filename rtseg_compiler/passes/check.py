"""Graph invariants, checked between passes in tests (and by ``rtsegc --check``).

A pass that breaks one of these has a bug; these are assertions about the
compiler, not diagnostics for users, so they raise AssertionError.
"""

from __future__ import annotations

import re

from ..ir import INPUT, Graph, Resolved
from ..ops import REGISTRY

__all__ = ["check", "check_resolved"]

_QUALIFIED = re.compile(r"^(encoder|head)(\.[A-Za-z0-9_]+)+$")


def check(graph: Graph, *, ordered: bool = True) -> Graph:
    """Assert the structural invariants of ``graph``; return it for chaining."""
    seen = {INPUT}
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names)), f"duplicate node names in {graph.name}"
    defined = set(names) | {INPUT}
    for node in graph.nodes:
        assert _QUALIFIED.match(node.name), f"node name {node.name!r} is not qualified"
        assert node.op in REGISTRY, f"node {node.name} has unknown op {node.op}"
        lo, hi = REGISTRY[node.op].arity
        assert lo <= len(node.inputs) and (hi is None or len(node.inputs) <= hi), \
            f"node {node.name} has {len(node.inputs)} inputs"
        for src in node.inputs:
            assert src in defined, f"node {node.name} reads undefined {src}"
            if ordered:
                assert src in seen, f"node {node.name} reads {src} before it is computed"
        seen.add(node.name)
    assert graph.output in defined, f"output {graph.output} is not a node"
    for name, node in graph.outputs:
        assert node in defined, f"output {name} points at missing {node}"
    assert not graph.outputs or graph.outputs[0][1] == graph.output, "the first output is not the main one"
    for tap in graph.taps:
        assert tap.node in defined or not ordered, f"tap {tap.name} points at missing {tap.node}"
    return graph


def check_resolved(resolved: Resolved) -> Resolved:
    """Invariants after shape inference: every node typed, attrs concrete, sizes positive."""
    check(resolved.graph)
    for node in resolved.graph.nodes:
        t = resolved.types[node.name]
        assert t.channels >= 1 and t.height >= 1 and t.width >= 1, f"{node.name}: bad type {t}"
        for key, value in node.attrs.items():
            assert not isinstance(value, str) or not REGISTRY[node.op].fields[key].kind.expressions, \
                f"{node.name}.{key} is still an expression: {value!r}"
    return resolved
