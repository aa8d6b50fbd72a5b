"""The transformer-era ops against torch: layernorm, attention, linear_attention, reduce, scalar,
param, softmax over space, adaptive_maxpool, bicubic upsample and sizes given by expressions.

For each op, in a small encoder at an odd input size (23x37, not a multiple of anything): the
compiled layers have the inferred shapes, the module's parameters equal the audit's, torch's
FlopCounterMode on the **meta device** equals 2 x the audit's MACs, and the layer's value
equals an independent torch computation of the same function (einsum attention, the
EfficientViT formula written out, ``F.layer_norm`` on the channels-last view ...).

Attention is counted on the meta device because FlopCounterMode counts 0 for
``scaled_dot_product_attention`` on CPU (``test_cpu_sdpa_counts_zero`` pins that trap, which
docs/flops.md describes); the eager product ``softmax(q·kᵀ)·v`` is counted on CPU too and
equals the same MACs.
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.nn import functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from rtseg_compiler import compile_model  # noqa: E402
from rtseg_compiler.ops.attention import relu_linear_attend  # noqa: E402
from test_emit import layer_shapes  # noqa: E402

SIZE = (23, 37)
CHANNELS = 8
STEM = "- {name: x, op: conv, out: 16, kernel: 3}\n"


def _compile(tmp_path: Path, layers: str):
    path = tmp_path / "enc.yaml"
    path.write_text(f"kind: encoder\nname: probe\ninput_channels: {CHANNELS}\nlayers:\n"
                    + textwrap.indent(STEM + textwrap.dedent(layers).strip("\n"), "  ") + "\n")
    return compile_model(path, SIZE)


def _values(compiled, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer's value, by short name, from one forward."""
    values = {}

    class Keep(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if "layer" in n.meta:  # a copy: the in-place add overwrites its first input later
                values[n.meta["layer"].split(".", 1)[1]] = out.clone()
            return out

    with torch.no_grad():
        Keep(compiled.module).run(x)
    return values


def _meta_flops(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    meta = copy.deepcopy(module).to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return counter.get_total_flops()


def _contract(compiled) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    for p in compiled.module.parameters():  # params that start at 0 or 1 would hide mistakes
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(1, CHANNELS, *SIZE)
    shapes = layer_shapes(compiled, x)
    for node in compiled.graph.nodes:
        t = compiled.analysis.resolved.types[node.name]
        assert shapes[node.name] == (1, t.channels, t.height, t.width), node.name
    assert sum(p.numel() for p in compiled.module.parameters()) == compiled.audit.params
    assert _meta_flops(compiled.module, (1, CHANNELS, *SIZE)) == 2 * compiled.audit.macs
    values = _values(compiled, x)
    values["input"] = x
    return values


def _layer(compiled, name: str):
    return next(layer for layer in compiled.audit.layers if layer.name.endswith("." + name))


def test_layernorm_contract(tmp_path):
    compiled = _compile(tmp_path, "- {name: ln, op: layernorm, eps: 1.0e-6}")
    v = _contract(compiled)
    ln = compiled.module.get_submodule("encoder.ln")
    expected = F.layer_norm(v["x"].permute(0, 2, 3, 1), (16,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(v["ln"], expected)
    assert sorted(ln.state_dict()) == ["bias", "weight"]  # nn.LayerNorm's keys
    assert _layer(compiled, "ln").params == 32 and _layer(compiled, "ln").tf_flops == 2 * 16 * 23 * 37


def test_layernorm_without_affine_has_no_parameters(tmp_path):
    compiled = _compile(tmp_path, "- {name: ln, op: layernorm, affine: false}")
    v = _contract(compiled)
    expected = F.layer_norm(v["x"].permute(0, 2, 3, 1), (16,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(v["ln"], expected)
    assert compiled.audit.params == 16 * 8 * 9 + 16


ATTENTION = """
- {name: q, op: conv, out: 16, kernel: 1}
- {name: kv_map, op: conv, out: 16, kernel: 2, stride: 2, padding: 0, input: x}
- {name: k, op: conv, out: 16, kernel: 1}
- {name: v, op: conv, out: VCH, kernel: 1, input: kv_map}
- {name: att, op: OP, inputs: [q, k, v], heads: HEADS EXTRA}
"""


def _attention(tmp_path, op="attention", heads=2, vch=24, extra=""):
    text = ATTENTION.replace("OP", op).replace("HEADS", str(heads)).replace("VCH", str(vch))
    return _compile(tmp_path, text.replace("EXTRA", extra))


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(1, C, H, W) -> (heads, H*W, C/heads): head h owns channels h*C/heads ..."""
    return t[0].reshape(heads, t.shape[1] // heads, -1).transpose(1, 2)


@pytest.mark.parametrize("heads,vch,extra", [(1, 16, ""), (2, 24, ""), (4, 24, ", scale: 1")])
def test_attention_contract(tmp_path, heads, vch, extra):
    compiled = _attention(tmp_path, heads=heads, vch=vch, extra=extra)
    v = _contract(compiled)
    q, k, val = (_heads(v[n], heads) for n in ("q", "k", "v"))
    scale = 1.0 if extra else (16 / heads) ** -0.5
    weights = torch.softmax(torch.einsum("hqd,hkd->hqk", q, k) * scale, dim=-1)
    out = torch.einsum("hqk,hkd->hqd", weights, val)  # (heads, Nq, vch/heads)
    expected = out.transpose(1, 2).reshape(1, vch, *SIZE)
    torch.testing.assert_close(v["att"], expected)
    nq, nk = 23 * 37, 11 * 18
    att = _layer(compiled, "att")
    assert att.macs == nq * nk * (16 + vch)
    assert att.tf_flops == 2 * att.macs + heads * nq * nk * (5 if extra else 6)
    assert att.output_shape == (vch, *SIZE)


def test_attention_eager_products_count_the_same_macs(tmp_path):
    """FlopCounterMode on CPU counts the two matmuls of eager attention: Hq·Wq·Hk·Wk·(Cqk + Cv)."""
    q, k, v = torch.randn(1, 2, 851, 8), torch.randn(1, 2, 198, 8), torch.randn(1, 2, 198, 12)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    compiled = _attention(tmp_path, heads=2, vch=24)
    assert counter.get_total_flops() == 2 * _layer(compiled, "att").macs


def test_cpu_sdpa_counts_zero():
    """The trap docs/flops.md describes: on CPU FlopCounterMode counts no SDPA FLOPs, on meta it does.

    If a torch release registers the CPU kernel, this fails and the docs should say so.
    """
    q = torch.randn(1, 2, 64, 16)
    counter = FlopCounterMode(display=False)
    with counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 0
    with counter:
        F.scaled_dot_product_attention(*(q.to("meta"),) * 3)
    assert counter.get_total_flops() == 2 * 2 * 64 * 64 * (16 + 16)


def test_attention_refuses_mismatched_inputs(tmp_path):
    from rtseg_compiler.diagnostics import SpecError
    with pytest.raises(SpecError, match="heads=3 does not divide"):
        _attention(tmp_path, heads=3)
    with pytest.raises(SpecError, match="q and k with equal channels"):
        _compile(tmp_path, "- {name: k, op: conv, out: 8, kernel: 1}\n"
                           "- {name: a, op: attention, inputs: [x, k, k]}")


@pytest.mark.parametrize("heads", [1, 4])
def test_linear_attention_contract(tmp_path, heads):
    compiled = _attention(tmp_path, op="linear_attention", heads=heads)
    v = _contract(compiled)
    # EfficientViT's relu_linear_att, written out per head: (v;1)·relu(k)ᵀ·relu(q), normalised.
    q, k, val = (v[n][0].reshape(heads, v[n].shape[1] // heads, -1) for n in ("q", "k", "v"))
    q, k = q.relu(), k.relu()
    val = torch.cat([val, torch.ones_like(val[:, :1])], dim=1)
    out = (val @ k.transpose(1, 2)) @ q
    expected = (out[:, :-1] / (out[:, -1:] + 1e-15)).reshape(1, 24, *SIZE)
    torch.testing.assert_close(v["att"], expected)
    dk, dv = 16 // heads, 24 // heads
    assert _layer(compiled, "att").macs == heads * (dv + 1) * dk * (11 * 18 + 23 * 37)


def test_packed_linear_attention_contract(tmp_path):
    """``inputs: [qkv]``: per head, q, k and v are consecutive thirds of its channels (LiteMLA's layout)."""
    compiled = _compile(tmp_path, "- {name: qkv, op: conv, out: 24, kernel: 1}\n"
                                  "- {name: att, op: linear_attention, inputs: [qkv], heads: 2}")
    v = _contract(compiled)
    packed = v["qkv"].reshape(1, 2, 3, 4, *SIZE)  # (N, heads, q/k/v, d, H, W)
    q, k, val = (packed[:, :, j].reshape(1, 8, *SIZE) for j in range(3))
    expected = relu_linear_attend(q, k, val, heads=2, eps=1e-15)
    torch.testing.assert_close(v["att"], expected)
    assert _layer(compiled, "att").macs == 2 * (4 + 1) * 4 * 2 * 23 * 37
    assert _layer(compiled, "att").output_shape == (8, *SIZE)


@pytest.mark.parametrize("mode", ["mean", "max", "sum"])
@pytest.mark.parametrize("over,dims", [("channel", (1,)), ("height", (2,)), ("width", (3,)),
                                       ("spatial", (2, 3))])
def test_reduce_contract(tmp_path, mode, over, dims):
    compiled = _compile(tmp_path, f"- {{name: r, op: reduce, mode: {mode}, over: {over}}}\n"
                                  "- {name: back, op: add, inputs: [x, r]}")
    v = _contract(compiled)
    fn = {"mean": torch.mean, "sum": torch.sum, "max": torch.amax}[mode]
    torch.testing.assert_close(v["r"], fn(v["x"], dim=dims, keepdim=True))
    n_in, n_out = 16 * 23 * 37, v["r"].numel()
    assert _layer(compiled, "r").tf_flops == {"mean": n_in, "sum": n_in - n_out, "max": 0}[mode]


def test_scalar_and_param_contract(tmp_path):
    compiled = _compile(tmp_path, """
        - {name: gate, op: sigmoid}
        - {name: rest, op: scalar, mul: -1, add: 1}
        - {name: half, op: scalar, mul: 0.5, input: x}
        - {name: scale, op: param, channels: 16, fill: 1.0e-5}
        - {name: pos, op: param, channels: 16, height: 23, width: 37}
        - {name: out, op: add, inputs: [rest, half, scale, pos]}
        """)
    v = _contract(compiled)
    torch.testing.assert_close(v["rest"], 1 - torch.sigmoid(v["x"]))
    torch.testing.assert_close(v["half"], 0.5 * v["x"])
    module = compiled.module
    torch.testing.assert_close(v["scale"], module.get_submodule("encoder.scale").weight.detach())
    torch.testing.assert_close(v["out"], v["rest"] + v["half"] + v["scale"] + v["pos"])
    assert _layer(compiled, "pos").params == 16 * 23 * 37
    assert _layer(compiled, "rest").tf_flops == 2 * 16 * 23 * 37
    assert _layer(compiled, "half").tf_flops == 16 * 23 * 37
    fresh = compile_model(Path(tmp_path / "enc.yaml"), SIZE).module
    assert torch.all(fresh.get_submodule("encoder.scale").weight == 1e-5)


def test_a_fixed_param_is_a_parameter_that_does_not_train(tmp_path):
    """trainable: false (PaddleSeg's stop_gradient _scale): in the state dict and the count, no
    gradient, and the standalone source builds it fixed too."""
    import importlib.util

    from rtseg_compiler.build import class_name_of, standalone_source
    compiled = _compile(tmp_path, "- {name: s, op: param, channels: 2, fill: 1, trainable: false}\n"
                                  "- {name: t, op: param, input: x, channels: 2}\n"
                                  "- {name: out, op: add, inputs: [s, t]}")
    fixed, learned = (compiled.module.get_submodule(f"encoder.{n}").weight for n in "st")
    assert not fixed.requires_grad and learned.requires_grad
    assert "encoder.s.weight" in compiled.module.state_dict()
    assert sum(p.numel() for p in compiled.module.parameters()) == compiled.audit.params
    assert _layer(compiled, "s").params == 2
    with torch.enable_grad():
        compiled.module.train()(torch.randn(2, CHANNELS, *SIZE)).sum().backward()
    assert fixed.grad is None and learned.grad is not None
    path = tmp_path / "net.py"
    path.write_text(standalone_source(compiled))
    spec = importlib.util.spec_from_file_location("saved_fixed_param", path)
    saved = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(saved)
    net = getattr(saved, class_name_of(compiled.audit.model))()
    assert [p.requires_grad for p in net.parameters()].count(False) == 1
    net.load_state_dict(compiled.module.state_dict(), strict=True)


def test_param_follows_the_batch(tmp_path):
    compiled = _compile(tmp_path, "- {name: p, op: param, channels: 4, height: 2, width: 3}")
    assert tuple(compiled.module(torch.randn(5, CHANNELS, *SIZE)).shape) == (5, 4, 2, 3)


def test_softmax_over_space_contract(tmp_path):
    compiled = _compile(tmp_path, "- {name: sm, op: softmax, over: spatial}\n"
                                  "- {name: sc, op: softmax, input: x}\n"
                                  "- {name: both, op: concat, inputs: [sm, sc]}")
    v = _contract(compiled)
    torch.testing.assert_close(v["sm"], torch.softmax(v["x"].flatten(2), -1).view_as(v["x"]))
    torch.testing.assert_close(v["sc"], torch.softmax(v["x"], 1))


@pytest.mark.parametrize("size,expected", [("3", (3, 3)), ("[4, 5]", (4, 5)),
                                           ('["ceil(in_height / 4)", "in_width // 8"]', (6, 4))])
def test_adaptive_pooling_sizes(tmp_path, size, expected):
    compiled = _compile(tmp_path, f"- {{name: mx, op: adaptive_maxpool, size: {size}}}\n"
                                  f"- {{name: av, op: adaptive_avgpool, size: {size}, input: x}}\n"
                                  "- {name: both, op: concat, inputs: [mx, av]}")
    v = _contract(compiled)
    torch.testing.assert_close(v["mx"], F.adaptive_max_pool2d(v["x"], expected))
    torch.testing.assert_close(v["av"], F.adaptive_avg_pool2d(v["x"], expected))


@pytest.mark.parametrize("mode,align", [("bicubic", "false"), ("bicubic", "true"), ("bilinear", "false"),
                                        ("nearest", "false")])
def test_upsample_to_a_size_expression(tmp_path, mode, align):
    compiled = _compile(tmp_path, f'- {{name: up, op: upsample, size: ["2 * in_height - 1", 50], '
                                  f'mode: {mode}, align_corners: {align}}}\n'
                                  f"- {{name: sc, op: upsample, scale: 2, mode: {mode}, input: x}}\n"
                                  "- {name: both, op: crop, inputs: [sc, up]}")
    v = _contract(compiled)
    corners = (align == "true") if mode != "nearest" else None
    torch.testing.assert_close(v["up"], F.interpolate(v["x"], size=(45, 50), mode=mode,
                                                      align_corners=corners))
    torch.testing.assert_close(v["sc"], F.interpolate(v["x"], scale_factor=2, mode=mode,
                                                      align_corners=False if mode != "nearest" else None))


def test_upsample_takes_one_size_source(tmp_path):
    from rtseg_compiler.diagnostics import SpecError
    with pytest.raises(SpecError, match="one of 'scale', 'size'"):
        _compile(tmp_path, "- {name: up, op: upsample, size: 4, scale: 2}")


def test_saved_code_builds_the_same_network(tmp_path):
    """--save-code copies the op modules (channel layer norm, learned tensor) and helpers it needs
    (both forms of linear attention included)."""
    import importlib.util

    from rtseg_compiler.emit.python_source import emit_python
    compiled = _compile(tmp_path, """
        - {name: ln, op: layernorm}
        - {name: p, op: param, channels: 16, fill: 0.5}
        - {name: q, op: add, inputs: [ln, p]}
        - {name: att, op: attention, inputs: [q, q, ln], heads: 4}
        - {name: la, op: linear_attention, inputs: [q, q, att], heads: 2}
        - {name: packed, op: conv, out: 48, kernel: 1, input: q}
        - {name: lap, op: linear_attention, inputs: [packed], heads: 2}
        - {name: both, op: add, inputs: [la, lap]}
        - {name: r, op: reduce, mode: max, over: height}
        - {name: s, op: scalar, mul: -1, add: 1}
        - {name: sm, op: softmax, over: spatial}
        """)
    path = tmp_path / "net.py"
    path.write_text(emit_python(compiled.analysis.resolved))
    spec = importlib.util.spec_from_file_location("saved_net", path)
    saved = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(saved)
    assert "import rtseg" not in path.read_text() and "from rtseg" not in path.read_text()
    net = saved.CompiledNet()
    net.load_state_dict(compiled.module.state_dict(), strict=True)
    x = torch.randn(2, CHANNELS, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), compiled.module(x))


def test_the_memory_pass_never_adds_into_a_param(tmp_path):
    """A full-size param first in an add is a view of the parameter: it must not be written to."""
    compiled = _compile(tmp_path, "- {name: pos, op: param, channels: 16, height: 23, width: 37}\n"
                                  "- {name: out, op: add, inputs: [pos, x]}")
    before = compiled.module.get_submodule("encoder.pos").weight.detach().clone()
    with torch.no_grad():
        compiled.module(torch.randn(1, CHANNELS, *SIZE))
    assert torch.equal(compiled.module.get_submodule("encoder.pos").weight, before)
    assert compiled.graph.node("encoder.out").attrs["inplace"] is False
