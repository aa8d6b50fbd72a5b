"""Issue 8, items 2 and 3 (pure Python, no torch): flexible blocks and several outputs.

Blocks: ``when:`` (an absent layer passes its first input on), ``op: PARAM`` (a parameter
chooses the op), named block inputs, ``start:`` numbering, ``repeat: 0``. Outputs: a meta's
``outputs:`` mapping, per-head costs, ``outputs="main"``.

Every expected number is derived in the test's docstring from the tiny spec it builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.passes.check import check
from rtseg_compiler.pipeline import analyze, validate_file


def _errors(path: Path) -> list:
    return [d for d in validate_file(path) if d.severity == "error"]


def _names(path: Path, **kw) -> list[str]:
    return [layer.name for layer in analyze(path, **kw).audit.layers]


BNECK = """
kind: encoder
name: bneck_test
input: [16, 16]
params: {use_se: true}
blocks:
  bneck:
    params: {out: ~, exp: ~, se: false, act: relu, stride: 1}
    layers:
      - {name: expand, op: conv, out: exp, kernel: 1, bias: false, when: "exp != block_in_channels"}
      - {name: expand_act, op: act, when: "exp != block_in_channels"}
      - {name: dw, op: conv, out: exp, kernel: 3, stride: stride, groups: exp, bias: false}
      - {name: dw_act, op: act}
      - {name: pool, op: gap, when: se}
      - {name: fc, op: conv, out: exp, kernel: 1, when: se}
      - {name: gate, op: upsample, inputs: [fc, dw_act], when: se}
      - {name: scaled, op: add, inputs: [dw_act, gate], when: se}
      - {name: project, op: conv, out: out, kernel: 1, bias: false}
      - {name: res, op: add, inputs: [project, input], when: "stride == 1 and block_in_channels == out"}
layers:
  - {name: stem, op: conv, out: 8, kernel: 3}
  - {name: b1, block: bneck, out: 8, exp: 8}
  - {name: b2, block: bneck, out: 16, exp: 32, stride: 2, act: relu6}
  - {name: b3, block: bneck, out: 16, exp: 32, repeat: 2, start: 0, se: use_se}
"""


def test_when_skips_layers_and_readers_read_the_input(write_spec):
    """b1: exp == in (8), so no expansion; out == in and stride 1, so the residual add exists.

    b2: exp 32 != 8, so expand + expand_act (relu6, from act); stride 2, so no residual.
    b3 (se): pool, fc, gate, scaled exist; out 16 == in 16 at stride 1: residual exists.
    """
    path = write_spec("bneck.yaml", BNECK)
    names = _names(path)
    b1 = [n for n in names if n.startswith("encoder.b1.")]
    assert b1 == ["encoder.b1.dw", "encoder.b1.dw_act", "encoder.b1.project", "encoder.b1.res"]
    a = analyze(path)
    graph = a.graph
    check(graph)
    # The absent expand_act is b1.dw's input: dw reads the stem instead.
    assert graph.node("encoder.b1.dw").inputs == ("encoder.stem",)
    assert graph.node("encoder.b2.expand_act").op == "relu6"
    assert graph.node("encoder.b2.dw_act").op == "relu6"
    assert graph.node("encoder.b1.dw_act").op == "relu"
    assert "encoder.b2.res" not in graph and "encoder.b2.pool" not in graph
    # start: 0 numbers the copies .0 and .1; 'b3' alone still means the last copy.
    assert "encoder.b3.0.scaled" in graph and "encoder.b3.1.res" in graph
    assert a.graph.output == "encoder.b3.1.res"
    # The SE branch switched off from the file parameter: scaled is absent, so project reads dw_act.
    off = analyze(path, encoder_params={"use_se": False})
    assert "encoder.b3.0.pool" not in off.graph
    assert off.graph.node("encoder.b3.0.project").inputs == ("encoder.b3.0.dw_act",)
    # Each SE adds gap (0) + a 32->32 1x1 conv with bias on a 1x1 map: 32*32 MACs and 32*32+32 params.
    assert a.audit.macs - off.audit.macs == 2 * 32 * 32
    assert a.audit.params - off.audit.params == 2 * (32 * 32 + 32)


def test_op_parameter_forwarded_through_a_file_parameter(write_spec):
    """``op: act`` with the block default relu; a file parameter forwards another op name."""
    path = write_spec("act.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        params: {nonlin: relu6}
        blocks:
          unit:
            params: {act: relu}
            layers:
              - {name: c, op: conv, out: 4, kernel: 1}
              - {name: a, op: act}
        layers:
          - {name: u1, block: unit}
          - {name: u2, block: unit, act: nonlin}
        """)
    g = analyze(path).graph
    assert g.node("encoder.u1.a").op == "relu"
    assert g.node("encoder.u2.a").op == "relu6"
    g = analyze(path, encoder_params={"nonlin": "prelu"}).graph
    assert g.node("encoder.u2.a").op == "prelu"


