"""The passes one at a time: expand, link, infer_shapes, count, with the invariant check between them.

Each test builds a tiny spec, runs the passes by hand through
:func:`run_passes` (which asserts ``check``/``check_resolved`` after every
pass, as torch.fx's pass tests do) and looks at one behaviour of one pass.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from rtseg_compiler.diagnostics import Diagnostics, SpecError
from rtseg_compiler.ir import INPUT, Graph, Node, Resolved
from rtseg_compiler.passes import check, check_resolved, count, infer_shapes, link
from rtseg_compiler.passes.count import Audit
from rtseg_compiler.pipeline import analyze, load_graph


@dataclass
class Passes:
    expanded: Graph
    linked: Graph
    resolved: Resolved
    audit: Audit
    diags: Diagnostics

    def inputs(self, name: str) -> tuple[str, ...]:
        return self.linked.node(name).inputs

    def shape(self, name: str) -> tuple[int, int, int]:
        t = self.resolved.types[name]
        return (t.channels, t.height, t.width)


def run_passes(path: Path | None = None, size: tuple[int, int] | None = None, *,
               keep_unused: bool = False, **files) -> Passes:
    """expand -> check -> link -> check -> infer_shapes -> check_resolved -> count."""
    diags = Diagnostics()
    expanded = load_graph(path, diags=diags, **files)
    check(expanded, ordered=False)  # declaration order may still have forward references
    linked = link(expanded, diags, keep_unused=keep_unused)
    diags.raise_if_errors()
    check(linked)
    resolved = infer_shapes(linked, size or linked.default_input or (224, 224), diags)
    diags.raise_if_errors()
    check_resolved(resolved)
    audit = count(resolved)
    assert [r.name for r in audit.layers] == [n.name for n in linked.nodes]
    return Passes(expanded, linked, resolved, audit, diags)


def errors_of(exc_info) -> list[str]:
    return [d.render() for d in exc_info.value.errors]


# --------------------------------------------------------------------------- expand

def test_layers_without_input_read_the_previous_layer(encoder_spec):
    p = run_passes(encoder_spec("""
        - {name: a, op: conv, out: 8, kernel: 3}
        - {name: b, op: relu}
        - {name: c, op: conv, out: 4, kernel: 1}
        """))
    assert p.inputs("encoder.a") == (INPUT,)
    assert p.inputs("encoder.b") == ("encoder.a",)
    assert p.inputs("encoder.c") == ("encoder.b",)
    assert p.linked.output == "encoder.c"


def test_unnamed_layers_are_named_after_the_last_named_one(encoder_spec):
    p = run_passes(encoder_spec("""
        - {name: conv1, op: conv, out: 8, kernel: 3}
        - {op: bn}
        - {op: relu}
        - {op: bn}
        """))
    assert [n.name for n in p.linked.nodes] == [
        "encoder.conv1", "encoder.conv1_bn", "encoder.conv1_relu", "encoder.conv1_bn_2"]
    assert p.inputs("encoder.conv1_bn_2") == ("encoder.conv1_relu",)


BLOCK = """
blocks:
  dwsep:
    params: {out: ~, stride: 1}
    layers:
      - {name: dw, op: conv, kernel: 3, stride: stride, groups: in_channels, out: in_channels}
      - {op: relu}
      - {name: pw, op: conv, kernel: 1, out: out}
