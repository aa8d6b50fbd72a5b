"""Export round trips: ExportedProgram and ONNX (through onnxruntime) equal the module within 1e-4.

Small specs keep these fast: a conv / batch norm / transposed conv / crop / add network like
SkipNet's head, exported with symbolic batch, height and width, then run at sizes other than
the example, including ones where the crop cuts a row. ONNX tests skip without the optional
``onnx``, ``onnxscript`` and ``onnxruntime`` packages (``pip install -e ".[export]"``).
"""

from __future__ import annotations

import pytest
import torch

from rtseg_compiler import compile_model
from rtseg_compiler.export import ExportError, export_compiled
from rtseg_compiler.passes.dynamic import dynamic_ranges

SKIP_HEAD = """
  - {name: c1, op: conv, out: 8, kernel: 3, stride: 2}
  - {name: c1_bn, op: bn}
  - {name: r1, op: relu}
  - {name: c2, op: conv, out: 8, kernel: 3, stride: 2}
  - {name: r2, op: relu}
  - {name: up, op: deconv, out: 8, kernel: 4, stride: 2}
  - {name: up_aligned, op: crop, inputs: [up, r1]}
  - {name: fuse, op: add, inputs: [up_aligned, r1]}
  - {name: out, op: deconv, out: 3, kernel: 4, stride: 2}
  - {name: logits, op: crop, inputs: [out, input]}
"""

NO_CROP = """
  - {name: c1, op: conv, out: 8, kernel: 3, stride: 2}
  - {name: up, op: deconv, out: 4, kernel: 4, stride: 2}
  - {name: fuse, op: add, inputs: [up, input]}
"""

FLATTENED = """
  - {name: c1, op: conv, out: 4, kernel: 3, stride: 2}
  - {name: fc, op: linear, out: 5}
"""

SIZES = [(2, 4, 20, 28), (1, 4, 23, 37), (3, 4, 9, 64)]


def compiled_net(encoder_spec, layers, **kwargs):
    torch.manual_seed(0)
    path = encoder_spec(layers, channels=4, input_size=(20, 28))
    return compile_model(path, **kwargs)


def reference(compiled, x):
    with torch.no_grad():
        return compiled.module(x.clone())


def test_dynamic_ranges_name_the_layers_that_fix_a_size(encoder_spec):
    assert [r.dynamic and r.multiple == 1 for r in
            dynamic_ranges(compiled_net(encoder_spec, SKIP_HEAD).analysis.resolved)] == [True, True]
    steps = dynamic_ranges(compiled_net(encoder_spec, NO_CROP).analysis.resolved)
    assert [(r.dynamic, r.multiple, r.remainder) for r in steps] == [(True, 2, 0), (True, 2, 0)]
    assert steps[0].blockers[0][0] == "fuse"
    fixed = dynamic_ranges(compiled_net(encoder_spec, FLATTENED).analysis.resolved)
    assert [r.dynamic for r in fixed] == [False, False]
    assert fixed[0].blockers[0][0] == "encoder.fc"


def test_exported_program_round_trip_dynamic(encoder_spec, tmp_path):
    compiled = compiled_net(encoder_spec, SKIP_HEAD)
    result = export_compiled(compiled, tmp_path / "net.pt2", "exported-program", dynamic=True)
    assert not result.notes
    program = torch.export.load(str(tmp_path / "net.pt2"))
    for size in SIZES:
        x = torch.randn(*size)
        with torch.no_grad():
            got = program.module()(x.clone())
        torch.testing.assert_close(got, reference(compiled, x), rtol=1e-4, atol=1e-4)


def test_exported_program_static_inference_build(encoder_spec, tmp_path):
    compiled = compiled_net(encoder_spec, SKIP_HEAD, inference=True)
    export_compiled(compiled, tmp_path / "net.pt2", "exported-program")
    program = torch.export.load(str(tmp_path / "net.pt2"))
    x = torch.randn(1, 4, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x.clone()), reference(compiled, x),
                                   rtol=1e-4, atol=1e-4)


def test_fixed_size_layer_is_reported(encoder_spec, tmp_path):
    compiled = compiled_net(encoder_spec, FLATTENED)
    result = export_compiled(compiled, tmp_path / "fc.pt2", "exported-program", dynamic=True)
    assert any("height is fixed at 20" in n and "encoder.fc" in n for n in result.notes)
    program = torch.export.load(str(tmp_path / "fc.pt2"))
    x = torch.randn(3, 4, 20, 28)  # the batch stays dynamic
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), reference(compiled, x), rtol=1e-4, atol=1e-4)


