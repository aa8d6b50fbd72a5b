"""Weight layouts from any source, declared where the keys belong (docs/weights.md).

The checkpoint is written here from tests/reference/fast_scnn.py, a plain ``nn.Module`` whose key
names (``learning_to_downsample.dsconv1.dw.conv.weight``, ``feature_fusion.conv_lower.bn.bias``)
are foreign to the compiled module's (``encoder.dsconv1.dw``, ``head.ffm_lower_bn``). A user-named
source, ``mylab``, maps it in three arrangements that must load the same tensors: one model spec
layout over the whole model; the encoder's and the meta's layouts together; and each of those alone
for ``pretrained=``. Every load is checked by outputs: the compiled module must compute what the
reference computes (within 1e-5, BN statistics randomised), at 96x192.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import SPECS
from reference_checks import reference_module
from rtseg_compiler import compile_model, create_model
from rtseg_compiler.cli import main as rtsegc
from rtseg_compiler.weights import WeightsError

SIZE = (96, 192)

#: reference key prefix -> compiled key prefix (whole-model keys), one rule per layer: the layout
#: language has no regular expressions, so the branch index of the pyramid pooling (0..3 -> bins
#: 1, 2, 3, 6) and each conv/bn pair are spelled out.
ENCODER_RULES = {
    "learning_to_downsample.conv.conv": "conv1",
    "learning_to_downsample.conv.bn": "conv1_bn",
    **{f"learning_to_downsample.dsconv{{i}}.{p}.conv": f"dsconv{{i}}.{p}" for p in ("dw", "pw")},
    **{f"learning_to_downsample.dsconv{{i}}.{p}.bn": f"dsconv{{i}}.{p}_bn" for p in ("dw", "pw")},
    **{f"global_feature_extractor.bottleneck{{g}}.{{b}}.{p}.conv": f"bottleneck{{g}}.{{b}}.{p}"
       for p in ("expand", "dw", "project")},
    **{f"global_feature_extractor.bottleneck{{g}}.{{b}}.{p}.bn": f"bottleneck{{g}}.{{b}}.{p}_bn"
       for p in ("expand", "dw", "project")},
    **{f"global_feature_extractor.ppm.branches.{k}.conv": f"ppm{bins}.conv"
       for k, bins in enumerate((1, 2, 3, 6))},
    **{f"global_feature_extractor.ppm.branches.{k}.bn": f"ppm{bins}.conv_bn"
       for k, bins in enumerate((1, 2, 3, 6))},
    "global_feature_extractor.ppm.out.conv": "ppm_out",
    "global_feature_extractor.ppm.out.bn": "ppm_out_bn",
}
HEAD_RULES = {
    "feature_fusion.dwconv.conv": "ffm_dw",
    "feature_fusion.dwconv.bn": "ffm_dw_bn",
    **{f"feature_fusion.conv_{side}.conv": f"ffm_{side}" for side in ("lower", "higher")},
    **{f"feature_fusion.conv_{side}.bn": f"ffm_{side}_bn" for side in ("lower", "higher")},
    **{f"classifier.dsconv{{i}}.{p}.conv": f"dsconv{{i}}.{p}" for p in ("dw", "pw")},
    **{f"classifier.dsconv{{i}}.{p}.bn": f"dsconv{{i}}.{p}_bn" for p in ("dw", "pw")},
    "classifier.conv": "classifier",
}


def _block(rules: dict[str, str], prefix: str = "", indent: int = 8) -> str:
    pad = " " * indent
    return "".join(f'{pad}"{pattern}": "{prefix}{target}"\n' for pattern, target in rules.items())


def _layout(rules: str, name: str = "fast_scnn") -> str:
    return f"weights:\n  mylab:\n    {name}:\n      doc: tests/reference/fast_scnn.py\n      rename:\n{rules}"


def _reference() -> torch.nn.Module:
    torch.manual_seed(3)
    net = reference_module("fast_scnn").FastSCNN(19)
    with torch.no_grad():
        for m in net.modules():  # no BN may be an identity, or a swapped tensor could hide
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return _reference()


@pytest.fixture(scope="module")
def expected(reference) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return x, reference(x)


@pytest.fixture
def checkpoint(reference, tmp_path) -> Path:
    path = tmp_path / "fast_scnn_mylab.pt"
    torch.save(reference.state_dict(), path)
    return path


@pytest.fixture
def model_with_layout(tmp_path) -> Path:
    """A model spec over the zoo's Fast-SCNN encoder and meta that maps the whole model itself."""
    path = tmp_path / "fast_scnn_mylab.yaml"
    path.write_text(
        "kind: model\nname: fast_scnn_mylab\n"
        f"encoder: {SPECS / 'encoders' / 'fast_scnn.yaml'}\nmeta: {SPECS / 'meta' / 'fast_scnn.yaml'}\n"
        "num_classes: 19\n"
        + _layout(_block(ENCODER_RULES, "encoder.") + _block(HEAD_RULES, "head.")))
    return path