"""


def test_block_use_expands_to_qualified_names(encoder_spec):
    """A use ``ds3`` of block dwsep yields ds3.dw, ds3.dw_relu, ds3.pw; ``ds3`` is then its output."""
    p = run_passes(encoder_spec("""
        - {name: stem, op: conv, out: 16, kernel: 3}
        - {name: ds3, block: dwsep, out: 24, stride: 2}
        - {name: after, op: relu, input: ds3}
        - {name: peek, op: conv, out: 4, kernel: 1, input: ds3.dw}
        - {name: cat, op: concat, inputs: [after, peek]}
        """, extra=BLOCK))
    names = [n.name for n in p.linked.nodes]
    assert names[:4] == ["encoder.stem", "encoder.ds3.dw", "encoder.ds3.dw_relu", "encoder.ds3.pw"]
    assert p.inputs("encoder.ds3.dw") == ("encoder.stem",)  # the block's input
    assert p.inputs("encoder.after") == ("encoder.ds3.pw",)
    assert p.inputs("encoder.peek") == ("encoder.ds3.dw",)
    # in_channels inside the block is the block input's: depthwise 16 -> 16
    assert p.resolved.graph.node("encoder.ds3.dw").attrs["groups"] == 16
    assert p.shape("encoder.ds3.pw") == (24, 12, 20)
    assert p.shape("encoder.cat") == (28, 12, 20)


def test_block_output_field_selects_the_block_result(encoder_spec):
    extra = """
    blocks:
      twoheads:
        params: {}
        output: first
        layers:
          - {name: first, op: conv, out: 8, kernel: 1}
          - {name: second, op: conv, out: 4, kernel: 1, input: input}
    """
    p = run_passes(encoder_spec("""
        - {name: u, block: twoheads}
        - {name: v, op: relu}
        """, extra=extra), keep_unused=True)
    assert p.inputs("encoder.v") == ("encoder.u.first",)
    assert p.inputs("encoder.u.second") == (INPUT,)


def test_repeat_names_and_index(encoder_spec):
    """repeat: 3 -> name.1 .. name.3, chained; ``i`` is 0, 1, 2."""
    p = run_passes(encoder_spec("""
        - {name: c, op: conv, out: "8 * (i + 1)", kernel: 3, stride: "2 if i == 0 else 1", repeat: 3}
        """))
    assert [n.name for n in p.linked.nodes] == ["encoder.c.1", "encoder.c.2", "encoder.c.3"]
    assert p.inputs("encoder.c.2") == ("encoder.c.1",)
    assert [p.shape(f"encoder.c.{k}") for k in (1, 2, 3)] == [(8, 12, 20), (16, 12, 20), (24, 12, 20)]


def test_repeated_block_use(encoder_spec):
    p = run_passes(encoder_spec("""
        - {name: ds, block: dwsep, out: "16 * (i + 1)", stride: "2 if i == 0 else 1", repeat: 2}
        - {name: tail, op: relu}
        """, extra=BLOCK))
    names = [n.name for n in p.linked.nodes]
    assert names[:6] == ["encoder.ds.1.dw", "encoder.ds.1.dw_relu", "encoder.ds.1.pw",
                         "encoder.ds.2.dw", "encoder.ds.2.dw_relu", "encoder.ds.2.pw"]
    assert p.inputs("encoder.ds.2.dw") == ("encoder.ds.1.pw",)
    assert p.inputs("encoder.tail") == ("encoder.ds.2.pw",)
    assert p.shape("encoder.ds.1.pw") == (16, 12, 20)
    assert p.shape("encoder.ds.2.pw") == (32, 12, 20)
    # the second depthwise conv sees 16 channels: in_channels is per repeat
    assert p.resolved.graph.node("encoder.ds.2.dw").attrs["groups"] == 16


def test_forward_reference_is_ordered_by_link(encoder_spec):
    """``a`` reads ``b`` declared after it: expand keeps declaration order, link sorts by data flow."""
    p = run_passes(encoder_spec("""
        - {name: a, op: relu, input: b}
        - {name: b, op: conv, out: 8, kernel: 1, input: input}
        - {name: c, op: add, inputs: [a, b]}
        """))
    assert [n.name for n in p.expanded.nodes] == ["encoder.a", "encoder.b", "encoder.c"]
    assert [n.name for n in p.linked.nodes] == ["encoder.b", "encoder.a", "encoder.c"]
    assert p.inputs("encoder.a") == ("encoder.b",)
    with pytest.raises(AssertionError, match="before it is computed"):
        check(p.expanded)  # the ordered invariant does not hold before link


# --------------------------------------------------------------------------- link

def test_cycle_is_a_located_error(encoder_spec):
    path = encoder_spec("""
        - {name: a, op: conv, out: 8, kernel: 1, input: input}
        - {name: b, op: relu, input: d}
        - {name: c, op: relu, input: b}
        - {name: d, op: add, inputs: [a, c]}
        """)
    diags = Diagnostics()
    graph = load_graph(path, diags=diags)
    link(graph, diags)
    (err,) = [d for d in diags.items if d.severity == "error"]
    assert "cycle" in err.message
    assert "encoder.b -> encoder.c -> encoder.d -> encoder.b" in err.message
    assert err.loc is not None and err.loc.file == str(path)
    assert err.loc.line == 7  # the line of layer b (5 header lines, layers: a on 6)
    with pytest.raises(SpecError, match="cycle"):
        analyze(path)


def test_self_loop_is_a_cycle(encoder_spec):
    with pytest.raises(SpecError, match="cycle"):
        analyze(encoder_spec("- {name: a, op: relu, input: a}"))


def test_unused_layer_is_warned_about_and_pruned(encoder_spec):
    path = encoder_spec("""
        - {name: a, op: conv, out: 8, kernel: 3}
        - {name: dead, op: conv, out: 64, kernel: 3, input: a}
        - {name: b, op: conv, out: 4, kernel: 1, input: a}
        """)
    p = run_passes(path)
    assert "encoder.dead" in p.expanded
    assert "encoder.dead" not in p.linked
    (warning,) = p.diags.warnings
    assert "'encoder.dead' is never used" in warning.message
    assert warning.loc.line == 7
    a = analyze(path)
    assert [w.message for w in a.warnings] == [warning.message]
    # 24·40·8·32·9 + 24·40·4·8
    assert a.audit.macs == 2_211_840 + 30_720


def test_keep_unused_keeps_and_counts_dead_layers(encoder_spec):
    """TF's profiler counted dead layers (RTSeg's UNet figure includes them): keep_unused does too."""
    path = encoder_spec("""
        - {name: a, op: conv, out: 8, kernel: 3}
        - {name: dead, op: conv, out: 64, kernel: 3, input: a}
        - {name: b, op: conv, out: 4, kernel: 1, input: a}
        """)
    p = run_passes(path, keep_unused=True)
    assert "encoder.dead" in p.linked
    assert p.linked.output == "encoder.b"
    a = analyze(path, keep_unused=True)
    assert a.audit.macs == 2_211_840 + 30_720 + 24 * 40 * 64 * 8 * 9
    assert len(a.warnings) == 1  # still reported


def test_duplicate_layer_name(encoder_spec):
    path = encoder_spec("""
        - {name: a, op: conv, out: 8, kernel: 3}
        - {name: a, op: relu}
        """)
    with pytest.raises(SpecError) as exc:
        analyze(path)
    (err,) = exc.value.errors
    assert "duplicate layer name 'a'" in err.message
    assert err.loc.line == 7
    assert "first defined at" in err.hint


def test_check_rejects_reading_an_undefined_layer():
    """The invariant checker itself must be able to fail."""
    node = Node("encoder.a", "relu", ("encoder.ghost",), {})
    with pytest.raises(AssertionError, match="undefined"):
        check(Graph("g", (node,), "encoder.a"))
    with pytest.raises(AssertionError, match="not qualified"):
        check(Graph("g", (Node("a", "relu", (INPUT,), {}),), "a"))


# --------------------------------------------------------------------------- taps and metas

ENC = """
kind: encoder
name: tiny
params: {width: 1}
input: [32, 48]
layers:
  - {name: a, op: conv, out: "8 * width", kernel: 3, stride: 2}
  - {name: b, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c, op: conv, out: 32, kernel: 3, stride: 2}
