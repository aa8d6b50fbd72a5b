"""An encoder analysed on its own is checked wherever its taps reach, and even kernels need padding.

A meta may read any tap, so the layers that only a tap reads belong to the encoder: validating
it shapes them, checks a ``strideN`` tap's stride, and ``shapes`` lists them. An even kernel has
no symmetric 'same' padding, so the default ``d*(k-1)/2`` would silently round down (a kernel-8
patchify conv got padding 3); it is an error asking for the padding, except for kernel 2, whose
floor is torch's default of 0.
"""

from __future__ import annotations

import pytest

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.pipeline import analyze, validate_file

# The case of the report: the stride4 tap adds a 32x32 map and a 16x16 one.
TAP_ONLY_BRANCH = """
- {name: s2, op: conv, out: 8, kernel: 3, stride: 2}
- {name: s4, op: conv, out: 8, kernel: 3, stride: 2}
- {name: wrong, op: add, inputs: [s2, s4]}
- {name: s8, op: conv, out: 8, kernel: 3, stride: 2, input: s4}
"""


def test_a_tap_only_branch_is_validated(encoder_spec):
    path = encoder_spec(TAP_ONLY_BRANCH, input_size=(64, 64), channels=3,
                        extra="taps: {stride4: wrong, stride8: s8}\n")
    errors = [d for d in validate_file(path) if d.severity == "error"]
    assert errors and "add needs inputs of equal height and width" in errors[0].message
    assert "'s2' (stride 2) is 32x32 and 's4' (stride 4) is 16x16" in errors[0].message


def test_tap_strides_are_checked_on_tap_only_branches(encoder_spec):
    layers = TAP_ONLY_BRANCH.replace("inputs: [s2, s4]", "inputs: [s2, s2]")
    path = encoder_spec(layers, input_size=(64, 64), channels=3,
                        extra="taps: {stride4: wrong, stride8: s8}\n")
    with pytest.raises(SpecError, match="tap 'stride4' points at 'wrong', whose stride is 2, not 4"):
        analyze(path)


def test_shapes_and_counts_of_an_encoder_include_its_tap_branches(encoder_spec):
    layers = TAP_ONLY_BRANCH.replace("inputs: [s2, s4]", "inputs: [s4, s4]")
    a = analyze(encoder_spec(layers, input_size=(64, 64), channels=3,
                             extra="taps: {stride4: wrong, stride8: s8}\n"))
    assert "encoder.wrong" in a.resolved.types
    assert [r.name for r in a.audit.layers] == ["encoder.s2", "encoder.s4", "encoder.wrong", "encoder.s8"]


def test_rtsegc_shapes_lists_the_tap_branch_and_validate_fails(encoder_spec, capsys):
    from rtseg_compiler.cli import main
    ok = encoder_spec(TAP_ONLY_BRANCH.replace("inputs: [s2, s4]", "inputs: [s4, s4]"), name="ok.yaml",
                      input_size=(64, 64), channels=3, extra="taps: {stride4: wrong, stride8: s8}\n")
    assert main(["shapes", str(ok)]) == 0
    assert "encoder.wrong" in capsys.readouterr().out
    bad = encoder_spec(TAP_ONLY_BRANCH, name="bad.yaml", input_size=(64, 64), channels=3,
                       extra="taps: {stride4: wrong, stride8: s8}\n")
    assert main(["validate", str(bad)]) == 2
    assert "add needs inputs of equal height and width" in capsys.readouterr().err


def test_a_model_keeps_only_the_taps_its_meta_reads(write_spec):
    enc = write_spec("enc.yaml", "kind: encoder\nname: e\ninput: [32, 32]\nlayers:\n"
                     "  - {name: a, op: conv, out: 8, kernel: 3, stride: 2}\n"
                     "  - {name: side, op: conv, out: 8, kernel: 1}\n"
                     "  - {name: b, op: conv, out: 8, kernel: 3, stride: 2, input: a}\n"
                     "taps: {stride2: side, stride4: b}\n")
    meta = write_spec("meta.yaml", "kind: meta\nname: m\nrequires: [stride4]\nlayers:\n"
                      "  - {name: cls, op: conv, input: encoder.stride4, out: num_classes, kernel: 1}\n")
    a = analyze(encoder=enc, meta=meta, num_classes=3, input_size=(32, 32))
    assert "encoder.side" not in a.resolved.types


@pytest.mark.parametrize("layer,message", [
    ("{op: conv, out: 8, kernel: 8, stride: 8}", "kernel 8 has no symmetric 'same' padding"),
    ("{op: conv, out: 8, kernel: 4}", "d\\*\\(k-1\\) = 3 is odd"),
    ("{op: conv, out: 8, kernel: [3, 4]}", "kernel 4 has no symmetric"),
])
def test_an_even_kernel_needs_explicit_padding(encoder_spec, layer, message):
    with pytest.raises(SpecError, match=message) as err:
        analyze(encoder_spec(f"- {layer}"))
    assert "padding: 0" in str(err.value)  # the hint


@pytest.mark.parametrize("layer,padding", [
    ("{op: conv, out: 8, kernel: 8, stride: 8, padding: 0}", (0, 0)),
    ("{op: conv, out: 8, kernel: 2, stride: 2}", (0, 0)),        # ENet's 2x2/2: torch's default
    ("{op: conv, out: 8, kernel: 4, dilation: 2}", (3, 3)),       # span 6: symmetric 'same'
    ("{op: conv, out: 8, kernel: 3}", (1, 1)),
])
def test_padding_defaults_that_stay(encoder_spec, layer, padding):
    a = analyze(encoder_spec(f"- {{name: c, {layer[1:]}"))
    assert tuple(a.resolved.graph.node("encoder.c").attrs["padding"]) == padding