@pytest.fixture
def split_layouts(tmp_path) -> Path:
    """Copies of the zoo's encoder and meta, each declaring ``mylab:fast_scnn`` for its own keys."""
    (tmp_path / "enc.yaml").write_text((SPECS / "encoders" / "fast_scnn.yaml").read_text() + "\n"
                                       + _layout(_block(ENCODER_RULES)))
    (tmp_path / "meta.yaml").write_text((SPECS / "meta" / "fast_scnn.yaml").read_text() + "\n"
                                        + _layout(_block(HEAD_RULES)))
    path = tmp_path / "split.yaml"
    path.write_text("kind: model\nname: fast_scnn_split\nencoder: enc.yaml\nmeta: meta.yaml\n"
                    "num_classes: 19\n")
    return path


def _same(module: torch.nn.Module, expected) -> None:
    x, want = expected
    with torch.no_grad():
        got = module.eval()(x)
    assert got.shape == want.shape and want.abs().max() > 0.1
    assert (got - want).abs().max().item() <= 1e-5


def test_model_spec_layout_loads_a_user_source_file_through_create_model(model_with_layout, checkpoint,
                                                                        expected, one_torch_thread):
    net = create_model(model_with_layout, input_size=SIZE, weights=f"mylab:fast_scnn@{checkpoint}")
    _same(net, expected)
    # pretrained= takes the same source: a model spec's layout fills the whole model there too.
    source = f"mylab:fast_scnn@{checkpoint}"
    _same(create_model(model_with_layout, input_size=SIZE, pretrained=source), expected)


