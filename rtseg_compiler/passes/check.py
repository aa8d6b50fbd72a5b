"""Graph invariants, checked between the pipeline's passes when ``RTSEGC_CHECK=1``.

A pass that breaks one of these has a bug; these are assertions about the
compiler, not diagnostics for users, so they raise AssertionError. Like
torch.fx's ``Graph.lint()`` they cost a walk over the graph, so the pipeline
runs them only when the environment variable ``RTSEGC_CHECK`` is ``1``
(:func:`check_between_passes`); the test suite sets it (``tests/conftest.py``),
so every test that compiles a spec checks every pass it runs. Tests may also
call :func:`check` and :func:`check_resolved` directly.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import TypeVar

from ..ir import INPUT, Graph, Resolved
from ..ops import REGISTRY

__all__ = ["check", "check_resolved", "check_between_passes", "checking"]

_QUALIFIED = re.compile(r"^(encoder|head)(\.[A-Za-z0-9_]+)+$")
_Value = TypeVar("_Value", Graph, Resolved)
#: Element-wise ops whose output strides come from their inputs' (ops/merge.py).
_BROADCASTING = ("add", "mul")
#: A reduction over one axis makes a row or column map whose bin spans the input's extent.
_ONE_AXIS = {"height": 0, "width": 1}


def checking() -> bool:
    """True when ``RTSEGC_CHECK=1``: the pipeline then checks the invariants after each pass."""
    return os.environ.get("RTSEGC_CHECK") == "1"


def check_between_passes(value: _Value, *, ordered: bool = True) -> _Value:
    """``value`` (a pass's result), after :func:`check` or :func:`check_resolved` if :func:`checking`.

    Call it only on a result without errors: a pass that reported errors may leave a graph
    these invariants do not hold for (a cycle stays unordered, an unknown name reads the image).
    """
    if checking():
        if isinstance(value, Resolved):
            check_resolved(value)
        else:
            check(value, ordered=ordered)
    return value


def check(graph: Graph, *, ordered: bool = True) -> Graph:
    """Assert the structural invariants of ``graph``; return it for chaining.

    ``ordered=False`` for a graph straight from ``expand``, before ``link`` orders it: a
    layer may then read one written after it. A name in ``graph.skipped`` (an absent layer)
    stands for its passthrough: it may be read once that is computed.
    """
    seen = {INPUT}
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names)), f"duplicate node names in {graph.name}"
    assert not set(names) & set(graph.skipped), f"layers both present and absent in {graph.name}"
    defined = set(names) | {INPUT} | set(graph.skipped)

    def computed(ref: str) -> bool:
        for _ in range(len(graph.skipped) + 1):  # an absent layer is computed when its input is
            if ref not in graph.skipped:
                break
            ref = graph.skipped[ref].passthrough
        return ref in seen
    for node in graph.nodes:
        assert _QUALIFIED.match(node.name), f"node name {node.name!r} is not qualified"
        assert node.op in REGISTRY, f"node {node.name} has unknown op {node.op}"
        for src in node.inputs:
            assert src in defined, f"node {node.name} reads undefined {src}"
            if ordered:
                assert computed(src), f"node {node.name} reads {src} before it is computed"
        seen.add(node.name)
    assert graph.output in defined, f"output {graph.output} is not a node"
    for name, node in graph.outputs:
        assert node in defined, f"output {name} points at missing {node}"
    assert not graph.outputs or graph.outputs[0][1] == graph.output, "the first output is not the main one"
    for skip in graph.skipped.values():
        assert skip.passthrough in defined, f"absent {skip.name} stands for missing {skip.passthrough}"
    for tap in graph.taps:
        assert tap.node in defined or not ordered, f"tap {tap.name} points at missing {tap.node}"
    return graph


def check_resolved(resolved: Resolved) -> Resolved:
    """Invariants after shape inference: every node typed, attrs concrete, sizes and strides positive.

    Strides are per axis (``TensorType.stride_h``/``stride_w``): the image has 1 on both, and
    an element-wise ``add``/``mul`` takes each axis's stride from an input as long as its output
    along that axis, never from one stretched from 1 (a row map plus a column map gives their
    common grid's stride, not the row's bin along the width); a ``reduce`` over one axis keeps
    the other axis's stride and has one bin along the reduced axis, of stride s·n for an input
    of stride s and size n there.

    The number of inputs is checked here, not in :func:`check`: a wrong count is the spec's
    mistake until ``infer_shapes`` has reported it.
    """
    check(resolved.graph)
    for node in resolved.graph.nodes:
        lo, hi = REGISTRY[node.op].arity
        assert lo <= len(node.inputs) and (hi is None or len(node.inputs) <= hi), \
            f"node {node.name} has {len(node.inputs)} inputs"
        t = resolved.types[node.name]
        assert t.channels >= 1 and t.height >= 1 and t.width >= 1, f"{node.name}: bad type {t}"
        assert all(isinstance(s, Fraction) and s > 0 for s in t.strides), \
            f"{node.name}: strides {t.strides} are not positive fractions"
        if node.op in _BROADCASTING:
            ins = [resolved.types[i] for i in node.inputs]
            for axis, name in enumerate(("height", "width")):
                unstretched = {x.strides[axis] for x in ins if x.spatial[axis] == t.spatial[axis]}
                assert t.strides[axis] in unstretched, \
                    f"{node.name}: stride {t.strides[axis]} along the {name} is no input's of that size"
        if node.op == "reduce" and node.attrs.get("over") in _ONE_AXIS:
            x, axis = resolved.types[node.inputs[0]], _ONE_AXIS[node.attrs["over"]]
            assert t.strides[axis] == x.strides[axis] * x.spatial[axis], \
                f"{node.name}: its one bin along the {node.attrs['over']} does not span its input's"
            assert t.strides[1 - axis] == x.strides[1 - axis], f"{node.name}: its kept axis changed stride"
        for key, value in node.attrs.items():
            assert not isinstance(value, str) or not REGISTRY[node.op].fields[key].kind.expressions, \
                f"{node.name}.{key} is still an expression: {value!r}"
    image = resolved.types[INPUT]
    assert image.strides == (1, 1), f"the image has strides {image.strides}, not 1"
    return resolved
