"""Ops against torch: activations, softmax, broadcasting add/mul, adaptive average pooling,
channel split, and the conv/pool output-size rule.

For each op, on a small encoder with an odd input size: the compiled module's
layer shapes equal the inferred types, its parameters equal the audit's, and
torch's FlopCounterMode equals 2 x the audit's MACs; the values equal what the
torch functional computes. A Hypothesis property compares the add/mul shape
rule with ``torch.broadcast_shapes`` on random C x H x W shapes, both ways:
the compiler accepts exactly the shapes torch accepts. ``conv_out``, the size
rule of conv and pooling, equals the sizes torch's conv2d and max_pool2d
produce on a grid of small sizes, kernels, strides, paddings and dilations.
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from rtseg_compiler import compile_model  # noqa: E402
from rtseg_compiler.ir import TensorType  # noqa: E402
from rtseg_compiler.ops import OpError, conv_out  # noqa: E402
from rtseg_compiler.ops.merge import broadcast_dims, broadcast_type  # noqa: E402
from test_emit import layer_shapes  # noqa: E402

SIZE = (23, 37)
CHANNELS = 8


def _compile(tmp_path: Path, layers: str):
    path = tmp_path / "enc.yaml"
    path.write_text(f"kind: encoder\nname: probe\ninput_channels: {CHANNELS}\nlayers:\n"
                    + textwrap.indent(textwrap.dedent(layers).strip("\n"), "  ") + "\n")
    return compile_model(path, SIZE)


def _contract(compiled) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes, params and FLOPs; return (input, output) of one random forward."""
    torch.manual_seed(0)
    x = torch.randn(1, CHANNELS, *SIZE)
    shapes = layer_shapes(compiled, x)
    for node in compiled.graph.nodes:
        t = compiled.analysis.resolved.types[node.name]
        assert shapes[node.name] == (1, t.channels, t.height, t.width), node.name
    assert sum(p.numel() for p in compiled.module.parameters()) == compiled.audit.params
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        y = compiled.module(x)
    assert counter.get_total_flops() == 2 * compiled.audit.macs
    return x, y


ACTIVATIONS = [
    ("{op: sigmoid}", torch.sigmoid),
    ("{op: tanh}", torch.tanh),
    ("{op: hardsigmoid}", F.hardsigmoid),
    ("{op: hardswish, inplace: true}", F.hardswish),
    ("{op: silu}", F.silu),
    ("{op: gelu}", F.gelu),
    ("{op: gelu, approximate: tanh}", lambda x: F.gelu(x, approximate="tanh")),
    ("{op: leaky_relu}", lambda x: F.leaky_relu(x, 0.01)),
    ("{op: leaky_relu, slope: 0.2}", lambda x: F.leaky_relu(x, 0.2)),
    ("{op: softmax}", lambda x: torch.softmax(x, 1)),
]


