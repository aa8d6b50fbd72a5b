"""Per-axis strides: row and column maps (SeaFormer's axial attention) through every pass.

A C x H x W map of stride s reduced over its width is a row map C x H x 1 with stride s along
the height and s·W along the width (one bin as wide as the map); over its height, a column
map with strides s·H and s. A broadcasting add of a row and a column map is C x H x W again,
of stride s on both axes. Pure Python: no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ir import AnisotropicStrideError, Resolved, TensorType, strides_text
from rtseg_compiler.ops import REGISTRY, OpError
from rtseg_compiler.ops.merge import broadcast_type
from rtseg_compiler.passes.check import check_resolved
from rtseg_compiler.passes.dilate import on_grid_strides
from rtseg_compiler.pipeline import analyze
from rtseg_compiler.spec import schema as schema_module

# --------------------------------------------------------------------------- the IR type


def test_positional_construction_and_stride_of_an_isotropic_map_are_unchanged():
    """User ops build TensorType(c, h, w, stride) and read .stride (docs/extending.md)."""
    t = TensorType(8, 12, 20, Fraction(2))
    assert t.stride == 2 and t.strides == (2, 2) and t.isotropic
    assert t == TensorType(8, 12, 20, stride_h=2) == TensorType(8, 12, 20, stride=2)
    assert TensorType(3, 4, 5).stride == 1
    assert dataclasses.replace(t, channels=4) == TensorType(4, 12, 20, 2)
    assert dataclasses.replace(t, stride=Fraction(1, 2)).strides == (Fraction(1, 2),) * 2
    assert repr(t) == "TensorType(channels=8, height=12, width=20, stride=Fraction(2, 1))"


def test_stride_of_a_row_map_is_a_clear_error_and_replace_does_not_pick_an_axis():
    row = TensorType(8, 12, 1, stride_h=2, stride_w=40)
    assert row.strides == (2, 40) and not row.isotropic and row.grid_stride == 2
    assert strides_text(row) == "2|40"
    with pytest.raises(AnisotropicStrideError, match="8x12x1 map has stride 2 along the height and 40 "
                                                     "along the width.*'stride_h' and 'stride_w'"):
        row.stride
    assert dataclasses.replace(row, channels=3).strides == (2, 40)
    with pytest.raises(TypeError, match="'stride' \\(both axes\\) or 'stride_h' and 'stride_w'"):
        dataclasses.replace(row, stride=4)


# --------------------------------------------------------------------------- specs

STEM = """\
  - {name: c1, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c2, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c3, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c4, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c5, op: conv, out: 16, kernel: 3, stride: 2}
"""

#: SeaFormer's squeeze-enhanced axial attention (Wan et al. 2023, arXiv:2301.13156, Fig. 3),
#: reduced to its shapes: q, k, v from 1x1 convs; each squeezed to a row (mean over the width)
#: and a column (mean over the height) with a learned positional embedding resized onto it;
#: attention along each axis; the two broadcast-added back to H x W, plus v; a 3x3 "detail"
#: conv on the input gates the result.
AXIAL_BLOCK = """\
blocks:
  axial:
    params: {dim: ~, heads: 2}
    layers:
      - {name: q, op: conv, out: dim, kernel: 1, input: input}
      - {name: k, op: conv, out: dim, kernel: 1, input: input}
      - {name: v, op: conv, out: dim, kernel: 1, input: input}
      - {name: q_row, op: reduce, mode: mean, over: width, input: q}
      - {name: pos_row, op: param, channels: dim, height: 16, width: 1, input: q_row}
      - {name: pos_row_up, op: upsample, mode: bilinear, inputs: [pos_row, q_row]}
      - {name: q_row_pos, op: add, inputs: [q_row, pos_row_up]}
      - {name: k_row, op: reduce, mode: mean, over: width, input: k}
      - {name: v_row, op: reduce, mode: mean, over: width, input: v}
      - {name: row, op: attention, inputs: [q_row_pos, k_row, v_row], heads: heads}
      - {name: row_proj, op: conv, out: dim, kernel: 1}
      - {name: q_col, op: reduce, mode: mean, over: height, input: q}
      - {name: k_col, op: reduce, mode: mean, over: height, input: k}
      - {name: v_col, op: reduce, mode: mean, over: height, input: v}
      - {name: col, op: attention, inputs: [q_col, k_col, v_col], heads: heads}
      - {name: col_proj, op: conv, out: dim, kernel: 1}
      - {name: axial, op: add, inputs: [row_proj, col_proj]}
      - {name: mixed, op: add, inputs: [v, axial]}
      - {name: detail, op: conv, out: dim, kernel: 3, input: input}
      - {name: gate, op: sigmoid, input: mixed}
      - {name: out, op: mul, inputs: [gate, detail]}
