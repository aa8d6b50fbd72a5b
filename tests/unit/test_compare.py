"""``rtsegc compare``: rows keyed like ``rtsegc flops --json``, peak activation memory, the stage
split, the output styles and the optional plot. No torch (``--bench`` is tested in tests/torch)."""

from __future__ import annotations

import builtins
import csv
import io
import json
import xml.etree.ElementTree as ET
from fractions import Fraction

import pytest

from conftest import SPECS
from rtseg_compiler import analyze
from rtseg_compiler.cli import main
from rtseg_compiler.compare import peak_activation_bytes, stage_split
from rtseg_compiler.ops import REGISTRY

MODELS = sorted(SPECS.glob("models/*.yaml")) + sorted(
    p for p in SPECS.glob("baselines/*.yaml") if p.stem in ("enet", "segnet"))
SKIPNET = SPECS / "models" / "skipnet_mobilenet_v1.yaml"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_json_agrees_with_flops_json_for_every_model(capsys):
    code, out, err = _run(capsys, "compare", *MODELS, "--input", "360x640", "--json", "--convention", "tf")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["spec"] for r in rows] == [str(p) for p in MODELS]
    for path, row in zip(MODELS, rows):
        code, out, err = _run(capsys, "flops", path, "--input", "360x640", "--json", "--convention", "tf")
        assert code == 0, err
        flops = json.loads(out)
        flops.pop("layers")
        assert {k: row[k] for k in flops} == flops, path.stem


def _peak_by_brute_force(a) -> int:
    """Live bytes at every step, recomputed from scratch per step (no interval bookkeeping).

    A storage is the image or a layer's output that is not a view; a view's readers (and its
    being the current layer or an output) keep its base's storage alive."""
    nodes = a.resolved.graph.nodes
    types = a.resolved.types
    outputs = set(a.resolved.graph.output_names)

    def base(name: str) -> str:
        while name != "input" and REGISTRY[a.resolved.graph.node(name).op].output_is_view:
            name = a.resolved.graph.node(name).inputs[0]
        return name

    def readers(name: str, extra: bool) -> list[int]:
        return [j for j, n in enumerate(nodes) for pos, i in enumerate(n.inputs)
                if i == name and (pos in REGISTRY[n.op].extra_inputs) == extra]

    peak = 0
    for k in range(len(nodes)):
        live = 0
        produced = ["input"] + [n.name for n in nodes[:k + 1]]
        for storage in {base(name) for name in produced}:
            views = [name for name in produced if base(name) == storage]
            if any(v in outputs or v == nodes[k].name or any(j >= k for j in readers(v, False))
                   for v in views):
                live += 4 * types[storage].numel
        for name in produced[1:]:
            node = a.resolved.graph.node(name)
            if REGISTRY[node.op].returns_extra(node.attrs):
                if name == nodes[k].name or any(j >= k for j in readers(name, True)):
                    live += 8 * types[name].numel
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("name", ["skipnet_mobilenet_v1", "unet_resnet18", "enet", "segnet", "fast_scnn"])
def test_peak_activation_matches_a_brute_force_schedule(name):
    path = next(p for p in MODELS if p.stem == name)
    a = analyze(path, (64, 96))
    assert peak_activation_bytes(a) == _peak_by_brute_force(a)


def test_peak_activation_of_skipnet_mobilenet_by_hand():
    """At 512x1024 the peak is the first block's pointwise batch norm, at stride 2: its input and
    output (64 channels at 256x512 each) and the image, which the final crop still reads, float32:
    (3 x 512 x 1024 + 2 x 64 x 256 x 512) x 4 bytes = 73,400,320 (70.0 MiB). The final crop's
    output is a slice of the deconv's, so the last layer holds only (3 + 20) x 512 x 1024 x 4."""
    assert peak_activation_bytes(analyze(SKIPNET)) == (3 * 512 * 1024 + 2 * 64 * 256 * 512) * 4 == 73_400_320


def test_stage_split_adds_up():
    a = analyze(SKIPNET)
    split = stage_split(a)
    assert split["encoder"]["macs"] + split["decoder"]["macs"] == a.audit.macs
    assert split["encoder"]["params"] + split["decoder"]["params"] == a.audit.params
    assert sum(split["macs_by_stride"].values()) == a.audit.macs
    assert list(split["macs_by_stride"]) == ["1", "2", "4", "8", "16", "32"]
    # The 16x16/8 deconv is SkipNet's only stride-1 layer with MACs: 20 x 20 x 256 x 64 x 128.
    assert split["macs_by_stride"]["1"] == 20 * 20 * 16 * 16 * 64 * 128
    assert Fraction(split["encoder"]["macs"], a.audit.macs) > Fraction(4, 5)


