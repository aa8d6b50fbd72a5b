"""Zoo entries written after torchvision, against torchvision's published figures. No torch.

torchvision's weight tables give each model's ``num_params`` and ``_ops`` (GMACs, bias
excluded, at the weights' evaluation size: 224x224 for the classifiers, 520x520 for the
segmentation models, auxiliary head included where the weights have one). The specs must
reproduce them from the YAML alone; tests/torch/test_torchvision_equivalence.py then checks
the compiled modules against torchvision's modules tensor by tensor.

Also pinned: the dilation pattern. ResNet-50 at output stride 8 (compiler's generic rule)
is torchvision's replace_stride_with_dilation=[False, True, True]; MobileNetV3's dilated
variant is written in its encoder ('dilated: true') because torchvision dilates the first
block of its last stage as well, where the generic rule keeps its input's rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtseg_compiler.pipeline import analyze

MODELS = Path(__file__).resolve().parents[2] / "specs" / "models"

# model: (input, torchvision num_params, torchvision _ops in GMACs as printed)
PUBLISHED = {
    "imagenet_resnet50": ((224, 224), 25_557_032, "4.089"),
    "imagenet_mobilenet_v3_large": ((224, 224), 5_483_032, "0.217"),
    "deeplabv3_resnet50": ((520, 520), 42_004_074, "178.722"),
    "lraspp_mobilenet_v3_large": ((520, 520), 3_221_538, "2.086"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_ops(name: str) -> None:
    size, params, ops = PUBLISHED[name]
    audit = analyze(MODELS / f"{name}.yaml", size).audit
    assert audit.params == params
    decimals = len(ops.split(".")[1])
    assert round(audit.macs / 1e9, decimals) == float(ops)


def test_deeplabv3_main_output_drops_the_aux_head() -> None:
    """aux_loss=False in torchvision: 39,638,869 parameters (FCNHead(1024, 21) is 2,365,205)."""
    full = analyze(MODELS / "deeplabv3_resnet50.yaml", (64, 64)).audit
    main = analyze(MODELS / "deeplabv3_resnet50.yaml", (64, 64), outputs="main").audit
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21
    assert full.params - main.params == aux == 2_365_205
    assert [h.name for h in full.heads] == ["out", "aux"]


def _dilations(analysis, suffix: str) -> dict[str, int]:
    return {n.name: n.attrs["dilation"][0] for n in analysis.resolved.graph.nodes
            if n.name.endswith(suffix)}


def test_resnet50_output_stride_8_is_torchvisions_dilation() -> None:
    """previous_dilation rule: layer3.0 keeps 1, layer3.1-5 get 2, layer4.0 keeps 2, layer4.1-2 get 4."""
    a = analyze(MODELS / "deeplabv3_resnet50.yaml", (64, 64))
    conv2 = _dilations(a, ".conv2")
    expected = {f"encoder.layer{s}.{b}.conv2": 1 for s, n in ((1, 3), (2, 4)) for b in range(n)}
    expected |= {"encoder.layer3.0.conv2": 1, "encoder.layer4.0.conv2": 2}
    expected |= {f"encoder.layer3.{b}.conv2": 2 for b in range(1, 6)}
    expected |= {f"encoder.layer4.{b}.conv2": 4 for b in range(1, 3)}
    assert conv2 == expected
    strides = {n.name: n.attrs["stride"][0] for n in a.resolved.graph.nodes if n.op == "conv"}
    assert strides["encoder.layer3.0.conv2"] == strides["encoder.layer4.0.downsample"] == 1
    assert a.resolved.types["encoder.layer4.2.relu"].stride == 8


def test_mobilenet_v3_dilated_parameter_versus_generic_rule() -> None:
    """torchvision dilated=True: bneck13-15 depthwise at dilation 2; the generic pass: 1, 2, 2."""
    written = analyze(MODELS / "lraspp_mobilenet_v3_large.yaml", (224, 224))
    generic = analyze(MODELS / "imagenet_mobilenet_v3_large.yaml", (224, 224), output_stride=16)
    names = [f"encoder.bneck{i}.dw" for i in (13, 14, 15)]
    assert [_dilations(written, ".dw")[n] for n in names] == [2, 2, 2]
    assert [_dilations(generic, ".dw")[n] for n in names] == [1, 2, 2]
    assert written.resolved.types["encoder.last_act"].stride == 16
    assert generic.resolved.types["encoder.last_act"].stride == 16
