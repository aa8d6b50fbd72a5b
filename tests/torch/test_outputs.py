"""Torch contract for several outputs and for the block features of issue 8.

A meta with an auxiliary head compiles to a module returning a dict in declared order whose
tensors have the inferred shapes; parameters equal the audit and FlopCounterMode equals
2 x MACs, both with every head and with ``outputs="main"`` (which returns a tensor). A block
using ``when:``, ``op: PARAM`` and named inputs is checked the same way.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import SPECS
from rtseg_compiler import compile_model

META_AUX = """
kind: meta
name: fcn_aux
requires: [stride8, stride16]
layers:
  - {name: score, op: conv, input: encoder.stride16, out: num_classes, kernel: 1}
  - {name: logits, op: upsample, scale: 16, mode: bilinear}
  - {name: aux_conv, op: conv, input: encoder.stride8, out: 32, kernel: 3, bias: false}
  - {op: bn}
  - {op: relu}
  - {name: aux_score, op: conv, out: num_classes, kernel: 1}
  - {name: aux_logits, op: upsample, scale: 8, mode: bilinear}
outputs: {out: logits, aux: aux_logits}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


@pytest.fixture
def aux_model(tmp_path: Path) -> Path:
    _write(tmp_path, "meta.yaml", META_AUX)
    return _write(tmp_path, "model.yaml", f"""
        kind: model
        name: fcn_aux_mobilenet_v1
        encoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}
        meta: meta.yaml
        num_classes: 5
        input: [96, 160]
        """)


def test_module_returns_the_outputs_in_order_with_inferred_shapes(aux_model: Path):
    compiled = compile_model(aux_model)
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        out = compiled.module(x)
    assert isinstance(out, dict) and list(out) == ["out", "aux"]
    types = compiled.analysis.resolved.types
    for name, node in compiled.graph.outputs:
        t = types[node]
        assert tuple(out[name].shape) == (2, t.channels, t.height, t.width)
    params = sum(p.numel() for p in compiled.module.parameters())
    assert params == compiled.audit.params
    assert _flops(compiled.module, x[:1]) == compiled.audit.flops
    heads = {h.name: h for h in compiled.audit.heads}
    assert heads["out"].macs + heads["aux"].macs == compiled.audit.macs


def test_main_only_drops_the_auxiliary_head(aux_model: Path):
    full = compile_model(aux_model)
    main = compile_model(aux_model, outputs="main")
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        out = main.module(x)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == main.audit.output_shape
    params = sum(p.numel() for p in main.module.parameters())
    assert params == main.audit.params < full.audit.params
    aux = next(h for h in full.audit.heads if h.name == "aux")
    assert full.audit.params - main.audit.params == aux.params
    assert _flops(main.module, x) == main.audit.flops == full.audit.flops - aux.flops
    # The main output computes the same values with or without the auxiliary head.
    main.module.load_state_dict(
        {k: v for k, v in full.module.state_dict().items() if k in main.module.state_dict()})
    with torch.no_grad():
        assert torch.equal(main.module(x), full.module(x)["out"])


BLOCKS = """
kind: encoder
name: gated
input: [32, 48]
params: {use_se: true}
blocks:
  bneck:
    params: {out: ~, exp: ~, se: false, act: relu, stride: 1}
    layers:
      - {name: expand, op: conv, out: exp, kernel: 1, bias: false, when: "exp != block_in_channels"}
      - {name: expand_bn, op: bn, when: "exp != block_in_channels"}
      - {name: expand_act, op: act, when: "exp != block_in_channels"}
      - {name: dw, op: conv, out: exp, kernel: 3, stride: stride, groups: exp, bias: false}
      - {name: dw_act, op: act}
      - {name: pool, op: gap, when: se}
      - {name: fc, op: conv, out: "exp // 4", kernel: 1, when: se}
      - {name: fc_act, op: relu, when: se}
      - {name: fc2, op: conv, out: exp, kernel: 1, when: se}
      - {name: gate, op: upsample, inputs: [fc2, dw_act], when: se}
      - {name: scaled, op: add, inputs: [dw_act, gate], when: se}
      - {name: project, op: conv, out: out, kernel: 1, bias: false}
      - {name: res, op: add, inputs: [project, input], when: "stride == 1 and block_in_channels == out"}
  fuse:
    inputs: [x, skip]
    layers:
      - {name: up, op: upsample, inputs: [x, skip]}
      - {name: proj, op: conv, out: "skip.channels", kernel: 1}
      - {name: sum, op: add, inputs: [proj, skip]}
layers:
  - {name: stem, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: b1, block: bneck, out: 16, exp: 16}
  - {name: b2, block: bneck, out: 24, exp: 64, stride: 2, act: relu6}
  - {name: b3, block: bneck, out: 24, exp: 72, repeat: 2, start: 0, se: use_se}
  - {name: f, block: fuse, inputs: [b3, b1]}
"""