@pytest.mark.parametrize("layer,reference", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_contract(tmp_path, layer, reference):
    # After a conv, so that an inplace activation does not overwrite the caller's input and
    # FlopCounterMode has something to count.
    compiled = _compile(tmp_path, f"- {{name: c, op: conv, out: 8, kernel: 3}}\n- {{name: a, {layer[1:]}")
    x, y = _contract(compiled)
    assert compiled.audit.macs == 8 * 8 * 9 * SIZE[0] * SIZE[1]
    with torch.no_grad():
        expected = reference(compiled.module.get_submodule("encoder.c")(x))
    torch.testing.assert_close(y, expected)


GATED = """
- {name: x, op: conv, out: 8, kernel: 3}
- {name: pooled, op: gap}
- {name: gate, op: conv, out: 8, kernel: 1}
- {name: spatial, op: conv, out: 1, kernel: 1, input: x}
"""


@pytest.mark.parametrize("op,fn", [("add", torch.add), ("mul", torch.mul)])
@pytest.mark.parametrize("inputs", ["[x, gate]", "[gate, x]", "[spatial, x]", "[gate, spatial]",
                                    "[x, gate, spatial]"])
def test_broadcasting_contract(tmp_path, op, fn, inputs):
    compiled = _compile(tmp_path, GATED + f"- {{name: out, op: {op}, inputs: {inputs}}}")
    x, y = _contract(compiled)
    assert tuple(y.shape) == (1, 8, *SIZE)
    values = {}

    class Keep(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if "layer" in n.meta:
                values[n.meta["layer"].split(".")[-1]] = out
            return out

    with torch.no_grad():
        Keep(compiled.module).run(x)
    names = inputs.strip("[]").split(", ")
    expected = values[names[0]]
    for name in names[1:]:
        expected = fn(expected, values[name])
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("size", ["1", "2", "3", "6", "[4, 5]", "[30, 40]"])
def test_adaptive_avgpool_contract(tmp_path, size):
    compiled = _compile(tmp_path, f"- {{name: c, op: conv, out: 8, kernel: 3}}\n"
                                  f"- {{name: p, op: adaptive_avgpool, size: {size}}}")
    x, y = _contract(compiled)
    out = eval(size) if size.startswith("[") else int(size)  # noqa: S307 - a test literal
    with torch.no_grad():
        expected = F.adaptive_avg_pool2d(compiled.module.get_submodule("encoder.c")(x), out)
    torch.testing.assert_close(y, expected)


def test_split_contract(tmp_path):
    compiled = _compile(tmp_path, """
        - {name: keep, op: split, stop: "in_channels // 2"}
        - {name: rest, op: split, start: "in_channels // 2", input: input}
        - {name: branch, op: conv, out: 4, kernel: 3}
        - {name: cat, op: concat, inputs: [keep, branch]}
        - {name: shuffle, op: shuffle, groups: 2}
        """)
    x, y = _contract(compiled)
    assert compiled.audit.macs == 4 * 4 * 9 * SIZE[0] * SIZE[1]
    assert tuple(y.shape) == (1, 8, *SIZE)
    with torch.no_grad():
        branch = compiled.module.get_submodule("encoder.branch")(x[:, 4:])
    cat = torch.cat([x[:, :4], branch], 1)
    torch.testing.assert_close(y, cat.view(1, 2, 4, *SIZE).transpose(1, 2).reshape(1, 8, *SIZE))


# --------------------------------------------------------------------------- broadcasting = torch's

DIM = st.sampled_from([1, 1, 2, 3, 5])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(DIM, DIM, DIM), min_size=2, max_size=4))
def test_broadcast_rule_accepts_exactly_what_torch_accepts(shapes):
    try:
        expected = tuple(torch.broadcast_shapes(*[(1, *s) for s in shapes]))[1:]
    except RuntimeError:
        expected = None
    assert broadcast_dims(shapes) == expected
    types = [TensorType(*s) for s in shapes]
    if expected is None:
        with pytest.raises(OpError):
            broadcast_type("mul", types)
    else:
        out = broadcast_type("mul", types)
        assert (out.channels, out.height, out.width) == expected


# --------------------------------------------------------------------------- output sizes = torch's

GRID = list(itertools.product(range(1, 13), range(1, 6), range(1, 4), range(1, 3)))  # size, k, s, d


def _torch_size(call) -> int:
    """The output height torch computes, 0 where it refuses an empty output."""
    try:
        return call().shape[2]
    except RuntimeError:
        return 0


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_conv_out_is_max_pool2d_output_size(ceil_mode):
    """Every padding MaxPool2d allows (at most half the kernel), both rounding modes."""
    for size, k, s, d in GRID:
        x = torch.zeros(1, 1, size, 1)
        for p in range(k // 2 + 1):
            expected = _torch_size(lambda: F.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1),
                                                        ceil_mode=ceil_mode))
            assert conv_out(size, k, s, p, d, ceil_mode) == expected, (size, k, s, p, d)


def test_conv_out_is_conv2d_output_size():
    for size, k, s, d in GRID:
        x, w = torch.zeros(1, 1, size, 1), torch.zeros(1, 1, k, 1)
        for p in range(2 * k + 1):
            expected = _torch_size(lambda: F.conv2d(x, w, stride=(s, 1), padding=(p, 0), dilation=(d, 1)))
            assert conv_out(size, k, s, p, d) == expected, (size, k, s, p, d)
