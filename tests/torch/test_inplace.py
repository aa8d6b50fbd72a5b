"""In-place activations keep training exact: equal outputs, equal loss and equal gradients.

The memory pass (passes/inplace.py) lets ReLUs and adds overwrite maps nothing else reads. Here
each model runs forward and backward in training mode twice, with and without the pass, from the
same weights and the same random state (dropout draws the same masks), and every parameter's
gradient must agree. Autograd would raise if an overwritten map were needed by a backward
(its version counter); equal gradients show nothing was silently corrupted either.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import SPECS
from rtseg_compiler import compile_model

MODELS = [
    ("models/skipnet_mobilenet_v1.yaml", (64, 96)),   # crops and adds in the head
    ("models/skipnet_resnet18.yaml", (64, 96)),       # residual adds, ReLU after add
    ("models/unet_mobilenet_v1.yaml", (64, 64)),      # concatenations of encoder maps
    ("baselines/enet.yaml", (32, 48)),                # PReLU, dropout, max-unpool, channel padding
]


@pytest.mark.parametrize("spec, size", MODELS, ids=[m[0].split("/")[1][:-5] for m in MODELS])
def test_training_gradients_equal_without_inplace(spec, size):
    torch.manual_seed(0)
    fresh = compile_model(SPECS / spec, size, inplace=False)
    shared = compile_model(SPECS / spec, size)
    assert shared.in_place, "the pass found nothing to run in place"
    shared.module.load_state_dict(fresh.module.state_dict())
    x = torch.randn(2, 3, *size)
    grads = []
    for compiled in (fresh, shared):
        module = compiled.module.train()
        torch.manual_seed(1)
        out = module(x)
        loss = (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
        loss.backward()
        grads.append((out.detach(), {k: p.grad.clone() for k, p in module.named_parameters()}))
    (out_a, grad_a), (out_b, grad_b) = grads
    assert torch.equal(out_a, out_b)
    assert grad_a.keys() == grad_b.keys()
    for key in grad_a:
        torch.testing.assert_close(grad_b[key], grad_a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_inplace_modules_are_emitted_where_planned():
    compiled = compile_model(SPECS / "models/skipnet_mobilenet_v1.yaml", (64, 96))
    relus = {name: m for name, m in compiled.module.named_modules() if isinstance(m, nn.ReLU)}
    assert relus and all(m.inplace for m in relus.values())
    assert set(compiled.in_place) >= set(relus)
    plain = compile_model(SPECS / "models/skipnet_mobilenet_v1.yaml", (64, 96), inplace=False)
    assert not plain.in_place
    assert not any(m.inplace for m in plain.module.modules() if isinstance(m, nn.ReLU))


def test_input_image_is_never_overwritten(encoder_spec):
    path = encoder_spec("""
      - {name: r, op: relu}
      - {name: c, op: conv, out: 4, kernel: 1}
    """, channels=4, input_size=(5, 6))
    compiled = compile_model(path)
    assert compiled.in_place == ()
    x = torch.randn(1, 4, 5, 6) - 0.5
    before = x.clone()
    with torch.no_grad():
        compiled.module(x)
    assert torch.equal(x, before)