@pytest.mark.parametrize("use_se", [True, False])
def test_blocks_with_when_op_parameters_and_named_inputs(tmp_path: Path, use_se: bool):
    path = _write(tmp_path, "gated.yaml", BLOCKS)
    compiled = compile_model(path, encoder_params={"use_se": use_se})
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        out = compiled.module(x)
    assert tuple(out.shape) == compiled.audit.output_shape
    assert sum(p.numel() for p in compiled.module.parameters()) == compiled.audit.params
    assert _flops(compiled.module, x) == compiled.audit.flops
    relu6 = [n for n, m in compiled.module.named_modules() if isinstance(m, torch.nn.ReLU6)]
    assert relu6 == ["encoder.b2.expand_act", "encoder.b2.dw_act"]
    assert hasattr(compiled.module.encoder.b3, "0") and hasattr(compiled.module.encoder.b3, "1")
    assert ("encoder.b3.0.pool" in compiled.graph) == use_se


SE_BNECK = """
kind: encoder
name: se_bneck
input: [40, 56]
params: {use_se: true}
blocks:
  bneck:
    params: {out: ~, exp: ~, k: 3, stride: 1, act: relu, se: false}
    layers:
      - {name: expand, op: conv, out: exp, kernel: 1, bias: false, when: "exp != block_in_channels"}
      - {name: expand_bn, op: bn, when: "exp != block_in_channels"}
      - {name: expand_act, op: act, when: "exp != block_in_channels"}
      - {name: dw, op: conv, out: exp, kernel: k, stride: stride, groups: exp, bias: false}
      - {name: dw_bn, op: bn}
      - {name: dw_act, op: act}
      - {name: squeeze, op: gap, when: se}
      - {name: fc1, op: conv, out: "make_divisible(exp / 4)", kernel: 1, when: se}
      - {name: fc1_act, op: relu, when: se}
      - {name: fc2, op: conv, out: exp, kernel: 1, when: se}
      - {name: gate, op: hardsigmoid, when: se}
      - {name: scaled, op: mul, inputs: [dw_act, gate], when: se}
      - {name: project, op: conv, out: out, kernel: 1, bias: false}
      - {name: project_bn, op: bn}
      - {name: res, op: add, inputs: [project_bn, input], when: "stride == 1 and block_in_channels == out"}
layers:
  - {name: stem, op: conv, out: 16, kernel: 3, stride: 2, bias: false}
  - {name: stem_bn, op: bn}
  - {name: stem_act, op: hardswish}
  - {name: b1, block: bneck, out: 16, exp: 16, se: use_se}
  - {name: b2, block: bneck, out: 24, exp: 64, stride: 2}
  - {name: b3, block: bneck, out: 24, exp: 72, k: 5, act: hardswish, se: use_se, repeat: 2, start: 0}
"""


class _RefBneck(torch.nn.Module):
    """MobileNetV3's inverted residual written by hand (torchvision's layout, without its code)."""

    def __init__(self, cin: int, exp: int, out: int, k: int, stride: int, act: type, se: bool):
        super().__init__()
        from rtseg_compiler.spec.expr import make_divisible

        self.expand = (torch.nn.Sequential(torch.nn.Conv2d(cin, exp, 1, bias=False),
                                           torch.nn.BatchNorm2d(exp), act()) if exp != cin else None)
        self.dw = torch.nn.Sequential(torch.nn.Conv2d(exp, exp, k, stride, (k - 1) // 2, groups=exp,
                                                      bias=False), torch.nn.BatchNorm2d(exp), act())
        squeeze = make_divisible(exp / 4)
        self.se = (torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(exp, squeeze, 1),
                                       torch.nn.ReLU(), torch.nn.Conv2d(squeeze, exp, 1),
                                       torch.nn.Hardsigmoid()) if se else None)
        self.project = torch.nn.Sequential(torch.nn.Conv2d(exp, out, 1, bias=False), torch.nn.BatchNorm2d(out))
        self.residual = stride == 1 and cin == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = y * self.se(y)
        y = self.project(y)
        return y + x if self.residual else y


def _reference(use_se: bool) -> torch.nn.Sequential:
    hs, relu = torch.nn.Hardswish, torch.nn.ReLU
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(16), hs(),
        _RefBneck(16, 16, 16, 3, 1, relu, use_se), _RefBneck(16, 64, 24, 3, 2, relu, False),
        _RefBneck(24, 72, 24, 5, 1, hs, use_se), _RefBneck(24, 72, 24, 5, 1, hs, use_se))


@pytest.mark.parametrize("use_se", [True, False])
def test_se_bottleneck_with_when_and_op_parameters_matches_a_hand_written_reference(
        tmp_path: Path, use_se: bool):
    """Same parameters, FLOPs (analytic = FlopCounterMode on both) and outputs (eval, random BN stats)."""
    path = _write(tmp_path, "se_bneck.yaml", SE_BNECK)
    compiled = compile_model(path, encoder_params={"use_se": use_se})
    ref = _reference(use_se).eval()
    torch.manual_seed(0)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ours = dict(compiled.module.state_dict())
    theirs = dict(ref.state_dict())
    assert sum(p.numel() for p in ref.parameters()) == compiled.audit.params
    assert len(ours) == len(theirs)
    # Both enumerate tensors in data-flow order, so they pair up one to one.
    compiled.module.load_state_dict({k: v for k, v in zip(ours, theirs.values(), strict=True)})
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        got, want = compiled.module(x), ref(x)
    assert got.shape == want.shape and tuple(got.shape) == compiled.audit.output_shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert _flops(compiled.module, x) == _flops(ref, x) == compiled.audit.flops
    ops = {n.op for n in compiled.graph.nodes}
    assert ("mul" in ops and "hardsigmoid" in ops) == use_se and "hardswish" in ops
