"""``rtsegc visualize``: the diagram model, the DOT text and the command. No torch.

The numbers on a picture must be the audit's: every box's tooltip states its output shape and its
exact parameter and MAC counts, and these are checked against ``analyze`` for every zoo model, at
every level of detail. The block view of SkipNet-MobileNet and UNet-ResNet18 is held byte for
byte to golden files (tests/golden/); after an intended change, regenerate them with
``RTSEGC_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_diagram.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SPECS
from rtseg_compiler import analyze
from rtseg_compiler.cli import main
from rtseg_compiler.emit.diagram import DETAILS, attr_text, block_use, build_diagram
from rtseg_compiler.emit.dot import HEAT_BINS, diagram_dot, emit_dot, heat_color

ZOO = sorted(SPECS.glob("models/*.yaml")) + [SPECS / "baselines" / "enet.yaml",
                                              SPECS / "baselines" / "segnet.yaml"]
GOLDEN = REPO_ROOT / "tests" / "golden"
SKIPNET = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
UNET = SPECS / "models" / "unet_resnet18.yaml"

_NODE = re.compile(r'^\s*"([^"]+)" \[label=<.*tooltip="([^"]*)"\]$')
_FACTS = re.compile(r"output (\d+)x(\d+)x(\d+), stride ([0-9/|]+); params ([\d,]+); MACs ([\d,]+)")

_cache: dict = {}


def _analysis(path: Path, **kw):
    key = (path, tuple(sorted(kw.items())))
    if key not in _cache:
        _cache[key] = analyze(path, **kw)
    return _cache[key]


def _dot_nodes(text: str) -> dict[str, tuple[str, int, int]]:
    """Box id -> (output shape, params, MACs), read back from the DOT tooltips."""
    out = {}
    for line in text.splitlines():
        m = _NODE.match(line)
        if not m or m.group(1) == "input":
            continue
        facts = _FACTS.search(m.group(2))
        assert facts, line
        c, h, w, _, params, macs = facts.groups()
        out[m.group(1)] = (f"{c}x{h}x{w}", int(params.replace(",", "")), int(macs.replace(",", "")))
    return out


# --------------------------------------------------------------------------- numbers equal the audit

@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_block_view_numbers_equal_the_audit_and_fit_in_60_boxes(path):
    a = _analysis(path)
    text = diagram_dot(a, "block")
    diagram = build_diagram(a, "block")
    rows = {row.name: row for row in a.audit.layers}
    nodes = _dot_nodes(text)
    assert len(nodes) == len(diagram.boxes) - 1 < 60
    covered = []
    for box in diagram.boxes[1:]:
        covered += box.members
        shape, params, macs = nodes[box.id]
        assert params == sum(rows[m].params for m in box.members)
        assert macs == sum(rows[m].macs for m in box.members)
        # The box's output is a member's output; a block's is the one read outside it.
        assert shape in {"x".join(map(str, rows[m].output_shape)) for m in box.members}
    assert sorted(covered) == sorted(rows), "every layer is drawn exactly once"
    assert sum(p for _, p, _ in nodes.values()) == a.audit.params
    assert sum(m for _, _, m in nodes.values()) == a.audit.macs


@pytest.mark.parametrize("detail", DETAILS)
def test_every_level_of_detail_sums_to_the_totals(detail):
    a = _analysis(UNET)
    nodes = _dot_nodes(diagram_dot(a, detail))
    assert sum(p for _, p, _ in nodes.values()) == a.audit.params
    assert sum(m for _, _, m in nodes.values()) == a.audit.macs


def test_op_view_is_one_box_per_layer_with_its_audit_row():
    a = _analysis(SKIPNET)
    nodes = _dot_nodes(diagram_dot(a, "op"))
    assert len(nodes) == len(a.audit.layers) == 92
    for row in a.audit.layers:
        assert nodes[row.name] == ("x".join(map(str, row.output_shape)), row.params, row.macs)


# --------------------------------------------------------------------------- grouping

def test_block_view_folds_repeats_and_chains():
    d = build_diagram(_analysis(SKIPNET), "block")
    boxes = {b.title: b for b in d.boxes}
    # ds7_11 is 'repeat: 5' of dwsep: one box, 30 layers, all five uses' cost.
    assert boxes["ds7_11"].repeat == 5 and boxes["ds7_11"].block == "dwsep"
    assert len(boxes["ds7_11"].members) == 30
    # The stem conv with its bn and relu reads as one chain box.
    assert boxes["conv1"].kind == "chain"
    assert boxes["conv1"].members == ("encoder.conv1", "encoder.conv1_bn", "encoder.conv1_relu")
    assert boxes["conv1"].summary == ("conv 3x3 /2 +bn+relu",)
    assert boxes["ds2"].summary == ("conv 3x3 /2 dw", "conv 1x1")
    assert boxes["ds13"].taps == ("stride32",)
    assert len(d.boxes) == 22  # input + 10 encoder boxes + 11 decoder layers, from 92 layers


def test_tapped_use_inside_a_repeat_is_not_folded(write_spec):
    """layer1 (basic x 2) folds in ResNet-18; a use another layer reads stays its own box."""
    d = build_diagram(_analysis(UNET), "block")
    assert {b.title: b.repeat for b in d.boxes}["layer1"] == 2
    enet = build_diagram(_analysis(SPECS / "baselines" / "enet.yaml"), "block")
    titles = [b.title for b in enet.boxes]
    # b1_0 holds the tapped max-pool indices (pool1); stage1's four identical uses fold.
    assert "b1_0" in titles and {b.title: b.repeat for b in enet.boxes}["stage1"] == 4
    # Unpool reads the indices: a dashed 'extra' link from the encoder's b1_0.
    assert any(link.extra and link.tap == "pool1" for link in enet.links)


def test_stage_view_is_one_box_per_part_and_stride():
    a = _analysis(UNET)
    d = build_diagram(a, "stage")
    titles = [b.title for b in d.boxes[1:]]
    assert titles == ["encoder stride 2", "encoder stride 4", "encoder stride 8", "encoder stride 16",
                      "encoder stride 32", "decoder stride 32", "decoder stride 16", "decoder stride 8",
                      "decoder stride 4", "decoder stride 2", "decoder stride 1"]


def test_block_use_parses_names_and_origins():
    a = _analysis(SPECS / "baselines" / "enet.yaml")
    g = a.graph
    assert block_use(g.node("encoder.stage2.b3.conv_a")) == ("encoder.stage2.b3", "asymmetric")
    assert block_use(g.node("encoder.stage1.4.sum")) == ("encoder.stage1.4", "regular")
    assert block_use(g.node("encoder.init_bn")) == (None, "")


def test_block_use_of_a_use_named_by_a_number():
    """STDC1 nests its modules as uses named "0" ... "7" inside the use 'features' (PaddleSeg's
    nn.Sequential keys): 'features.2' is a use, not a repeat index, so each module is one box."""
    g = _analysis(SPECS / "encoders" / "stdc1.yaml").graph
    assert block_use(g.node("encoder.features.2.cat")) == ("encoder.features.2", "stdc_module")
    assert block_use(g.node("encoder.features.0.bn")) == ("encoder.features.0", "conv_bn_relu")


def test_attribute_text_is_generic_over_fields():
    a = _analysis(SPECS / "baselines" / "enet.yaml")
    g, types = a.graph, a.resolved.types
    node = g.node("encoder.stage2.b1.drop")
    # Fields the label does not special-case appear as name=value when not the default.
    assert attr_text(node, [types[i] for i in node.inputs]) == "dropout p=0.1 channelwise"
    conv = g.node("encoder.stage2.b2.conv")
    assert attr_text(conv, [types[i] for i in conv.inputs]) == "conv 3x3 d2"


def test_dilated_layers_are_marked_after_an_output_stride_rewrite():
    a = _analysis(SKIPNET, output_stride=8)
    d = build_diagram(a, "block")
    dilated = {b.title: b.dilations for b in d.boxes if b.dilations}
    assert dilated == {"ds7_11": (2,), "ds12": (2,), "ds13": (4,)}
    text = diagram_dot(a, "block")
    assert "dilated d4" in text and 'penwidth="2.5"' in text
    assert "dilated" not in diagram_dot(_analysis(SKIPNET), "block").split("</TABLE>>", 1)[1]


def test_heat_scale_bins_and_legend():
    assert heat_color(0) == ("#ffffff", "#000000")
    assert heat_color(0.398)[0] == "#e31a1c" and heat_color(0.5)[1] == "#ffffff"
    fills = [heat_color(s)[0] for s in (0.001, 0.007, 0.015, 0.03, 0.07, 0.15, 0.3, 0.6)]
    assert fills == [fill for _, fill, _ in HEAT_BINS[1:]]
    text = diagram_dot(_analysis(SKIPNET), "block")
    header = text.split("\n", 2)[1]
    for _, fill, _ in HEAT_BINS:
        assert f'BGCOLOR="{fill}"' in header
    # ds7_11 holds 39.8% of SkipNet-MobileNet's MACs.
    assert re.search(r'"encoder.ds7_11.1" \[label=<.*39\.8%.*fillcolor="#e31a1c"', text)


def test_header_names_model_architecture_input_and_convention():
    text = diagram_dot(_analysis(SKIPNET), "block", convention="tf")
    header = text.split("\n", 2)[1]
    for expected in ("skipnet_mobilenet_v1", "mobilenet_v1 x skipnet", "input 3x512x1024",
                     "20 classes", "output stride 32", "params 3,369,080", "MACs 6,860,701,696",
                     "convention tf", "13.79"):
        assert expected in header, expected


def test_taps_are_marked_where_the_decoder_reads_them():
    text = diagram_dot(_analysis(SKIPNET), "block")
    assert re.search(r'"encoder.ds5" -> "head.score8" \[label="stride8\\n256x64x128" color="#1f5fa8"', text)
    assert "tap stride16" in text


# --------------------------------------------------------------------------- determinism, golden files

@pytest.mark.parametrize("path", [SKIPNET, UNET], ids=lambda p: p.stem)
def test_block_dot_matches_the_golden_file(path):
    text = diagram_dot(analyze(path), "block")
    assert text == diagram_dot(analyze(path), "block"), "two runs must give the same bytes"
    golden = GOLDEN / f"{path.stem}.block.dot"
    if os.environ.get("RTSEGC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.read_text() == text, (
        f"{golden} is stale: if the change is intended, run RTSEGC_UPDATE_GOLDEN=1 python -m pytest "
        f"tests/unit/test_diagram.py and review the diff")


def test_dot_is_identical_in_a_fresh_interpreter_with_another_hash_seed():
    code = ("import sys; from rtseg_compiler import analyze; from rtseg_compiler.emit.dot import diagram_dot; "
            f"sys.stdout.write(diagram_dot(analyze({str(UNET)!r}), 'block'))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                           env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120).stdout
            for seed in ("1", "2")]
    assert runs[0] == runs[1] == diagram_dot(_analysis(UNET), "block")


def test_emit_dot_keeps_its_old_signature():
    a = _analysis(SKIPNET)
    src = emit_dot(a.resolved).source
    assert src.startswith("digraph") and '"encoder.ds13.pw"' in src  # op detail, as before


# --------------------------------------------------------------------------- the command

def test_visualize_writes_dot_with_detail_and_rankdir(tmp_path, capsys):
    out = tmp_path / "net.dot"
    assert main(["visualize", str(SKIPNET), "--detail", "stage", "--rankdir", "LR", "-o", str(out)]) == 0
    text = out.read_text()
    assert 'rankdir="LR"' in text and "stage view" in text and '"encoder.stride16"' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_svg_parses_as_xml_and_carries_tooltips(tmp_path, capsys):
    out = tmp_path / "net.svg"
    assert main(["visualize", str(UNET), "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    titles = [el.get("{http://www.w3.org/1999/xlink}title") for el in root.iter()
              if el.get("{http://www.w3.org/1999/xlink}title")]
    assert any("encoder.layer1.1.conv1 (conv)" in t and "kernel=3 " in t for t in titles)


def test_rendered_format_without_dot_writes_the_dot_and_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "net.png"
    assert main(["visualize", str(SKIPNET), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert not out.exists() and (tmp_path / "net.dot").read_text().startswith("digraph")
    assert len(err.splitlines()) == 1 and "apt-get install graphviz" in err and "net.dot" in err


def test_visualize_unknown_format_and_unwritable_path_are_usage_errors(tmp_path, capsys):
    assert main(["visualize", str(SKIPNET), "-o", str(tmp_path / "x.txt")]) == 2
    assert "cannot draw to '.txt'" in capsys.readouterr().err
    assert main(["visualize", str(SKIPNET), "-o", str(tmp_path / "missing" / "x.dot")]) == 2
    assert "cannot write" in capsys.readouterr().err


META_TWO_HEADS = """
kind: meta
name: two_heads
requires: [stride8, stride16]
layers:
  - {name: score, op: conv, input: encoder.stride16, out: num_classes, kernel: 1}
  - {name: logits, op: upsample, scale: 16}
  - {name: aux_conv, op: conv, input: encoder.stride8, out: 8, kernel: 3, bias: false}
  - {name: aux_logits, op: conv, out: num_classes, kernel: 1}
