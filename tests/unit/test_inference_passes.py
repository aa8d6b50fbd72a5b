"""The memory pass and the batch-norm folding pass, on the IR alone (no torch).

Each test builds a few layers whose expected decisions follow from the rules in the passes'
docstrings: who else reads a map, whether it is a tap, the output or the image, whether a view
links it to another map, and whether a backward needs it.
"""

from __future__ import annotations

from rtseg_compiler import analyze
from rtseg_compiler.passes.check import check_resolved
from rtseg_compiler.passes.count import count
from rtseg_compiler.passes.fold_bn import fold_for_inference
from rtseg_compiler.passes.inplace import run_in_place


def in_place(path) -> set[str]:
    resolved, switched = run_in_place(analyze(path).resolved)
    check_resolved(resolved)
    assert {n.name for n in resolved.graph.nodes if n.attrs.get("inplace")} >= set(switched)
    return {name.removeprefix("encoder.") for name in switched}


def test_relu_after_bn_and_add_runs_in_place(encoder_spec):
    path = encoder_spec("""
      - {name: c, op: conv, out: 8, kernel: 3}
      - {name: b, op: bn}
      - {name: r, op: relu}
      - {name: c2, op: conv, out: 8, kernel: 3}
      - {name: s, op: add, inputs: [c2, r]}
      - {name: r2, op: relu6}
      - {name: last, op: conv, out: 2, kernel: 1}
    """, channels=4, input_size=(6, 6))
    # r overwrites b; s sums into c2's buffer; r2 overwrites s, which is that same buffer, read
    # by nothing else.
    assert in_place(path) == {"r", "s", "r2"}


def test_maps_read_twice_taps_output_and_image_are_not_overwritten(encoder_spec):
    path = encoder_spec("""
      - {name: r0, op: relu}
      - {name: c, op: conv, out: 8, kernel: 3}
      - {name: b, op: bn}
      - {name: r, op: relu}
      - {name: side, op: conv, out: 8, kernel: 1, input: b}
      - {name: c2, op: conv, out: 8, kernel: 1, input: r}
      - {name: b2, op: bn}
      - {name: r2, op: relu}
      - {name: s, op: add, inputs: [r2, side]}
      - {name: r3, op: relu}
    """, channels=4, input_size=(6, 6), extra="taps: {stride1: b2}\n")
    # r0 would overwrite the image; r: b is also read by side; r2: b2 is a tap; s: its first
    # input is a ReLU output, which ReLU's backward reads. r3 overwrites s's fresh sum.
    assert in_place(path) == {"r3"}


def test_relu_after_relu_is_not_in_place(encoder_spec):
    path = encoder_spec("""
      - {name: c, op: conv, out: 8, kernel: 3}
      - {name: r, op: relu}
      - {name: r2, op: relu}
      - {name: last, op: conv, out: 2, kernel: 1}
    """, channels=4, input_size=(6, 6))
    # ReLU's backward reads its output: r2 may not overwrite it. r overwrites the conv's.
    assert in_place(path) == {"r"}


def test_views_extend_the_single_reader_rule(encoder_spec):
    path = encoder_spec("""
      - {name: c, op: conv, out: 8, kernel: 3, padding: 2}
      - {name: ref, op: conv, out: 8, kernel: 3, input: input}
      - {name: k, op: crop, inputs: [c, ref]}
      - {name: r, op: relu}
      - {name: c2, op: conv, out: 8, kernel: 3, padding: 2, input: ref}
      - {name: k2, op: crop, inputs: [c2, ref]}
      - {name: r2, op: relu, input: k2}
      - {name: k3, op: crop, inputs: [c2, ref]}
      - {name: both, op: concat, inputs: [r, r2, k3]}
    """, channels=4, input_size=(6, 6))
    # r writes through the crop k into c's buffer (read by k alone). r2's crop views c2, which
    # concat reads as well: not in place.
    assert in_place(path) == {"r"}


def test_output_is_not_overwritten_but_may_be_written(encoder_spec):
    path = encoder_spec("""
      - {name: c, op: conv, out: 8, kernel: 3}
      - {name: r, op: relu}
    """, channels=4, input_size=(6, 6))
    assert in_place(path) == {"r"}  # r's result is the output; it overwrites c, not the output


def test_fold_plan_and_audit(encoder_spec):
    path = encoder_spec("""
      - {name: c, op: conv, out: 8, kernel: 3, bias: false}
      - {name: b, op: bn}
      - {name: d, op: dropout, p: 0.2}
      - {name: u, op: deconv, out: 6, kernel: 2, stride: 2}
      - {name: u_bn, op: bn}
      - {name: p, op: maxpool, kernel: 2}
      - {name: p_bn, op: bn}
    """, channels=4, input_size=(6, 6))
    analysis = analyze(path)
    plan = fold_for_inference(analysis.resolved)
    check_resolved(plan.resolved)
    names = [n.name.removeprefix("encoder.") for n in plan.resolved.graph.nodes]
    assert names == ["c", "u", "p", "p_bn"]
    assert plan.resolved.graph.node("encoder.u").inputs == ("encoder.c",)
    assert plan.dropped == ("encoder.d",)
    assert [(f.conv, f.bn, f.transposed) for f in plan.folds] == [
        ("encoder.c", "encoder.b", False), ("encoder.u", "encoder.u_bn", True)]
    assert [k for k, _ in plan.kept] == ["encoder.p_bn"]
    folded = count(plan.resolved)
    # c: 8x4x3x3 weights + 8 new bias; u: 8x6x2x2 + 6 bias (had one); p_bn: 2x6 stays.
    assert folded.params == 8 * 4 * 9 + 8 + 8 * 6 * 4 + 6 + 2 * 6
    assert folded.params == analysis.audit.params - 2 * 8 - 2 * 6 + 8
    assert folded.macs == analysis.audit.macs


def test_fold_rewires_taps_and_output(encoder_spec):
    path = encoder_spec("""
      - {name: c, op: conv, out: 8, kernel: 3}
      - {name: b, op: bn}
    """, channels=4, input_size=(6, 6), extra="taps: {stride1: b}\n")
    plan = fold_for_inference(analyze(path).resolved)
    assert plan.resolved.graph.output == "encoder.c"
    assert plan.resolved.graph.tap("stride1").node == "encoder.c"
