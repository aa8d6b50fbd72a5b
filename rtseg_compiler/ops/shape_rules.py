"""Shape arithmetic op families share: PyTorch's conv/pool output size, equal-size checks for
fusion ops, and pooling-window defaults. Everything is importable from :mod:`rtseg_compiler.ops.base` too.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

from ..ir import TensorType, stride_text, strides_text
from .kinds import OpError

__all__ = ["complete_window", "conv_out", "resized", "same_spatial", "sampled"]


def sampled(x: TensorType, channels: int, height: int, width: int,
            step_h: Fraction | int = 1, step_w: Fraction | int = 1) -> TensorType:
    """A map on ``x``'s grid taken every ``step_h``-th row and ``step_w``-th column.

    Each axis keeps its own stride: a conv with stride (2, 1) doubles the height's stride
    only, a deconv's steps are 1/s, and steps of 1 keep ``x``'s strides (a row map stays
    one). The stride arithmetic of every op that resamples or keeps its input's grid.
    """
    # Shape inference makes one of these per layer: an isotropic map stays one Fraction shared by
    # both axes, which keeps the comparisons of later passes at an identity check.
    sh = x.stride_h if step_h == 1 else x.stride_h * step_h
    if x.stride_w is x.stride_h and step_w == step_h:
        return TensorType(channels, height, width, sh)
    return TensorType(channels, height, width, stride_h=sh,
                      stride_w=x.stride_w if step_w == 1 else x.stride_w * step_w)


def resized(x: TensorType, channels: int, height: int, width: int) -> TensorType:
    """``x`` resized to a fixed ``height`` x ``width`` (adaptive pooling's bins, an upsample to a
    size, a param of its own size): the pitch of the new grid in input pixels.

    An isotropic map keeps one stride, scaled by the height's ratio, ``stride · H/h`` (gap's
    ``stride · H`` for one bin): a map of pooled bins has no width pitch of its own to scale.
    A row or column map, whose strides differ, scales each axis by its own ratio, so a
    C x H x 1 row map resized to H x W is on its height's grid along both axes again.
    """
    if x.stride_h == x.stride_w:
        return TensorType(channels, height, width, x.stride_h * Fraction(x.height, height))
    return sampled(x, channels, height, width, Fraction(x.height, height), Fraction(x.width, width))


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
             ceil_mode: bool = False) -> int:
    """PyTorch's output size for conv and pooling along one dimension.

    ``floor((size + 2p - d(k-1) - 1)/s) + 1``; with ``ceil_mode`` the division
    rounds up, but a window that would start inside the right padding is
    dropped (``torch.nn.MaxPool2d`` documentation, and ATen's
    ``pooling_output_shape``).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        # ATen rounds toward -inf, so a window wider than the input still yields one output.
        out = (span + stride - 1) // stride + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return max(out, 0)
    if span < 0:
        return 0
    return span // stride + 1


def same_spatial(op: str, ins: Sequence[TensorType], names: Sequence[str] | None = None) -> None:
    """Raise a spatial OpError when inputs to a fusion op differ in height or width."""
    first = ins[0]
    for i, t in enumerate(ins[1:], start=1):
        if t.spatial != first.spatial:
            # "input #k" is replaced by the layer's name when the error is reported.
            a = names[0] if names else "input #0"
            b = names[i] if names else f"input #{i}"
            dims = ("h" if t.height != first.height else "") + ("w" if t.width != first.width else "")
            if t.strides != first.strides and t.isotropic and first.isotropic:
                # Maps of different strides never line up, whatever the input size: one needs resampling.
                coarse, fine = (a, b) if first.stride > t.stride else (b, a)
                ratio = max(first.stride, t.stride) / min(first.stride, t.stride)
                raise OpError(
                    f"{op} needs inputs of equal height and width, but {a} (stride "
                    f"{stride_text(first.stride)}) is {first.height}x{first.width} and {b} (stride "
                    f"{stride_text(t.stride)}) is {t.height}x{t.width}",
                    field="inputs", spatial=False,
                    hint=f"upsample {coarse} by {stride_text(ratio)} to the stride of {fine} first: an "
                         f"upsample with scale {stride_text(ratio)} or a deconv with stride "
                         f"{stride_text(ratio)}, then a crop if the sizes still differ")
            if t.strides != first.strides:  # a row or column map among them
                raise OpError(
                    f"{op} needs inputs of equal height and width, but {a} (stride "
                    f"{strides_text(first)}) is {first.height}x{first.width} and {b} (stride "
                    f"{strides_text(t)}) is {t.height}x{t.width}", field="inputs", spatial=False,
                    hint="a row map (C x H x 1) or column map (C x 1 x W) joins a full map through a "
                         "broadcasting add or mul, or after an upsample to the full map's size")
            raise OpError(
                f"{op} needs inputs of equal height and width, but {a} is "
                f"{first.height}x{first.width} and {b} is {t.height}x{t.width}",
                field="inputs", spatial=True, dims=dims,
                hint="align them with a 'crop' layer, or use an input size that divides evenly")


def complete_window(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    """Pooling windows (max/avg pool, unpool): stride defaults to the kernel, and
    padding may be at most half the kernel, as ``torch.nn.MaxPool2d`` requires."""
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    for k, p in zip(attrs["kernel"], attrs["padding"]):
        if 2 * p > k:
            raise OpError(f"padding={p} is more than half the kernel size {k}", field="padding",
                          hint=f"use padding <= {k // 2}")
    return attrs