def test_op_parameter_errors_are_located_where_the_value_was_written(write_spec):
    path = write_spec("act.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        blocks:
          unit:
            params: {act: relu}
            layers:
              - {name: a, op: act, inplace: true, init: 0.1}
        layers:
          - {name: u1, block: unit, act: rleu6}
          - {name: u2, block: unit, act: 3}
          - {name: u3, block: unit, act: prelu}
          - {name: u4, block: unit}
        """)
    errors = _errors(path)
    text = "\n".join(d.render() for d in errors)
    typo = next(d for d in errors if "unknown op 'rleu6'" in d.message)
    assert (typo.loc.line, typo.loc.col) == (10, 34) and "did you mean 'relu6'" in typo.hint
    number = next(d for d in errors if "holds 3, not an op name" in d.message)
    assert (number.loc.line, number.loc.col) == (11, 34)
    # prelu has 'init' but no 'inplace'; relu (the default) has 'inplace' but no 'init'.
    prelu = next(d for d in errors if "unknown field 'inplace' in op 'prelu'" in d.message)
    assert (prelu.loc.line, prelu.loc.col) == (8, 28)
    assert any("comes from parameter 'act'" in n for n in prelu.notes)
    assert "unknown field 'init' in op 'relu'" in text
    assert len(errors) == 4, text


def test_unknown_op_name_that_is_no_parameter_is_a_schema_error(write_spec):
    """Reported with the other schema errors, with a suggestion among ops and parameters."""
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        blocks:
          unit:
            params: {activation: relu}
            layers:
              - {op: activaton}
        layers:
          - {name: u1, block: unit}
          - {op: conv, out: 4, kernal: 1}
        """)
    errors = _errors(path)
    # The misspelt field gives two errors ('kernal' unknown, 'kernel' missing): all in one run.
    assert len(errors) == 3, [d.render() for d in errors]
    op = next(d for d in errors if "unknown op 'activaton'" in d.message)
    assert (op.loc.line, op.loc.col) == (8, 14) and "'activation'" in op.hint


def test_when_false_note_on_the_error_it_causes(write_spec):
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        params: {widen: false}
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3}
          - {name: wide, op: conv, out: 16, kernel: 1, when: widen}
          - {name: other, op: conv, input: stem, out: 16, kernel: 1}
          - {name: sum, op: add, inputs: [wide, other]}
        """)
    (err,) = _errors(path)
    assert (err.loc.line, err.loc.col) == (9, 5)
    assert any("'wide' is absent (skipped by its 'when:' at" in n and ":7:54" in n
               and "'sum' reads 'stem'" in n for n in err.notes), err.render()


def test_when_must_be_boolean_and_may_use_channels(write_spec):
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3}
          - {name: a, op: relu, when: "in_channels + 1"}
        """)
    (err,) = _errors(path)
    assert "'when' must be true or false, got 9" in err.message and (err.loc.line, err.loc.col) == (6, 31)


