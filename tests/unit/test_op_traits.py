"""Op knowledge lives on OpDef traits: the build passes and the source emitter match no op names.

A user op that declares a trait is treated exactly like the built-in op that declares it (a conv
twin folds a batch norm, a dropout twin is removed at inference), and a trait whose fields are
missing is refused at register() time. No torch.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Iterator

import pytest

import rtseg_compiler
from rtseg_compiler import analyze
from rtseg_compiler.ops import REGISTRY, Field, OpDef, register, unregister
from rtseg_compiler.passes.check import check_resolved
from rtseg_compiler.passes.fold_bn import fold_for_inference, foldable_ops

PACKAGE = Path(rtseg_compiler.__file__).parent
#: The modules that decide something per op outside ops/.
OP_BLIND = ("passes/fold_bn.py", "passes/inplace.py", "emit/python_source.py", "inference.py")


@pytest.mark.parametrize("relative", OP_BLIND)
def test_build_passes_name_no_op(relative: str):
    tree = ast.parse((PACKAGE / relative).read_text())
    names = {node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not names & set(REGISTRY), f"{relative} matches op names {sorted(names & set(REGISTRY))}"


def test_built_in_ops_declare_their_traits():
    assert foldable_ops() == ("conv", "deconv")
    assert (REGISTRY["conv"].norm_folds_into, REGISTRY["deconv"].norm_folds_into) == ("out", "in")
    assert [n for n, op in REGISTRY.items() if op.folds_into_previous] == ["bn"]
    assert [n for n, op in REGISTRY.items() if op.inference_identity] == ["dropout"]
    add, concat = REGISTRY["add"].source_expression, REGISTRY["concat"].source_expression
    assert add({"inplace": False}, ["a", "b"]) == "a + b" and add({"inplace": True}, ["a", "b"]) is None
    assert concat({}, ["a", "b"]) == "torch.cat([a, b], dim=1)"


@pytest.fixture
def twins() -> Iterator[None]:
    """User ops that copy conv and dropout, traits included; removed afterwards."""
    register(dataclasses.replace(REGISTRY["conv"], name="tw_conv"))
    register(dataclasses.replace(REGISTRY["dropout"], name="tw_drop"))
    try:
        yield
    finally:
        unregister("tw_conv")
        unregister("tw_drop")


def test_a_user_op_with_the_traits_folds_and_drops_like_the_built_in(twins, encoder_spec):
    path = encoder_spec("""
      - {name: c, op: tw_conv, out: 8, kernel: 3}
      - {name: b, op: bn}
      - {name: d, op: tw_drop, p: 0.1}
      - {name: last, op: conv, out: 2, kernel: 1}
    """, channels=4, input_size=(6, 6))
    plan = fold_for_inference(analyze(path).resolved)
    check_resolved(plan.resolved)
    assert [(f.conv, f.bn, f.transposed) for f in plan.folds] == [("encoder.c", "encoder.b", False)]
    assert plan.dropped == ("encoder.d",)
    assert "tw_conv" in foldable_ops()


def test_a_bn_after_a_non_foldable_op_is_kept_with_the_reason(encoder_spec):
    path = encoder_spec("""
      - {name: r, op: relu}
      - {name: b, op: bn}
      - {name: last, op: conv, out: 2, kernel: 1}
    """, channels=4, input_size=(6, 6))
    plan = fold_for_inference(analyze(path).resolved)
    assert plan.kept == (("encoder.b", "its input is not an op it folds into (conv, deconv)"),)


@pytest.mark.parametrize("changes, message", [
    (dict(norm_folds_into="sideways"), "norm_folds_into is 'sideways'"),
    (dict(norm_folds_into="out", fields={}), "norm_folds_into needs a field 'groups' of kind int"),
    (dict(folds_into_previous=True, fields={"eps": Field("number", 1e-5)}),
     "needs a field 'affine' of kind bool"),
    (dict(inference_identity=True, arity=(2, None)), "inference_identity needs exactly one input"),
    (dict(source_expression="a + b"), "source_expression must be a callable"),
])
def test_a_trait_without_what_it_needs_is_refused_at_register(changes, message):
    op = OpDef(name="tw_bad", summary="for tests", fields={}, infer=lambda attrs, ins: ins[0],
               build=lambda attrs, ins, out: None)
    with pytest.raises(ValueError, match=message):
        register(dataclasses.replace(op, **changes))
    assert "tw_bad" not in REGISTRY