def test_onnx_round_trip_dynamic(encoder_spec, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    compiled = compiled_net(encoder_spec, SKIP_HEAD)
    export_compiled(compiled, tmp_path / "net.onnx", "onnx", dynamic=True)
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for size in SIZES:
        x = torch.randn(*size)
        (got,) = session.run(None, {name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), reference(compiled, x), rtol=1e-4, atol=1e-4)


def test_unknown_format_is_an_export_error(encoder_spec, tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export_compiled(compiled_net(encoder_spec, NO_CROP), tmp_path / "x", "tflite")


TWO_HEADS = """
kind: meta
name: two_heads
requires: [stride2, stride4]
layers:
  - {name: main, op: conv, input: encoder.stride4, out: num_classes, kernel: 1}
  - {name: side, op: conv, input: encoder.stride2, out: num_classes, kernel: 1}
outputs: {out: main, aux: side}
"""


TWO_STRIDES = """
  - {name: c1, op: conv, out: 8, kernel: 3, stride: 2}
  - {name: c2, op: conv, out: 8, kernel: 3, stride: 2}
"""


def two_headed(encoder_spec, write_spec):
    encoder = encoder_spec(TWO_STRIDES, channels=4, input_size=(20, 28),
                           extra="taps: {stride2: c1, stride4: c2}\n")
    return compile_model(encoder=encoder, meta=write_spec("meta.yaml", TWO_HEADS), num_classes=3,
                         input_size=(20, 28))


def test_exported_program_outputs_carry_the_spec_names(encoder_spec, write_spec, tmp_path):
    compiled = two_headed(encoder_spec, write_spec)
    export_compiled(compiled, tmp_path / "net.pt2", "exported-program")
    program = torch.export.load(str(tmp_path / "net.pt2"))
    assert [s.arg.name for s in program.graph_signature.output_specs] == ["out", "aux"]
    x = torch.randn(1, 4, 20, 28)  # a static export: the example's batch
    got, want = program.module()(x), reference(compiled, x)
    assert list(got) == ["out", "aux"] and all(torch.equal(got[k], want[k]) for k in want)
    single = compiled_net(encoder_spec, NO_CROP)
    export_compiled(single, tmp_path / "one.pt2", "exported-program")
    one = torch.export.load(str(tmp_path / "one.pt2"))
    assert [s.arg.name for s in one.graph_signature.output_specs] == ["out"]


def test_onnx_outputs_carry_the_spec_names(encoder_spec, write_spec, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    export_compiled(two_headed(encoder_spec, write_spec), tmp_path / "net.onnx", "onnx")
    model = onnx.load(str(tmp_path / "net.onnx"), load_external_data=False)
    assert [o.name for o in model.graph.output] == ["out", "aux"]


@pytest.mark.slow
def test_rtsegc_export_writes_nothing_to_stderr(encoder_spec, tmp_path):
    """A successful ``rtsegc export`` prints its summary on stdout and nothing on stderr.

    It runs in a child process, where Python's default warning filters apply (pytest's would
    hide what a user sees): torch 2.13's ONNX exporter warns about its own LeafSpec there.
    """
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import subprocess
    import sys

    path = encoder_spec(SKIP_HEAD, channels=4, input_size=(20, 28))
    for fmt, name in (("onnx", "net.onnx"), ("exported-program", "net.pt2")):
        proc = subprocess.run([sys.executable, "-m", "rtseg_compiler.cli", "export", str(path), "--format", fmt,
                               "-o", str(tmp_path / name)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", f"rtsegc export --format {fmt} printed to stderr:\n{proc.stderr}"
        assert "exported" in proc.stdout


def test_onnx_export_ignores_only_torchs_leafspec_warning(encoder_spec, tmp_path, monkeypatch):
    """The filter around torch.onnx.export is exact: another warning from inside it still gets out."""
    import warnings

    def fake_export(*args, **kwargs):
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) "
                      "and treespec.is_leaf()` instead.", FutureWarning)
        warnings.warn("something the user should see", FutureWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning)

    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    monkeypatch.setattr(torch.onnx, "export", fake_export)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_compiled(compiled_net(encoder_spec, NO_CROP), tmp_path / "net.onnx", "onnx")
    assert [(w.category, str(w.message)) for w in caught] == [
        (FutureWarning, "something the user should see"),
        (UserWarning, "`isinstance(treespec, LeafSpec)` is deprecated")]
