"""Published weights imported through the layouts encoder specs declare (docs/weights.md).

Each torchvision classifier is built with ``weights=None`` (nothing is downloaded, ever), its batch
norms get random statistics so that a swapped or missing tensor cannot hide, and its state dict is
imported into the spec's ImageNet model; the two must then compute the same logits within 1e-5.
timm's mobilenetv1_100 is checked the same way with the encoder's ``act: relu6`` (the one documented
difference). The strict-report tests build a torchvision-layout state dict by hand, so they run
without torchvision.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import compile_model
from torchvision_compat import import_torchvision
from rtseg_compiler.cli import main as rtsegc
from rtseg_compiler.weights.importer import WeightsError, import_weights

MODELS = SPECS / "models"
TOL = dict(rtol=1e-5, atol=1e-5)


def _torchvision_models():
    """torchvision.models (through the CPU-torch import shim of tests/torchvision_compat.py)."""
    return import_torchvision().models


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine terms (and conv biases), then eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return module.eval()


def _same_logits(reference: torch.nn.Module, compiled, size: int = 224) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        got = compiled.module.eval()(x).flatten(1)
    torch.testing.assert_close(got, expected, **TOL)


# --------------------------------------------------------------------------- torchvision, exact

TORCHVISION = [("imagenet_resnet18", "resnet18"), ("imagenet_resnet50", "resnet50"), ("imagenet_vgg16", "vgg16"),
               ("imagenet_mobilenet_v3_large", "mobilenet_v3_large")]


@pytest.mark.parametrize("spec, name", TORCHVISION, ids=[n for _, n in TORCHVISION])
def test_torchvision_classifier_imports_exactly_from_memory(spec: str, name: str):
    tvm = _torchvision_models()
    reference = _randomise(getattr(tvm, name)(weights=None))
    compiled = compile_model(MODELS / f"{spec}.yaml")
    report = import_weights(compiled, f"torchvision:{name}", reference.state_dict())
    assert report.ok and not report.unused
    assert len(report.loaded) + len(report.counters_kept) == len(compiled.module.state_dict())
    _same_logits(reference, compiled)


def test_resnet18_from_pth_and_safetensors_files(tmp_path: Path):
    tvm = _torchvision_models()
    reference = _randomise(tvm.resnet18(weights=None))
    pth = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), pth)
    compiled = compile_model(MODELS / "imagenet_resnet18.yaml", pretrained=f"torchvision:resnet18@{pth}")
    _same_logits(reference, compiled)
    safetensors = pytest.importorskip("safetensors.torch")
    st = tmp_path / "r18.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(st))
    compiled = compile_model(MODELS / "imagenet_resnet18.yaml", pretrained=f"torchvision:resnet18@{st}")
    _same_logits(reference, compiled)


def test_pretrained_inference_build_folds_the_imported_weights(tmp_path: Path):
    """Layouts name the batch norms, so the import happens before folding: the folded ResNet-18
    computes torchvision's eval-mode logits, and bringing both weights= and pretrained= is refused."""
    tvm = _torchvision_models()
    reference = _randomise(tvm.resnet18(weights=None))
    pth = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), pth)
    folded = compile_model(MODELS / "imagenet_resnet18.yaml", inference=True,
                           pretrained=f"torchvision:resnet18@{pth}")
    assert folded.inference is not None and folded.inference.folds
    _same_logits(reference, folded)
    with pytest.raises(ValueError, match="not both"):
        compile_model(MODELS / "imagenet_resnet18.yaml", weights=str(pth),
                      pretrained=f"torchvision:resnet18@{pth}")


def test_segmentation_model_takes_the_encoder_and_lists_the_unused_head(tmp_path: Path):
    tvm = _torchvision_models()
    reference = _randomise(tvm.resnet18(weights=None))
    compiled = compile_model(MODELS / "skipnet_resnet18.yaml", input_size=(64, 96))
    report = import_weights(compiled, "torchvision:resnet18", reference.state_dict())
    assert report.ok
    assert report.unused == ("fc.weight", "fc.bias")
    assert "skipnet" in report.unused_reason and "classifier" in report.unused_reason
    state = compiled.module.state_dict()
    assert torch.equal(state["encoder.layer3_1.downsample_bn.running_var"],
                       reference.layer3[0].downsample[1].running_var)
    assert torch.equal(state["encoder.layer1.2.conv2.weight"], reference.layer1[1].conv2.weight)


# --------------------------------------------------------------------------- timm MobileNet v1

