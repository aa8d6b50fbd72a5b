"""``rtsegc compile --save-code``: a standalone module that computes exactly what the compiled one does.

The written file is imported on its own (in a fresh interpreter where ``rtseg_compiler`` cannot be
imported, for one model), the compiled module's state dict is loaded into it strictly, and both must
give bit-identical outputs (``torch.equal``) in eval mode after random BN statistics.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import _class_name, compile_model
from rtseg_compiler.cli import main as rtsegc
from rtseg_compiler.emit.python_source import emit_python

ZOO = ["models/skipnet_mobilenet_v1.yaml", "models/unet_resnet18.yaml", "baselines/enet.yaml",
       "baselines/segnet.yaml", "models/dilation_resnet18.yaml", "models/skipnet_shufflenet_v1.yaml"]


def _randomise(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"saved_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


def _check_round_trip(spec_path: Path, tmp_path: Path, size=None) -> str:
    compiled = compile_model(spec_path, size)
    _randomise(compiled.module)
    name = _class_name(compiled.graph.name)
    source = emit_python(compiled.analysis.resolved, name, origin=str(spec_path))
    path = tmp_path / f"{compiled.graph.name}.py"
    path.write_text(source)
    net = _import_file(path, name)()
    net.load_state_dict(compiled.module.state_dict(), strict=True)
    assert list(net.state_dict()) == list(compiled.module.state_dict())
    net.eval()
    compiled.module.eval()
    _, c, h, w = compiled.audit.input
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = net(x), compiled.module(x)
    if isinstance(want, dict):  # several outputs (DeepLabV3's aux head): the same dict, in order
        assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    else:
        assert torch.equal(got, want)
    return source


def _imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("spec", ZOO, ids=[Path(s).stem for s in ZOO])
def test_saved_module_is_identical(spec: str, tmp_path: Path):
    source = _check_round_trip(SPECS / spec, tmp_path, (96, 128))
    assert _imports(source) <= {"__future__", "typing", "torch", "math", "operator", "functools"}
    assert "rtseg_compiler" not in source.split('"""', 2)[2]  # only the docstring mentions it


def _all_models() -> list[Path]:
    return sorted((SPECS / "models").glob("*.yaml"))


@pytest.mark.parametrize("spec", _all_models(), ids=lambda p: p.stem)
def test_every_zoo_model_at_a_small_input(spec: Path, tmp_path: Path):
    """Classifiers at their ImageNet size (VGG's fc6 needs 7x7), segmentation models at 64x96."""
    size = None if spec.stem.startswith("imagenet") else (64, 96)
    _check_round_trip(spec, tmp_path, size)


def test_lines_carry_layer_names_and_shapes(tmp_path: Path):
    source = _check_round_trip(SPECS / "models/skipnet_mobilenet_v1.yaml", tmp_path, (64, 96))
    assert "self.encoder.ds7_11 = nn.ModuleDict()" in source
    assert "self.encoder.ds7_11['1'].dw = nn.Conv2d(512, 512, 3, padding=1, groups=512)" in source
    forward = source.split("def forward", 1)[1]
    assert "= self.encoder.ds1.dw(" in forward and "# encoder.ds1.dw: conv -> 32x32x48" in forward
    assert "score16 = self.head.score16(stride16)" in forward
    assert "def crop_like(" in source and "logits + score16" in forward


def test_cli_save_code_file_runs_without_rtseg_compiler(tmp_path: Path, capsys):
    target = tmp_path / "net.py"
    model = SPECS / "models/unet_resnet18.yaml"
    assert rtsegc(["compile", str(model), "--input", "64x96", "--save-code", str(target)]) == 0
    assert "written to" in capsys.readouterr().out
    weights = tmp_path / "w.pt"
    compiled = compile_model(model, (64, 96))
    torch.save(compiled.module.state_dict(), weights)
    x = torch.randn(1, 3, 64, 96)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(compiled.module.eval()(x), tmp_path / "y.pt")
    probe = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "rtseg_compiler":
            raise ImportError("rtseg_compiler is blocked")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(tmp_path)!r})
import torch, net
m = net.UnetResnet18()
m.load_state_dict(torch.load({str(weights)!r}, weights_only=True), strict=True)
with torch.no_grad():
    assert torch.equal(m.eval()(torch.load({str(tmp_path / 'x.pt')!r})), torch.load({str(tmp_path / 'y.pt')!r}))
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


META_AUX = """\
kind: meta
name: fcn_aux
requires: [stride8, stride16]
layers:
  - {name: score, op: conv, input: encoder.stride16, out: num_classes, kernel: 1}
  - {name: logits, op: upsample, scale: 16, mode: bilinear}
  - {name: aux_score, op: conv, input: encoder.stride8, out: num_classes, kernel: 1}
  - {name: aux_logits, op: upsample, scale: 8, mode: bilinear}
outputs: {out: logits, aux: aux_logits}
"""


def test_several_outputs_return_the_same_dict(tmp_path: Path):
    (tmp_path / "meta.yaml").write_text(META_AUX)
    (tmp_path / "model.yaml").write_text(f"kind: model\nname: aux\nencoder: {SPECS / 'encoders/mobilenet_v1.yaml'}"
                                         "\nmeta: meta.yaml\nnum_classes: 5\n")
    source = _check_round_trip_dict(tmp_path / "model.yaml", tmp_path)
    assert "return {'out': logits, 'aux': aux_logits}" in source


def _check_round_trip_dict(spec_path: Path, tmp_path: Path) -> str:
    compiled = compile_model(spec_path, (64, 64))
    if not compiled.graph.outputs:
        pytest.skip("this model has one output")
    _randomise(compiled.module)
    name = _class_name(compiled.graph.name)
    source = emit_python(compiled.analysis.resolved, name)
    path = tmp_path / "several.py"
    path.write_text(source)
    net = _import_file(path, name)()
    net.load_state_dict(compiled.module.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, want = net.eval()(x), compiled.module.eval()(x)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    return source


GATED = """\
kind: encoder
name: gated
input: [32, 48]
layers:
  - {name: stem, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: act, op: hardswish}
  - {name: squeeze, op: gap}
  - {name: reduce, op: conv, out: 4, kernel: 1}
  - {op: relu}
  - {name: expand, op: conv, out: 16, kernel: 1}
  - {name: gate, op: hardsigmoid}
  - {name: scaled, op: mul, inputs: [act, gate]}
  - {name: pooled, op: adaptive_avgpool, size: [2, 3]}
  - {name: half, op: split, input: scaled, start: 0, stop: 8}
  - {name: both, op: concat, inputs: [half, half]}
taps: {stride2: both}
"""


def test_gating_ops_when_registered(tmp_path: Path):
    """MobileNetV3-style ops (from the ops branch): SE gate, broadcasting mul, split."""
    from rtseg_compiler.ops import REGISTRY

    needed = {"hardswish", "hardsigmoid", "mul", "adaptive_avgpool", "split"}
    if not needed <= set(REGISTRY):
        pytest.skip(f"ops not in this build: {sorted(needed - set(REGISTRY))}")
    (tmp_path / "gated.yaml").write_text(GATED)
    source = _check_round_trip(tmp_path / "gated.yaml", tmp_path)
    assert "act * gate" in source or "* gate" in source
