"""The builder (rtseg_compiler/build.py) asserts the graph invariants after each build pass under
RTSEGC_CHECK=1, as the pipeline does after each analysis pass. A pass that breaks one fails before
torch is touched, so these tests need no torch."""

from __future__ import annotations

import pytest

from rtseg_compiler import analyze
from rtseg_compiler.build import build
from rtseg_compiler.ir import Resolved

MODEL = "skipnet_mobilenet_v1"


def _duplicated_first_node(resolved: Resolved) -> Resolved:
    graph = resolved.graph
    return Resolved(graph.replace(nodes=(graph.nodes[0],) + graph.nodes), resolved.input, resolved.types)


def test_a_broken_in_place_pass_is_caught_before_emitting(monkeypatch) -> None:
    import rtseg_compiler.passes.inplace as inplace

    monkeypatch.setenv("RTSEGC_CHECK", "1")
    monkeypatch.setattr(inplace, "run_in_place", lambda resolved: (_duplicated_first_node(resolved), ()))
    with pytest.raises(AssertionError, match="duplicate node names"):
        build(analyze(MODEL, (64, 96)))


def test_a_broken_folding_pass_is_caught_before_emitting(monkeypatch) -> None:
    import rtseg_compiler.passes.fold_bn as fold_bn

    real = fold_bn.fold_for_inference

    def broken(resolved: Resolved):
        plan = real(resolved)
        broken_graph = _duplicated_first_node(plan.resolved)
        return fold_bn.InferencePlan(broken_graph, plan.folds, plan.dropped, plan.kept)

    monkeypatch.setenv("RTSEGC_CHECK", "1")
    monkeypatch.setattr(fold_bn, "fold_for_inference", broken)
    with pytest.raises(AssertionError, match="duplicate node names"):
        build(analyze(MODEL, (64, 96)), inference=True)
