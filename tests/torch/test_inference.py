"""The inference build (batch norm folded, dropout dropped) against the eval-mode module.

Contract: equal outputs within 1e-5 relative (of the output's largest magnitude), with
randomised batch-norm statistics and affine parameters so that the fold does real work; the
folded network's audit (parameters, FLOPs) exact against the module and FlopCounterMode.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import SPECS
from rtseg_compiler import compile_model
from rtseg_compiler.emit.torch_module import count_parameters
from rtseg_compiler.inference import WeightsError, fold_state_dict
from rtseg_compiler.passes.check import check_resolved

SKIPNET = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
ENET = SPECS / "baselines" / "enet.yaml"


def randomise(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Non-trivial BN statistics and affine parameters, conv biases included; returns the state dict."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_close_relative(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    scale = b.abs().max().item()
    err = (a - b).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} exceeds {rel} x {scale:.3g}"


def folded_pair(path: Path, size: tuple[int, int], **kwargs):
    plain = compile_model(path, size, inplace=False, **kwargs)
    state = randomise(plain.module)
    folded = compile_model(path, size, inference=True, weights=state, **kwargs)
    return plain, folded


FAST_SCNN = SPECS / "models" / "fast_scnn.yaml"


@pytest.mark.parametrize("path, size", [(SKIPNET, (72, 104)), (ENET, (64, 96)), (FAST_SCNN, (64, 96))],
                         ids=["skipnet_mobilenet_v1", "enet", "fast_scnn"])
def test_folded_output_equals_eval_module(path, size):
    plain, folded = folded_pair(path, size)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close_relative(folded.module(x), plain.module.eval()(x))
    plan = folded.inference
    assert plan.folds, "nothing was folded"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.module.modules()) or plan.kept
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in folded.module.modules())
    check_resolved(plan.resolved)
    # An absent layer standing for a folded batch norm (Fast-SCNN's first bottleneck, without its
    # residual 'sum') stands for the conv the norm folded into.
    folded_away = {f.bn for f in plan.folds}
    assert not any(s.passthrough in folded_away for s in plan.resolved.graph.skipped.values())


def test_skipnet_folds_every_batch_norm_and_keeps_the_audit_exact():
    plain, folded = folded_pair(SKIPNET, (64, 128))
    bns = [m for m in plain.module.modules() if isinstance(m, nn.BatchNorm2d)]
    plan = folded.inference
    assert len(plan.folds) == len(bns) and not plan.kept
    # BN affine parameters vanish; convs that had no bias gain one.
    gained = sum(plain.graph.node(f.conv).attrs["out"] for f in plan.folds if not f.conv_bias)
    lost = sum(2 * m.num_features for m in bns)
    assert folded.audit.params == plain.audit.params - lost + gained
    assert folded.audit.params == count_parameters(folded.module)
    assert folded.audit.macs == plain.audit.macs
    x = torch.randn(1, 3, 64, 128)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        folded.module(x)
    assert counter.get_total_flops() == folded.audit.flops


def test_encoder_conv_bias_fold():
    """With conv_bias (the shipped SkipNet model file) the conv's own bias enters the fold."""
    plain, folded = folded_pair(SKIPNET, (64, 96))  # the model file sets conv_bias: true
    assert all(f.conv_bias for f in folded.inference.folds if f.conv.startswith("encoder."))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert_close_relative(folded.module(x), plain.module(x))


GROUPED = """
  - {name: c1, op: conv, out: 8, kernel: 3, groups: 4, bias: false}
  - {name: c1_bn, op: bn}
  - {op: relu}
  - {name: drop, op: dropout, p: 0.3, channelwise: true}
  - {name: up, op: deconv, out: 12, kernel: 4, stride: 2, groups: 4, bias: true}
  - {name: up_bn, op: bn, eps: 0.001}
  - {name: up2, op: deconv, out: 6, kernel: 2, stride: 2, groups: 1, bias: false}
  - {name: up2_bn, op: bn, affine: false}
  - {name: side, op: conv, out: 6, kernel: 1, input: up2_bn}
  - {name: side_bn, op: bn, input: side}
  - {name: shared, op: conv, out: 6, kernel: 1, input: up2_bn}
  - {name: shared_bn, op: bn}
  - {name: out, op: add, inputs: [side_bn, shared_bn, shared]}
"""


