"""TopFormer-T's spec files audited without torch (tests/torch/test_topformer.py compares them with
the hand-written reference of the authors' code, outputs included).

The pyramid pooling is the part written differently from the authors' code: they pool every tap to
``(H - 1) // c2t_stride + 1`` of the LAST tap's height, while each ``adaptive_avgpool`` of the spec
computes its size from its own input. The two agree at every input size because every stride-2
conv of the pyramid maps H to ceil(H / 2); checked here over a range of odd and even sizes.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from rtseg_compiler.pipeline import analyze

MODEL = Path(__file__).resolve().parents[2] / "specs" / "models" / "topformer_tiny.yaml"


def test_parameters_macs_and_taps_at_512():
    analysis = analyze(MODEL)
    assert analysis.input_size == (512, 512)
    assert analysis.audit.params == 1_389_654
    assert analysis.audit.macs == 534_110_208
    types, graph = analysis.resolved.types, analysis.graph
    for name, shape in [("stride8", "128x64x64"), ("stride16", "128x32x32"), ("stride32", "128x16x16")]:
        assert str(types[graph.tap(name).node]) == shape
        assert types[graph.tap(name).node].stride == Fraction(name.removeprefix("stride"))
    assert str(types["encoder.tokens"]) == "208x8x8"
    assert str(analysis.resolved.output) == "150x64x64"


@pytest.mark.parametrize("size", [(97, 131), (100, 150), (225, 64), (383, 509)])
def test_every_tap_pools_to_the_authors_size(size):
    analysis = analyze(MODEL, size)
    types = analysis.resolved.types
    last = types[analysis.graph.node("encoder.pool32").inputs[0]]  # the stride-32 tap, layer.9
    assert last.stride == 32
    want = ((last.height - 1) // 2 + 1, (last.width - 1) // 2 + 1)
    for pool in ("pool4", "pool8", "pool16", "pool32"):
        assert (types[f"encoder.{pool}"].height, types[f"encoder.{pool}"].width) == want
