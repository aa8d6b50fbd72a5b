"""Typed carriers between passes: block-use origins, the graph's encoder/meta facts, and the
invariant check that runs between passes under ``RTSEGC_CHECK=1``. No torch."""

from __future__ import annotations

import importlib

import pytest

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ir import BlockUse
from rtseg_compiler.pipeline import analyze, load_graph
from rtseg_compiler.spec.load import load_spec_file

# The module, not the function ``rtseg_compiler.passes.check`` that the package exports.
check_module = importlib.import_module("rtseg_compiler.passes.check")

BLOCKS = """
    kind: encoder
    name: e
    input: [16, 16]
    blocks:
      inner:
        params: {out: ~}
        layers:
          - {name: c, op: conv, out: out, kernel: 1}
      outer:
        params: {out: ~}
        layers:
          - {name: i, block: inner, out: out}
    layers:
      - {name: stem, op: conv, out: 8, kernel: 3}
      - {name: u, block: outer, out: OUT}
    """


def test_origin_holds_block_uses_innermost_first(write_spec):
    path = write_spec("enc.yaml", BLOCKS.replace("OUT", "4"))
    node = load_graph(path).node("encoder.u.i.c")
    assert [use.block for use in node.origin] == ["inner", "outer"]
    assert all(isinstance(use, BlockUse) for use in node.origin)
    assert node.origin[1].loc.line == 15  # the use of 'outer' in the top-level list
    assert node.origin[0].loc.line == 12  # the use of 'inner' inside 'outer'


def test_block_uses_become_notes_only_in_diagnostics(write_spec):
    """The note text is the record's: 'in block NAME used at FILE:LINE:COL'."""
    path = write_spec("enc.yaml", BLOCKS.replace("OUT", "0"))
    with pytest.raises(SpecError) as err:
        analyze(path)
    (error,) = err.value.errors
    node = load_graph(write_spec("ok.yaml", BLOCKS.replace("OUT", "4"))).node("encoder.u.i.c")
    assert [n for n in error.notes if n.startswith("in block")] == [
        f"in block '{use.block}' used at {str(use.loc).replace('ok.yaml', 'enc.yaml')}"
        for use in node.origin]


def test_the_model_graph_carries_the_metas_facts(specs_dir):
    model = specs_dir / "models" / "deeplabv3_resnet50.yaml"
    meta = load_spec_file(specs_dir / "meta" / "deeplabv3.yaml")
    graph = load_graph(model)
    assert graph.meta_output_stride == meta["output_stride"]
    assert graph.meta_requires == tuple(meta.get("requires") or ())
    assert graph.encoder_output is not None and graph.encoder_output in graph
    assert graph.node(graph.encoder_output).part == "encoder"
    assert not hasattr(graph, "info")


def test_an_encoder_graph_ends_the_encoder_at_its_output(write_spec):
    graph = load_graph(write_spec("enc.yaml", BLOCKS.replace("OUT", "4")))
    assert graph.encoder_output == graph.output == "encoder.u.i.c"
    assert graph.meta_output_stride is None and graph.meta_requires == ()


# --------------------------------------------------------------------------- check between passes

def test_the_suite_runs_with_the_check_on():
    assert check_module.checking()


@pytest.mark.parametrize("setting,expected", [("1", True), ("0", False)])
def test_check_runs_between_passes_only_when_asked(write_spec, monkeypatch, setting, expected):
    seen: list[str] = []
    real_check = check_module.check
    monkeypatch.setattr(check_module, "check",
                        lambda graph, **kw: seen.append(graph.name) or real_check(graph, **kw))
    monkeypatch.setenv("RTSEGC_CHECK", setting)
    analyze(write_spec("enc.yaml", BLOCKS.replace("OUT", "4")))
    assert bool(seen) is expected
    if expected:  # after expand, link and infer_shapes at least
        assert len(seen) >= 3


def test_link_leaves_out_the_taps_of_layers_it_leaves_out(write_spec, specs_dir):
    """MobileNet v1 under a head that reads only stride8: the stride-32 layers are not needed,
    and neither is their tap (a dangling tap failed check() after link)."""
    write_spec("meta.yaml", """
        kind: meta
        name: shallow
        requires: [stride8]
        layers:
          - {name: score, op: conv, input: encoder.stride8, out: num_classes, kernel: 1}
        """)
    path = write_spec("model.yaml", f"""
        kind: model
        name: shallow_mobilenet
        encoder: {specs_dir / 'encoders' / 'mobilenet_v1.yaml'}
        meta: meta.yaml
        num_classes: 3
        input: [64, 64]
        """)
    full = load_graph(path)
    a = analyze(path)
    kept = {t.name for t in a.graph.taps}
    assert "stride8" in kept and kept < {t.name for t in full.taps}
    assert all(t.node in a.graph for t in a.graph.taps)