def test_when_false_on_a_multi_input_layer_passes_its_first_input_and_prunes_the_rest(write_spec):
    """``gate`` fed only the skipped ``mixed``: it is left out (with a warning) and not counted."""
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        params: {mix: false}
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3}
          - {name: gate, op: conv, out: 8, kernel: 1}
          - {name: mixed, op: add, inputs: [stem, gate], when: mix}
          - {name: last, op: relu}
        """)
    a = analyze(path)
    assert [n.name for n in a.graph.nodes] == ["encoder.stem", "encoder.last"]
    assert a.graph.node("encoder.last").inputs == ("encoder.stem",)
    warning = next(w for w in a.warnings if "gate" in w.message)
    assert "never used" in warning.message and any("absent" in n for n in warning.notes)
    assert a.audit.params == 3 * 3 * 3 * 8 + 8


def test_repeat_zero_and_when_false_on_a_block_use(write_spec):
    """Both make the layer/use absent: readers (and the output) read its input."""
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        params: {extra: 0}
        blocks:
          unit:
            layers:
              - {op: conv, out: 4, kernel: 1}
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3}
          - {name: more, op: relu, repeat: extra}
          - {name: u, block: unit, when: "extra > 0"}
          - {name: v, block: unit, repeat: extra}
          - {name: last, op: relu}
        taps: {t: v}
        """)
    a = analyze(path)
    assert [n.name for n in a.graph.nodes] == ["encoder.stem", "encoder.last"]
    assert a.graph.node("encoder.last").inputs == ("encoder.stem",)
    assert a.graph.tap("t").node == "encoder.stem"
    b = analyze(path, encoder_params={"extra": 2})
    assert "encoder.more.2" in b.graph and "encoder.u.conv" in b.graph
    assert "encoder.v.2.conv" in b.graph


def test_block_use_when_must_not_depend_on_channels(write_spec):
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        blocks:
          unit:
            layers:
              - {op: conv, out: 4, kernel: 1}
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3}
          - {name: u, block: unit, when: "in_channels > 4"}
        """)
    errors = _errors(path)
    assert errors and all((d.loc.line, d.loc.col) == (10, 34) for d in errors), errors
    assert any("in_channels" in d.message for d in errors)


def test_named_block_inputs(write_spec):
    """``inputs: [x, skip]``: bound in order; ``skip.channels`` is the second input's channels (4)."""
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        blocks:
          fuse:
            inputs: [x, skip]
            params: {out: ~}
            layers:
              - {name: proj, op: conv, input: skip, out: "x.channels", kernel: 1}
              - {name: sum, op: add, inputs: [x, proj]}
              - {name: mix, op: conv, out: "out + skip.channels + block_in_channels", kernel: 1}
        layers:
          - {name: a, op: conv, out: 8, kernel: 3}
          - {name: b, op: conv, input: input, out: 4, kernel: 1}
          - {name: f, block: fuse, out: 2, inputs: [a, b]}
          - {name: g, block: fuse, out: 2, inputs: [f, b], repeat: 2}
        """)
    a = analyze(path)
    g = a.graph
    assert g.node("encoder.f.proj").inputs == ("encoder.b",)
    assert g.node("encoder.f.sum").inputs == ("encoder.a", "encoder.f.proj")
    assert a.resolved.types["encoder.f.mix"].channels == 2 + 4 + 8
    # The second copy reads the first copy's output as x and keeps b as skip.
    assert g.node("encoder.g.2.sum").inputs == ("encoder.g.1.mix", "encoder.g.2.proj")
    assert g.node("encoder.g.2.proj").inputs == ("encoder.b",)


def test_named_block_input_count_errors(write_spec):
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        blocks:
          fuse:
            inputs: [x, skip]
            layers:
              - {op: add, inputs: [x, skip]}
          plain:
            layers:
              - {op: relu}
        layers:
          - {name: a, op: conv, out: 8, kernel: 3}
          - {name: f1, block: fuse, inputs: [a]}
          - {name: f2, block: fuse}
          - {name: p, block: plain, inputs: [a, a]}
        """)
    errors = _errors(path)
    got = sorted((d.loc.line, d.loc.col, d.message) for d in errors)
    assert [(l, c) for l, c, _ in got] == [(14, 37), (15, 5), (16, 37)], got
    assert "takes 2 inputs (x, skip), got 1" in got[0][2]
    assert "takes 2 inputs (x, skip), got none" in got[1][2]
    assert "takes 1 input (input), got 2" in got[2][2]


