"""The output-stride rewrite as each op declares it (``OpDef.dilate``). No torch.

Built-in declarations are checked on tiny encoders at 64x64 whose strides are
easy to follow by hand; user-style ops are registered for one test and removed
again (with the schema validators reset, so that their names validate).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterator

import pytest

from conftest import SPECS
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ir import TensorType
from rtseg_compiler.ops import (REGISTRY, AtRate, Field, OpDef, OpError, Replace, dilate_conv,
                                dilate_pool, not_dilatable, register, unaffected)
from rtseg_compiler.pipeline import analyze
from rtseg_compiler.spec import schema as schema_module


def _at(rate: int = 1, passes: bool = False, in_stride: int = 8, out_stride: int = 8) -> AtRate:
    return AtRate(rate=rate, passes_output_stride=passes, output_stride=8,
                  in_stride=Fraction(in_stride), out_stride=Fraction(out_stride), in_rates=(rate,))


# --------------------------------------------------------------------------- the rules, directly

def test_conv_past_the_output_stride_loses_its_stride_and_keeps_its_input_rate():
    attrs = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1)}
    assert dilate_conv(dict(attrs), _at(rate=1, passes=True, out_stride=16)) == {
        **attrs, "stride": (1, 1)}
    assert dilate_conv(dict(attrs), _at(rate=2, passes=True, in_stride=16, out_stride=32)) == {
        **attrs, "stride": (1, 1), "dilation": (2, 2), "padding": (2, 2)}


def test_conv_at_rate_r_multiplies_dilation_and_padding_but_a_1x1_is_unchanged():
    attrs = {"kernel": (3, 1), "stride": (1, 1), "padding": (2, 0), "dilation": (2, 1)}
    assert dilate_conv(dict(attrs), _at(rate=4))["dilation"] == (8, 4)
    assert dilate_conv(dict(attrs), _at(rate=4))["padding"] == (8, 0)
    one = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    assert dilate_conv(dict(one), _at(rate=4)) == one


def test_conv_without_same_padding_cannot_lose_its_stride():
    attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1)}
    with pytest.raises(OpError, match="would change the map's size") as err:
        dilate_conv(attrs, _at(passes=True, out_stride=16))
    assert err.value.field == "padding"


@pytest.mark.parametrize("kernel,stride,padding,expected", [
    ((2, 2), (2, 2), (0, 0), Replace("identity")),
    ((3, 3), (2, 2), (1, 1), {"stride": (1, 1)}),
])
def test_pool_rules(kernel, stride, padding, expected):
    attrs = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": (1, 1),
             "ceil_mode": False}
    got = dilate_pool(dict(attrs), _at(passes=True, out_stride=16))
    if isinstance(expected, Replace):
        assert got == expected
    else:
        assert got == {**attrs, **expected}


def test_pool_past_the_output_stride_at_rate_r_is_dilated():
    """ShuffleNet's stage-4 3x3/2 avg pool at output stride 8 reads stride 16 (rate 2): stride 1,
    dilation 2, padding 2, so it averages the pixels it averaged in the strided network."""
    attrs = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1),
             "ceil_mode": True, "count_include_pad": True}
    got = dilate_pool(dict(attrs), _at(rate=2, passes=True, in_stride=16, out_stride=32))
    assert got == {**attrs, "stride": (1, 1), "dilation": (2, 2), "padding": (2, 2), "ceil_mode": False}


def test_stride_1_pool_at_rate_r_is_dilated_and_a_1x1_pool_is_not():
    attrs = {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "ceil_mode": False}
    assert dilate_pool(dict(attrs), _at(rate=4, in_stride=32, out_stride=32))["dilation"] == (4, 4)
    one = {**attrs, "kernel": (1, 1), "padding": (0, 0)}
    assert dilate_pool(dict(one), _at(rate=4, in_stride=32, out_stride=32)) == one


def test_max_pool_with_indices_cannot_be_dilated():
    attrs = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1),
             "ceil_mode": False, "indices": True}
    with pytest.raises(OpError, match="indices") as err:
        dilate_pool(attrs, _at(rate=2, passes=True, in_stride=16, out_stride=32))
    assert err.value.field == "indices"


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_dilated_pool_shape_and_checks(tmp_path, op):
    """A 3x3 pool with dilation 2 spans 5 pixels: 64 + 2*2 - 5 + 1 = 64 with padding 2."""
    path = _encoder(tmp_path, [f"{{name: p, op: {op}, kernel: 3, stride: 1, padding: 2, dilation: 2}}"])
    assert analyze(path, (64, 64)).resolved.types["encoder.p"].spatial == (64, 64)
    for window, field in [("padding: 2, dilation: 2, ceil_mode: true", "ceil_mode"),
                          ("padding: 3, dilation: 2", "padding")]:  # 2*3 > the 5-pixel span
        bad = _encoder(tmp_path, [f"{{name: p, op: {op}, kernel: 3, stride: 1, {window}}}"])
        with pytest.raises(SpecError, match=field):
            analyze(bad, (64, 64))


def test_pool_with_padding_that_is_not_same_is_refused():
    attrs = {"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1),
             "ceil_mode": False}
    with pytest.raises(OpError, match="kernel == stride without padding|would change"):
        dilate_pool(attrs, _at(passes=True, out_stride=16))


def test_ready_made_declarations():
    attrs = {"x": 1}
    assert unaffected(dict(attrs), _at(rate=4, passes=True)) == attrs
    assert not_dilatable(dict(attrs), _at(rate=1)) == attrs
    with pytest.raises(OpError, match="no dilated form"):
        not_dilatable(dict(attrs), _at(rate=2))


def test_every_builtin_op_declares_its_dilation_behaviour():
    """Issue 8: "Conv, pool and the new ops have this declared" -- every built-in one does."""
    assert [name for name, op in REGISTRY.items() if op.dilate is None and not
            name.startswith("test_")] == []


# --------------------------------------------------------------------------- through the pipeline

def _encoder(tmp_path, layers: list[str], taps: str = "") -> Any:
    path = tmp_path / "enc.yaml"
    path.write_text("kind: encoder\nname: e\ninput: [64, 64]\nlayers:\n"
                    + "".join(f"  - {layer}\n" for layer in layers) + taps)
    return path


FIVE_STRIDES = [f"{{name: c{i}, op: conv, out: 8, kernel: 3, stride: 2}}" for i in range(1, 6)]


def test_builtin_encoder_ends_at_the_output_stride(tmp_path):
    """Five 3x3/2 convs at 64x64 end at stride 32 (2x2); at output stride 8 c4 and c5 lose their
    stride, c4 reads stride 8 (rate 1) and c5 stride 16 (rate 2): 8x8 at stride 8."""
    a = analyze(_encoder(tmp_path, FIVE_STRIDES), (64, 64), output_stride=8)
    t = a.resolved.types
    assert (t["encoder.c5"].height, t["encoder.c5"].stride) == (8, 8)
    assert a.graph.node("encoder.c4").attrs["dilation"] == (1, 1)
    assert a.graph.node("encoder.c5").attrs["dilation"] == (2, 2)
    assert a.graph.node("encoder.c5").attrs["stride"] == (1, 1)


def test_output_stride_refuses_a_strided_conv_without_same_padding(tmp_path):
    """A k2/s2/p0 conv at stride 1 would shrink its map (8 -> 7): refused, like such pools."""
    encoder = tmp_path / "enc.yaml"
    encoder.write_text(
        "kind: encoder\nname: e\nlayers:\n"
        + "".join(f"  - {{name: c{i}, op: conv, kernel: 2, stride: 2, padding: 0, out: 8}}\n"
                  for i in range(1, 6))
        + "taps: {stride32: c5}\n")
    meta = tmp_path / "meta.yaml"
    meta.write_text("kind: meta\nname: m\nrequires: [stride32]\n"
                    "layers:\n  - {name: s, op: conv, input: encoder.stride32, out: 2, kernel: 1}\n")
    with pytest.raises(SpecError) as err:
        analyze(encoder=encoder, meta=meta, input_size=(64, 64), output_stride=8)
    messages = [d.message for d in err.value.errors]
    assert any("cannot remove the stride of conv 'encoder.c4'" in m for m in messages), messages


def test_output_stride_conflict_with_the_meta_is_an_error():
    with pytest.raises(SpecError, match="conflicts with the meta-architecture"):
        analyze(SPECS / "models" / "dilation_mobilenet_v1.yaml", (64, 64), output_stride=16)


@pytest.fixture
def user_op() -> Iterator:
    """Register user ops for one test; unregister them and reset the schema cache after."""
    added: list[str] = []

    def add(op: OpDef) -> OpDef:
        register(op)
        added.append(op.name)
        schema_module._VALIDATORS.clear()
        return op

    yield add
    for name in added:
        REGISTRY.pop(name, None)
    schema_module._VALIDATORS.clear()


def _halve_infer(attrs: dict, ins: list[TensorType]) -> TensorType:
    x = ins[0]
    s = attrs["stride"]
    return TensorType(x.channels, -(-x.height // s), -(-x.width // s), x.stride * s)


def _halve_build(attrs, ins, out):  # pragma: no cover - never built here
    raise AssertionError


def test_a_strided_user_op_without_a_declaration_is_a_located_error(tmp_path, user_op):
    """Issue 8: a user's stride-2 op left the "stride 8" encoder at stride 32, silently."""
    user_op(OpDef(name="test_halve", summary="subsample by 'stride'",
                  fields={"stride": Field("int", 2, minimum=1)}, infer=_halve_infer,
                  build=_halve_build))
    layers = FIVE_STRIDES[:3] + ["{name: h, op: test_halve}", FIVE_STRIDES[4]]
    path = _encoder(tmp_path, layers)
    assert analyze(path, (64, 64)).resolved.types["encoder.c5"].stride == 32  # fine when not rewritten
    with pytest.raises(SpecError) as err:
        analyze(path, (64, 64), output_stride=8)
    (diag,) = err.value.errors
    assert diag.loc.line == 8 and diag.loc.file == str(path)
    assert "op 'test_halve' (layer 'encoder.h') is strided (stride 8 -> 16)" in diag.message
    assert "declares no dilation behaviour" in diag.message
    assert "dilate=" in diag.hint