def test_grouped_conv_and_deconv_layouts(encoder_spec):
    """Grouped conv, grouped deconv (weight (in, out/groups, kh, kw)), with and without bias,
    non-affine BN, dropout between conv and deconv; a conv read twice keeps its BN."""
    path = encoder_spec(GROUPED, channels=8, input_size=(10, 12))
    plain, folded = folded_pair(path, (10, 12))
    plan = folded.inference
    assert {(f.conv, f.bn) for f in plan.folds} == {
        ("encoder.c1", "encoder.c1_bn"), ("encoder.up", "encoder.up_bn"),
        ("encoder.up2", "encoder.up2_bn"), ("encoder.side", "encoder.side_bn")}
    assert [name for name, _ in plan.kept] == ["encoder.shared_bn"]
    assert plan.dropped == ("encoder.drop",)
    x = torch.randn(3, 8, 10, 12)
    with torch.no_grad():
        assert_close_relative(folded.module(x), plain.module.eval()(x))
    assert folded.audit.params == count_parameters(folded.module)


def test_fold_state_dict_keys_match_the_folded_module(encoder_spec):
    path = encoder_spec(GROUPED, channels=8, input_size=(10, 12))
    plain, folded = folded_pair(path, (10, 12))
    state = fold_state_dict(plain.module.state_dict(), folded.inference)
    assert set(state) == set(folded.module.state_dict())


def test_weights_file_and_strict_errors(tmp_path):
    plain = compile_model(SKIPNET, (64, 96))
    state = randomise(plain.module)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    folded = compile_model(SKIPNET, (64, 96), inference=True, weights=path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert_close_relative(folded.module(x), plain.module(x))
    bad = dict(state)
    bad["encoder.conv1.wieght"] = bad.pop("encoder.conv1.weight")
    bad["head.score8.bias"] = torch.zeros(3)
    with pytest.raises(WeightsError) as exc:
        compile_model(SKIPNET, (64, 96), inference=True, weights=bad)
    text = str(exc.value)
    report = exc.value.report
    assert report.missing == ("encoder.conv1.weight",)
    assert report.unexpected == (("encoder.conv1.wieght", "encoder.conv1.wieght"),)
    assert "    encoder.conv1.wieght  (did you mean encoder.conv1.weight?)" in text
    assert "    head.score8.bias: (3,) vs (20,)" in text


def test_channels_last_inference_build():
    plain, folded = folded_pair(SKIPNET, (64, 96), channels_last=True)
    conv = folded.module.get_submodule("encoder.ds3.pw")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_close_relative(folded.module(x), plain.module(x))


def test_build_inference_is_a_deprecated_alias_of_the_inference_build(encoder_spec):
    """The earlier public ``build_inference(analysis, weights=, inplace=)`` still returns
    (module, plan, audit), warns once with the replacement's name, and computes what
    ``build(analysis, inference=True)`` computes from the same weights."""
    from rtseg_compiler.build import build
    from rtseg_compiler.inference import build_inference

    path = encoder_spec(GROUPED, channels=8, input_size=(10, 12))
    plain = compile_model(path, (10, 12))
    state = randomise(plain.module)
    with pytest.warns(DeprecationWarning, match=r"build_inference is deprecated; use rtseg_compiler\.build\.build"):
        module, plan, audit = build_inference(plain.analysis, weights=state, inplace=False)
    expected = build(plain.analysis, inference=True, weights=state, inplace=False)
    assert not module.training and plan.folds == expected.inference.folds and audit == expected.audit
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected.module(x), rtol=0, atol=0)
        assert_close_relative(module(x), plain.module.eval()(x))
