"""The zoo's encoders against published ImageNet classification figures. No torch.

Each ``specs/models/imagenet_*.yaml`` puts an encoder under its ImageNet head
(224x224, 1000 classes, batch 1). Their MACs (bias excluded) and parameter
counts are pinned to the exact integers of flop-conventions.md §6, which agree
with torch's FlopCounterMode / 2, DeepSpeed's ``macs`` and torchvision's
``num_params``; the split between encoder and head is pinned too, so a wrong
classifier cannot hide a wrong encoder. A second, coarser check rounds each
total the way its paper does ("569 M mult-adds", "1.8 x 10^9 FLOPs").
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.pipeline import Analysis, analyze, validate_file

SPECS = Path(__file__).resolve().parents[2] / "specs"
ENCODERS = ("mobilenet_v1", "resnet18", "vgg16", "shufflenet_v1")

# model: (total MACs, head MACs, parameters), flop-conventions.md §6 "Reference anchors".
ANCHORS = {
    # Howard et al. 2017 (arXiv:1704.04861) Table 8: 569 M mult-adds, 4.2 M parameters.
    "imagenet_mobilenet_v1": (568_740_352, 1_024_000, 4_231_976),
    # He et al. 2015 (arXiv:1512.03385) Table 1: 1.8e9; torchvision resnet18: 11,689,512.
    "imagenet_resnet18": (1_814_073_344, 512_000, 11_689_512),
    # torchvision vgg16: GFLOPS 15.47, num_params 138,357,544. Head = fc6 + fc7 + fc8:
    # 7*7*512*4096 + 4096*4096 + 4096*1000 = 123,633,664.
    "imagenet_vgg16": (15_470_264_320, 123_633_664, 138_357_544),
    # Zhang et al. 2017 (arXiv:1707.01083) Table 2: 140 MFLOPs (mult-adds); 1.87 M (mmpretrain).
    "imagenet_shufflenet_v1": (137_460_672, 960_000, 1_865_728),
}

# Tap channels from each paper's architecture table (MobileNet Table 1, ResNet Table 1,
# VGG Table 1 column D, ShuffleNet Table 1 g=3); at 224x224 the taps are 112 ... 7 wide.
TAP_CHANNELS = {
    "mobilenet_v1": (64, 128, 256, 512, 1024),
    "resnet18": (64, 64, 128, 256, 512),
    "vgg16": (64, 128, 256, 512, 512),
    "shufflenet_v1": (24, 24, 240, 480, 960),
}
STRIDES = (2, 4, 8, 16, 32)

# ShuffleNet 1x output channels of stages 2, 3, 4 per group count g (arXiv:1707.01083, Table 1).
SHUFFLENET_STAGES = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}


@pytest.fixture(scope="module")
def models() -> dict[str, Analysis]:
    return {name: analyze(SPECS / "models" / f"{name}.yaml") for name in ANCHORS}


def head_macs(analysis: Analysis) -> int:
    return sum(row.macs for row in analysis.audit.layers if row.name.startswith("head."))


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_classification_anchor_is_exact(models: dict[str, Analysis], name: str) -> None:
    macs, head, params = ANCHORS[name]
    audit = models[name].audit
    assert audit.input == (1, 3, 224, 224)
    assert audit.output_shape == (1, 1000, 1, 1)
    assert audit.macs == macs
    assert head_macs(models[name]) == head
    assert audit.params == params
    assert audit.flops == 2 * macs  # torch FlopCounterMode's number for the same module


@pytest.mark.parametrize("name, published_macs, digits", [
    ("imagenet_mobilenet_v1", 569e6, -6),     # "569 M"
    ("imagenet_resnet18", 1.8e9, -8),         # "1.8 x 10^9"
    ("imagenet_vgg16", 15.47e9, -7),          # torchvision "15.47"
])
def test_totals_round_to_the_published_figure(models: dict[str, Analysis], name: str,
                                              published_macs: float, digits: int) -> None:
    assert round(models[name].audit.macs, digits) == published_macs


def test_shufflenet_is_within_two_percent_of_140_mflops(models: dict[str, Analysis]) -> None:
    """The paper's 140 MFLOPs is a rounded design budget, not a count: 137.46 M is -1.8%."""
    assert abs(models["imagenet_shufflenet_v1"].audit.macs / 140e6 - 1) < 0.02


def test_vgg_fc6_as_a_valid_7x7_conv_has_the_fc6_matrix_size(models: dict[str, Analysis]) -> None:
    rows = {row.name: row for row in models["imagenet_vgg16"].audit.layers}
    assert rows["head.fc6"].output_shape == (4096, 1, 1)
    assert rows["head.fc6"].params == 7 * 7 * 512 * 4096 + 4096
    assert rows["head.fc8"].params == 4096 * 1000 + 1000


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_validates_without_any_diagnostic(encoder: str) -> None:
    assert validate_file(SPECS / "encoders" / f"{encoder}.yaml") == []


