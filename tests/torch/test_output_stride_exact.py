"""The output-stride rewrite is exact: a dilated encoder, subsampled, is the strided encoder.

Dilation (Yu & Koltun 2016; DeepLab) keeps what every strided layer computes on
the pixels it kept: the dilated network's map at output stride ``os``, taken
every ``32/os`` pixels, equals the strided network's stride-32 map when the two
share weights. That holds for the ops whose declared rule is exact: conv (stride
1, dilation and padding times the rate) and "same"-padded pools (stride 1, and
dilated at rate > 1). It does not hold for VGG-16, whose 2x2/2 pools the
rewrite removes (the Dilation frontend's choice, measured below).

Batch norm runs in eval mode with randomised statistics, so that every layer
matters. The input sizes include one that is not a multiple of 32.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from rtseg_compiler import compile_model  # noqa: E402
from rtseg_compiler.ops.pool import dilated_pool  # noqa: E402

ENCODERS = Path(__file__).resolve().parents[2] / "specs" / "encoders"


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _relative_gap(encoder: str, output_stride: int, size: tuple[int, int]) -> float:
    torch.manual_seed(0)
    strided = compile_model(ENCODERS / f"{encoder}.yaml", size)
    dilated = compile_model(ENCODERS / f"{encoder}.yaml", size, output_stride=output_stride)
    _randomise_bn(strided.module)
    dilated.module.load_state_dict(strided.module.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        a, b = strided.module(x), dilated.module(x)
    step = 32 // output_stride
    sub = b[..., ::step, ::step]
    assert sub.shape == a.shape
    return ((sub - a).norm() / a.norm()).item()


@pytest.mark.parametrize("size", [(64, 64), (72, 52)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("encoder", ["mobilenet_v1", "resnet18", "shufflenet_v1"])
def test_dilated_encoder_equals_the_strided_one_on_the_subsampled_grid(encoder, output_stride, size):
    """Float rounding only: measured 0 to 2.6e-7 (ShuffleNet's 3x3/2 average pools are dilated
    at stage 4 at output stride 8; before they were only made stride 1, 3.3e-2 away)."""
    assert _relative_gap(encoder, output_stride, size) < 1e-6


def test_vgg_pool_removal_is_not_exact():
    """The Dilation frontend removes VGG's 2x2/2 max pools: not the strided network (1.6e-1)."""
    assert _relative_gap("vgg16", 8, (64, 64)) > 1e-2


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 1, 2)])
def test_dilated_pool_at_dilation_1_is_torchs_pool(kernel, stride, padding, count_include_pad):
    x = torch.randn(2, 3, 11, 14)
    args = dict(kernel=(kernel, kernel), stride=(stride, stride), padding=(padding, padding),
                dilation=(1, 1))
    torch.testing.assert_close(
        dilated_pool(x, mode="avg", count_include_pad=count_include_pad, **args),
        nn.AvgPool2d(kernel, stride, padding, count_include_pad=count_include_pad)(x))
    torch.testing.assert_close(dilated_pool(x, mode="max", **args), nn.MaxPool2d(kernel, stride, padding)(x))


@pytest.mark.parametrize("dilation,padding", [(2, 1), (2, 2), (3, 3)])
def test_dilated_pool_matches_dilated_references(dilation, padding):
    """Average with count_include_pad = a depthwise conv with weights 1/k², same dilation and
    padding; max = torch's dilated MaxPool2d where torch allows the padding (p <= k/2), else
    the max over explicitly -inf-padded taps."""
    x = torch.randn(1, 4, 13, 10)
    k = 3
    args = dict(kernel=(k, k), stride=(1, 1), padding=(padding, padding), dilation=(dilation, dilation))
    weight = torch.full((4, 1, k, k), 1 / (k * k))
    expected = nn.functional.conv2d(x, weight, padding=padding, dilation=dilation, groups=4)
    torch.testing.assert_close(dilated_pool(x, mode="avg", **args), expected)
    if padding <= k // 2:
        expected_max = nn.MaxPool2d(k, 1, padding, dilation=dilation)(x)
    else:
        padded = nn.functional.pad(x, (padding,) * 4, value=float("-inf"))
        expected_max = nn.MaxPool2d(k, 1, 0, dilation=dilation)(padded)
    torch.testing.assert_close(dilated_pool(x, mode="max", **args), expected_max)
