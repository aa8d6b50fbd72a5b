"""The one weights reader and loader (rtseg_compiler.weights): formats, bad files, and every command.

Each command that takes weights (``compile --weights``, ``train --pretrained``, ``eval --weights``)
is given the same tensors as a torch file and as a ``.safetensors`` file and must read both the
same way; bad files must give one located :class:`WeightsError`, never a pickle or zip traceback.
Small models (MobileNet width 0.25 at 32x64) keep each test to a second or two.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

from conftest import SPECS
from torchvision_compat import import_torchvision
from rtseg_compiler import cli, compile_model
from rtseg_compiler.weights import WeightsError
from rtseg_compiler.weights.files import read_state_dict
from rtseg_compiler.weights.load import load_weights

SIZE = (32, 64)


def _tiny(tmp_path: Path, conv_bias: bool = True) -> Path:
    path = tmp_path / f"tiny_{conv_bias}.yaml"
    path.write_text(f"kind: model\nname: tiny_skipnet\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                    f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: 5\n"
                    f"input: [{SIZE[0]}, {SIZE[1]}]\n"
                    f"encoder_params: {{width: 0.25, conv_bias: {str(conv_bias).lower()}}}\n")
    return path


def _random_state(spec: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """The spec's state dict with every float tensor drawn afresh (variances positive)."""
    torch.manual_seed(seed)
    state = compile_model(spec).module.state_dict()
    return {k: (v.clone() if not v.is_floating_point() else torch.rand_like(v) + 0.5
                if k.endswith("running_var") else torch.randn_like(v) * 0.2) for k, v in state.items()}


def _encoder_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def _save_both(state: dict[str, torch.Tensor], folder: Path, stem: str) -> tuple[Path, Path]:
    reason = "the .safetensors side needs the [weights] extra"
    save_file = pytest.importorskip("safetensors.torch", reason=reason).save_file
    pt, st = folder / f"{stem}.pt", folder / f"{stem}.safetensors"
    torch.save(state, pt)
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    return pt, st


# --------------------------------------------------------------------------- the reader