outputs: {out: logits, aux: aux_logits}
"""


def test_several_outputs_are_drawn_and_compared(write_spec, specs_dir, tmp_path, capsys):
    write_spec("meta.yaml", META_TWO_HEADS)
    path = write_spec("model.yaml", f"""
        kind: model
        name: two_heads
        encoder: {specs_dir / 'encoders' / 'mobilenet_v1.yaml'}
        meta: meta.yaml
        num_classes: 3
        input: [64, 64]
        """)
    a = analyze(path)
    d = build_diagram(a, "block")
    assert {b.title: b.outputs for b in d.boxes if b.outputs} == {"logits": ("out",), "aux_logits": ("aux",)}
    nodes = _dot_nodes(diagram_dot(a, "block"))
    assert sum(m for _, _, m in nodes.values()) == a.audit.macs
    assert main(["compare", str(path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert [o["name"] for o in row["outputs"]] == ["out", "aux"] and row["macs"] == a.audit.macs


def test_header_output_stride_ignores_gates_off_the_image_grid():
    """MobileNetV3's squeeze-excitation gates pool to 1x1 maps whose 'stride' is the input size;
    the header's output stride is the encoder's grid: 16 for the dilated LR-ASPP encoder."""
    from rtseg_compiler.emit.diagram import output_stride
    from rtseg_compiler.pipeline import analyze

    lraspp = analyze(SPECS / "models" / "lraspp_mobilenet_v3_large.yaml", input_size=(256, 512))
    assert output_stride(lraspp.resolved) == 16
    classifier = analyze(SPECS / "models" / "imagenet_mobilenet_v3_large.yaml")
    assert output_stride(classifier.resolved) == 32
