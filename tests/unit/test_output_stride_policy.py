"""The output-stride policy, owned by ``passes/dilate.apply_output_stride``. No torch.

A tiny model: five 3x3/2 convs at 64x64 (stride 32, 2x2) with taps at stride 16 and 32,
and a meta that adds the two taps' 1x1 scores. At the natural stride the two maps differ
in size (4x4 and 2x2), so the head fits only an encoder at output stride 16: it must never
be inferred on the natural encoder.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ir import TensorType
from rtseg_compiler.ops import REGISTRY, OpDef, register, unaffected
from rtseg_compiler.pipeline import analyze
from rtseg_compiler.spec import schema as schema_module

ENCODER = """\
kind: encoder
name: five
input: [64, 64]
layers:
""" + "".join(f"  - {{name: c{i}, op: conv, out: 8, kernel: 3, stride: 2}}\n" for i in range(1, 6)) + """\
taps: {stride16: c4, stride32: c5}
"""


def _model(tmp_path: Path, declared: int | None = None, extra_layer: str = "") -> Path:
    encoder = ENCODER.replace("layers:\n", f"layers:\n{extra_layer}") if extra_layer else ENCODER
    (tmp_path / "enc.yaml").write_text(encoder)
    (tmp_path / "meta.yaml").write_text(
        "kind: meta\nname: sum\nrequires: [stride16, stride32]\n"
        + (f"output_stride: {declared}\n" if declared else "")
        + "layers:\n"
          "  - {name: a, op: conv, input: encoder.stride32, out: 4, kernel: 1}\n"
          "  - {name: b, op: conv, input: encoder.stride16, out: 4, kernel: 1}\n"
          "  - {name: s, op: add, inputs: [a, b]}\n")
    path = tmp_path / "model.yaml"
    path.write_text("kind: model\nname: m\nencoder: enc.yaml\nmeta: meta.yaml\nnum_classes: 4\n"
                    "input: [64, 64]\n")
    return path


def test_the_head_is_inferred_only_on_the_encoder_it_is_written_for(tmp_path):
    """At the natural stride the add reads 2x2 and 4x4 maps; at output stride 16 both are 4x4."""
    path = _model(tmp_path)
    with pytest.raises(SpecError, match="add"):
        analyze(path)
    a = analyze(path, output_stride=16)
    assert a.resolved.types["head.a"].spatial == a.resolved.types["head.b"].spatial


def test_the_taps_warning_states_the_inferred_strides(tmp_path):
    """A rewrite the meta did not ask for: the warning names each tap whose stride changed, with
    the stride inference gives it, and no tap whose stride stayed."""
    a = analyze(_model(tmp_path), output_stride=16)
    (warning,) = [w for w in a.warnings if "strided taps" in w.message]
    changed = [t for t in a.graph.taps
               if a.resolved.types[t.node].stride != Fraction(int(t.name.removeprefix("stride")))]
    assert [t.name for t in changed] == ["stride32"]
    now = a.resolved.types[changed[0].node].stride
    assert f"the tap stride32 has stride {now};" in warning.message
    assert "stride16" not in warning.message
    assert warning.loc.file.endswith("meta.yaml")


def test_a_meta_that_declares_the_stride_gets_no_taps_warning(tmp_path):
    a = analyze(_model(tmp_path, declared=16))
    assert a.graph.meta_output_stride == 16
    assert a.resolved.types["head.s"].stride == 16
    assert not [w for w in a.warnings if "strided taps" in w.message]


def test_the_callers_stride_must_agree_with_the_metas(tmp_path):
    with pytest.raises(SpecError, match="conflicts with the meta-architecture") as err:
        analyze(_model(tmp_path, declared=16), output_stride=8)
    (error,) = err.value.errors
    assert error.loc.file.endswith("meta.yaml")


def test_an_output_stride_outside_the_valid_ones_is_an_error(tmp_path):
    from rtseg_compiler.passes.dilate import VALID_OUTPUT_STRIDES

    invalid = max(VALID_OUTPUT_STRIDES) * 2
    with pytest.raises(SpecError, match=f"output stride {invalid} is not one of"):
        analyze(_model(tmp_path), output_stride=invalid)


# --------------------------------------------------------------------------- inferred once

@pytest.fixture
def counting_op():
    """A pointwise op that counts how often its shape rule runs."""
    calls: list[int] = []

    def infer(attrs: dict, ins: list[TensorType]) -> TensorType:
        calls.append(1)
        return ins[0]

    register(OpDef(name="test_counted", summary="identity that counts its inferences", fields={},
                   infer=infer, build=lambda attrs, ins, out: None, dilate=unaffected))
    schema_module._VALIDATORS.clear()
    yield calls
    REGISTRY.pop("test_counted", None)
    schema_module._VALIDATORS.clear()


def test_a_layer_before_the_output_stride_is_inferred_once(tmp_path, counting_op):
    """The counted layer reads the image (stride 1): the rewrite leaves it and its input as they
    were, so its type from the encoder's inference is kept."""
    analyze(_model(tmp_path, extra_layer="  - {name: first, op: test_counted}\n"), output_stride=16)
    assert len(counting_op) == 1


def test_nothing_is_inferred_twice_when_nothing_is_rewritten(tmp_path, counting_op):
    """At an output stride not below the encoder's, the encoder's types are the final ones."""
    _model(tmp_path, extra_layer="  - {name: first, op: test_counted}\n")
    analyze(tmp_path / "enc.yaml", output_stride=32)
    assert len(counting_op) == 1


def test_a_layer_past_the_output_stride_is_inferred_once_per_network(tmp_path, counting_op):
    """A layer on the stride-32 map: once in the natural encoder (to decide the rewrite), once in
    the rewritten one, where its map is another size."""
    path = _model(tmp_path)
    (tmp_path / "enc.yaml").write_text(ENCODER.replace(
        "taps: {stride16: c4, stride32: c5}",
        "  - {name: last, op: test_counted}\ntaps: {stride16: c4, stride32: last}"))
    a = analyze(path, output_stride=16)
    assert len(counting_op) == 2
    assert a.resolved.types["encoder.last"].stride == 16