def test_every_format_and_nesting_reads_the_same_tensors(tmp_path: Path):
    state = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}
    pt, st = _save_both(state, tmp_path, "w")
    nested = {}
    for entry in ("state_dict", "model", "state_dict_ema"):
        nested[entry] = tmp_path / f"{entry}.pth"
        torch.save({entry: state, "epoch": 3}, nested[entry])
    checkpoint = tmp_path / "last.pt"  # what the runtime writes: weights under 'model', beside other entries
    torch.save({"model": state, "optimizer": {"state": {}}, "iter_num": 7, "config": {"lr": 0.1}}, checkpoint)
    renamed = tmp_path / "actually_safetensors.bin"  # formats are told by content, not by name
    renamed.write_bytes(st.read_bytes())
    for source in (pt, st, *nested.values(), checkpoint, renamed, state):
        got = read_state_dict(source)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), source
    # timm's checkpoints carry both: the trained weights win over the EMA copy.
    both = tmp_path / "both.pth"
    torch.save({"state_dict": state, "state_dict_ema": {k: v + 1 for k, v in state.items()}}, both)
    assert torch.equal(read_state_dict(both)["a.bias"], state["a.bias"])


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    state = {"a.weight": torch.randn(64, 64)}
    pt, st = _save_both(state, tmp_path, "good")
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, data: bytes, expected: str) -> None:
        path = tmp_path / name
        path.write_bytes(data)
        cases[name] = (path, expected)

    case("empty.pt", b"", "the file is empty (0 bytes)")
    case("truncated.pt", pt.read_bytes()[:400], "truncated or corrupt")
    case("truncated.safetensors", st.read_bytes()[:200], "truncated or corrupt")
    case("notes.pt", b"model: skipnet\nlr: 0.1\n", "not a weights file (it is text)")
    case("picture.pth", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a weights file (it starts like a PNG image)")

    class Callback:  # a pickle that would run code on load
        def __reduce__(self):
            return (print, ("hello",))

    case("code.pkl", pickle.dumps({"w": Callback()}, protocol=2), "weights_only=True refuses")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    cases["list.pth"] = (listed, "it holds a list")
    options = tmp_path / "options.pth"
    torch.save({"lr": 0.1, "epochs": 3}, options)
    cases["options.pth"] = (options, "its entries 'lr', 'epochs' are not tensors")
    cases["folder"] = (tmp_path, "is a folder")
    cases["absent.pt"] = (tmp_path / "absent.pt", "no such weights file")
    return cases


def test_bad_files_are_one_located_error_without_a_chained_traceback(tmp_path: Path):
    for name, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(WeightsError) as info:
            read_state_dict(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and expected in message, (name, message)
        assert info.value.__cause__ is None, name
        assert info.value.__context__ is None or info.value.__suppress_context__, name


def test_one_error_class_under_every_public_name():
    import rtseg_runtime.weights
    from rtseg_compiler import inference
    from rtseg_compiler.weights import importer, report

    assert inference.WeightsError is importer.WeightsError is report.WeightsError
    assert rtseg_runtime.weights.WeightsError is WeightsError
    assert issubclass(WeightsError, ValueError)  # callers that caught ValueError keep working


# --------------------------------------------------------------------------- the loader

def test_strict_load_copies_nothing_unless_everything_fits(tmp_path: Path):
    spec = _tiny(tmp_path)
    module = compile_model(spec).module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = _random_state(spec)
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        load_weights(module, state)
    assert info.value.report.unexpected == (("head.extra.weight", "head.extra.weight"),)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
    del state["head.extra.weight"]
    report = load_weights(module, state)
    assert report.ok
    assert torch.equal(module.state_dict()["encoder.conv1.weight"], state["encoder.conv1.weight"])


def test_a_layout_mismatch_names_the_parameter_that_fits(tmp_path: Path):
    """An encoder without conv biases (the ImageNet MobileNet) into SkipNet's biased convs."""
    no_bias = _encoder_only(_random_state(_tiny(tmp_path, conv_bias=False)))
    with pytest.raises(WeightsError) as info:
        compile_model(_tiny(tmp_path, conv_bias=True), pretrained=no_bias)
    report = info.value.report
    assert len(report.missing) == 27 and all(k.endswith(".bias") for k in report.missing)
    assert ("missing 27 '*.bias' keys: this layout has no conv biases; pass conv_bias=false "
            "(--encoder-param conv_bias=false, or encoder_params={'conv_bias': False})") in str(info.value)
    # The other way round: biases the spec's convs lack.
    biased = _encoder_only(_random_state(_tiny(tmp_path, conv_bias=True)))
    with pytest.raises(WeightsError, match=r"unexpected 27 '\*\.bias' keys: .*pass conv_bias=true"):
        compile_model(_tiny(tmp_path, conv_bias=False), pretrained=biased)


@pytest.mark.slow  # imports timm and builds its full-size MobileNet
def test_timm_layout_mismatch_suggests_conv_bias_false(tmp_path: Path):
    """The README's default model (conv_bias: true) and timm's mobilenetv1_100 layout."""
    import_torchvision()  # timm imports torchvision
    timm = pytest.importorskip("timm")
    path = tmp_path / "mv1.pth"
    torch.save(timm.create_model("mobilenetv1_100", pretrained=False).state_dict(), path)
    model = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
    with pytest.raises(WeightsError, match="pass conv_bias=false"):
        compile_model(model, input_size=SIZE, pretrained=f"timm:mobilenetv1_100@{path}")
    fitted = compile_model(model, input_size=SIZE, pretrained=f"timm:mobilenetv1_100@{path}",
                           encoder_params={"conv_bias": False})
    assert fitted.module.get_submodule("encoder.conv1").bias is None


def test_a_failed_fetch_names_the_path_alternative(monkeypatch, capsys):
    import_torchvision()  # timm imports torchvision
    timm = pytest.importorskip("timm")

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(timm, "create_model", offline)
    model = str(SPECS / "models" / "imagenet_mobilenet_v1.yaml")
    with pytest.raises(WeightsError, match=r"fetching the published weights failed \(OSError: .*"
                                           r"give its path: timm:mobilenetv1_100@FILE\.safetensors"):
        compile_model(model, pretrained="timm:mobilenetv1_100")
    code = cli.main(["weights", "import", model, "--from", "timm:mobilenetv1_100", "-o", "/dev/null"])
    err = capsys.readouterr().err
    assert code == 2 and "@FILE.safetensors" in err and "internal" not in err and "Traceback" not in err


def test_weights_import_from_a_file_needs_neither_torchvision_nor_timm(monkeypatch, tmp_path: Path):
    """torchvision and timm made unimportable; a torchvision-layout file, renamed by hand, still imports."""
    donor = compile_model(SPECS / "models" / "imagenet_resnet18.yaml").module.state_dict()
    import re

    source = {}
    for key, value in donor.items():  # the compiled keys back to torchvision's (see test_weights_import.py)
        k = key.removeprefix("encoder.").replace("head.fc.1.", "fc.")
        k = re.sub(r"^layer1\.(\d+)\.", lambda m: f"layer1.{int(m.group(1)) - 1}.", k)
        k = re.sub(r"^layer(\d)_(\d)\.downsample_bn\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) - 1}"
                   ".downsample.1.", k)
        k = re.sub(r"^layer(\d)_(\d)\.downsample\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) - 1}"
                   ".downsample.0.", k)
        k = re.sub(r"^layer(\d)_(\d)\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) - 1}.", k)
        source[k] = value
    _, st = _save_both(source, tmp_path, "r18")
    for name in ("torchvision", "timm"):
        monkeypatch.setitem(sys.modules, name, None)  # `import torchvision` now raises ImportError
    out = tmp_path / "enc.pt"
    code = cli.main(["weights", "import", str(SPECS / "models" / "skipnet_resnet18.yaml"), "--input", "32x64",
                     "--from", f"torchvision:resnet18@{st}", "-o", str(out)])
    assert code == 0 and len(torch.load(out, weights_only=True)) == 120


# --------------------------------------------------------------------------- every command, every format

def test_compile_reads_torch_and_safetensors_files_alike(tmp_path: Path, capsys):
    spec = _tiny(tmp_path)
    state = _random_state(spec)
    pt, st = _save_both(state, tmp_path, "full")
    x = torch.randn(1, 3, *SIZE)
    outputs = []
    for path in (pt, st):
        compiled = compile_model(spec, weights=path)
        with torch.no_grad():
            outputs.append(compiled.module.eval()(x))
        assert cli.main(["compile", str(spec), "--weights", str(path), "--inference"]) == 0
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(st.read_bytes()[:100])
    capsys.readouterr()
    assert cli.main(["compile", str(spec), "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: a safetensors file that cannot be read" in err and "Traceback" not in err


@pytest.mark.slow  # two one-step training runs
def test_train_pretrained_reads_torch_and_safetensors_files_alike(tmp_path: Path, capsys):
    from rtseg_runtime.train import main as train_main

    spec = _tiny(tmp_path)
    encoder = {k: v for k, v in _random_state(spec).items() if k.startswith("encoder.")}
    for path in _save_both(encoder, tmp_path, "enc"):
        out = tmp_path / f"run_{path.suffix[1:]}"
        argv = [str(spec), "--data", "synthetic", "--classes", "5", "--input", "32x64", "--max-iters", "1",
                "--eval-interval", "0", "--lr", "0", "--limit-train", "2", "--limit-val", "1",
                "--batch-size", "2",
                "--out-dir", str(out), "--pretrained", str(path)]
        assert train_main(argv) == 0, capsys.readouterr().err
        saved = torch.load(out / "last.pt", weights_only=True)["model"]
        assert torch.equal(saved["encoder.ds3.pw.weight"], encoder["encoder.ds3.pw.weight"]), path
    assert "loaded" in capsys.readouterr().out
    # The checkpoint training wrote is itself a weights file for every command (its 'model' entry).
    assert cli.main(["compile", str(spec), "--weights", str(out / "last.pt"), "--inference"]) == 0
    compiled = compile_model(spec, weights=out / "last.pt")
    assert torch.equal(compiled.module.state_dict()["encoder.ds3.pw.weight"], saved["encoder.ds3.pw.weight"])


@pytest.mark.slow  # two evaluations through the DataLoader
def test_eval_weights_reads_torch_and_safetensors_files_alike(tmp_path: Path, capsys):
    from rtseg_runtime.evaluate import main as eval_main

    from rtseg_runtime.data import write_synthetic_folder

    spec = _tiny(tmp_path)
    data = str(write_synthetic_folder(tmp_path / "synth", SIZE, 5, splits={"val": 2}, seed=3))
    pt, st = _save_both(_random_state(spec, seed=1), tmp_path, "full")
    results = []
    for path in (pt, st):
        argv = [str(spec), "--weights", str(path), "--data", data, "--classes", "5", "--json"]
        assert eval_main(argv) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]
    wrong = tmp_path / "wrong.safetensors"
    _save_both({"encoder.conv1.weight": torch.zeros(1)}, tmp_path, "wrong")
    assert eval_main([str(spec), "--weights", str(wrong), "--data", data, "--classes", "5"]) == 2
    err = capsys.readouterr().err
    assert "the weights do not fit" in err and "Traceback" not in err