taps: {stride2: a, stride4: b, stride8: c}
"""

META = """
kind: meta
name: fuse
requires: [stride4, stride8]
layers:
  - {name: s8, op: conv, input: encoder.stride8, out: num_classes, kernel: 1}
  - {name: up, op: deconv, out: num_classes, kernel: 4, stride: 2}
  - {name: proj, op: conv, input: encoder.stride4, out: "encoder.stride4.channels * 2", kernel: 1}
  - {name: s4, op: conv, out: num_classes, kernel: 1}
  - {name: fuse, op: add, inputs: [up, s4]}
  - {name: logits, op: upsample, inputs: [fuse, input], mode: bilinear}
output: logits
"""

MODEL = """
kind: model
name: tiny_fuse
encoder: enc.yaml
meta: meta.yaml
num_classes: 5
input: [32, 48]
"""


@pytest.fixture
def model(write_spec) -> Path:
    write_spec("enc.yaml", ENC)
    write_spec("meta.yaml", META)
    return write_spec("model.yaml", MODEL)


def test_meta_reads_taps_and_their_channels(model):
    p = run_passes(model)
    assert p.inputs("head.s8") == ("encoder.c",)
    assert p.inputs("head.proj") == ("encoder.b",)
    assert p.shape("head.proj") == (32, 8, 12)  # encoder.stride4.channels * 2 = 16 * 2
    assert p.shape("head.logits") == (5, 32, 48)  # num_classes from the model file
    assert p.shape("head.up") == (5, 8, 12)
    assert p.linked.output == "head.logits"


def test_model_params_and_num_classes_override(model):
    a = analyze(model, num_classes=3)
    assert a.resolved.output.channels == 3
    assert a.resolved.types["encoder.a"].channels == 8


def test_encoder_meta_pair_equals_model(model, tmp_path):
    """``analyze(encoder=, meta=)`` builds the same graph as a model file naming both."""
    a = analyze(model, num_classes=21)
    b = analyze(encoder=tmp_path / "enc.yaml", meta=tmp_path / "meta.yaml", input_size=(32, 48))
    assert b.graph.name == "fuse_tiny"
    assert b.resolved.output.channels == 21  # the default without a model file
    assert [n.name for n in b.graph.nodes] == [n.name for n in a.graph.nodes]
    assert (b.audit.macs, b.audit.params) == (a.audit.macs, a.audit.params)
    assert b.audit.output_shape == (1, 21, 32, 48)


def test_tap_stride_is_checked(write_spec):
    path = write_spec("enc.yaml", ENC.replace("stride8: c", "stride8: b"))
    with pytest.raises(SpecError) as exc:
        analyze(path)
    (err,) = exc.value.errors
    assert "tap 'stride8' points at 'b', whose stride is 4, not 8" in err.message
    assert err.loc.line == 9
    assert "stride4" in err.hint


def test_non_divisible_input_suggests_sizes(model):
    """At 28x48 the stride-8 map is 4 rows, upsampled to 8, but the stride-4 map has 7 rows.

    Three k3/s2 convs give ceil(h/2) rows each: heights 25-28 fail (13 or 14 -> 7 -> 4),
    24 (12 -> 6 -> 3) and 29 (15 -> 8 -> 4) are the nearest that work; the width is fine.
    """
    with pytest.raises(SpecError) as exc:
        analyze(model, input_size=(28, 48))
    (err,) = exc.value.errors
    assert "at layer 'fuse' for input 28x48" in err.message
    assert "8x12" in err.message and "7x12" in err.message
    assert err.loc.file.endswith("meta.yaml") and err.loc.line == 9
    prefix = "input sizes that work nearby: "
    assert err.hint.startswith(prefix)
    suggested = [tuple(map(int, s.split("x"))) for s in err.hint[len(prefix):].split(", ")]
    assert (29, 48) in suggested and (24, 48) in suggested
    for size in suggested:  # every suggestion must really work
        assert analyze(model, input_size=size).audit.input[2:] == size


def test_infer_shapes_evaluates_every_expression(model):
    p = run_passes(model)
    for node in p.resolved.graph.nodes:
        for key, value in node.attrs.items():
            assert not isinstance(value, str) or key == "mode", (node.name, key, value)
    assert p.resolved.graph.node("encoder.a").attrs["out"] == 8


def test_count_per_layer_rows(model):
    """Per-layer MACs by hand; head.up, a 4x4/2 deconv of the 5x4x6 class map, is counted by input."""
    p = run_passes(model)
    rows = {r.name: r for r in p.audit.layers}
    assert rows["head.up"].macs == 4 * 6 * 5 * 5 * 16
    assert rows["head.s8"].macs == 4 * 6 * 32 * 5
    assert rows["head.proj"].macs == 8 * 12 * 16 * 32
    assert rows["encoder.c"].macs == 4 * 6 * 16 * 32 * 9
    assert rows["head.logits"].stride == 1
    assert rows["head.up"].stride == 4
    assert p.audit.macs == sum(r.macs for r in p.audit.layers)
