"""Rename tables of the ``weights:`` declaration (docs/weights.md), without torch."""

from __future__ import annotations

import pytest

from conftest import SPECS
from rtseg_compiler.pipeline import validate_file
from rtseg_compiler.spec.load import load_spec_file
from rtseg_compiler.weights.mapping import (Rule, WeightSourceError, is_source_text, parse_layouts,
                                            parse_source)


@pytest.mark.parametrize("pattern, target, key, expected", [
    ("layer1.{b}", "layer1.{b+1}", "layer1.0.conv1.weight", "layer1.1.conv1.weight"),
    ("layer1.{b}", "layer1.{b+1}", "layer10.0.conv1.weight", None),            # whole segments only
    ("layer{s}.{b}", "layer{s}_{b+1}", "layer3.1.bn2.bias", "layer3_2.bn2.bias"),
    ("blocks.{s}.{b}.conv_dw", "blocks.{s}.{b}.dw", "blocks.3.2.conv_dw.weight", "blocks.3.2.dw.weight"),
    ("features.1", "conv1_2.conv", "features.10.weight", None),               # 1 is not a prefix of 10
    ("features.1", "conv1_2.conv", "features.1.weight", "conv1_2.conv.weight"),
    ("ds{n}", "ds{n-1}", "ds3.pw.weight", "ds2.pw.weight"),
    ("fc", "fc.1", "fc", "fc.1"),
    ("a.{i}", "b.{i}", "a.x.weight", None),                                    # placeholders are numbers
    ("a+b", "c", "a+b.weight", "c.weight"),                                    # literal text is literal
])
def test_rule_rewrites_leading_segments(pattern, target, key, expected):
    assert Rule(pattern, target).apply(key) == expected


def test_passes_first_match_wins_and_unmatched_keys_pass_through():
    layouts = parse_layouts(load_spec_file(SPECS / "encoders" / "mobilenet_v1.yaml"), "mv1")
    layout = layouts[("timm", "mobilenetv1_100")]
    assert layout.map_key("conv_stem.weight").key == "conv1.weight"
    assert layout.map_key("bn1.running_var").key == "conv1_bn.running_var"
    assert layout.map_key("blocks.3.0.bn1.weight").key == "ds6.dw_bn.weight"
    assert layout.map_key("blocks.3.4.conv_pw.weight").key == "ds7_11.4.pw.weight"
    assert layout.map_key("blocks.4.1.bn2.bias").key == "ds13.pw_bn.bias"
    assert layout.map_key("classifier.weight").part == "head"
    assert layout.map_key("unknown.weight").key == "unknown.weight"  # left for the strict report


def test_vgg_head_rules_reshape():
    layout = parse_layouts(load_spec_file(SPECS / "encoders" / "vgg16.yaml"), "vgg")[("torchvision", "vgg16")]
    place = layout.map_key("classifier.0.weight")
    assert (place.part, place.key, place.reshape) == ("head", "fc6.weight", True)
    assert layout.head.meta == "classifier_vgg"
    assert layout.map_key("features.28.bias").key == "conv5_3.conv.bias"


ENCODER = """\
kind: encoder
name: tiny
layers:
  - {name: conv1, op: conv, out: 8, kernel: 3}
taps: {stride1: conv1}
weights:
"""


@pytest.mark.parametrize("weights, message, line", [
    ("  torchvison:\n    r: {rename: {a: b}}\n", "unknown field 'torchvison'", 7),
    ("  torchvision:\n    r:\n      rename:\n        a.{i}: b.{j}\n", "uses {j}, which the pattern", 10),
    ("  torchvision:\n    r:\n      rename:\n        a.{i}.{i}: b.{i}\n", "appears twice", 10),
    ("  torchvision:\n    r:\n      rename:\n        a.{i+1}: b.{i}\n", "only a target may add", 10),
    ("  torchvision:\n    r:\n      rename:\n        a{i}{j}: b\n", "two placeholders touch", 10),
    ("  torchvision:\n    r:\n      rename: {a: 'b c'}\n", "rename", 9),
    ("  timm:\n    r:\n      head: {rename: {fc: fc.1}}\n", "missing required field 'meta'", 9),
])
def test_bad_declarations_are_located_errors(write_spec, weights, message, line):
    path = write_spec("enc.yaml", ENCODER + weights)
    errors = [d for d in validate_file(path) if d.severity == "error"]
    assert errors, weights
    assert any(message in d.message for d in errors), [d.render() for d in errors]
    assert any(d.loc is not None and d.loc.line == line for d in errors), [d.render() for d in errors]


@pytest.mark.parametrize("text, parsed", [
    ("torchvision:resnet18", ("torchvision", "resnet18", None)),
    ("torchvision:resnet18@r18.pth", ("torchvision", "resnet18", "r18.pth")),
    ("timm:mobilenetv1_100@/w/a@b.safetensors", ("timm", "mobilenetv1_100", "/w/a@b.safetensors")),
])
def test_parse_source(text, parsed):
    s = parse_source(text)
    assert (s.source, s.name, s.path) == parsed and is_source_text(text)


@pytest.mark.parametrize("text, message", [
    ("torchvison:resnet18", "did you mean 'torchvision'"),
    ("resnet18.pth", "invalid weight source"),
    ("torchvision:", "invalid weight source"),
])
def test_parse_source_errors(text, message):
    with pytest.raises(WeightSourceError, match=message):
        parse_source(text)
    assert not is_source_text(text)


def test_zoo_declarations_validate():
    for name in ("resnet18", "vgg16", "mobilenet_v1"):
        assert validate_file(SPECS / "encoders" / f"{name}.yaml") == []