def test_an_unstrided_user_op_needs_no_declaration(tmp_path, user_op):
    """The old ``OpDef(name, summary, fields, infer, build)`` form still works for a stateless,
    shape-preserving op, even past the output stride."""
    user_op(OpDef(name="test_square", summary="x * x", fields={}, infer=lambda attrs, ins: ins[0],
                  build=_halve_build))
    path = _encoder(tmp_path, FIVE_STRIDES + ["{name: sq, op: test_square}"])
    a = analyze(path, (64, 64), output_stride=8)
    assert a.resolved.types["encoder.sq"].stride == 8


def _dilate_halve(attrs: dict, at: AtRate) -> dict:
    if at.passes_output_stride:
        attrs["stride"] = 1
    return attrs


def test_a_declared_user_op_is_rewritten(tmp_path, user_op):
    user_op(OpDef(name="test_halve2", summary="subsample by 'stride'",
                  fields={"stride": Field("int", 2, minimum=1)}, infer=_halve_infer,
                  build=_halve_build, dilate=_dilate_halve))
    layers = FIVE_STRIDES[:3] + ["{name: h, op: test_halve2}", FIVE_STRIDES[4]]
    a = analyze(_encoder(tmp_path, layers), (64, 64), output_stride=8)
    assert a.graph.node("encoder.h").attrs["stride"] == 1
    assert a.graph.node("encoder.c5").attrs["dilation"] == (2, 2)  # reads h's map at stride 16: rate 2
    assert (a.resolved.types["encoder.c5"].height, a.resolved.types["encoder.c5"].stride) == (8, 8)