def test_start_names_and_index(write_spec):
    """``start: 0`` renames the copies (.0, .1); ``i`` stays 0-based. With repeat 1, still numbered."""
    path = write_spec("x.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        blocks:
          unit:
            layers:
              - {name: c, op: conv, out: "4 * (i + 1)", kernel: 1}
        layers:
          - {name: s, block: unit, repeat: 2, start: 0}
          - {name: t, block: unit, start: 5}
        """)
    a = analyze(path)
    assert [n.name for n in a.graph.nodes] == ["encoder.s.0.c", "encoder.s.1.c", "encoder.t.5.c"]
    assert [a.resolved.types[n].channels for n in ("encoder.s.0.c", "encoder.s.1.c")] == [4, 8]


META_AUX = """
kind: meta
name: aux_head
requires: [stride8, stride16]
layers:
  - {name: score, op: conv, input: encoder.stride16, out: num_classes, kernel: 1}
  - {name: logits, op: upsample, scale: 16}
  - {name: aux_conv, op: conv, input: encoder.stride8, out: 8, kernel: 3, bias: false}
  - {name: aux_logits, op: conv, out: num_classes, kernel: 1}
  - {name: side, op: conv, input: encoder.stride8, out: 4, kernel: 1}
  - {name: side_logits, op: conv, out: num_classes, kernel: 1}
outputs: {out: logits, aux: aux_logits, side: side_logits}
"""


def _aux_model(write_spec, specs_dir) -> Path:
    write_spec("meta.yaml", META_AUX)
    return write_spec("model.yaml", f"""
        kind: model
        name: aux_model
        encoder: {specs_dir / 'encoders' / 'mobilenet_v1.yaml'}
        meta: meta.yaml
        num_classes: 3
        input: [64, 64]
        """)


def test_outputs_and_head_costs(write_spec, specs_dir):
    """Heads sum to the total; aux's own cost is its 3x3 conv on the stride-8 map plus the 1x1.

    stride8 of MobileNet v1 has 256 channels at 8x8: aux_conv 256*8*9*64 = 1,179,648 MACs,
    aux_logits 8*3*64 = 1,536 MACs; side 256*4*64 + 4*3*64 = 66,304 MACs.
    """
    path = _aux_model(write_spec, specs_dir)
    a = analyze(path)
    assert a.graph.outputs == (("out", "head.logits"), ("aux", "head.aux_logits"),
                               ("side", "head.side_logits"))
    assert a.graph.output == "head.logits"
    heads = {h.name: h for h in a.audit.heads}
    assert [h.role for h in a.audit.heads] == ["main", "auxiliary", "auxiliary"]
    assert heads["aux"].macs == 256 * 8 * 9 * 64 + 8 * 3 * 64
    assert heads["side"].macs == 256 * 4 * 64 + 4 * 3 * 64
    assert sum(h.macs for h in a.audit.heads) == a.audit.macs
    assert sum(h.params for h in a.audit.heads) == a.audit.params
    main = analyze(path, outputs="main")
    assert main.graph.outputs == () and main.audit.heads == ()
    assert main.audit.macs == heads["out"].macs and main.audit.params == heads["out"].params
    assert "head.aux_conv" not in main.graph
    assert not [w for w in main.warnings if "never used" in w.message]


def test_flops_cli_reports_heads(write_spec, specs_dir, capsys):
    import json

    path = _aux_model(write_spec, specs_dir)
    assert main(["flops", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in data["outputs"]] == ["out", "aux", "side"]
    assert sum(o["macs"] for o in data["outputs"]) == data["macs"]
    assert main(["flops", str(path)]) == 0
    text = capsys.readouterr().out
    assert "auxiliary" in text and "side" in text
    assert main(["flops", str(path), "--outputs", "main", "--json"]) == 0
    data_main = json.loads(capsys.readouterr().out)
    assert "outputs" not in data_main and data_main["macs"] == data["outputs"][0]["macs"]
    assert main(["shapes", str(path)]) == 0
    assert "outputs: out=head.logits" in capsys.readouterr().out


def test_output_and_outputs_together_is_an_error(write_spec):
    path = write_spec("meta.yaml", META_AUX + "output: logits\n")
    errors = _errors(path)
    assert len(errors) == 1 and "give 'output' or 'outputs', not both" in errors[0].message
    assert (errors[0].loc.line, errors[0].loc.col) == (11, 1)


def test_outputs_unknown_layer(write_spec):
    path = write_spec("meta.yaml", META_AUX.replace("aux: aux_logits", "aux: aux_logit"))
    (err,) = _errors(path)
    assert "unknown layer 'aux_logit'" in err.message and "'aux_logits'" in err.hint
    assert (err.loc.line, err.loc.col) == (11, 29)


def test_analyze_rejects_a_bad_outputs_value(write_spec, specs_dir):
    path = _aux_model(write_spec, specs_dir)
    with pytest.raises(SpecError, match="'all' or 'main'"):
        analyze(path, outputs="aux")


def test_op_parameter_forwarded_through_nested_blocks(write_spec):
    """``act: act`` forwards the outer use's op name to the inner block; defaults apply elsewhere."""
    path = write_spec("nest.yaml", """
        kind: encoder
        name: nest
        input: [16, 16]
        blocks:
          inner:
            params: {act: relu}
            layers:
              - {name: c, op: conv, out: 4, kernel: 1}
              - {name: a, op: act}
          outer:
            params: {act: relu}
            layers:
              - {name: x, block: inner, act: act}
              - {name: y, block: inner}
        layers:
          - {name: o1, block: outer, act: relu6}
          - {name: o2, block: outer}
        """)
    g = analyze(path).graph
    assert [g.node(f"encoder.{n}.a").op for n in ("o1.x", "o1.y", "o2.x", "o2.y")] == [
        "relu6", "relu", "relu", "relu"]


# ---------------------------------------------------------------- property: absent == deleted

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_LAYER_KINDS = ("{op: conv, out: 6, kernel: 3}", "{op: conv, out: 4, kernel: 1, stride: 2}",
                "{op: bn}", "{op: relu6}", "{op: maxpool, kernel: 2}")


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=st.lists(st.tuples(st.sampled_from(_LAYER_KINDS), st.booleans()), min_size=1, max_size=6),
       use_repeat=st.booleans())
