"""Every door to a network builds the same module for the same spec (rtseg_compiler/build.py).

Same means: the same state-dict keys in the same order, ``torch.equal`` outputs with the same
weights, and the same audit. The doors: ``compile_model``, ``create_model``, ``features_only``
(against the whole model's encoder), ``inference=True`` through either function, and a runtime
checkpoint rebuilt from the texts it embeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import compile_model, create_model

SIZE = (64, 96)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        got, want = a(x), b(x)
    if isinstance(want, dict):
        assert list(got) == list(want)
        assert all(torch.equal(got[k], want[k]) for k in want)
    else:
        assert torch.equal(got, want)


def _randomised(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with batch-norm statistics away from their initial values, so folding shows."""
    torch.manual_seed(1)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.uniform_(-0.5, 0.5)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    return state


@pytest.mark.parametrize("name", ["skipnet_mobilenet_v1", "bisenet_v1_resnet18"])
def test_compile_model_and_create_model_build_the_same_module(name: str) -> None:
    compiled = compile_model(name, SIZE)
    net = create_model(name, input_size=SIZE).eval()
    assert list(net.state_dict()) == list(compiled.module.state_dict())
    assert net.audit == compiled.audit
    net.load_state_dict(_randomised(compiled.module))
    compiled.module.load_state_dict(net.state_dict())
    _same_outputs(net, compiled.module, torch.randn(2, 3, *SIZE))


@pytest.mark.parametrize("options", [{"output_stride": 16, "channels_last": True},
                                     {"encoder_params": {"width": 0.5}, "inplace": False}])
def test_create_model_takes_the_build_options_compile_model_takes(options: dict) -> None:
    compiled = compile_model("unet_mobilenet_v1", SIZE, **options)
    state = _randomised(compiled.module)
    net = create_model("unet_mobilenet_v1", input_size=SIZE, weights=state, **options).eval()
    compiled.module.load_state_dict(state)
    assert net.audit == compiled.audit and list(net.state_dict()) == list(state)
    _same_outputs(net, compiled.module, torch.randn(1, 3, *SIZE))


def test_features_only_is_the_whole_models_encoder() -> None:
    """The backbone's keys are the model's encoder keys; its taps are what ``net.encoder`` returns."""
    net = create_model("skipnet_mobilenet_v1", input_size=SIZE)
    backbone = create_model("skipnet_mobilenet_v1", features_only=True, input_size=SIZE)
    full = _randomised(net)
    net.load_state_dict(full)
    encoder_keys = [k for k in full if k.startswith("encoder.")]
    assert list(backbone.state_dict()) == encoder_keys[:len(backbone.state_dict())]
    backbone.load_state_dict({k: full[k] for k in backbone.state_dict()})
    _same_outputs(backbone.eval(), net.encoder.eval(), torch.randn(2, 3, *SIZE))
    assert backbone.audit.params == sum(p.numel() for p in backbone.parameters())


@pytest.mark.parametrize("name", ["skipnet_mobilenet_v1", "bisenet_v1_resnet18"])
def test_the_inference_build_is_the_same_through_either_door(name: str) -> None:
    state = _randomised(compile_model(name, SIZE).module)
    folded = compile_model(name, SIZE, inference=True, weights=state)
    net = create_model(name, input_size=SIZE, inference=True, weights=state)
    assert not net.training  # an inference build comes back ready for inference
    assert list(net.state_dict()) == list(folded.module.state_dict())
    assert net.audit == folded.audit and net.audit.params < compile_model(name, SIZE).audit.params
    _same_outputs(net, folded.module, torch.randn(2, 3, *SIZE))


def test_a_checkpoint_rebuilds_the_same_module_from_its_texts_alone(tmp_path: Path, monkeypatch) -> None:
    """The spec files are gone and no temporary file may be written: the embedded texts suffice."""
    from rtseg_runtime.build import ModelArgs, build_model
    from rtseg_runtime.checkpoint import embed_specs
    from rtseg_runtime.evaluate import load_checkpoint_model

    folder = tmp_path / "specs"
    for part in ("models", "encoders", "meta"):
        (folder / part).mkdir(parents=True)
    model = folder / "models" / "mine.yaml"
    shutil.copy(SPECS / "encoders" / "mobilenet_v1.yaml", folder / "encoders")
    shutil.copy(SPECS / "meta" / "skipnet.yaml", folder / "meta")
    model.write_text("kind: model\nencoder: ../encoders/mobilenet_v1.yaml\nmeta: ../meta/skipnet.yaml\n"
                     "num_classes: 5\ninput: [64, 96]\n")
    margs = ModelArgs(str(model), None, None, SIZE, 5)
    trained = build_model(margs)
    state = _randomised(trained.module)
    checkpoint = tmp_path / "best.pt"
    torch.save({"model_args": margs.to_dict(), "model": state, "specs": embed_specs(str(model), None, None)},
               checkpoint)
    shutil.rmtree(folder)
    import tempfile

    def no_temp(*args, **kwargs):
        raise AssertionError("the rebuild wrote a temporary file")
    monkeypatch.setattr(tempfile, "mkdtemp", no_temp)
    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    rebuilt, _, _ = load_checkpoint_model(checkpoint)
    trained.module.load_state_dict(state)
    assert list(rebuilt.module.state_dict()) == list(trained.module.state_dict())
    assert rebuilt.audit == trained.audit
    assert rebuilt.graph.files == trained.graph.files  # diagnostics name the files training read
    _same_outputs(rebuilt.module.eval(), trained.module.eval(), torch.randn(1, 3, *SIZE))


@pytest.mark.parametrize("inference", [False, True])
def test_the_standalone_source_is_the_built_module(tmp_path: Path, inference: bool) -> None:
    """--save-code's text comes from the graph the module was emitted from (after the build passes)."""
    import importlib.util

    from rtseg_compiler.build import class_name_of, standalone_source

    plain = compile_model("skipnet_mobilenet_v1", SIZE)
    state = _randomised(plain.module)
    compiled = compile_model("skipnet_mobilenet_v1", SIZE, inference=inference, weights=state)
    path = tmp_path / "net.py"
    path.write_text(standalone_source(compiled, origin="skipnet_mobilenet_v1"))
    spec = importlib.util.spec_from_file_location("saved_net", path)
    saved = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(saved)
    net = getattr(saved, class_name_of(compiled.audit.model))()
    net.load_state_dict(compiled.module.state_dict(), strict=True)
    _same_outputs(net.eval(), compiled.module, torch.randn(2, 3, *SIZE))


def test_save_code_of_an_inference_build_with_in_place_adds(tmp_path: Path, capsys) -> None:
    """rtsegc compile --inference --save-code: the file is written from the folded graph before the
    memory pass, so SkipNet's in-place adds (which a torch-only file cannot express) are no obstacle."""
    from rtseg_compiler.cli import main as rtsegc

    path = tmp_path / "net.py"
    assert rtsegc(["compile", "skipnet_mobilenet_v1", "--input", "64x96", "--inference",
                   "--save-code", str(path)]) == 0
    assert "written to" in capsys.readouterr().out and "class SkipnetMobilenetV1" in path.read_text()