@pytest.mark.parametrize("meta", ["classifier", "classifier_vgg"])
def test_classifier_meta_validates_without_any_diagnostic(meta: str) -> None:
    assert validate_file(SPECS / "meta" / f"{meta}.yaml") == []


@pytest.mark.parametrize("encoder", ENCODERS)
def test_taps_have_their_stride_channels_and_size(encoder: str) -> None:
    analysis = analyze(SPECS / "encoders" / f"{encoder}.yaml", (224, 224))
    taps = {tap.name: tap.node for tap in analysis.graph.taps}
    assert sorted(taps) == sorted(f"stride{s}" for s in STRIDES)
    for stride, channels in zip(STRIDES, TAP_CHANNELS[encoder]):
        t = analysis.resolved.types[taps[f"stride{stride}"]]
        assert (t.channels, t.height, t.width, t.stride) == (
            channels, 224 // stride, 224 // stride, Fraction(stride)), f"stride{stride}"


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoders_carry_no_classifier(encoder: str) -> None:
    ops = {row.op for row in analyze(SPECS / "encoders" / f"{encoder}.yaml").audit.layers}
    assert not ops & {"gap", "linear"}


def shufflenet_model(tmp_path: Path, groups: int, rtseg: bool = False) -> Path:
    path = tmp_path / f"shufflenet_g{groups}.yaml"
    path.write_text(
        "kind: model\nname: probe\n"
        f"encoder: {SPECS / 'encoders' / 'shufflenet_v1.yaml'}\n"
        f"meta: {SPECS / 'meta' / 'classifier.yaml'}\n"
        "num_classes: 1000\ninput: [224, 224]\n"
        f"encoder_params: {{groups: {groups}, rtseg_bottleneck: {str(rtseg).lower()}}}\n")
    return path


def tap_channels(analysis: Analysis, *names: str) -> tuple[int, ...]:
    taps = {tap.name: tap.node for tap in analysis.graph.taps}
    return tuple(analysis.resolved.types[taps[n]].channels for n in names)


@pytest.mark.parametrize("groups", sorted(SHUFFLENET_STAGES))
def test_shufflenet_every_group_count_has_the_published_channels(tmp_path: Path, groups: int) -> None:
    """Table 1 keeps every g near the same budget: all five land within 5% of 140 M."""
    analysis = analyze(shufflenet_model(tmp_path, groups))
    assert tap_channels(analysis, "stride8", "stride16", "stride32") == SHUFFLENET_STAGES[groups]
    assert analysis.audit.output_shape == (1, 1000, 1, 1)
    assert abs(analysis.audit.macs / 140e6 - 1) < 0.05
    # Grouped 1x1 convs are groups; only stage 2's first 1x1 is dense.
    attrs = {n.name: n.attrs for n in analysis.graph.nodes}
    assert attrs["encoder.stage2_1.gconv1"]["groups"] == 1
    assert attrs["encoder.stage3_1.gconv1"]["groups"] == groups
    assert attrs["encoder.stage4.3.gconv2"]["groups"] == groups


def test_shufflenet_rejects_a_group_count_without_a_channel_table(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="out must be positive"):
        analyze(shufflenet_model(tmp_path, 5))


def test_shufflenet_rtseg_bottleneck_narrows_only_the_stride2_units(tmp_path: Path) -> None:
    """TFSegmentation uses (out - in)/4 in concat units: 54, 60, 120 at g=3 (rtseg-original-
    implementation.md §1.4), giving the repo's ~126 M encoder MACs at 224x224."""
    plain = analyze(shufflenet_model(tmp_path, 3))
    rtseg = analyze(shufflenet_model(tmp_path, 3, rtseg=True))

    def widths(analysis: Analysis, unit: str) -> int:
        return analysis.resolved.types[f"encoder.{unit}.gconv1"].channels

    units = ("stage2_1", "stage3_1", "stage4_1", "stage3.4")
    assert tuple(widths(plain, u) for u in units) == (60, 120, 240, 120)
    assert tuple(widths(rtseg, u) for u in units) == (54, 60, 120, 120)
    assert tap_channels(rtseg, "stride8", "stride16", "stride32") == (240, 480, 960)
    encoder_macs = rtseg.audit.macs - head_macs(rtseg)
    assert round(encoder_macs, -6) == 126_000_000
    assert encoder_macs < plain.audit.macs - head_macs(plain)