def test_absent_layers_equal_deleted_layers(write_spec, chain, use_repeat):
    """A block's chain with some layers made absent (``when: false`` or ``repeat: 0``) has
    exactly the audit of the same chain with those layers deleted."""
    def spec(keep_all: bool) -> str:
        items = []
        for k, (layer, present) in enumerate(chain):
            if not present and not keep_all:
                continue
            flag = "" if present or not keep_all else (
                ", repeat: 0" if use_repeat else ", when: false")
            items.append(f"      - {{name: l{k}, {layer[1:-1]}{flag}}}")
        body = "\n".join(items) or "      - {name: only, op: identity}"
        return ("kind: encoder\nname: p\ninput: [16, 16]\nblocks:\n  chain:\n    layers:\n" + body
                + "\n      - {name: tail, op: identity}\nlayers:\n"
                + "  - {name: stem, op: conv, out: 5, kernel: 3}\n  - {name: c, block: chain}\n")
    with_flags = analyze(write_spec("flags.yaml", spec(True)))
    deleted = analyze(write_spec("deleted.yaml", spec(False)))
    strip = lambda a: [(r.op, r.output_shape, r.params, r.macs, r.tf_flops)  # noqa: E731
                       for r in a.audit.layers if r.op != "identity"]
    assert strip(with_flags) == strip(deleted)
    assert with_flags.audit.output_shape == deleted.audit.output_shape