def test_timm_mobilenetv1_100_layout(tmp_path: Path):
    _torchvision_models()  # timm imports torchvision
    timm = pytest.importorskip("timm")
    reference = _randomise(timm.create_model("mobilenetv1_100", pretrained=False))
    path = tmp_path / "mv1.pth"
    torch.save(reference.state_dict(), path)
    # Every tensor has its place in the zoo spec ...
    zoo = compile_model(MODELS / "imagenet_mobilenet_v1.yaml", pretrained=f"timm:mobilenetv1_100@{path}")
    # ... and with timm's ReLU6 in place of ReLU (the encoder's act parameter) it is the same function.
    exact = compile_model(MODELS / "imagenet_mobilenet_v1.yaml", pretrained=f"timm:mobilenetv1_100@{path}",
                          encoder_params={"act": "relu6"})
    _same_logits(reference, exact)
    x = torch.randn(1, 3, 224, 224) * 4
    with torch.no_grad():
        assert not torch.allclose(zoo.module(x).flatten(1), reference(x), **TOL)


# --------------------------------------------------------------------------- strict reports, no torchvision

def _torchvision_resnet18_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A compiled imagenet_resnet18 state dict renamed to torchvision's keys, written independently
    of the spec's table (so a wrong table cannot agree with itself)."""
    out = {}
    for key, value in state.items():
        k = key.removeprefix("encoder.").replace("head.fc.1.", "fc.")
        k = re.sub(r"^layer1\.(\d+)\.", lambda m: f"layer1.{int(m.group(1)) - 1}.", k)
        k = re.sub(r"^layer(\d)_(\d)\.downsample_bn\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) - 1}"
                   ".downsample.1.", k)
        k = re.sub(r"^layer(\d)_(\d)\.downsample\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) - 1}"
                   ".downsample.0.", k)
        k = re.sub(r"^layer(\d)_(\d)\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) - 1}.", k)
        out[k] = value.clone()
    return out


@pytest.fixture(scope="module")
def resnet18_source() -> dict[str, torch.Tensor]:
    donor = compile_model(MODELS / "imagenet_resnet18.yaml")
    _randomise(donor.module)
    return _torchvision_resnet18_layout(donor.module.state_dict())


def test_hand_renamed_source_round_trips(resnet18_source):
    compiled = compile_model(MODELS / "imagenet_resnet18.yaml")
    report = import_weights(compiled, "torchvision:resnet18", resnet18_source)
    assert report.ok and len(report.loaded) == 122
    assert torch.equal(compiled.module.state_dict()["encoder.layer4_1.downsample.weight"],
                       resnet18_source["layer4.0.downsample.0.weight"])