def test_a_declaration_that_keeps_the_stride_fails_the_end_of_encoder_assertion(tmp_path, user_op):
    user_op(OpDef(name="test_halve3", summary="a declaration that forgets the stride",
                  fields={"stride": Field("int", 2, minimum=1)}, infer=_halve_infer,
                  build=_halve_build, dilate=unaffected))
    layers = FIVE_STRIDES[:3] + ["{name: h, op: test_halve3}", FIVE_STRIDES[4]]
    path = _encoder(tmp_path, layers)
    with pytest.raises(SpecError) as err:
        analyze(path, (64, 64), output_stride=8)
    (diag,) = err.value.errors
    assert "encoder ends at stride 16, not 8" in diag.message
    assert diag.loc.line == 9  # the encoder's last layer, c5
    assert any("'encoder.h' (op 'test_halve3', stride 16)" in note for note in diag.notes)


def test_a_refusing_declaration_points_at_its_field(tmp_path, user_op):
    def refuse(attrs: dict, at: AtRate) -> dict:
        raise OpError("this op cannot be dilated", field="stride", hint="keep it before the OS")

    user_op(OpDef(name="test_halve4", summary="refuses", fields={"stride": Field("int", 2, minimum=1)},
                  infer=_halve_infer, build=_halve_build, dilate=refuse))
    path = _encoder(tmp_path, FIVE_STRIDES[:3] + ["{name: h, op: test_halve4, stride: 2}"])
    with pytest.raises(SpecError) as err:
        analyze(path, (64, 64), output_stride=8)
    (diag,) = err.value.errors
    assert diag.message == "cannot remove the stride of test_halve4 'encoder.h': this op cannot be dilated"
    assert (diag.loc.line, diag.loc.col) == (8, 40)  # at the value of stride: 2
    assert diag.hint == "keep it before the OS"