"""


def axial_encoder(write_spec, *, taps: str = "", after: str = "") -> object:
    """Five 3x3/2 convs (stride 32), then an axial block, then ``after`` (YAML list items)."""
    return write_spec("axial.yaml", "kind: encoder\nname: axial_probe\ninput: [128, 192]\n" + AXIAL_BLOCK
                      + "layers:\n" + STEM + "  - {name: sea, block: axial, dim: 16}\n" + after + taps)


def types_of(analysis) -> dict[str, TensorType]:
    return {name.removeprefix("encoder."): t for name, t in analysis.resolved.types.items()}


def test_rows_and_columns_have_a_bin_along_the_reduced_axis_and_add_back_to_the_grid(write_spec):
    """At 128x192 the stem ends 4x6 at stride 32: rows 16x4x1 with strides 32|192 (one bin of
    6 columns of 32 pixels), columns 16x1x6 with 128|32, and row + column is 16x4x6 at 32."""
    t = types_of(analyze(axial_encoder(write_spec, taps="taps: {stride32: sea.out}\n")))
    assert (str(t["c5"]), t["c5"].strides) == ("16x4x6", (32, 32))
    for name in ("sea.q_row", "sea.k_row", "sea.v_row", "sea.pos_row_up", "sea.q_row_pos", "sea.row",
                 "sea.row_proj"):
        assert (str(t[name]), t[name].strides) == ("16x4x1", (32, 192)), name
    for name in ("sea.q_col", "sea.col", "sea.col_proj"):
        assert (str(t[name]), t[name].strides) == ("16x1x6", (128, 32)), name
    for name in ("sea.axial", "sea.mixed", "sea.out"):
        assert (str(t[name]), t[name].stride) == ("16x4x6", 32), name
    # The learned 16x1 embedding is a grid of 16 rows over the 4-row map (pitch 32·4/16 = 8) and
    # keeps the row map's one bin along the width; resized onto the row map, it is one again.
    assert t["sea.pos_row"].strides == (8, 192)


def test_shapes_and_flops_json_print_a_row_maps_strides_as_height_bar_width(write_spec):
    path = str(axial_encoder(write_spec))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["shapes", path]) == 0
    lines = {line.split()[0]: line.split() for line in out.getvalue().splitlines() if line.strip()}
    assert lines["encoder.sea.q_row"][2:4] == ["16x4x1", "32|192"]
    assert lines["encoder.sea.q_col"][2:4] == ["16x1x6", "128|32"]
    assert lines["encoder.sea.axial"][2:4] == ["16x4x6", "32"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["flops", path, "--json"]) == 0
    strides = {layer["name"]: layer["stride"] for layer in json.loads(out.getvalue())["layers"]}
    assert (strides["encoder.sea.q_row"], strides["encoder.sea.q_col"], strides["encoder.sea.out"]) == (
        "32|192", "128|32", 32)


def test_a_strideN_tap_on_a_row_map_is_a_located_error_naming_each_axis(write_spec):
    path = axial_encoder(write_spec, taps="taps:\n  stride32: sea.row_proj\n")
    with pytest.raises(SpecError) as err:
        analyze(path)
    (diag,) = err.value.errors
    assert diag.message == ("tap 'stride32' points at 'sea.row_proj', a 16x4x1 map whose stride is 32 "
                            "along the height and 192 along the width, not 32 along both")
    assert (diag.loc.file, diag.loc.line) == (str(path), path.read_text().splitlines().index(
        "  stride32: sea.row_proj") + 1)


def test_the_output_stride_rewrite_runs_through_an_axial_block_at_the_rate_of_its_rows(write_spec):
    """At output stride 16 the axial block reads a stride-16 map (8x12) at rate 2: rows are
    16x8x1 with strides 16|192 (the bin is still the map's width), columns 16x1x12 with 128|16,
    their sum 16x8x12 at 16; the 3x3 detail conv gets dilation 2, the 1x1 convs stay as they are."""
    a = analyze(axial_encoder(write_spec), output_stride=16)
    t = types_of(a)
    assert (str(t["sea.row"]), t["sea.row"].strides) == ("16x8x1", (16, 192))
    assert (str(t["sea.col"]), t["sea.col"].strides) == ("16x1x12", (128, 16))
    assert (str(t["sea.out"]), t["sea.out"].strides) == ("16x8x12", (16, 16))
    node = a.graph.node
    assert node("encoder.sea.detail").attrs["dilation"] == (2, 2)
    assert node("encoder.sea.detail").attrs["padding"] == (2, 2)
    assert node("encoder.sea.row_proj").attrs["dilation"] == (1, 1)
    assert node("encoder.c5").attrs["stride"] == (1, 1)
    # Every shape is what the same block computes on an 8x12 stride-16 map without the rewrite.
    natural = types_of(analyze(axial_encoder(write_spec), (256, 384)))
    for name in ("sea.row", "sea.col", "sea.axial", "sea.out"):
        assert str(t[name]) == str(natural[name]) and t[name].grid_stride * 2 == natural[name].grid_stride


def test_a_3x3_conv_on_a_row_map_is_dilated_at_its_heights_rate(write_spec):
    """The row map's width stride (a bin, 192) is no sampling step: the conv's rate is 32/8 = 4."""
    after = "  - {name: row_conv, op: conv, out: 16, kernel: [3, 1], padding: [1, 0], input: sea.row}\n"
    a = analyze(axial_encoder(write_spec, after=after), output_stride=8)
    assert on_grid_strides(a.resolved.types["encoder.sea.row"]) == (8,)
    assert a.graph.node("encoder.row_conv").attrs["dilation"] == (4, 4)
    assert a.graph.node("encoder.row_conv").attrs["padding"] == (4, 0)
    assert str(a.resolved.types["encoder.row_conv"]) == "16x16x1"


def test_a_map_on_the_grid_with_a_different_rate_per_axis_is_refused_by_the_rewrite(encoder_spec):
    """A conv with stride (2, 1) makes a 16|8 map on the grid along both axes: at output stride 8
    its rows would need rate 2 and its columns rate 1, which one dilation cannot give."""
    layers = "\n".join(f"- {{name: c{i}, op: conv, out: 8, kernel: 3, stride: 2}}" for i in range(1, 4))
    layers += ("\n- {name: tall, op: conv, out: 8, kernel: 3, stride: [2, 1]}"
               "\n- {name: after, op: conv, out: 8, kernel: 3}")
    a = analyze(encoder_spec(layers, input_size=(64, 64)))
    assert a.resolved.types["encoder.tall"].strides == (16, 8)
    with pytest.raises(SpecError, match=r"layer 'encoder.after' reads a 8x4x8 map of stride 16\|8 "
                                        r"\(height\|width\), which output stride 8 would dilate by a "
                                        r"different rate along each axis"):
        analyze(encoder_spec(layers, input_size=(64, 64)), output_stride=8)


def test_concat_of_a_row_map_and_a_full_map_names_both_strides(write_spec):
    after = "  - {name: joined, op: concat, inputs: [sea.row, sea.v]}\n"
    with pytest.raises(SpecError, match=r"concat needs inputs of equal height and width, but 'sea.row' "
                                        r"\(stride 32\|192\) is 4x1 and 'sea.v' \(stride 32\) is 4x6"):
        analyze(axial_encoder(write_spec, after=after, taps="taps: {stride32: sea.out}\n"))


def test_resizing_a_row_or_column_map_to_a_size_scales_each_axis(write_spec):
    """Row 4x1 at 32|192 upsampled to 4x6: back on the stride-32 grid. Column 1x6 at 128|32
    pooled to 1x3 bins: 128|64. An isotropic map's bins keep one stride, the height's."""
    after = ("  - {name: wide, op: upsample, size: [4, 6], input: sea.row}\n"
             "  - {name: col_bins, op: adaptive_avgpool, size: [1, 3], input: sea.col}\n"
             "  - {name: bins, op: adaptive_avgpool, size: [2, 2], input: sea.out}\n")
    t = types_of(analyze(axial_encoder(write_spec, after=after, taps="taps: {stride32: sea.out}\n"),
                         keep_unused=True))
    assert t["wide"].strides == (32, 32)
    assert t["col_bins"].strides == (128, 64)
    assert t["bins"].strides == (64, 64)  # 4x6 at 32 into 2x2: 32·4/2 on both axes


def test_check_resolved_refuses_a_broadcast_stride_taken_from_a_stretched_input(write_spec):
    """The invariant passes/check.py keeps: row + column takes no stride from the row's bin."""
    a = analyze(axial_encoder(write_spec))
    types = dict(a.resolved.types)
    check_resolved(Resolved(a.resolved.graph, a.resolved.input, types))
    types["encoder.sea.axial"] = TensorType(16, 4, 6, stride_h=32, stride_w=192)
    with pytest.raises(AssertionError, match="stride 192 along the width is no input's of that size"):
        check_resolved(Resolved(a.resolved.graph, a.resolved.input, types))


# --------------------------------------------------------------------------- user ops


@pytest.fixture
def user_op():
    added: list[str] = []

    def add(op):
        from rtseg_compiler.ops import register
        register(op)
        added.append(op.name)
        schema_module._VALIDATORS.clear()

    yield add
    for name in added:
        REGISTRY.pop(name, None)
    schema_module._VALIDATORS.clear()


def test_a_user_op_reading_stride_of_a_row_map_is_a_located_error(write_spec, user_op):
    """A plugin written for isotropic maps keeps working on them and fails loudly on a row map."""
    from rtseg_compiler.ops import OpDef

    def infer(attrs, ins):
        x = ins[0]
        return TensorType(x.channels, x.height, x.width, x.stride)

    user_op(OpDef(name="test_iso_identity", summary="identity written for isotropic maps", fields={},
                  infer=infer, build=lambda attrs, ins, out: None))
    ok = analyze(axial_encoder(write_spec, after="  - {name: fine, op: test_iso_identity, input: sea.v}\n"))
    assert ok.resolved.types["encoder.fine"].stride == 32
    path = axial_encoder(write_spec, after="  - {name: iso, op: test_iso_identity, input: sea.row}\n")
    with pytest.raises(SpecError) as err:
        analyze(path)
    (diag,) = err.value.errors
    assert diag.message.startswith("op 'test_iso_identity' reads the one 'stride' of an input that has a "
                                   "stride per axis: the 16x4x1 map has stride 32 along the height and "
                                   "192 along the width")
    assert diag.loc.line == path.read_text().splitlines().index(
        "  - {name: iso, op: test_iso_identity, input: sea.row}") + 1
    assert "x.stride_h and x.stride_w" in diag.hint


def test_a_user_op_returning_a_stride_of_zero_is_a_located_error(write_spec, user_op):
    from rtseg_compiler.ops import OpDef

    user_op(OpDef(name="test_zero_stride", summary="a shape rule with a bug", fields={},
                  infer=lambda attrs, ins: TensorType(ins[0].channels, ins[0].height, ins[0].width, 0),
                  build=lambda attrs, ins, out: None))
    path = axial_encoder(write_spec, after="  - {name: zero, op: test_zero_stride, input: sea.v}\n")
    with pytest.raises(SpecError, match=r"the op's shape rule \(infer\) returned strides 0; a stride is "
                                        r"positive \(test_zero_stride 'zero'\)"):
        analyze(path)


# --------------------------------------------------------------------------- broadcasting


def _shape_options(full: int) -> st.SearchStrategy[int]:
    return st.sampled_from((1, full))


@st.composite
def _broadcast_inputs(draw):
    """2-4 maps each of whose C, H, W is the full size or 1 (a gate, a row, a column ...), with
    strides such as the passes make: a size-1 axis is a bin (stride s·n) or a 1-pixel grid."""
    c, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    s = Fraction(draw(st.sampled_from((1, 2, 4, 8, 16))))
    ins = []
    for _ in range(draw(st.integers(2, 4))):
        ci, hi, wi = draw(_shape_options(c)), draw(_shape_options(h)), draw(_shape_options(w))
        sh = s if hi == h or draw(st.booleans()) else s * h
        sw = s if wi == w or draw(st.booleans()) else s * w
        ins.append(TensorType(ci, hi, wi, stride_h=sh, stride_w=sw))
    return ins


@given(_broadcast_inputs())
@example([TensorType(4, 3, 1, stride_h=2, stride_w=10), TensorType(4, 1, 5, stride_h=6, stride_w=2)])
def test_broadcast_shape_is_numpys_and_each_axis_takes_a_stride_from_an_input_not_stretched_along_it(ins):
    want = np.broadcast_shapes(*[(t.channels, t.height, t.width) for t in ins])
    out = broadcast_type("add", ins)
    assert (out.channels, out.height, out.width) == want
    for axis in (0, 1):
        size = out.spatial[axis]
        sized = [t.strides[axis] for t in ins if t.spatial[axis] == size]
        assert out.strides[axis] in sized  # never the stride of an input stretched from 1
        if size > 1 and all(t.spatial[axis] == 1 or t.spatial == out.spatial for t in ins):
            full = [t for t in ins if t.spatial == out.spatial]
            if full:
                assert out.strides[axis] == full[0].strides[axis]
    if all(t.isotropic and t.stride == ins[0].stride for t in ins):
        assert out.isotropic and out.stride == ins[0].stride


def test_row_plus_column_is_the_full_map_at_their_common_stride():
    row = TensorType(4, 3, 1, stride_h=2, stride_w=10)
    col = TensorType(4, 1, 5, stride_h=6, stride_w=2)
    out = broadcast_type("add", [row, col])
    assert (str(out), out.strides) == ("4x3x5", (2, 2))
    gate = TensorType(4, 1, 1, 6)
    assert broadcast_type("mul", [row, gate]).strides == (2, 10)  # the row map is full-size here


def test_broadcast_of_maps_that_cannot_broadcast_is_still_an_op_error():
    with pytest.raises(OpError, match="cannot broadcast"):
        broadcast_type("add", [TensorType(4, 3, 1, stride_h=2, stride_w=10), TensorType(3, 1, 5, 2)])


# --------------------------------------------------------------------------- the zoo's axial network


def test_seaformer_tiny_has_honest_row_and_column_strides_at_512_and_at_output_stride_16():
    """SeaFormer-T at 512x512: stage 1 squeezes a 16x16 stride-32 map into 32|512 rows and 512|32
    columns that add back to stride 32; at output stride 16 stage 2's 32x32 map gives 16|512 rows
    and its 3x3 depthwise convs read it at rate 4."""
    from conftest import SPECS

    t = analyze(SPECS / "models" / "seaformer_tiny.yaml").resolved.types
    block = "encoder.stage.1.block.0.attn"
    assert (str(t[f"{block}.q_row"]), t[f"{block}.q_row"].strides) == ("64x16x1", (32, 512))
    assert (str(t[f"{block}.q_column"]), t[f"{block}.q_column"].strides) == ("64x1x16", (512, 32))
    assert t[f"{block}.axial"].strides == (32, 32)
    dilated = analyze(SPECS / "models" / "seaformer_tiny.yaml", output_stride=16)
    t = dilated.resolved.types
    assert (str(t["encoder.stage.2.block.0.attn.q_row"]),
            t["encoder.stage.2.block.0.attn.q_row"].strides) == ("96x32x1", (16, 512))
    assert t["encoder.stage.2.block.0.attn.axial"].strides == (16, 16)
    assert dilated.graph.node("encoder.stage.2.block.0.attn.dwconv").attrs["dilation"] == (4, 4)
