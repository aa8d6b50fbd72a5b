"""The example user ops (examples/rtsegc-example-ops) against the torch modules they build.

The same contract as the built-in ops: for each op the inferred shape equals
the real module's output, the analytic parameters equal the module's, and
2 x MACs equals what torch's FlopCounterMode counts. The values are checked
against an independent computation (a hand-written [1, 2, 1]/4 filter; the
depth-to-space index formula), and the blur pool's dilation declaration is
checked to be exact: the encoder rewritten to output stride 8 computes the
strided encoder's values on every 4th row and column.

The package is imported from its source tree (and its ops unregistered
afterwards); tests/unit/test_user_ops.py installs it with pip and drives it
through the CLI. One test here does that for ``rtsegc compile``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from conftest import EXAMPLE_OPS, REPO_ROOT
from rtseg_compiler import compile_model
from rtseg_compiler.ops import REGISTRY, unregister
from rtseg_compiler.ops import plugins

EXAMPLE_MODEL = EXAMPLE_OPS / "specs" / "blurnet_subpixel.yaml"


@pytest.fixture(scope="module")
def example_ops() -> Iterator[None]:
    before = set(REGISTRY)
    sys.path.insert(0, str(EXAMPLE_OPS))
    try:
        import rtsegc_example_ops  # noqa: F401
        yield
    finally:
        sys.path.remove(str(EXAMPLE_OPS))
        for name in set(REGISTRY) - before:
            unregister(name)
        for name in [m for m in sys.modules if m.startswith("rtsegc_example_ops")]:
            del sys.modules[name]
        plugins._reset_for_tests()


def _flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


def _check_contract(compiled, x: torch.Tensor) -> torch.Tensor:
    module, audit = compiled.module, compiled.audit
    with torch.no_grad():
        y = module(x)
    assert tuple(y.shape) == audit.output_shape
    assert sum(p.numel() for p in module.parameters()) == audit.params
    assert _flops(module, x) == audit.flops == 2 * audit.macs
    return y


BLUR_CASES = [
    # kernel, stride, dilation, pad, input (h, w)
    (3, 2, 1, "reflect", (24, 40)),
    (3, 2, 1, "zeros", (23, 37)),
    (5, 2, 1, "reflect", (23, 37)),
    (3, 1, 2, "zeros", (24, 40)),
    (5, 3, 1, "zeros", (17, 29)),
    (1, 2, 1, "reflect", (9, 9)),
]


@pytest.mark.parametrize("kernel, stride, dilation, pad, size", BLUR_CASES)
def test_blur_pool_contract(encoder_spec, example_ops, kernel, stride, dilation, pad, size):
    path = encoder_spec(f"- {{name: b, op: blur_pool, kernel: {kernel}, stride: {stride}, "
                        f"dilation: {dilation}, pad: {pad}}}\n", input_size=size, channels=6)
    compiled = compile_model(path)
    x = torch.randn(1, 6, *size)
    y = _check_contract(compiled, x)
    row = compiled.audit.layers[-1]
    assert row.params == 0 and row.macs == 6 * y.shape[2] * y.shape[3] * kernel * kernel
    assert row.tf_flops == 2 * row.macs
    assert not compiled.module.state_dict(), "the fixed filter is a buffer left out of the state dict"


def test_blur_pool_values_match_a_hand_written_filter(encoder_spec, example_ops):
    path = encoder_spec("- {name: b, op: blur_pool, pad: zeros}\n", input_size=(11, 14), channels=3)
    x = torch.randn(1, 3, 11, 14)
    taps = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    expected = F.conv2d(x, taps.expand(3, 1, 3, 3), stride=2, padding=1, groups=3)
    with torch.no_grad():
        torch.testing.assert_close(compile_model(path).module(x), expected)


@pytest.mark.parametrize("factor, channels, size", [(2, 8, (24, 40)), (3, 18, (7, 5)), (1, 4, (3, 3))])
def test_pixel_shuffle_contract_and_values(encoder_spec, example_ops, factor, channels, size):
    path = encoder_spec(f"- {{name: p, op: pixel_shuffle, factor: {factor}}}\n", input_size=size,
                        channels=channels)
    compiled = compile_model(path)
    x = torch.randn(1, channels, *size)
    y = _check_contract(compiled, x)
    r = factor
    # depth to space: out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w]
    c, i, j, h, w = channels // (r * r) - 1, r - 1, 0, size[0] - 1, size[1] // 2
    assert y[0, c, h * r + i, w * r + j] == x[0, c * r * r + i * r + j, h, w]
    assert compiled.audit.layers[-1].stride == compiled.audit.layers[-1].stride.__class__(1, r)


def test_example_model_contract(example_ops):
    """The example model (BlurNet + sub-pixel head), at a size that is not a multiple of 32."""
    compiled = compile_model(EXAMPLE_MODEL, (72, 104))
    _check_contract(compiled, torch.randn(1, 3, 72, 104))


@pytest.mark.parametrize("pad", ["zeros", "reflect"])
def test_blur_pool_dilation_declaration_is_exact(encoder_spec, example_ops, pad):
    """At output stride 8 the stride-32 encoder computes the same values on every 4th pixel.

    The blur pools past stride 8 lose their stride and the layers after them are dilated
    (blur_pool's ``dilate`` hook and conv's), so the dilated map sampled at ``[::4, ::4]``
    must equal the strided map, borders included: with zero padding for any size; with
    reflect padding it holds at the sizes tested (65 here; 64 was checked by hand as well).
    """
    stage = ("- {{name: {n}c, op: conv, out: 8, kernel: 3}}\n- {{op: bn}}\n- {{op: relu}}\n"
             "- {{name: {n}, op: blur_pool, pad: " + pad + "}}\n")
    layers = "".join(stage.format(n=f"s{2 ** k}") for k in range(1, 6))
    path = encoder_spec(layers + "- {name: top, op: conv, out: 8, kernel: 3}\n", input_size=(65, 65),
                        channels=3)
    strided = compile_model(path)
    dilated = compile_model(path, output_stride=8)
    assert [r.stride for r in strided.audit.layers][-1] == 32
    assert [r.stride for r in dilated.audit.layers][-1] == 8
    dilations = {r.name: r.dilation for r in dilated.audit.layers if r.op == "blur_pool"}
    assert dilations == {"encoder.s2": (1, 1), "encoder.s4": (1, 1), "encoder.s8": (1, 1),
                         "encoder.s16": (1, 1), "encoder.s32": (2, 2)}
    torch.manual_seed(0)
    dilated.module.load_state_dict(strided.module.state_dict())
    for m in strided.module.modules():  # eval-mode BN with non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    dilated.module.load_state_dict(strided.module.state_dict())
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(dilated.module(x)[:, :, ::4, ::4], strided.module(x), rtol=1e-5, atol=1e-5)


def test_rtsegc_compile_with_the_installed_package(example_ops_site):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RTSEGC_DEBUG")}
    env["PYTHONPATH"] = str(example_ops_site)
    proc = subprocess.run([sys.executable, "-m", "rtseg_compiler.cli", "compile", str(EXAMPLE_MODEL),
                           "--input", "72x104"], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "(matches inferred 1x19x72x104)" in proc.stdout and "(matches audit" in proc.stdout