def test_upsampling_in_the_dilated_part_is_refused(tmp_path):
    layers = FIVE_STRIDES + ["{name: up, op: upsample, scale: 2}"]
    with pytest.raises(SpecError, match=r"cannot run at rate 4: upsample 'encoder.up'.*no dilated form"):
        analyze(_encoder(tmp_path, layers), (64, 64), output_stride=8)


def test_maps_of_bins_are_off_the_grid_and_not_dilated(tmp_path):
    """gap's 1x1 output has stride 32*2 = 64 in the original network, but it is a bin, not a
    grid sample: a 3x3 conv on it (and on what follows) is left alone, rate 1."""
    layers = FIVE_STRIDES + ["{name: g, op: gap}", "{name: fc, op: conv, out: 8, kernel: 3}",
                             "{name: fc2, op: conv, out: 8, kernel: 3}"]
    a = analyze(_encoder(tmp_path, layers), (64, 64), output_stride=8)
    assert a.resolved.types["encoder.g"].spatial == (1, 1)
    assert a.graph.node("encoder.fc").attrs["dilation"] == (1, 1)
    assert a.graph.node("encoder.fc2").attrs["dilation"] == (1, 1)


def test_a_1x1_map_on_the_grid_is_dilated(tmp_path):
    """At 32x32, c5 is 1x1 at stride 32 in the original network but 4x4 at stride 8 after the
    rewrite: a 3x3 conv reading it is on the grid at rate 4."""
    layers = FIVE_STRIDES + ["{name: d, op: conv, out: 8, kernel: 3}"]
    a = analyze(_encoder(tmp_path, layers), (32, 32), output_stride=8)
    assert a.graph.node("encoder.d").attrs["dilation"] == (4, 4)
    assert a.resolved.types["encoder.d"].spatial == (4, 4)


def test_upsample_to_a_reference_follows_it(tmp_path):
    """A pyramid-pooling branch resized back onto a dilated map is fine; upsampling by a scale is not."""
    layers = FIVE_STRIDES + ["{name: g, op: gap}", "{name: p, op: conv, out: 8, kernel: 1}",
                             "{name: up, op: upsample, inputs: [p, c5]}",
                             "{name: cat, op: concat, inputs: [c5, up]}"]
    a = analyze(_encoder(tmp_path, layers), (64, 64), output_stride=8)
    assert a.resolved.types["encoder.cat"].spatial == (8, 8)


def test_a_removed_pool_whose_indices_an_unpool_reads_is_refused_at_the_pool(tmp_path):
    from conftest import SPECS
    with pytest.raises(SpecError) as err:
        analyze(SPECS / "baselines" / "segnet.yaml", (64, 64), output_stride=16)
    (diag,) = err.value.errors
    assert "cannot remove the stride of maxpool 'encoder.pool5'" in diag.message
    assert "reads its indices" in diag.message
    assert diag.loc.file.endswith("segnet_encoder.yaml")