def test_model_spec_layout_loads_through_the_cli(model_with_layout, checkpoint, capsys, tmp_path,
                                                 one_torch_thread, expected):
    """compile --weights SOURCE:NAME@FILE loads strictly; weights import writes the module's keys."""
    code = rtsegc(["compile", str(model_with_layout), "--input", "96x192", "--no-forward",
                   "--weights", f"mylab:fast_scnn@{checkpoint}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"weights      mylab:fast_scnn@{checkpoint} (loaded strictly)" in out
    out_file = tmp_path / "imported.pt"
    code = rtsegc(["weights", "import", str(model_with_layout), "--from", f"mylab:fast_scnn@{checkpoint}",
                   "-o", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "mylab:fast_scnn: loaded 268 tensors; missing 0, unexpected 0, mis-shaped 0" in out
    # The written file has the compiled module's keys: it loads as a plain weights= file.
    _same(compile_model(model_with_layout, SIZE, weights=str(out_file)).module, expected)


def test_encoder_and_meta_layouts_together_fill_the_model(split_layouts, checkpoint, expected,
                                                          one_torch_thread):
    """The meta's layout claims the keys its rules match (feature_fusion.*, classifier.*); the encoder's
    takes the rest, as an encoder layout's head table would."""
    _same(compile_model(split_layouts, SIZE, weights=f"mylab:fast_scnn@{checkpoint}").module, expected)


def test_a_part_layout_fills_its_part_for_pretrained_and_is_short_for_weights(tmp_path, checkpoint):
    """The encoder's layout alone fills the encoder as an initialisation; as weights= (a whole state dict)
    it leaves the decoder missing, which is an error naming those keys."""
    (tmp_path / "enc.yaml").write_text((SPECS / "encoders" / "fast_scnn.yaml").read_text() + "\n"
                                       + _layout(_block(ENCODER_RULES)))
    model = tmp_path / "m.yaml"
    model.write_text(f"kind: model\nname: m\nencoder: enc.yaml\nmeta: {SPECS / 'meta' / 'fast_scnn.yaml'}\n"
                     "num_classes: 19\n")
    encoder_only = {k: v for k, v in torch.load(checkpoint, weights_only=True).items()
                    if not k.startswith(("feature_fusion.", "classifier."))}
    part = tmp_path / "encoder_part.pt"
    torch.save(encoder_only, part)
    compiled = compile_model(model, SIZE, pretrained=f"mylab:fast_scnn@{part}")
    assert torch.equal(compiled.module.state_dict()["encoder.ppm6.conv.weight"],
                       encoder_only["global_feature_extractor.ppm.branches.3.conv.weight"])
    with pytest.raises(WeightsError, match="do not fit") as caught:
        compile_model(model, SIZE, weights=f"mylab:fast_scnn@{part}")
    assert "head.classifier.weight" in caught.value.report.missing


def test_a_meta_layout_alone_fills_the_decoder(tmp_path, checkpoint):
    """pretrained= through a meta's layout alone: the decoder from a decoder-only file, the encoder untouched."""
    (tmp_path / "meta.yaml").write_text((SPECS / "meta" / "fast_scnn.yaml").read_text() + "\n"
                                        + _layout(_block(HEAD_RULES)))
    model = tmp_path / "m.yaml"
    model.write_text(f"kind: model\nname: m\nencoder: {SPECS / 'encoders' / 'fast_scnn.yaml'}\n"
                     "meta: meta.yaml\nnum_classes: 19\n")
    decoder_only = {k: v for k, v in torch.load(checkpoint, weights_only=True).items()
                    if k.startswith(("feature_fusion.", "classifier."))}
    part = tmp_path / "decoder_part.pt"
    torch.save(decoder_only, part)
    torch.manual_seed(0)
    plain = compile_model(model, SIZE).module.state_dict()
    torch.manual_seed(0)
    loaded = compile_model(model, SIZE, pretrained=f"mylab:fast_scnn@{part}").module.state_dict()
    assert torch.equal(loaded["head.classifier.weight"], decoder_only["classifier.conv.weight"])
    assert all(torch.equal(loaded[k], plain[k]) for k in plain if k.startswith("encoder."))


@pytest.mark.parametrize("source, message", [
    ("mylb:fast_scnn@{ckpt}", "unknown weight source 'mylb'"),
    ("mylb:fast_scnn@{ckpt}", "did you mean 'mylab'?"),
    ("mylab:fast_scn@{ckpt}", "declares no such weight layout (did you mean mylab:fast_scnn?"),
    ("mylab:fast_scnn", "'mylab' layouts are read from a file, never fetched"),
    ("mylab:fast_scnn@{missing}", "no such weights file"),
])
def test_bad_sources_are_one_line_errors(model_with_layout, checkpoint, capsys, source, message):
    text = source.format(ckpt=checkpoint, missing=checkpoint.with_name("missing.pt"))
    with pytest.raises(WeightsError, match=re.escape(message)):
        compile_model(model_with_layout, SIZE, weights=text)
    code = rtsegc(["compile", str(model_with_layout), "--input", "96x192", "--no-forward", "--weights", text])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_file_named_like_a_source_is_still_a_file(tmp_path, monkeypatch):
    """weights= read files before it read layouts: a file whose name has the SOURCE:NAME form still
    loads as a file in the module's own layout."""
    monkeypatch.chdir(tmp_path)
    compiled = compile_model(SPECS / "models" / "fast_scnn.yaml", SIZE)
    torch.save(compiled.module.state_dict(), tmp_path / "mylab:fast_scnn")
    again = compile_model(SPECS / "models" / "fast_scnn.yaml", SIZE, weights="mylab:fast_scnn")
    assert all(torch.equal(a, b) for a, b in zip(compiled.module.state_dict().values(),
                                                 again.module.state_dict().values()))
