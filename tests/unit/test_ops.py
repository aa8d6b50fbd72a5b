"""Every op's shape rule and cost rule, against integers worked out by hand. No torch.

Each case compiles a one- or few-layer encoder on the input of the measured
micro-op table in flop-conventions.md §2 (N=1, C=32, 24x40, numel 30,720) and
reads the audit row. The MAC values of that table are the agreement of torch's
FlopCounterMode / 2, fvcore and ptflops-aten, so they pin our ``mac`` column to
the reference counters exactly. Output sizes follow the formulas in the
PyTorch documentation of Conv2d, ConvTranspose2d, MaxPool2d and Upsample; the
torch tests check the same rules against real modules on random graphs.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ops import REGISTRY
from rtseg_compiler.ops.base import conv_out
from rtseg_compiler.pipeline import analyze

# numel of one 64-channel 24x40 output map, the bias-add FLOPs of TensorFlow's profiler.
OUT64 = 64 * 24 * 40


def run(encoder_spec, layers: str, **kwargs):
    return analyze(encoder_spec(layers, **kwargs))


def row(analysis, name: str | None = None):
    """The audit row of layer ``name`` (unqualified), or of the last layer."""
    if name is None:
        return analysis.audit.layers[-1]
    return next(r for r in analysis.audit.layers if r.name == f"encoder.{name}")


def attrs(analysis, name: str):
    return analysis.resolved.graph.node(f"encoder.{name}").attrs


# --------------------------------------------------------------------------- the §2 micro-op table

MICRO_OPS = [
    # (case, layer, MACs (§2), params, output CxHxW)
    ("conv3x3 no bias", "{op: conv, out: 64, kernel: 3, padding: 1, bias: false}",
     17_694_720, 64 * 32 * 9, (64, 24, 40)),
    ("conv3x3 + bias", "{op: conv, out: 64, kernel: 3, padding: 1}",
     17_694_720, 64 * 32 * 9 + 64, (64, 24, 40)),
    ("conv3x3 s2", "{op: conv, out: 64, kernel: 3, stride: 2, padding: 1, bias: false}",
     4_423_680, 64 * 32 * 9, (64, 12, 20)),
    ("grouped g=4", "{op: conv, out: 64, kernel: 3, groups: 4, bias: false}",
     4_423_680, 64 * 8 * 9, (64, 24, 40)),
    ("depthwise g=32", "{op: conv, out: in_channels, kernel: 3, groups: in_channels, bias: false}",
     276_480, 32 * 9, (32, 24, 40)),
    ("dilated d=2 pad 2", "{op: conv, out: 64, kernel: 3, dilation: 2, padding: 2, bias: false}",
     17_694_720, 64 * 32 * 9, (64, 24, 40)),
    ("ConvT k3 s2 p1 op1 32->16",
     "{op: deconv, out: 16, kernel: 3, stride: 2, padding: 1, output_padding: 1, bias: false}",
     4_423_680, 32 * 16 * 9, (16, 48, 80)),
    ("ConvT k4 s2 p1 + bias", "{op: deconv, out: 16, kernel: 4, stride: 2, padding: 1}",
     7_864_320, 32 * 16 * 16 + 16, (16, 48, 80)),
    ("ConvT k4 s2 g=4", "{op: deconv, out: 16, kernel: 4, stride: 2, groups: 4, bias: false}",
     1_966_080, 32 * 4 * 16, (16, 48, 80)),
    ("BatchNorm2d", "{op: bn}", 0, 64, (32, 24, 40)),
    ("ReLU", "{op: relu}", 0, 0, (32, 24, 40)),
    ("MaxPool2d(2)", "{op: maxpool, kernel: 2}", 0, 0, (32, 12, 20)),
    ("AvgPool2d(2)", "{op: avgpool, kernel: 2}", 0, 0, (32, 12, 20)),
    ("channel shuffle", "{op: shuffle, groups: 4}", 0, 0, (32, 24, 40)),
    ("upsample nearest x2", "{op: upsample, scale: 2}", 0, 0, (32, 48, 80)),
    ("upsample bilinear x2", "{op: upsample, scale: 2, mode: bilinear}", 0, 0, (32, 48, 80)),
]


@pytest.mark.parametrize("case,layer,macs,params,shape", MICRO_OPS, ids=[c[0] for c in MICRO_OPS])
def test_micro_op_table(encoder_spec, case, layer, macs, params, shape):
    """MACs of each §2 row (N=1, C=32, 24x40), with hand-computed parameters and output shape."""
    r = row(run(encoder_spec, f"- {layer}"))
    assert r.macs == macs
    assert r.flops == 2 * macs  # what torch's FlopCounterMode reports
    assert r.params == params
    assert r.output_shape == shape


def test_conv_mac_formula_spelled_out(encoder_spec):
    """conv MACs = Hout·Wout·Cout·(Cin/g)·kh·kw: 24·40·64·32·9 = 17,694,720."""
    r = row(run(encoder_spec, "- {op: conv, out: 64, kernel: 3, bias: false}"))
    assert r.macs == 24 * 40 * 64 * 32 * 9 == 17_694_720


def test_deconv_counts_by_input_not_output(encoder_spec):
    """k4/s2 deconv: 24·40·32·16·16 = 7,864,320 by input; by output it would be 4x that (thop 0.1.1)."""
    r = row(run(encoder_spec, "- {op: deconv, out: 16, kernel: 4, stride: 2}"))
    assert r.macs == 24 * 40 * 32 * 16 * 16
    assert r.macs * 4 == 48 * 80 * 16 * 32 * 16  # the output-based count, for contrast


# --------------------------------------------------------------------------- TF-profiler FLOPs

def test_tf_flops_conv_bias_adds_one_per_output(encoder_spec):
    """TF: 2·MAC + BiasAdd numel(out) = 35,389,440 + 61,440 (DeepSpeed's 'flops' in §2)."""
    with_bias = row(run(encoder_spec, "- {op: conv, out: 64, kernel: 3}"))
    assert with_bias.tf_flops == 35_450_880 == 2 * 17_694_720 + OUT64
    no_bias = row(run(encoder_spec, "- {op: conv, out: 64, kernel: 3, bias: false}", name="b.yaml"))
    assert no_bias.tf_flops == 35_389_440


def test_tf_flops_deconv_by_output_over_stride_squared(encoder_spec):
    """TF Conv2DBackpropInput: 2·48·80·4²·32·16/2² + bias 16·48·80 = 15,728,640 + 61,440."""
    r = row(run(encoder_spec, "- {op: deconv, out: 16, kernel: 4, stride: 2, padding: 1}"))
    assert r.tf_flops == 2 * 48 * 80 * 16 * 32 * 16 // 4 + 16 * 48 * 80 == 15_790_080


def test_tf_flops_pool_add_gap_and_free_ops(encoder_spec):
    """maxpool k2: 4 per output (4·32·12·20); add of 2: 1 per element; gap: 1 per input; bn, relu: 0."""
    a = run(encoder_spec, """
        - {name: pool, op: maxpool, kernel: 2}
        - {name: act, op: relu}
        - {name: norm, op: bn}
        - {name: sum, op: add, inputs: [act, norm]}
        - {name: sum3, op: add, inputs: [sum, act, norm]}
        - {name: gp, op: gap}
        """)
    assert row(a, "pool").tf_flops == 4 * 32 * 12 * 20 == 30_720
    assert row(a, "act").tf_flops == row(a, "norm").tf_flops == 0
    assert row(a, "sum").tf_flops == 32 * 12 * 20
    assert row(a, "sum3").tf_flops == 2 * 32 * 12 * 20
    assert row(a, "gp").tf_flops == 32 * 12 * 20
    assert a.audit.macs == 0


# --------------------------------------------------------------------------- conv shapes

@pytest.mark.parametrize("layer,shape", [
    # floor((24 + 2p - d(k-1) - 1)/s) + 1, and the same for 40
    ("{op: conv, out: 8, kernel: 3, padding: 0}", (8, 22, 38)),
    ("{op: conv, out: 8, kernel: 5, stride: 2}", (8, 12, 20)),           # default pad 2
    ("{op: conv, out: 8, kernel: 4, stride: 3, padding: 1}", (8, 8, 13)),  # (24+2-3-1)//3+1
    ("{op: conv, out: 8, kernel: 3, dilation: 2, padding: 0}", (8, 20, 36)),
    ("{op: conv, out: 8, kernel: 3, dilation: 3}", (8, 24, 40)),         # default pad 3 keeps size
    ("{op: conv, out: 8, kernel: [1, 5]}", (8, 24, 40)),                 # pad (0, 2)
    ("{op: conv, out: 8, kernel: [3, 1], stride: 2}", (8, 12, 20)),      # pad (1, 0)
    ("{op: conv, out: 8, kernel: 3, padding: [0, 1]}", (8, 22, 40)),
    ("{op: conv, out: 8, kernel: [3, 5], stride: [1, 2], padding: 0}", (8, 22, 18)),
    ("{op: conv, out: 8, kernel: 24, padding: 11}", (8, 23, 39)),        # 24+22-23 = 23
])
def test_conv_output_size(encoder_spec, layer, shape):
    """Conv2d's documented size rule, including asymmetric kernels, strides and paddings."""
    assert row(run(encoder_spec, f"- {layer}")).output_shape == shape


def test_conv_even_kernel_needs_its_padding_written(encoder_spec):
    """Default padding d(k-1)/2 is 'same' only for odd kernels; k=4 has none, so the spec must
    say (rounding down gave 1 and 24 -> 23 silently). Written out, the size follows torch."""
    with pytest.raises(SpecError, match="kernel 4 has no symmetric 'same' padding"):
        run(encoder_spec, "- {name: c, op: conv, out: 8, kernel: 4}")
    a = run(encoder_spec, "- {name: c, op: conv, out: 8, kernel: 4, padding: 1}")
    assert row(a).output_shape == (8, 23, 39)


def test_conv_default_padding_includes_dilation(encoder_spec):
    """padding = d·(k-1)//2 per dimension: kernel [3, 5] dilation 2 -> (2, 4)."""
    a = run(encoder_spec, "- {name: c, op: conv, out: 8, kernel: [3, 5], dilation: 2}")
    assert attrs(a, "c")["padding"] == (2, 4)
    assert row(a).output_shape == (8, 24, 40)
    assert row(a).dilation == (2, 2)


def test_conv_asymmetric_kernel_macs(encoder_spec):
    """[1, 5] kernel, 32 -> 32: 24·40·32·32·1·5 = 4,915,200 MACs, 32·32·5 weights."""
    r = row(run(encoder_spec, "- {op: conv, out: 32, kernel: [1, 5], bias: false}"))
    assert r.macs == 4_915_200
    assert r.params == 5_120


def test_conv_stride_accumulates(encoder_spec):
    """Strides multiply along the path: 2 then 2 is stride 4 relative to the image."""
    a = run(encoder_spec, """
        - {name: a, op: conv, out: 8, kernel: 3, stride: 2}
        - {name: b, op: conv, out: 8, kernel: 3, stride: 2}
        """)
    assert row(a, "a").stride == 2
    assert row(a, "b").stride == 4
    assert row(a, "b").output_shape == (8, 6, 10)


# --------------------------------------------------------------------------- deconv shapes

@pytest.mark.parametrize("kernel,stride,dilation,padding,output_padding", [
    (16, 8, 1, 4, 0),   # SkipNet's 16x16/8 upsampling
    (4, 2, 1, 1, 0),    # FCN's 4x4/2
    (3, 2, 1, 1, 1),    # ENet/Keras 3x3/2 with output_padding 1
    (2, 2, 1, 0, 0),
    (1, 2, 1, 0, 1),
    (3, 3, 1, 0, 0),
    (5, 1, 1, 2, 0),
    (3, 2, 2, 2, 1),    # span 5
])
def test_deconv_default_padding_gives_stride_times_input(encoder_spec, kernel, stride, dilation,
                                                          padding, output_padding):
    """(in-1)s - 2p + d(k-1) + op + 1 = s·in for the default padding and output_padding."""
    a = run(encoder_spec, f"- {{name: up, op: deconv, out: 4, kernel: {kernel}, stride: {stride}, "
                          f"dilation: {dilation}}}")
    assert attrs(a, "up")["padding"] == (padding, padding)
    assert attrs(a, "up")["output_padding"] == (output_padding, output_padding)
    assert row(a).output_shape == (4, 24 * stride, 40 * stride)
    assert row(a).stride == Fraction(1, stride)


def test_deconv_explicit_padding_uses_pytorch_formula(encoder_spec):
    """k4 s2 p0: (24-1)·2 + 3 + 1 = 50 rows, (40-1)·2 + 4 = 82 columns."""
    r = row(run(encoder_spec, "- {op: deconv, out: 4, kernel: 4, stride: 2, padding: 0}"))
    assert r.output_shape == (4, 50, 82)


def test_deconv_asymmetric(encoder_spec):
    """kernel [1, 4], stride [1, 2]: default padding keeps rows and doubles columns."""
    a = run(encoder_spec, "- {name: up, op: deconv, out: 4, kernel: [1, 4], stride: [1, 2]}")
    assert row(a).output_shape == (4, 24, 80)
    assert row(a).macs == 24 * 40 * 32 * 4 * 4


# --------------------------------------------------------------------------- pooling

@pytest.mark.parametrize("layer,shape", [
    ("{op: maxpool, kernel: 2}", (32, 12, 20)),                         # stride defaults to kernel
    ("{op: maxpool, kernel: 3, stride: 2}", (32, 11, 19)),              # floor(21/2)+1, floor(37/2)+1
    ("{op: maxpool, kernel: 3, stride: 2, ceil_mode: true}", (32, 12, 20)),
    ("{op: avgpool, kernel: 3, stride: 1, padding: 1}", (32, 24, 40)),
    ("{op: avgpool, kernel: [2, 4]}", (32, 12, 10)),
    ("{op: maxpool, kernel: 5, stride: 3, ceil_mode: true}", (32, 8, 13)),   # ceil(19/3)+1, ceil(35/3)+1
])
def test_pool_output_size(encoder_spec, layer, shape):
    assert row(run(encoder_spec, f"- {layer}")).output_shape == shape


def test_ceil_mode_drops_window_starting_in_padding(encoder_spec):
    """5x2 input, kernel 2, stride [2, 3], padding 1, ceil_mode.

    Rows: ceil((5+2-1-1)/2)+1 = 4, but window 4 would start at row 6 >= 5+1, inside the
    right padding, so PyTorch keeps 3. Columns: ceil(2/3)+1 = 2, window 2 starts at 3 >= 2+1,
    so 1. Without the rule the output would be 4x2. (Checked against torch 2.x MaxPool2d.)
    """
    r = row(run(encoder_spec, "- {op: maxpool, kernel: 2, stride: [2, 3], padding: 1, ceil_mode: true}",
                input_size=(5, 2)))
    assert r.output_shape == (32, 3, 1)


def test_gap_output_and_stride(encoder_spec):
    r = row(run(encoder_spec, "- {op: gap}"))
    assert r.output_shape == (32, 1, 1)
    assert r.stride == 24


@pytest.mark.parametrize("size,kernel,stride,padding,ceil,expected", [
    (24, 3, 1, 1, False, 24),
    (24, 3, 2, 1, False, 12),
    (24, 3, 2, 0, False, 11),
    (24, 3, 2, 0, True, 12),
    (5, 2, 2, 0, True, 3),
    (5, 2, 2, 1, True, 3),     # 4 without the padding-window rule
    (2, 2, 3, 1, True, 1),     # 2 without it
    (6, 3, 2, 1, True, 4),
    (7, 3, 3, 1, True, 3),
    (3, 5, 1, 0, False, 0),    # kernel larger than input: no output
])
def test_conv_out_helper(size, kernel, stride, padding, ceil, expected):
    """The shared size helper; expected values are torch.nn.MaxPool2d's, hand-checked."""
    assert conv_out(size, kernel, stride, padding, 1, ceil) == expected


def test_conv_out_dilation():
    """Effective kernel d(k-1)+1 = 5 for k=3, d=2: floor((24-5)/1)+1 = 20."""
    assert conv_out(24, 3, 1, 0, 2) == 20
    assert conv_out(24, 3, 2, 2, 2) == 12


@pytest.mark.parametrize("size,kernel,stride,expected",
                         [(1, 2, 2, 1), (2, 3, 3, 1), (1, 3, 2, 0), (1, 5, 4, 0)])
def test_ceil_mode_pool_wider_than_its_input(size, kernel, stride, expected):
    """ATen's (span + s - 1) div_rtn s + 1: a 2/2 ceil pool of a 1x1 map gives 1x1, a 3/2 one
    gives 0x0 (values from torch.nn.functional.max_pool2d, torch 2.13)."""
    assert conv_out(size, kernel, stride, 0, 1, ceil_mode=True) == expected
    assert conv_out(size, kernel, stride, 0, 1, ceil_mode=False) == 0


def _walk_windows(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output positions counted by sliding the window, as torch.nn.MaxPool2d's documentation says.

    A window spans d(k-1)+1 positions and starts at -p, -p+s, ...; it counts when it ends within
    the padded input. In ceil mode one more window may run past the padded end, if the last
    window that fits left the end uncovered, and if it does not start in the right padding
    ("sliding windows that would start in the right padded region are ignored"). Only for a
    window that fits at least once: ATen and that sentence part ways on wider kernels
    (test_ceil_mode_pool_wider_than_its_input; tests/torch checks every case against torch).
    """
    extent = dilation * (kernel - 1) + 1
    padded_end = size + padding
    count, start = 0, -padding
    while start + extent <= padded_end:
        count, start = count + 1, start + stride
    if ceil_mode and start - stride + extent < padded_end and start < size:
        count += 1
    return count


@st.composite
def _windows(draw, ceil_mode: bool):
    """(size, kernel, stride, padding, dilation) whose window fits the padded input at least once;
    pools (ceil mode) pad at most half the kernel, as MaxPool2d requires."""
    kernel, dilation = draw(st.integers(1, 7)), draw(st.integers(1, 3))
    padding = draw(st.integers(0, kernel // 2 if ceil_mode else 2 * kernel))
    extent = dilation * (kernel - 1) + 1
    size = draw(st.integers(max(1, extent - 2 * padding), 64))
    return size, kernel, draw(st.integers(1, 5)), padding, dilation


@given(_windows(ceil_mode=False))
@example((24, 3, 2, 0, 1)).via("test_conv_out_helper")
@example((24, 3, 2, 2, 2)).via("test_conv_out_dilation")
def test_conv_out_counts_the_windows_that_fit(case):
    assert conv_out(*case) == _walk_windows(*case, ceil_mode=False)


@given(_windows(ceil_mode=True))
@example((5, 2, 2, 1, 1)).via("test_conv_out_helper")
@example((2, 2, 3, 1, 1)).via("test_conv_out_helper")
@example((7, 3, 3, 1, 1)).via("test_conv_out_helper")
def test_conv_out_in_ceil_mode_adds_the_window_past_the_end_unless_it_starts_in_padding(case):
    assert conv_out(*case, ceil_mode=True) == _walk_windows(*case, ceil_mode=True)


# --------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("scale,size,expected", [
    (2, (24, 40), (48, 80)),
    (1.5, (24, 40), (36, 60)),
    (1.5, (5, 7), (7, 10)),        # floor(7.5), floor(10.5), as Upsample's size rule
    (0.5, (5, 7), (2, 3)),
])
def test_upsample_scale(encoder_spec, scale, size, expected):
    r = row(run(encoder_spec, f"- {{op: upsample, scale: {scale}}}", input_size=size))
    assert r.output_shape == (32, *expected)
    assert r.macs == 0 and r.params == 0


def test_upsample_scale_divides_stride(encoder_spec):
    a = run(encoder_spec, """
        - {name: down, op: conv, out: 8, kernel: 3, stride: 2}
        - {name: up, op: upsample, scale: 4, mode: bilinear}
        """)
    assert row(a, "up").stride == Fraction(1, 2)
    assert row(a, "up").output_shape == (8, 48, 80)


def test_upsample_to_reference_size(encoder_spec):
    """With a second input, upsample takes that input's HxW (and stride), keeping its own channels."""
    a = run(encoder_spec, """
        - {name: down, op: conv, out: 8, kernel: 3, stride: 3}
        - {name: up, op: upsample, inputs: [down, input], mode: bilinear}
        """, input_size=(25, 41))
    assert row(a, "down").output_shape == (8, 9, 14)
    assert row(a, "up").output_shape == (8, 25, 41)
    assert row(a, "up").stride == 1


def test_crop_takes_reference_size_and_own_channels(encoder_spec):
    """23x39 -> conv /2 -> 12x20 -> deconv x2 -> 24x40, one row and column too many: crop to 23x39."""
    a = run(encoder_spec, """
        - {name: down, op: conv, out: 8, kernel: 3, stride: 2}
        - {name: up, op: deconv, out: 4, kernel: 4, stride: 2}
        - {name: cut, op: crop, inputs: [up, input]}
        """, input_size=(23, 39))
    assert row(a, "down").output_shape == (8, 12, 20)
    assert row(a, "up").output_shape == (4, 24, 40)
    assert row(a, "cut").output_shape == (4, 23, 39)
    assert row(a, "cut").macs == row(a, "cut").params == 0


# --------------------------------------------------------------------------- fusion, shuffle, linear

def test_concat_sums_channels(encoder_spec):
    a = run(encoder_spec, """
        - {name: a, op: conv, out: 8, kernel: 1, input: input}
        - {name: b, op: conv, out: 16, kernel: 3, input: input}
        - {name: cat, op: concat, inputs: [a, b, input]}
        """)
    assert row(a, "cat").output_shape == (8 + 16 + 32, 24, 40)
    assert row(a, "cat").macs == 0


def test_add_keeps_type(encoder_spec):
    a = run(encoder_spec, """
        - {name: a, op: conv, out: 32, kernel: 3, input: input}
        - {name: s, op: add, inputs: [a, input]}
        """)
    assert row(a, "s").output_shape == (32, 24, 40)
    assert row(a, "s").params == 0


def test_shuffle_keeps_shape(encoder_spec):
    r = row(run(encoder_spec, "- {op: shuffle, groups: 8}"))
    assert (r.output_shape, r.params, r.macs) == ((32, 24, 40), 0, 0)


def test_linear_after_gap(encoder_spec):
    """gap -> linear 32 -> 10: 320 MACs, 320 + 10 parameters, a 10x1x1 map."""
    r = row(run(encoder_spec, "- {op: gap}\n- {op: linear, out: 10}"))
    assert r.output_shape == (10, 1, 1)
    assert (r.macs, r.params, r.tf_flops) == (320, 330, 650)


def test_linear_flattens_whole_map(encoder_spec):
    """On a 32x2x3 map the linear layer sees 192 inputs: 192·7 MACs."""
    r = row(run(encoder_spec, "- {op: linear, out: 7, bias: false}", input_size=(2, 3)))
    assert (r.macs, r.params) == (192 * 7, 192 * 7)


def test_pad_channels_and_borders(encoder_spec):
    """ENet's shortcut pads 32 -> 48 channels with zeros; borders add rows and columns. No cost."""
    a = run(encoder_spec, """
        - {name: wide, op: pad, out: 48}
        - {name: framed, op: pad, top: 1, left: 2, right: 3}
        """)
    assert row(a, "wide").output_shape == (48, 24, 40)
    assert row(a, "framed").output_shape == (48, 25, 45)
    assert a.audit.macs == a.audit.params == a.audit.tf_flops == 0


def test_unpool_default_size_and_like_size(encoder_spec):
    """Unpool k2 gives (in-1)·2 + 2 = 2·in; with a third input it restores a ceil-mode pool's odd size.

    23x39 pooled with ceil_mode is 12x20; the default unpool size would be 24x40.
    """
    a = run(encoder_spec, """
        - {name: pool, op: maxpool, kernel: 2, ceil_mode: true, indices: true}
        - {name: up, op: unpool, kernel: 2, inputs: [pool, pool]}
        - {name: back, op: unpool, kernel: 2, inputs: [pool, pool, input]}
        - {name: cut, op: crop, inputs: [up, input]}
        - {name: both, op: concat, inputs: [cut, back]}
        """, input_size=(23, 39))
    assert row(a, "pool").output_shape == (32, 12, 20)
    assert row(a, "up").output_shape == (32, 24, 40)
    assert row(a, "back").output_shape == (32, 23, 39)
    assert row(a, "back").stride == 1
    assert row(a, "both").output_shape == (64, 23, 39)
    assert a.audit.macs == a.audit.params == a.audit.tf_flops - row(a, "pool").tf_flops == 0


# --------------------------------------------------------------------------- norm and activations

@pytest.mark.parametrize("layer,params", [
    ("{op: bn}", 64),
    ("{op: bn, affine: false}", 0),
    ("{op: prelu}", 32),
    ("{op: prelu, per_channel: false}", 1),
    ("{op: relu}", 0),
    ("{op: relu6}", 0),
    ("{op: dropout, p: 0.1}", 0),
    ("{op: identity}", 0),
])
def test_shape_preserving_ops(encoder_spec, layer, params):
    r = row(run(encoder_spec, f"- {layer}"))
    assert r.output_shape == (32, 24, 40)
    assert r.params == params
    assert r.macs == 0


def test_every_registered_op_is_covered_here():
    """A new op needs a unit test in this file: list it below once it has one."""
    covered = {"conv", "deconv", "bn", "relu", "relu6", "prelu", "dropout", "identity", "maxpool",
               "avgpool", "gap", "linear", "add", "concat", "upsample", "crop", "shuffle", "pad",
               "unpool", "sigmoid", "tanh", "hardsigmoid", "hardswish", "silu", "gelu", "leaky_relu",
               "softmax", "mul", "adaptive_avgpool", "split", "layernorm", "attention",
               "linear_attention", "reduce", "scalar", "param", "adaptive_maxpool"}
    assert set(REGISTRY) <= covered, f"untested ops: {sorted(set(REGISTRY) - covered)}"


def test_totals_are_sums_of_rows(encoder_spec):
    a = run(encoder_spec, """
        - {op: conv, out: 64, kernel: 3, bias: false}
        - {op: bn}
        - {op: deconv, out: 16, kernel: 4, stride: 2, groups: 4, bias: false}
        """)
    assert a.audit.macs == 17_694_720 + 24 * 40 * 64 * (16 // 4) * 16
    assert a.audit.params == sum(r.params for r in a.audit.layers) == 18_432 + 128 + 64 * 4 * 16
    assert a.audit.input == (1, 32, 24, 40)
    assert a.audit.output_shape == (1, 16, 48, 80)


def test_groups_must_divide_channels(encoder_spec):
    """The one cross-field rule the MAC formula depends on: Cin/g must be an integer."""
    with pytest.raises(SpecError, match="groups=3 does not divide in_channels=32"):
        run(encoder_spec, "- {op: conv, out: 48, kernel: 3, groups: 3}")


# --------------------------------------------------------------------------- activation, broadcast, split
# 32x24x40 input, numel 30,720. TF FLOPs per element are the registered ops of the TensorFlow
# graph computing the same function (ops/activation.py's table): Mul/Add/RealDiv/Pow 1, Softmax 5,
# Sigmoid/Tanh/LeakyRelu/Relu6/Erf 0.

NUMEL = 32 * 24 * 40


@pytest.mark.parametrize("layer,tf_per_element", [
    ("{op: sigmoid}", 0),
    ("{op: tanh}", 0),
    ("{op: leaky_relu}", 0),
    ("{op: leaky_relu, slope: -0.5, inplace: true}", 0),
    ("{op: silu}", 1),           # x * Sigmoid(x)
    ("{op: hardsigmoid}", 2),    # ReLU6(x + 3) * (1/6)
    ("{op: hardswish, inplace: true}", 3),  # x * hardsigmoid(x)
    ("{op: gelu}", 4),           # 0.5 * x * (1 + erf(x / sqrt 2))
    ("{op: gelu, approximate: tanh}", 7),
    ("{op: softmax}", 5),        # TF's Softmax
])
def test_activations_and_softmax(encoder_spec, layer, tf_per_element):
    r = row(run(encoder_spec, f"- {layer}"))
    assert r.output_shape == (32, 24, 40)
    assert (r.params, r.macs, r.flops) == (0, 0, 0)
    assert r.tf_flops == tf_per_element * NUMEL


def test_activation_defaults_follow_torch(encoder_spec):
    a = run(encoder_spec, """
        - {name: lr, op: leaky_relu}
        - {name: ge, op: gelu}
        - {name: hs, op: hardswish}
        """)
    assert attrs(a, "lr")["slope"] == 0.01  # torch.nn.LeakyReLU's negative_slope
    assert attrs(a, "ge")["approximate"] == "none"
    assert attrs(a, "hs")["inplace"] is False


def test_gelu_approximate_is_checked(encoder_spec):
    with pytest.raises(SpecError, match="none, tanh"):
        run(encoder_spec, "- {op: gelu, approximate: tan}")


# A gate: 32x1x1 from gap + 1x1 conv; a spatial map: 1x24x40 from a 1-channel conv.
GATES = """
    - {name: x, op: conv, out: 32, kernel: 1}
    - {name: pooled, op: gap, input: x}
    - {name: gate, op: conv, out: 32, kernel: 1}
    - {name: spatial, op: conv, out: 1, kernel: 1, input: x}
    - {name: lone, op: conv, out: 1, kernel: 1, input: pooled}
"""


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("inputs,shape,tf", [
    ("[x, gate]", (32, 24, 40), NUMEL),           # C x 1 x 1 onto C x H x W
    ("[gate, x]", (32, 24, 40), NUMEL),           # either order
    ("[spatial, x]", (32, 24, 40), NUMEL),        # 1 x H x W onto C x H x W
    ("[gate, spatial]", (32, 24, 40), NUMEL),     # both broadcast
    ("[lone, x]", (32, 24, 40), NUMEL),           # 1 x 1 x 1
    ("[gate, lone]", (32, 1, 1), 32),             # two gates stay a gate
    ("[gate, lone, x]", (32, 24, 40), 32 + NUMEL),  # TF: a 32-element op, then a full one
    ("[x, x, gate]", (32, 24, 40), 2 * NUMEL),
])
def test_add_and_mul_broadcast_like_torch(encoder_spec, op, inputs, shape, tf):
    a = run(encoder_spec, GATES + f"    - {{name: out, op: {op}, inputs: {inputs}}}")
    r = row(a, "out")
    assert r.output_shape == shape
    assert (r.params, r.macs) == (0, 0)
    assert r.tf_flops == tf
    # The output follows the full-size input's stride, not the gate's (24 * 1 for gap at 24 rows).
    expected_stride = 24 if shape == (32, 1, 1) else 1
    assert a.resolved.types["encoder.out"].stride == expected_stride


def test_broadcast_error_names_what_would_broadcast(encoder_spec):
    """16 channels onto 32: crop cannot help, so the hint lists the shapes that broadcast."""
    with pytest.raises(SpecError) as err:
        run(encoder_spec, GATES + """
    - {name: g16, op: conv, out: 16, kernel: 1, input: pooled}
    - {name: out, op: mul, inputs: [x, g16]}
""")
    (diag,) = err.value.errors
    assert "mul cannot broadcast 'x' (32x24x40) with 'g16' (16x1x1): channels 32 vs 16" in diag.message
    assert "32x1x1" in diag.hint and "1x24x40" in diag.hint
    assert "crop" not in diag.message + diag.hint


def test_add_of_two_full_maps_of_different_strides_suggests_upsampling_the_coarser(encoder_spec):
    with pytest.raises(SpecError) as err:
        run(encoder_spec, """
            - {name: a, op: conv, out: 8, kernel: 3}
            - {name: b, op: conv, out: 8, kernel: 3, stride: 2}
            - {name: sum, op: add, inputs: [a, b]}
            """)
    (diag,) = err.value.errors
    assert ("add needs inputs of equal height and width, but 'a' (stride 1) is 24x40 and 'b' (stride 2) "
            "is 12x20") in diag.message
    assert diag.hint.startswith("upsample 'b' by 2 to the stride of 'a' first")


def test_add_of_a_partial_map_that_does_not_broadcast_has_no_crop_hint(encoder_spec):
    """12x1 against 24x40: the 1 column broadcasts, the 12 rows do not; crop cannot enlarge."""
    with pytest.raises(SpecError) as err:
        run(encoder_spec, """
            - {name: a, op: conv, out: 8, kernel: 1}
            - {name: b, op: conv, out: 8, kernel: [2, 40], stride: 2, padding: 0}
            - {name: sum, op: add, inputs: [a, b]}
            """)
    (diag,) = err.value.errors
    assert "add cannot broadcast 'a' (8x24x40) with 'b' (8x12x1): height 24 vs 12" in diag.message
    assert "crop" not in diag.message + diag.hint


def test_add_channel_mismatch_message_is_unchanged(encoder_spec):
    with pytest.raises(SpecError, match="add needs inputs with equal channels, got 8 and 16"):
        run(encoder_spec, """
            - {name: a, op: conv, out: 8, kernel: 1}
            - {name: b, op: conv, out: 16, kernel: 1, input: input}
            - {name: sum, op: add, inputs: [a, b]}
            """)


@pytest.mark.parametrize("a,b,expected", [
    ((32, 24, 40), (32, 1, 1), (32, 24, 40)),
    ((1, 24, 40), (32, 24, 40), (32, 24, 40)),
    ((32, 1, 40), (1, 24, 1), (32, 24, 40)),
    ((1, 1, 1), (5, 6, 7), (5, 6, 7)),
    ((32, 24, 40), (16, 24, 40), None),
    ((32, 24, 40), (32, 12, 1), None),
    ((2, 1, 1), (3, 1, 1), None),
])
def test_broadcast_dims_rule(a, b, expected):
    from rtseg_compiler.ops.merge import broadcast_dims
    assert broadcast_dims([a, b]) == expected
    assert broadcast_dims([b, a]) == expected


@pytest.mark.parametrize("size,shape,tf", [
    # 24 rows into 6 bins of 4; 40 columns into 6 overlapping bins [0,7) [6,14) [13,20) [20,27)
    # [26,34) [33,40): 7+8+7+7+8+7 = 44 columns read (torch's floor/ceil bin edges).
    ("6", (32, 6, 6), 32 * 24 * 44),
    ("[2, 4]", (32, 2, 4), NUMEL),                # divides: every element read once, like gap
    ("1", (32, 1, 1), NUMEL),
    # More bins than rows: every 4 rows go to 5 bins of 1, 2, 2, 2, 1 rows, so 6 x 8 = 48 rows read.
    ("[30, 40]", (32, 30, 40), 32 * 48 * 40),
])
def test_adaptive_avgpool(encoder_spec, size, shape, tf):
    a = run(encoder_spec, f"- {{name: p, op: adaptive_avgpool, size: {size}}}")
    r = row(a, "p")
    assert r.output_shape == shape
    assert (r.params, r.macs) == (0, 0)
    assert r.tf_flops == tf
    assert a.resolved.types["encoder.p"].stride == Fraction(24, shape[1])


def test_adaptive_bins_match_atens_start_and_end_index():
    from rtseg_compiler.ops.pool import adaptive_bins
    assert adaptive_bins(40, 6) == [(0, 7), (6, 14), (13, 20), (20, 27), (26, 34), (33, 40)]
    assert adaptive_bins(2, 3) == [(0, 1), (0, 2), (1, 2)]
    assert adaptive_bins(24, 1) == [(0, 24)]


def test_adaptive_avgpool_needs_a_size(encoder_spec):
    with pytest.raises(SpecError, match="size"):
        run(encoder_spec, "- {op: adaptive_avgpool}")


def test_split_takes_a_channel_range(encoder_spec):
    a = run(encoder_spec, """
        - {name: keep, op: split, stop: "in_channels // 2"}
        - {name: rest, op: split, start: 16, input: input}
        - {name: mid, op: split, start: 3, stop: 5, input: input}
        - {name: all, op: concat, inputs: [keep, rest, mid]}
        """)
    assert row(a, "keep").output_shape == (16, 24, 40)
    assert attrs(a, "rest")["stop"] == 32
    assert row(a, "rest").output_shape == (16, 24, 40)
    assert row(a, "mid").output_shape == (2, 24, 40)
    assert row(a, "all").output_shape == (34, 24, 40)
    assert all((r.params, r.macs, r.tf_flops) == (0, 0, 0) for r in a.audit.layers)


@pytest.mark.parametrize("layer,message,col", [
    ("{op: split, start: 4, stop: 33}", "split stop=33 is beyond in_channels=32", "stop"),
    ("{op: split, start: 32}", "split start=32 must be smaller than stop=32", "start"),
    ("{op: split, start: 5, stop: 5}", "split start=5 must be smaller than stop=5", "start"),
])
def test_split_bounds_are_checked_at_the_field(encoder_spec, layer, message, col):
    path = encoder_spec(f"- {layer}")
    with pytest.raises(SpecError) as err:
        analyze(path)
    (diag,) = err.value.errors
    assert message in diag.message
    line = path.read_text().splitlines()[diag.loc.line - 1]
    assert line[diag.loc.col - 1:].startswith(layer[layer.index(col) + len(col) + 2:][:2])


# --------------------------------------------------------------------------- transformer-era ops
# Input 32x24x40 (NUMEL = 30,720). The torch side (tests/torch/test_transformer_ops.py) checks
# the same rules against FlopCounterMode on the meta device and against torch's values.

def test_layernorm_counts_weight_and_bias(encoder_spec):
    r = row(run(encoder_spec, "- {op: layernorm}"))
    assert (r.output_shape, r.params, r.macs, r.tf_flops) == ((32, 24, 40), 64, 0, 2 * NUMEL)
    r = row(run(encoder_spec, "- {op: layernorm, affine: false}"))
    assert (r.params, r.tf_flops) == (0, 0)


ATTENTION = """
- {name: q, op: conv, out: 16, kernel: 1, bias: false}
- {name: kv, op: conv, out: 16, kernel: 4, stride: 4, padding: 0, bias: false, input: input}
- {name: v, op: conv, out: 48, kernel: 1, bias: false}
- {name: att, op: OP, inputs: [q, kv, v], heads: 4 EXTRA}
"""


def test_attention_on_a_coarser_key_map(encoder_spec):
    a = run(encoder_spec, ATTENTION.replace("OP", "attention").replace("EXTRA", ""))
    r = row(a, "att")
    nq, nk = 24 * 40, 6 * 10
    assert r.output_shape == (48, 24, 40)  # v's channels on q's grid
    assert r.macs == nq * nk * (16 + 48)
    assert r.tf_flops == 2 * r.macs + 6 * 4 * nq * nk  # scale Mul + Softmax's 5 per score
    assert attrs(a, "att")["scale"] == pytest.approx(4 ** -0.5)  # (16 / 4 heads) ** -0.5
    assert a.resolved.types["encoder.att"].stride == 1


def test_attention_scale_one_has_no_scale_flops(encoder_spec):
    r = row(run(encoder_spec, ATTENTION.replace("OP", "attention").replace("EXTRA", ", scale: 1")), "att")
    assert r.tf_flops == 2 * r.macs + 5 * 4 * 24 * 40 * 6 * 10


def test_linear_attention_is_linear_in_pixels(encoder_spec):
    r = row(run(encoder_spec, ATTENTION.replace("OP", "linear_attention").replace("EXTRA", "")), "att")
    nq, nk = 24 * 40, 6 * 10
    assert r.macs == 4 * (12 + 1) * 4 * (nk + nq)  # heads x (dv + 1) x dk x (Nk + Nq)
    assert r.tf_flops == 2 * r.macs + 4 * nq + 48 * nq


def test_packed_linear_attention_is_counted_like_three_maps(encoder_spec):
    """One map holding each head's q, k and v (EfficientViT's qkv) costs what the three maps do."""
    packed = run(encoder_spec, "- {name: qkv, op: conv, out: 48, kernel: 1, bias: false}\n"
                               "- {name: att, op: linear_attention, inputs: [qkv], heads: 2}")
    r = row(packed, "att")
    n = 24 * 40
    assert r.output_shape == (16, 24, 40)  # a third of the channels: each head's v
    assert r.macs == 2 * (8 + 1) * 8 * (n + n)  # heads x (dv + 1) x dk x (Nk + Nq), d = 48 / 2 / 3
    assert r.tf_flops == 2 * r.macs + 2 * n + 16 * n
    three = run(encoder_spec, "- {name: q, op: conv, out: 16, kernel: 1}\n"
                              "- {name: att, op: linear_attention, inputs: [q, q, q], heads: 2}")
    assert row(three, "att").macs == r.macs


@pytest.mark.parametrize("layers,message", [
    ("- {name: k, op: conv, out: 8, kernel: 1}\n- {op: attention, inputs: [input, k, k]}",
     "q and k with equal channels"),
    ("- {name: k, op: conv, out: 32, kernel: 2, stride: 2, padding: 0}\n"
     "- {op: attention, inputs: [input, k, input]}", "k and v on the same grid"),
    ("- {op: attention, inputs: [input, input, input], heads: 5}", "heads=5 does not divide"),
    ("- {op: linear_attention, inputs: [input, input, input]}", "missing required field 'heads'"),
    ("- {op: attention, inputs: [input, input]}", "takes 3 inputs"),
    ("- {op: linear_attention, inputs: [input, input], heads: 1}", r"three maps \[q, k, v\] or one packed"),
    ("- {op: linear_attention, inputs: [input], heads: 4}", "needs 3 x heads = 12 to divide its 32 channels"),
])
def test_attention_input_errors(encoder_spec, layers, message):
    with pytest.raises(SpecError, match=message):
        run(encoder_spec, layers)


# Strides (height, width): a reduced axis is one bin as long as the map (24 rows, 40 columns
# at stride 1); over both axes the bin keeps one stride, the height's, as gap's does.
@pytest.mark.parametrize("over,shape,strides", [
    ("channel", (1, 24, 40), (1, 1)), ("height", (32, 1, 40), (24, 1)), ("width", (32, 24, 1), (1, 40)),
    ("spatial", (32, 1, 1), (24, 24))])
@pytest.mark.parametrize("mode", ["mean", "max", "sum"])
def test_reduce_keeps_the_axis(encoder_spec, over, shape, strides, mode):
    a = run(encoder_spec, f"- {{name: r, op: reduce, mode: {mode}, over: {over}}}")
    r = row(a, "r")
    out = shape[0] * shape[1] * shape[2]
    assert r.output_shape == shape and (r.params, r.macs) == (0, 0)
    # TF's reduction rule: Mean one per input element, Sum input minus output, Max unregistered.
    assert r.tf_flops == {"mean": NUMEL, "sum": NUMEL - out, "max": 0}[mode]
    assert a.resolved.types["encoder.r"].strides == strides


@pytest.mark.parametrize("layer,tf", [("{op: scalar, mul: -1, add: 1}", 2 * NUMEL),
                                      ("{op: scalar, mul: 0.5}", NUMEL), ("{op: scalar, add: 3}", NUMEL),
                                      ("{op: scalar}", 0)])
def test_scalar(encoder_spec, layer, tf):
    r = row(run(encoder_spec, f"- {layer}"))
    assert (r.output_shape, r.params, r.macs, r.tf_flops) == ((32, 24, 40), 0, 0, tf)


def test_param_has_its_declared_shape(encoder_spec):
    a = run(encoder_spec, "- {name: pos, op: param, channels: 32, height: 24, width: 40}\n"
                          "- {name: scale, op: param, channels: 32, input: input}\n"
                          "- {name: out, op: add, inputs: [input, pos, scale]}")
    assert row(a, "pos").output_shape == (32, 24, 40) and row(a, "pos").params == NUMEL
    assert row(a, "scale").output_shape == (32, 1, 1) and row(a, "scale").params == 32
    assert a.resolved.types["encoder.pos"].stride == 1
    assert a.resolved.types["encoder.scale"].stride == 24
    assert row(a, "out").output_shape == (32, 24, 40)


def test_softmax_over_space(encoder_spec):
    r = row(run(encoder_spec, "- {op: softmax, over: spatial}"))
    assert (r.output_shape, r.macs, r.tf_flops) == ((32, 24, 40), 0, 5 * NUMEL)


def test_adaptive_maxpool_shares_the_bins_and_costs_nothing(encoder_spec):
    a = run(encoder_spec, "- {name: p, op: adaptive_maxpool, size: [6, 8]}")
    r = row(a, "p")
    assert (r.output_shape, r.params, r.macs, r.tf_flops) == ((32, 6, 8), 0, 0, 0)
    assert a.resolved.types["encoder.p"].stride == 4


def test_sizes_from_expressions_of_the_input_size(encoder_spec):
    a = run(encoder_spec, '- {name: p, op: adaptive_avgpool, '
                          'size: ["ceil(in_height / 5)", "in_width // 8"]}\n'
                          '- {name: up, op: upsample, size: ["in_height * 3", 7], mode: bicubic}')
    assert row(a, "p").output_shape == (32, 5, 5)
    assert row(a, "up").output_shape == (32, 15, 7)
    assert a.resolved.types["encoder.up"].stride == Fraction(24, 5) * Fraction(5, 15)


def test_input_size_names_are_for_layer_fields_only(encoder_spec):
    with pytest.raises(SpecError, match="unknown name 'in_height'"):
        run(encoder_spec, "- {op: conv, out: n, kernel: 1}", extra="params: {n: in_height}\n")


@pytest.mark.parametrize("layer,message", [
    ("{op: upsample, size: 4, scale: 2}", "one of 'scale', 'size'"),
    ("{op: upsample}", "needs a 'scale', a 'size'"),
    ("{op: upsample, scale: 2, mode: nearest, align_corners: true}", "bilinear and bicubic"),
])
def test_upsample_size_sources_are_exclusive(encoder_spec, layer, message):
    with pytest.raises(SpecError, match=message):
        run(encoder_spec, f"- {layer}")