def test_by_stage_table_markdown_and_csv(capsys):
    code, out, err = _run(capsys, "compare", SKIPNET, SPECS / "models" / "unet_resnet18.yaml",
                          "--by", "stage", "--markdown")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("| model | input | params (M) | GMACs | GFLOPs | peak act. (MiB) | enc GMACs")
    assert lines[2].startswith("| skipnet_mobilenet_v1 | 512x1024 | 3.369 | 6.86 | 13.72 | 70.0 | 5.93 | 0.93")
    code, out, err = _run(capsys, "compare", SKIPNET, "--by", "stage", "--csv", "--input", "360x640",
                          "--input", "512x1024")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["input"] for r in rows] == ["1x3x360x640", "1x3x512x1024"]
    a = analyze(SKIPNET, (360, 640))
    assert int(rows[0]["macs"]) == a.audit.macs and int(rows[0]["params"]) == a.audit.params
    assert sum(int(v) for k, v in rows[0].items() if k.startswith("macs_stride_")) == a.audit.macs


def test_globs_skip_encoders_and_metas_with_a_note(capsys):
    code, out, err = _run(capsys, "compare", *sorted(SPECS.glob("baselines/*.yaml")))
    assert code == 0
    assert "skipping" in err and "enet_encoder.yaml: an encoder spec" in err
    assert "enet_decoder.yaml: a meta spec" in err
    assert out.splitlines()[2].startswith("enet ") and out.splitlines()[3].startswith("segnet ")


def test_a_broken_model_is_reported_and_the_others_still_compared(capsys, write_spec, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: model\nname: bad\nencoder: nowhere.yaml\nmeta: nowhere.yaml\nnum_classes: 2\n")
    code, out, err = _run(capsys, "compare", SKIPNET, bad)
    assert code == 2 and "skipnet_mobilenet_v1" in out and "bad.yaml" in err and "Traceback" not in err


def test_plot_is_refused_clearly_without_matplotlib(capsys, monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = _run(capsys, "compare", SKIPNET, "--plot", tmp_path / "p.svg")
    assert code == 2 and "rtseg-compiler[plot]" in err and not (tmp_path / "p.svg").exists()


def test_plot_draws_an_svg(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.svg"
    code, _, err = _run(capsys, "compare", SKIPNET, SPECS / "models" / "unet_resnet18.yaml", "--plot", out)
    assert code == 0, err
    text = out.read_text()
    ET.fromstring(text)
    assert "skipnet_mobilenet_v1" in text and "stride 32" in text


def test_plot_titles_carry_the_input_size(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.svg"
    code, _, err = _run(capsys, "compare", SKIPNET, "--input", "360x640", "--plot", out)
    assert code == 0, err
    assert "GFLOPs vs parameters at 360x640" in out.read_text()


def test_plot_labels_do_not_overlap_each_other_or_the_points():
    """The doc figure's rows (docs/diagrams.md): ten models, several close together."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rtseg_compiler.compare import place_labels

    paths = [*sorted(SPECS.glob("models/skipnet_*.yaml")), *sorted(SPECS.glob("models/unet_*.yaml")),
             SPECS / "baselines" / "enet.yaml", SPECS / "baselines" / "segnet.yaml"]
    audits = [analyze(p, (360, 640)).audit for p in paths]
    xs, ys = [a.params / 1e6 for a in audits], [2 * a.macs / 1e9 for a in audits]
    fig, ax = plt.subplots(figsize=(6, 5))
    try:
        ax.scatter(xs, ys)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(x=0.25, y=0.15)
        fig.tight_layout()
        texts = place_labels(ax, xs, ys, [p.stem for p in paths])
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in texts]
        points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
        assert len(texts) == len(paths)
        for i, a in enumerate(boxes):
            assert not any(a.overlaps(b) for b in boxes[i + 1:]), texts[i].get_text()
            assert sum(a.contains(*p) for p in points) <= 1, texts[i].get_text()
    finally:
        plt.close(fig)
