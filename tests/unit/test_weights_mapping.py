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
    ("  my-lab:\n    r: {rename: {a: b}}\n", "'my-lab' is not a valid weight source name", 7),
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


def test_a_near_miss_of_a_library_source_is_a_located_warning(write_spec):
    """Any name is a user's source, so 'torchvison' validates; the warning catches the typo at once."""
    path = write_spec("enc.yaml", ENCODER + "  torchvison:\n    r: {rename: {a: b}}\n")
    diags = validate_file(path)
    assert [d.severity for d in diags] == ["warning"]
    assert "source 'torchvison' is not torchvision" in diags[0].message and diags[0].loc.line == 7
    assert "did you mean 'torchvision'" in diags[0].hint
    clean = write_spec("enc2.yaml", ENCODER + "  mylab:\n    r: {rename: {a: b}}\n  timmy:\n    r: {}\n")
    assert validate_file(clean) == []  # 'timmy' is a name of its own, not a typo of timm


@pytest.mark.parametrize("text, parsed, known", [
    ("torchvision:resnet18", ("torchvision", "resnet18", None), True),
    ("torchvision:resnet18@r18.pth", ("torchvision", "resnet18", "r18.pth"), True),
    ("timm:mobilenetv1_100@/w/a@b.safetensors", ("timm", "mobilenetv1_100", "/w/a@b.safetensors"), True),
    ("mylab:segformer_b0@ckpt.pt", ("mylab", "segformer_b0", "ckpt.pt"), False),
    ("torchvison:resnet18", ("torchvison", "resnet18", None), False),  # resolve_layout says 'did you mean'
])
def test_parse_source(text, parsed, known):
    s = parse_source(text)
    assert (s.source, s.name, s.path) == parsed
    assert is_source_text(text) == known and is_source_text(text, any_source=True)


@pytest.mark.parametrize("text, message", [
    ("resnet18.pth", "invalid weight source"),
    ("torchvision:", "invalid weight source"),
    ("my-lab:x@a.pt", "invalid weight source"),
])
def test_parse_source_errors(text, message):
    with pytest.raises(WeightSourceError, match=message):
        parse_source(text)
    assert not is_source_text(text, any_source=True)


def test_zoo_declarations_validate():
    for name in ("resnet18", "vgg16", "mobilenet_v1"):
        assert validate_file(SPECS / "encoders" / f"{name}.yaml") == []


# --------------------------------------------------------------------------- layouts in meta and model specs

TINY_META = """\
kind: meta
name: tiny_head
requires: [stride1]
layers:
  - {name: logits, op: conv, input: encoder.stride1, out: num_classes, kernel: 1}
"""


def _tiny_model(write_spec, encoder_weights: str = "", meta_weights: str = "", model_weights: str = ""):
    write_spec("enc.yaml", ENCODER.replace("weights:\n", "") + encoder_weights)
    write_spec("meta.yaml", TINY_META + meta_weights)
    return write_spec("model.yaml", "kind: model\nname: tiny_model\nencoder: enc.yaml\nmeta: meta.yaml\n"
                                    "num_classes: 3\ninput: [8, 8]\n" + model_weights)


def _weights(source: str, name: str, rename: str) -> str:
    return f"weights:\n  {source}:\n    {name}:\n      rename: {rename}\n"


def _declared(path):
    from rtseg_compiler.pipeline import load_graph
    from rtseg_compiler.weights.mapping import declared_layouts

    files = load_graph(path).files
    return declared_layouts({kind: (load_spec_file(f), str(f)) for kind, f in files.items()})


def test_meta_and_model_specs_declare_layouts_with_their_own_targets(write_spec):
    """A meta's targets are its layers' keys (-> head.), a model's are whole-model keys; the meta's layout
    claims what its rules match and the encoder's the rest."""
    from rtseg_compiler.weights.mapping import resolve_layout

    path = _tiny_model(write_spec,
                       encoder_weights=_weights("mmseg", "tiny", "{backbone.stem: conv1}"),
                       meta_weights=_weights("mmseg", "tiny", "{decode_head.cls: logits}"),
                       model_weights="weights:\n  file:\n    mine:\n      rename: {net.0: encoder.conv1, "
                                     "net.1: head.logits}\n")
    assert validate_file(path) == []
    declared = _declared(path)
    both = resolve_layout(parse_source("mmseg:tiny@ckpt.pt"), declared)
    assert [layout.kind for layout in both.layouts] == ["meta", "encoder"]
    assert both.parts == {"encoder", "head"}
    assert (both.map_key("decode_head.cls.weight").part, both.map_key("decode_head.cls.weight").key) == \
        ("head", "logits.weight")
    assert (both.map_key("backbone.stem.bias").part, both.map_key("backbone.stem.bias").key) == \
        ("encoder", "conv1.bias")
    whole = resolve_layout(parse_source("file:mine@x.pt"), declared)
    assert whole.parts == {"model"} and whole.map_key("net.1.weight").key == "head.logits.weight"


@pytest.mark.parametrize("where, text, message, line", [
    ("model", "weights:\n  mmseg:\n    tiny:\n      rename: {a: encoder.conv1}\n",
     "mmseg:tiny is declared here and by the encoder spec", 9),
    ("meta", "weights:\n  mmseg:\n    tiny:\n      rename: {a: logits}\n",
     "mmseg:tiny is declared here and, with a 'head' table, by the encoder spec", 8),
])
def test_clashing_layouts_are_located_errors(write_spec, where, text, message, line):
    encoder = _weights("mmseg", "tiny", "{a: conv1}") + "      head: {meta: tiny_head, rename: {b: logits}}\n"
    path = _tiny_model(write_spec, encoder_weights=encoder, **{f"{where}_weights": text})
    errors = [d for d in validate_file(path) if d.severity == "error"]
    assert len(errors) == 1 and message in errors[0].message, [d.render() for d in errors]
    assert errors[0].loc.file.endswith(f"{where}.yaml") and errors[0].loc.line == line


def test_unknown_source_and_name_say_what_is_declared(write_spec):
    from rtseg_compiler.weights.mapping import resolve_layout

    path = _tiny_model(write_spec, meta_weights="weights:\n  mylab:\n    tiny:\n      rename: {a: logits}\n")
    declared = _declared(path)
    with pytest.raises(WeightSourceError, match=r"unknown weight source 'mylb'.*layouts of mylab "
                                                r"\(did you mean 'mylab'\?\)"):
        resolve_layout(parse_source("mylb:tiny@x.pt"), declared)
    with pytest.raises(WeightSourceError, match=r"no such weight layout \(did you mean mylab:tiny\? "
                                                r"declared: mylab:tiny"):
        resolve_layout(parse_source("mylab:tiy@x.pt"), declared)


def test_weights_list_shows_every_spec_of_the_model(write_spec, capsys):
    from rtseg_compiler.cli import main

    path = _tiny_model(write_spec, encoder_weights=_weights("mmseg", "tiny", "{backbone.stem: conv1}"),
                       meta_weights=_weights("mmseg", "tiny", "{decode_head.cls: logits}"),
                       model_weights=_weights("file", "mine", "{net.0: encoder.conv1}"))
    assert main(["weights", "list", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["file:mine", "mmseg:tiny", "mmseg:tiny"]
    assert lines[0].endswith("; the whole model (model spec)") and lines[2].endswith("(meta spec)")