def _broken(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    bad = dict(source)
    bad["layer1.0.conv_1.weight"] = bad.pop("layer1.0.conv1.weight")     # renamed: unexpected + missing
    bad["bn1.weight"] = torch.ones(65)                                     # mis-shaped
    del bad["layer4.1.bn2.bias"]                                           # missing
    bad["extra.thing"] = torch.zeros(1)                                    # unexpected, nothing close
    return bad


def test_strict_report_lists_every_problem_with_did_you_mean(resnet18_source):
    compiled = compile_model(MODELS / "skipnet_resnet18.yaml", input_size=(64, 96))
    before = {k: v.clone() for k, v in compiled.module.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        import_weights(compiled, "torchvision:resnet18", _broken(resnet18_source))
    report = info.value.report
    assert set(report.missing) == {"encoder.layer1.1.conv1.weight", "encoder.layer4_2.bn2.bias"}
    assert dict(report.unexpected) == {"layer1.0.conv_1.weight": "encoder.layer1.1.conv_1.weight",
                                       "extra.thing": "encoder.extra.thing"}
    assert report.mismatched == (("bn1.weight", "encoder.bn1.weight", (65,), (64,)),)
    assert report.hints["layer1.0.conv_1.weight"] == "encoder.layer1.1.conv1.weight"
    assert report.hints["encoder.layer1.1.conv1.weight"] == "layer1.0.conv_1.weight"
    assert report.unused == ("fc.weight", "fc.bias")
    text = str(info.value)
    assert "did you mean encoder.layer1.1.conv1.weight?" in text and "(65,) vs (64,)" in text
    # Nothing was copied: a failed strict import leaves the module as it was.
    assert all(torch.equal(v, before[k]) for k, v in compiled.module.state_dict().items())


def test_cli_import_writes_model_keys_and_fails_with_exit_2(tmp_path: Path, capsys, resnet18_source):
    good, bad, out = tmp_path / "r18.pth", tmp_path / "bad.pth", tmp_path / "enc.pt"
    torch.save(resnet18_source, good)
    torch.save(_broken(resnet18_source), bad)
    model = str(MODELS / "skipnet_resnet18.yaml")
    assert rtsegc(["weights", "import", model, "--from", f"torchvision:resnet18@{good}", "-o", str(out)]) == 0
    written = torch.load(out, weights_only=True)
    assert all(k.startswith("encoder.") for k in written) and len(written) == 120
    # The written file is in the compiled module's layout: a plain file for pretrained= and --pretrained.
    compiled = compile_model(model, input_size=(64, 96), pretrained=str(out))
    assert torch.equal(compiled.module.state_dict()["encoder.conv1.weight"], resnet18_source["conv1.weight"])
    capsys.readouterr()
    code = rtsegc(["weights", "import", model, "--from", f"torchvision:resnet18@{bad}", "-o", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "missing" in err and "did you mean" in err and "mis-shaped" in err and "not used by this model" in err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("source, message", [
    ("torchvision:resnet50@x.pth", "declares no such weight layout"),
    ("torchvison:resnet18@x.pth", "did you mean 'torchvision'"),
    ("torchvision:resnet18@missing.pth", "no such weights file"),
    ("resnet18", "invalid weight source"),
])
def test_cli_bad_sources_exit_2(capsys, source: str, message: str):
    code = rtsegc(["weights", "import", str(MODELS / "unet_resnet18.yaml"), "--from", source, "-o", "/dev/null"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_no_path_fetches_through_the_library_api_only_when_asked(monkeypatch, resnet18_source):
    from rtseg_compiler.weights import importer

    calls = []

    def fake_fetch(source):
        calls.append(str(source))
        return resnet18_source

    monkeypatch.setattr(importer, "fetch_state_dict", fake_fetch)
    compile_model(MODELS / "imagenet_resnet18.yaml")  # no pretrained: nothing fetched
    assert calls == []
    compile_model(MODELS / "imagenet_resnet18.yaml", pretrained="torchvision:resnet18")
    assert calls == ["torchvision:resnet18"]


def test_unreadable_and_code_carrying_files_are_refused(tmp_path: Path):
    compiled = compile_model(MODELS / "imagenet_resnet18.yaml")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a weights file"):
        import_weights(compiled, f"torchvision:resnet18@{junk}")
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(WeightsError, match="expected a state dict"):
        import_weights(compiled, f"torchvision:resnet18@{listed}")


def test_training_takes_a_weight_source(tmp_path: Path, capsys, resnet18_source):
    from rtseg_runtime.train import TrainConfig, train
    from rtseg_runtime.train import main as train_main

    path = tmp_path / "r18.pth"
    torch.save(resnet18_source, path)
    out = tmp_path / "run"
    cfg = TrainConfig(model=str(MODELS / "skipnet_resnet18.yaml"), data="synthetic", classes="5",
                      input=(32, 64), batch_size=2, max_iters=1, eval_interval=0, lr=0.0, out_dir=str(out),
                      limit_train=2, limit_val=1, pretrained=f"torchvision:resnet18@{path}")
    train(cfg)
    assert "loaded 120 tensors" in capsys.readouterr().out
    saved = torch.load(out / "last.pt", weights_only=True)["model"]
    assert torch.equal(saved["encoder.layer2_1.conv1.weight"], resnet18_source["layer2.0.conv1.weight"])
    bad = tmp_path / "bad.pth"
    torch.save(_broken(resnet18_source), bad)
    argv = [str(MODELS / "skipnet_resnet18.yaml"), "--data", "synthetic", "--classes", "5", "--input", "32x64",
            "--max-iters", "1", "--out-dir", str(tmp_path / "run2"), "--pretrained", f"torchvision:resnet18@{bad}"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and "Traceback" not in err


def test_misspelt_source_is_not_taken_for_a_file():
    with pytest.raises(WeightsError, match="did you mean 'torchvision'"):
        compile_model(MODELS / "imagenet_resnet18.yaml", pretrained="torchvison:resnet18")
    with pytest.raises(WeightsError, match="no such weights file"):
        compile_model(MODELS / "imagenet_resnet18.yaml", pretrained="absent.pth")


def test_dilated_mobilenet_v3_segmentation_model_takes_the_imagenet_encoder():
    """LR-ASPP runs MobileNetV3 at output stride 16 (dilated): same tensors, the classifier unused."""
    tvm = _torchvision_models()
    reference = _randomise(tvm.mobilenet_v3_large(weights=None))
    compiled = compile_model(MODELS / "lraspp_mobilenet_v3_large.yaml", input_size=(64, 96))
    report = import_weights(compiled, "torchvision:mobilenet_v3_large", reference.state_dict())
    assert report.ok and sorted(report.unused) == ["classifier.0.bias", "classifier.0.weight",
                                                   "classifier.3.bias", "classifier.3.weight"]
    assert torch.equal(compiled.module.state_dict()["encoder.bneck13.se_fc2.weight"],
                       reference.features[13].block[2].fc2.weight)
