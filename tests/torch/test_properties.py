"""Property tests: on random valid graphs, the analytic compiler agrees with torch.

A Hypothesis strategy writes small random specs, encoder-only or encoder +
meta, from the pieces real segmentation nets are made of: convolutions with
kernels 1-5 (sometimes asymmetric), strides 1-2, dilation 1-2 and groups
dividing the channels; transposed convolutions (default or explicit padding);
max/avg pooling, with ceil_mode; batch norm and activations; residual adds,
concatenations, down-up paths re-aligned with ``crop``, resizes to another
map's size, channel shuffles, block uses with ``repeat``, linear tails, and
metas that read encoder taps and their channel counts. Inputs are 8..64 a side,
often odd, since that is where size rules go wrong.

For every generated spec the test compiles the module and runs a real CPU
forward on a random tensor, then checks three properties:

* every layer's output shape equals its inferred type;
* the module's parameters equal the audit's (total and per layer);
* torch's FlopCounterMode equals 2 x the audit's MACs, exactly.

The generator tracks sizes with the PyTorch documentation's formulas only to
stay valid (no zero-size maps); torch itself is the oracle.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from rtseg_compiler import compile_model
from test_emit import ShapeRecorder
from rtseg_compiler.diagnostics import SpecError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                print_blob=True)
#: Keep maps small: the forward runs on a 2-core CPU for every example.
MAX_SIDE = 96
MAX_CHANNELS = 24


# --------------------------------------------------------------------------- size rules (PyTorch docs)

def conv_len(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def deconv_len(n: int, k: int, s: int, p: int, d: int, op: int) -> int:
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def pool_len(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    if not ceil:
        return (n + 2 * p - k) // s + 1
    out = -(-(n + 2 * p - k) // s) + 1
    if (out - 1) * s >= n + p:  # the last window may not start in the right padding
        out -= 1
    return out


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------- the graph builder

@dataclass
class Builder:
    """A spec under construction: its layer list and the shape of every name it can refer to."""

    shapes: dict[str, tuple[int, int, int]]
    cur: str
    prefix: str = "l"
    layers: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0

    def shape(self, name: str | None = None) -> tuple[int, int, int]:
        return self.shapes[name or self.cur]

    def add(self, layer: dict[str, Any], shape: tuple[int, int, int], inputs: list[str] | None = None,
            move: bool = True) -> str:
        """Append ``layer`` reading ``inputs`` (default: the current map); return its name."""
        name = f"{self.prefix}{self.count}"
        self.count += 1
        inputs = inputs or [self.cur]
        item: dict[str, Any] = {"name": name, **layer}
        if len(inputs) > 1:
            item["inputs"] = inputs
        elif not (self.layers and self.layers[-1]["name"] == inputs[0]):
            item["input"] = inputs[0]  # otherwise left out: chaining to the previous layer
        self.layers.append(item)
        self.shapes[name] = shape
        if move:
            self.cur = name
        return name


def grouped_out(draw, c: int) -> tuple[int, int | str, int | str]:
    """(out channels, out as written, groups as written) with groups dividing both."""
    if draw(st.integers(0, 5)) == 0:
        return c, "in_channels", "in_channels"  # depthwise, written as expressions
    g = draw(st.sampled_from(divisors(c)))
    mult = draw(st.integers(1, max(1, MAX_CHANNELS // (2 * g))))
    out = g * mult
    written: int | str = out
    if out == 2 * c:
        written = "in_channels * 2"
    return out, written, g


def st_conv(draw, b: Builder, *, stride: int | None = None, out: int | None = None) -> str:
    c, h, w = b.shape()
    kh = draw(st.integers(1, 5))
    kw = draw(st.integers(1, 5)) if draw(st.integers(0, 3)) == 0 else kh
    d = draw(st.integers(1, 2))
    s = stride if stride is not None else draw(st.integers(1, 2))
    if out is None:
        cout, written, g = grouped_out(draw, c)
    else:
        cout, written, g = out, out, 1
    layer: dict[str, Any] = {"op": "conv", "out": written, "kernel": kh if kh == kw else [kh, kw]}
    if s != 1:
        layer["stride"] = s
    if d != 1:
        layer["dilation"] = d
    if g != 1:
        layer["groups"] = g
    # The compiler's default d*(k-1)/2 exists only where that span is even (or 1: padding 0).
    has_default = all(d * (k - 1) % 2 == 0 or d * (k - 1) == 1 for k in (kh, kw))
    if has_default and draw(st.booleans()):
        ph, pw = d * (kh - 1) // 2, d * (kw - 1) // 2  # the compiler's default
    else:
        ph = draw(st.integers(0, d * (kh - 1) // 2 + 1))
        pw = draw(st.integers(0, d * (kw - 1) // 2 + 1))
        layer["padding"] = [ph, pw]
    if draw(st.booleans()):
        layer["bias"] = False
    oh, ow = conv_len(h, kh, s, ph, d), conv_len(w, kw, s, pw, d)
    if oh < 1 or ow < 1:  # too small for this kernel: a plain 1x1 instead
        layer = {"op": "conv", "out": cout, "kernel": 1}
        if g != 1:
            layer["groups"] = g
        oh, ow = h, w
    return b.add(layer, (cout, oh, ow))


def st_deconv(draw, b: Builder, *, out: int | None = None, stride: int | None = None) -> str:
    c, h, w = b.shape()
    k = draw(st.integers(1, 4))
    s = stride if stride is not None else draw(st.integers(1, 2))
    d = draw(st.integers(1, 2))
    if out is None:
        g = draw(st.sampled_from(divisors(c)))
        cout = g * draw(st.integers(1, max(1, MAX_CHANNELS // (2 * g))))
    else:
        cout, g = out, 1
    layer: dict[str, Any] = {"op": "deconv", "out": cout, "kernel": k, "stride": s}
    if d != 1:
        layer["dilation"] = d
    if g != 1:
        layer["groups"] = g
    # Default padding makes the output s x input, except for even kernels at s = d = 1.
    default_ok = not (s == 1 and d == 1 and k % 2 == 0)
    if default_ok and draw(st.booleans()):
        oh, ow = s * h, s * w
    else:
        p = draw(st.integers(0, d * (k - 1) // 2))
        op = draw(st.integers(0, max(s, d) - 1))
        layer.update(padding=p, output_padding=op)
        oh, ow = deconv_len(h, k, s, p, d, op), deconv_len(w, k, s, p, d, op)
    return b.add(layer, (cout, oh, ow))


def st_pool(draw, b: Builder) -> str:
    c, h, w = b.shape()
    k = draw(st.integers(2, 3))
    s = draw(st.sampled_from([None, 1, 2]))
    p = draw(st.integers(0, k // 2))
    ceil = draw(st.booleans())
    op = draw(st.sampled_from(["maxpool", "avgpool"]))
    layer: dict[str, Any] = {"op": op, "kernel": k}
    if s is not None:
        layer["stride"] = s
    if p:
        layer["padding"] = p
    if ceil:
        layer["ceil_mode"] = True
    if op == "avgpool" and draw(st.booleans()):
        layer["count_include_pad"] = False
    stride = s or k
    oh, ow = pool_len(h, k, stride, p, ceil), pool_len(w, k, stride, p, ceil)
    if min(h, w) + 2 * p < k or oh < 1 or ow < 1:
        return b.add({"op": "identity"}, (c, h, w))
    return b.add(layer, (c, oh, ow))


def st_pointwise(draw, b: Builder) -> str:
    """Shape-preserving ops: norm, activations, dropout, identity, shuffle."""
    c, h, w = b.shape()
    op = draw(st.sampled_from(["bn", "relu", "relu6", "prelu", "dropout", "identity", "shuffle"]))
    layer: dict[str, Any] = {"op": op}
    if op == "bn" and draw(st.booleans()):
        layer["affine"] = False
    if op == "prelu" and draw(st.booleans()):
        layer["per_channel"] = False
    if op == "dropout":
        layer["p"] = 0.1
    if op == "shuffle":
        layer["groups"] = draw(st.sampled_from(divisors(c)))
    return b.add(layer, (c, h, w))


def st_upsample(draw, b: Builder) -> str:
    c, h, w = b.shape()
    scale = draw(st.sampled_from([2, 1.5, 0.5]))
    if max(h, w) * scale > MAX_SIDE or min(h, w) * scale < 1:
        return st_pointwise(draw, b)
    layer: dict[str, Any] = {"op": "upsample", "scale": scale}
    if draw(st.booleans()):
        layer["mode"] = "bilinear"
        layer["align_corners"] = draw(st.booleans())
    return b.add(layer, (c, math.floor(h * scale), math.floor(w * scale)))


def st_residual(draw, b: Builder) -> str:
    """x + conv(x), the conv keeping size and channels (odd kernel, stride 1, default padding)."""
    x = b.cur
    c, h, w = b.shape()
    k = draw(st.sampled_from([1, 3, 5]))
    g = draw(st.sampled_from(divisors(c)))
    layer: dict[str, Any] = {"op": "conv", "out": "in_channels", "kernel": k, "groups": g}
    if draw(st.booleans()):
        layer["dilation"] = 2
    branch = b.add(layer, (c, h, w))
    if draw(st.booleans()):
        branch = b.add({"op": "bn"}, (c, h, w))
    return b.add({"op": "add"}, (c, h, w), [branch, x] if draw(st.booleans()) else [x, branch, x])


def st_concat(draw, b: Builder) -> str:
    x = b.cur
    c, h, w = b.shape()
    a = draw(st.integers(1, 8))
    one = b.add({"op": "conv", "out": a, "kernel": 1}, (a, h, w), [x], move=False)
    two = b.add({"op": "maxpool", "kernel": 3, "stride": 1, "padding": 1}, (c, h, w), [x], move=False)
    parts = draw(st.permutations([one, two, x]))
    return b.add({"op": "concat"}, (a + 2 * c, h, w), list(parts))


def st_down_up_crop(draw, b: Builder) -> str:
    """conv /2 then deconv x2 gives 2·ceil(n/2) >= n: crop back to x and fuse (FCN's skip)."""
    x = b.cur
    c, h, w = b.shape()
    if min(h, w) < 3 or 2 * max(h, w) > 2 * MAX_SIDE:
        return st_pointwise(draw, b)
    st_conv(draw, b, stride=2)
    st_deconv(draw, b, out=c, stride=2)
    _, uh, uw = b.shape()
    if uh < h or uw < w:  # explicit deconv padding may undershoot; grow it back by resizing
        b.add({"op": "upsample"}, (c, h, w), [b.cur, x])
    else:
        center = draw(st.booleans())
        b.add({"op": "crop", **({"align": "center"} if center else {})}, (c, h, w), [b.cur, x])
    if draw(st.booleans()):
        return b.add({"op": "add"}, (c, h, w), [b.cur, x])
    return b.add({"op": "concat"}, (2 * c, h, w), [x, b.cur])


def st_resize_like(draw, b: Builder) -> str:
    """Pool down, then resize to the size of the map before the pool, and concatenate."""
    x = b.cur
    c, h, w = b.shape()
    if min(h, w) < 2:
        return st_pointwise(draw, b)
    small = b.add({"op": "avgpool", "kernel": 2}, (c, h // 2, w // 2))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    up = b.add({"op": "upsample", "mode": mode}, (c, h, w), [small, x])
    return b.add({"op": "concat"}, (2 * c, h, w), [up, x])


def st_block_use(draw, b: Builder) -> str:
    """A use of the encoder's 'unit' block (conv 3x3 / stride, bn, relu), repeated 1-2 times."""
    c, h, w = b.shape()
    reps = draw(st.integers(1, 2))
    down = min(h, w) >= 4 and draw(st.booleans())
    out = draw(st.integers(1, MAX_CHANNELS // 2))
    layer: dict[str, Any] = {"block": "unit", "out": out}
    if down:
        layer["stride"] = "2 if i == 0 else 1"
    if reps > 1:
        layer["repeat"] = reps
    oh, ow = ((h + 1) // 2, (w + 1) // 2) if down else (h, w)
    return b.add(layer, (out, oh, ow))


UNIT_BLOCK = {
    "params": {"out": None, "stride": 1},
    "layers": [
        {"name": "conv", "op": "conv", "out": "out", "kernel": 3, "stride": "stride", "bias": False},
        {"op": "bn"},
        {"op": "relu"},
    ],
}

STEPS = [st_conv, st_conv, st_conv, st_deconv, st_pool, st_pool, st_pointwise, st_pointwise,
         st_pointwise, st_upsample, st_residual, st_residual, st_concat, st_down_up_crop,
         st_resize_like, st_block_use]


def shrink(b: Builder) -> None:
    """Keep the next step's input small: a 1x1 conv for too many channels, a 2x2 pool for large maps."""
    c, h, w = b.shape()
    if c > 3 * MAX_CHANNELS:
        b.add({"op": "conv", "out": MAX_CHANNELS, "kernel": 1}, (MAX_CHANNELS, h, w))
    if max(h, w) > MAX_SIDE:
        b.add({"op": "maxpool", "kernel": 2}, (b.shape()[0], h // 2, w // 2))


@st.composite
def encoder_specs(draw, *, with_taps: bool = False) -> tuple[dict[str, Any], Builder]:
    cin = draw(st.integers(1, 4))
    h, w = draw(st.integers(8, 64)), draw(st.integers(8, 64))
    b = Builder({"input": (cin, h, w)}, "input")
    # First layer: a conv from the image, so every model starts like a real one.
    st_conv(draw, b)
    for _ in range(draw(st.integers(0, 6))):
        draw(st.sampled_from(STEPS))(draw, b)
        shrink(b)
    spec: dict[str, Any] = {"kind": "encoder", "name": "random", "input": [h, w], "input_channels": cin,
                            "blocks": {"unit": UNIT_BLOCK}}
    if not with_taps and draw(st.integers(0, 4)) == 0:
        c, hh, ww = b.shape()
        out = draw(st.integers(1, 10))
        if draw(st.booleans()) or c * hh * ww > 4096:
            b.add({"op": "gap"}, (c, 1, 1))
            b.add({"op": "linear", "out": out}, (out, 1, 1))
        else:
            b.add({"op": "linear", "out": out, "bias": draw(st.booleans())}, (out, 1, 1))
    spec["layers"] = b.layers
    if with_taps:
        names = [layer["name"] for layer in b.layers]
        picked = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        spec["taps"] = {f"t{k}": name for k, name in enumerate(picked)}
    return spec, b


META_STEPS = [st_conv, st_deconv, st_pointwise, st_residual, st_concat, st_upsample]


@st.composite
def model_specs(draw) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(encoder spec, meta spec, num_classes): a meta fusing the encoder output with its taps."""
    enc, eb = draw(encoder_specs(with_taps=True))
    taps = enc["taps"]
    shapes = {f"encoder.{t}": eb.shapes[node] for t, node in taps.items()}
    shapes["encoder.output"] = eb.shape()
    shapes["input"] = eb.shapes["input"]
    b = Builder(shapes, "encoder.output", prefix="m")
    num_classes = draw(st.integers(1, 6))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["step", "step", "fuse"]))
        if kind == "step":
            draw(st.sampled_from(META_STEPS))(draw, b)
        else:
            tap = draw(st.sampled_from(sorted(taps)))
            ref = f"encoder.{tap}"
            tc, th, tw = shapes[ref]
            c = b.shape()[0]
            b.add({"op": "upsample", "mode": draw(st.sampled_from(["nearest", "bilinear"]))},
                  (c, th, tw), [b.cur, ref])
            # project to the tap's channels, written as an expression over the tap
            b.add({"op": "conv", "out": f"encoder.{tap}.channels", "kernel": 1}, (tc, th, tw))
            b.add({"op": "add"}, (tc, th, tw), [b.cur, ref])
        shrink(b)
    _, h, w = b.shape()
    b.add({"op": "conv", "out": "num_classes", "kernel": 1}, (num_classes, h, w))
    if draw(st.booleans()):
        _, ih, iw = shapes["input"]
        b.add({"op": "upsample", "mode": "bilinear"}, (num_classes, ih, iw), [b.cur, "input"])
    meta = {"kind": "meta", "name": "randhead", "requires": sorted(taps), "layers": b.layers}
    return enc, meta, num_classes


# --------------------------------------------------------------------------- the properties

def check_against_torch(compiled) -> None:
    audit, module = compiled.audit, compiled.module
    _, c, h, w = audit.input
    rec = ShapeRecorder(module)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = rec.run(torch.randn(1, c, h, w))
    types = compiled.analysis.resolved.types
    for node in compiled.graph.nodes:
        t = types[node.name]
        assert rec.shapes.get(node.name) == (1, t.channels, t.height, t.width), \
            f"{node.name} ({node.op}): torch {rec.shapes.get(node.name)}, inferred {t}"
    assert tuple(out.shape) == audit.output_shape
    assert torch.isfinite(out).all()
    named = dict(module.named_modules())
    for layer in audit.layers:
        sub = named.get(layer.name)
        have = sum(p.numel() for p in sub.parameters()) if sub is not None else 0
        assert have == layer.params, f"{layer.name}: module {have} parameters, audit {layer.params}"
    assert sum(p.numel() for p in module.parameters()) == audit.params
    assert counter.get_total_flops() == 2 * audit.macs


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)


def _compile(files: dict[str, str], main: str):
    """Write ``files`` (name -> YAML text) to a temporary directory and compile ``main``."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        try:
            return compile_model(Path(tmp) / main)
        except SpecError as exc:  # the generator only writes valid graphs
            raise AssertionError(f"valid random spec rejected:\n{exc}") from None


@settings(max_examples=90, **SETTINGS)
@given(encoder_specs())
def test_random_encoders_match_torch(generated):
    spec, _ = generated
    text = _dump(spec)
    note(text)
    torch.manual_seed(0)
    check_against_torch(_compile({"enc.yaml": text}, "enc.yaml"))


@settings(max_examples=70, **SETTINGS)
@given(model_specs())
def test_random_encoder_meta_pairs_match_torch(generated):
    enc, meta, num_classes = generated
    enc_text, meta_text = _dump(enc), _dump(meta)
    note(enc_text)
    note(meta_text)
    model = _dump({"kind": "model", "name": "rand", "encoder": "enc.yaml", "meta": "meta.yaml",
                   "num_classes": num_classes, "input": enc["input"]})
    torch.manual_seed(0)
    compiled = _compile({"enc.yaml": enc_text, "meta.yaml": meta_text, "model.yaml": model},
                        "model.yaml")
    assert compiled.audit.output_shape[1] == num_classes
    check_against_torch(compiled)


def test_size_rules_agree_with_torch_modules():
    """The generator's own size rules, spot-checked against torch, so its validity logic is sound."""
    from torch import nn
    x = torch.zeros(1, 1, 11, 11)
    assert nn.Conv2d(1, 1, 3, 2, 1, 2)(x).shape[-1] == conv_len(11, 3, 2, 1, 2)
    assert nn.ConvTranspose2d(1, 1, 3, 2, 1, 1, dilation=2)(x).shape[-1] == deconv_len(11, 3, 2, 1, 2, 1)
    for k, s, p in ((2, 2, 1), (3, 2, 1), (3, 1, 0), (2, 1, 1)):
        got = nn.MaxPool2d(k, s, p, ceil_mode=True)(x).shape[-1]
        assert got == pool_len(11, k, s, p, True)
