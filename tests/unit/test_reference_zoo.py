"""Fast-SCNN and BiSeNet V1 spec files, audited without torch.

The parameter counts are those of the hand-written references in tests/reference/
(tests/torch/test_reference_networks.py checks spec and reference against each other, layer
by layer, with outputs equal); here they pin the torch-free audit, together with the
structure each paper's tables give: Fast-SCNN's taps (Poudel et al. 2019, Table 1) and
BiSeNet's split between its ResNet-18 context path and the rest.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from rtseg_compiler.pipeline import analyze

SPECS = Path(__file__).resolve().parents[2] / "specs"
FAST_SCNN = SPECS / "models" / "fast_scnn.yaml"
BISENET = SPECS / "models" / "bisenet_v1_resnet18.yaml"


def _encoder_params(analysis) -> int:
    return sum(layer.params for layer in analysis.audit.layers if layer.name.startswith("encoder."))


def test_fast_scnn_parameters_and_taps():
    """1,138,051 parameters at 19 classes (the paper reports 1.11 million); Table 1's sizes."""
    analysis = analyze(FAST_SCNN)
    assert analysis.audit.params == 1_138_051
    assert analysis.input_size == (1024, 2048)
    types = analysis.resolved.types
    graph = analysis.graph
    # Table 1: 64 x 128 x 256 after learning to downsample, 128 x 32 x 64 after the PPM.
    assert str(types[graph.tap("stride8").node]) == "64x128x256"
    assert str(types[graph.tap("stride32").node]) == "128x32x64"
    assert types[graph.tap("stride32").node].stride == Fraction(32)
    assert str(analysis.resolved.output) == "19x1024x2048"


def test_fast_scnn_any_input_size():
    """100 -> 50 -> 25 -> 13 -> 7 -> 4: the FFM resizes to the stride-8 map, so no size is refused."""
    analysis = analyze(FAST_SCNN, input_size=(100, 164))
    assert str(analysis.resolved.output) == "19x100x164"
    assert analysis.audit.params == 1_138_051


def test_bisenet_parameters_split():
    """ResNet-18 without its classifier is 11,176,512 parameters (torchvision's 11,689,512 minus
    the 513,000 of its 1000-way fc); the spatial path, ARMs, FFM and heads add the rest."""
    analysis = analyze(BISENET)
    assert _encoder_params(analysis) == 11_176_512
    assert str(analysis.resolved.output) == "19x1024x2048"
    assert [name for name, _ in analysis.graph.outputs] == ["out", "aux16", "aux32"]
    assert analysis.audit.params == 13_392_384


def test_bisenet_main_output_drops_aux_heads():
    """Each auxiliary head is a 3x3 conv 128 -> 64 + BN and a 1x1 conv 64 -> 19:
    73,728 + 128 + 1,216 = 75,072 parameters, so 150,144 for the two."""
    full = analyze(BISENET, input_size=(100, 164))
    main = analyze(BISENET, input_size=(100, 164), outputs="main")
    assert full.audit.params - main.audit.params == 2 * (128 * 64 * 9 + 2 * 64 + 64 * 19) == 150_144
    assert main.audit.params == 13_242_240
    assert main.audit.flops < full.audit.flops
    assert _encoder_params(main) == _encoder_params(full)
