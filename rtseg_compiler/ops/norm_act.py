"""Batch norm, layer norm, activations, dropout and identity: shape-preserving, MAC-free ops.

None of these multiply-accumulate, so they add no MACs; TensorFlow's profiler
also gives FusedBatchNorm and Relu zero FLOPs, which is the RTSeg convention.
Batch norm has 2·C parameters (weight and bias); its running statistics are
buffers, not parameters.

``layernorm`` normalises the C channels of every pixel on their own: what
``nn.LayerNorm(C)`` does to the (N, H·W, C) token sequence of a vision transformer
(SegFormer, PVT), written for N x C x H x W maps. It is built as
:class:`ChannelLayerNorm`, an ``nn.LayerNorm`` whose forward moves channels last and
back, so its state-dict keys (``weight``, ``bias``) and values are those of the
token-sequence layer. FlopCounterMode counts no layer norm (0 MACs). ``tf``: Keras'
``LayerNormalization`` over the last axis runs FusedBatchNormV3 (unregistered: 0) and,
with ``affine``, multiplies by gamma and adds beta: 2 per element.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import BOOL, NUMBER, Cost, Field, OpDef, register, unaffected


def _same(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    return ins[0]


def _bn_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost(params=2 * out.channels if attrs["affine"] else 0)


def _bn_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.BatchNorm2d(out.channels, eps=attrs["eps"], momentum=attrs["momentum"],
                          affine=attrs["affine"])


register(OpDef(
    name="bn",
    summary="batch normalization over channels",
    fields={
        "eps": Field(NUMBER, 1e-5, minimum=0),
        "momentum": Field(NUMBER, 0.1, minimum=0),
        "affine": Field(BOOL, True),
    },
    infer=_same, count=_bn_count, build=_bn_build, dilate=unaffected,
    saves_output=False,  # backward reads the input and the saved batch statistics
    folds_into_previous=True,
))


def _layernorm_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    if not attrs["affine"]:
        return Cost()
    return Cost(params=2 * out.channels, tf_flops=2 * out.numel)


def _layernorm_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from .modules import ChannelLayerNorm
    return ChannelLayerNorm(out.channels, eps=attrs["eps"], elementwise_affine=attrs["affine"])


register(OpDef(
    name="layernorm",
    summary="layer normalization over the channels of every pixel (a transformer's LayerNorm)",
    fields={
        "eps": Field(NUMBER, 1e-5, minimum=0),
        "affine": Field(BOOL, True, doc="learned per-channel weight and bias"),
    },
    infer=_same, count=_layernorm_count, build=_layernorm_build, dilate=unaffected,
    saves_output=False,  # backward reads the input and the saved mean and 1/std
))


def _relu_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.ReLU(inplace=attrs["inplace"])


register(OpDef(
    name="relu", summary="rectified linear unit",
    fields={"inplace": Field(BOOL, False, doc="overwrite the input; the compiler sets this "
                                                "where the graph proves it safe")},
    infer=_same, build=_relu_build, dilate=unaffected,
))


def _relu6_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.ReLU6(inplace=attrs["inplace"])


register(OpDef(
    name="relu6", summary="ReLU clipped at 6 (MobileNet)",
    fields={"inplace": Field(BOOL, False, doc="overwrite the input; the compiler sets this "
                                                "where the graph proves it safe")},
    infer=_same, build=_relu6_build, dilate=unaffected,
))


def _prelu_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost(params=out.channels if attrs["per_channel"] else 1)


def _prelu_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.PReLU(out.channels if attrs["per_channel"] else 1, init=attrs["init"])


register(OpDef(
    name="prelu", summary="parametric ReLU (ENet); one slope per channel unless per_channel: false",
    fields={"per_channel": Field(BOOL, True), "init": Field(NUMBER, 0.25)},
    infer=_same, count=_prelu_count, build=_prelu_build, dilate=unaffected, saves_output=False,
))


def _dropout_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.Dropout2d(attrs["p"]) if attrs["channelwise"] else nn.Dropout(attrs["p"])


def _dropout_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    from .base import OpError
    if not 0 <= attrs["p"] <= 1:
        raise OpError(f"dropout probability p={attrs['p']} is outside [0, 1]", field="p")
    return attrs


register(OpDef(
    name="dropout", summary="dropout (identity at inference)",
    fields={"p": Field(NUMBER, 0.5, minimum=0), "channelwise": Field(BOOL, False)},
    complete=_dropout_complete, infer=_same, build=_dropout_build, dilate=unaffected,
    # In eval mode torch returns the input itself; the training backward reads only the mask.
    views_inputs=(0,), output_is_view=True, saves_output=False, inference_identity=True,
))


def _identity_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    from torch import nn
    return nn.Identity()


register(OpDef(name="identity", summary="passes its input through", fields={},
               infer=_same, build=_identity_build, dilate=unaffected, views_inputs=(0,),
               output_is_view=True, saves_output=False))
