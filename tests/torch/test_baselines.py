"""ENet and SegNet, the RTSeg paper's baselines, compile into modules that agree with the audit.

At 360x640 on the meta device (no compute): parameters equal the audit and the published
anchors (ENet 363,856, 0.37 M published; SegNet 29,449,932, 29.46 M published), the output is
1x12x360x640, and FlopCounterMode counts exactly ``audit.flops`` (max-unpooling and zero
padding count 0 for torch as for the audit). Small real forwards check what the new ops
compute: unpooling puts each value back where its max-pool found it, ceil-mode sizes
included, and ENet's shortcut padding adds zero channels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from conftest import SPECS, encoder_yaml
from rtseg_compiler import compile_model

BASELINES = {
    # spec: (params, MACs at 360x640)
    "enet": (363_856, 1_697_760_000),
    "segnet": (29_449_932, 142_415_953_920),
}


@pytest.fixture(scope="module", params=sorted(BASELINES))
def on_meta(request):
    with torch.device("meta"):
        return request.param, compile_model(SPECS / "baselines" / f"{request.param}.yaml", (360, 640))


def test_params_equal_audit_and_anchor(on_meta):
    name, compiled = on_meta
    params, _ = BASELINES[name]
    assert sum(p.numel() for p in compiled.module.parameters()) == compiled.audit.params == params


def test_flop_counter_equals_audit(on_meta):
    name, compiled = on_meta
    _, macs = BASELINES[name]
    x = torch.empty(1, 3, 360, 640, device="meta")
    with FlopCounterMode(display=False) as counter:
        y = compiled.module(x)
    assert tuple(y.shape) == (1, 12, 360, 640)
    assert counter.get_total_flops() == compiled.audit.flops == 2 * macs


class Values(fx.Interpreter):
    """Runs a GraphModule and keeps every layer's output tensor, by spec layer name."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if "layer" in n.meta and isinstance(out, torch.Tensor):
            self.values[n.meta["layer"]] = out
        return out


def test_segnet_real_forward_at_odd_size():
    """45x81 pools (ceil) to 23x41, 12x21, 6x11, 3x6, 2x3; the decoder comes back to 45x81."""
    torch.manual_seed(0)
    compiled = compile_model(SPECS / "baselines" / "segnet.yaml", (45, 81))
    rec = Values(compiled.module)
    with torch.no_grad():
        y = rec.run(torch.randn(1, 3, 45, 81))
    assert tuple(y.shape) == (1, 12, 45, 81) and torch.isfinite(y).all()
    assert tuple(rec.values["encoder.pool5"].shape) == (1, 512, 2, 3)
    for name, t in compiled.analysis.resolved.types.items():
        if name in rec.values:
            assert tuple(rec.values[name].shape) == (1, t.channels, t.height, t.width), name
    # unpool5 holds pool5's values at their argmax positions in conv5_3's 3x6 map, zeros elsewhere.
    pre, pooled, up = (rec.values[k] for k in ("encoder.conv5_3.relu", "encoder.pool5", "head.unpool5"))
    _, idx = F.max_pool2d(pre, 2, 2, ceil_mode=True, return_indices=True)
    torch.testing.assert_close(up, F.max_unpool2d(pooled, idx, 2, 2, output_size=pre.shape[-2:]))
    assert int((up != 0).sum()) <= pooled.numel()


def test_enet_real_forward_shortcut_and_unpool():
    torch.manual_seed(0)
    compiled = compile_model(SPECS / "baselines" / "enet.yaml", (64, 96))
    rec = Values(compiled.module)
    with torch.no_grad():
        y = rec.run(torch.randn(2, 3, 64, 96))
    assert tuple(y.shape) == (2, 12, 64, 96) and torch.isfinite(y).all() and y.std() > 0
    # bottleneck1.0's shortcut: the max-pooled 16 channels, then 48 zero channels.
    shortcut, pooled = rec.values["encoder.b1_0.shortcut"], rec.values["encoder.b1_0.pool"]
    assert shortcut.shape[1] == 64
    torch.testing.assert_close(shortcut[:, :16], pooled)
    assert not shortcut[:, 16:].any()
    # bottleneck5.0 unpools with bottleneck1.0's indices: non-zeros only where pool1 took a max.
    up = rec.values["head.b5_0_unpool"]
    pre = rec.values["encoder.init_act"]
    _, idx = F.max_pool2d(pre, 2, 2, return_indices=True)
    mask = torch.zeros_like(pre).flatten(2).scatter_(2, idx.flatten(2), 1.0).view_as(pre)
    assert up.shape == pre.shape
    assert not up[mask == 0].any()


@settings(max_examples=15, deadline=None)
@given(h=st.integers(3, 30), w=st.integers(3, 30), k=st.integers(2, 3), ceil=st.booleans())
def test_unpool_matches_torch_reference(tmp_path_factory, h: int, w: int, k: int, ceil: bool):
    """A conv -> max-pool(indices) -> unpool(to the conv's size) network equals torch's own ops."""
    path: Path = tmp_path_factory.mktemp("unpool") / "enc.yaml"
    path.write_text(encoder_yaml(f"""
        - {{name: conv, op: conv, out: 4, kernel: 3}}
        - {{name: pool, op: maxpool, kernel: {k}, stride: 2, ceil_mode: {str(ceil).lower()},
            indices: true}}
        - {{name: up, op: unpool, kernel: {k}, stride: 2, inputs: [pool, pool, conv]}}
    """, input_size=(h, w), channels=3))
    compiled = compile_model(path)
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        got = compiled.module(x)
        feat = compiled.module.encoder.conv(x)
        pooled, idx = F.max_pool2d(feat, k, 2, ceil_mode=ceil, return_indices=True)
        want = F.max_unpool2d(pooled, idx, k, 2, output_size=feat.shape[-2:])
    assert tuple(got.shape) == (1, 4, h, w) == compiled.audit.output_shape
    torch.testing.assert_close(got, want)
