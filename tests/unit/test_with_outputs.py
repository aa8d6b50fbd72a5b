"""``pipeline.with_outputs`` narrows an analysis to some of its outputs without inferring shapes again;
the result must be what analysing the narrowed graph from the start gives (create_model's
``features_only`` relies on it to analyse a backbone once)."""

from __future__ import annotations

import pytest

from conftest import SPECS
from rtseg_compiler.pipeline import analyze_graph, load_graph, with_outputs


@pytest.mark.parametrize("spec, output_stride", [("encoders/resnet18.yaml", None),
                                                 ("encoders/mobilenet_v3_large.yaml", 8),
                                                 ("models/bisenet_v1_resnet18.yaml", 16)])
def test_narrowing_equals_analysing_the_narrowed_graph(spec: str, output_stride: int | None) -> None:
    graph = load_graph(SPECS / spec)
    encoder = graph.replace(nodes=tuple(n for n in graph.nodes if n.part == "encoder"), num_classes=None)
    size = (96, 128)
    every = analyze_graph(encoder.replace(outputs=tuple((t.name, t.node) for t in graph.taps),
                                          output=graph.taps[0].node), size, output_stride=output_stride)
    taps = [t for t in graph.taps if t.node in every.resolved.types]  # as create_model's taps: present layers
    for chosen in (taps[:1], taps[1:3], taps[-1:]):
        outputs = tuple((t.name, t.node) for t in chosen)
        files = {"encoder": graph.files["encoder"]}
        narrowed = with_outputs(every, outputs, files)
        # An encoder analysed alone keeps every layer a tap reads (link's keep_taps), so the narrowed
        # graph to analyse afresh declares only the taps on layers the chosen outputs still need.
        # (A tap on an absent layer stands on the layer that replaced it: every.graph.taps says which.)
        needed = {n.name for n in narrowed.graph.nodes}
        placed = {t.name: t.node for t in every.graph.taps}
        fresh = analyze_graph(encoder.replace(outputs=outputs, output=outputs[0][1], files=files,
                                              taps=tuple(t for t in graph.taps if placed.get(t.name) in needed)),
                              size, output_stride=output_stride)
        assert narrowed.audit == fresh.audit
        assert narrowed.graph.nodes == fresh.graph.nodes and narrowed.graph.taps == fresh.graph.taps
        assert dict(narrowed.resolved.types) == dict(fresh.resolved.types)
    shallow = min(taps, key=lambda t: every.resolved.types[t.node].stride)
    assert len(with_outputs(every, ((shallow.name, shallow.node),)).graph.nodes) < len(every.graph.nodes)
