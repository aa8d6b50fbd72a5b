"""Gating and smooth activations, and softmax: shape-preserving, parameter-free.

These are what squeeze-excitation, attention refinement and LR-ASPP gates
(MobileNetV3, Howard et al. 2019, arXiv:1905.02244; BiSeNet, Yu et al. 2018,
arXiv:1808.00897) and EfficientNet-style blocks need. Each builds the
``torch.nn`` module of the same name, with torch's defaults.

Costs. None multiplies-accumulates, and torch's FlopCounterMode counts none of
them (its registry has only matrix products and convolutions), so MACs are 0.
The ``tf`` column counts what TensorFlow's profiler
(``tensorflow/python/profiler/internal/flops_registry.py``) registers for the
TensorFlow graph that computes the same function, per element of the map:

=============  ===========================================================  =====
op             TensorFlow graph (registered ops in bold)                    FLOPs
=============  ===========================================================  =====
sigmoid        Sigmoid                                                       0
tanh           Tanh                                                          0
leaky_relu     LeakyRelu (fused op since TF 1.13)                            0
silu           ``tf.nn.silu``: x · Sigmoid(x): **Mul**                       1
hardsigmoid    Keras MobileNetV3: ReLU6(x **+** 3) **·** 1/6                 2
hardswish      x **·** hardsigmoid(x)                                        3
gelu (none)    ``tf.nn.gelu``: 0.5 **·** x **·** (1 **+** erf(x **/** √2))   4
gelu (tanh)    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): 3 Mul, Pow, 2 Add  7
softmax        Softmax (registered: 5 per element, over any axis)            5
=============  ===========================================================  =====

Sigmoid, Tanh, LeakyRelu, Relu6 and Erf are not in the profiler's registry, so
they count 0 like ReLU does; Add/AddV2, Mul, RealDiv and Pow count 1 per
output element.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import described
from .base import (BOOL, CHOICE, NUMBER, AtRate, Cost, Field, FunctionCall, OpDef, not_dilatable, register,
                   unaffected)


def _same(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    return ins[0]


def _tf_per_element(flops: int | Mapping[str, int], field: str | None = None):
    """A count hook: ``flops`` TF-profiler FLOPs per element (per value of ``field``)."""
    def count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
        per = flops[attrs[field]] if isinstance(flops, Mapping) else flops
        return Cost(tf_flops=per * out.numel)
    return count


def _module(name: str, *arg_fields: str, **renamed: str):
    """A build hook making ``torch.nn.<name>`` from the given fields (``renamed``: torch kwarg -> field)."""
    def build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
        from torch import nn
        kwargs = {f: attrs[f] for f in arg_fields}
        kwargs.update({kw: attrs[f] for kw, f in renamed.items()})
        return getattr(nn, name)(**kwargs)
    return build


_INPLACE = {"inplace": Field(BOOL, False, doc="overwrite the input (torch's inplace)")}

#: GELU's TF FLOPs per element for each ``approximate`` mode (see the module docstring).
_GELU_TF = {"none": 4, "tanh": 7}

for _name, _summary, _torch, _fields, _tf in [
    ("sigmoid", "logistic sigmoid 1/(1+exp(-x)), for gates", "Sigmoid", {}, 0),
    ("tanh", "hyperbolic tangent", "Tanh", {}, 0),
    ("hardsigmoid", "ReLU6(x + 3)/6 (MobileNetV3 gates)", "Hardsigmoid", _INPLACE, 2),
    ("hardswish", "x * ReLU6(x + 3)/6 (MobileNetV3)", "Hardswish", _INPLACE, 3),
    ("silu", "x * sigmoid(x), a.k.a. swish (EfficientNet)", "SiLU", _INPLACE, 1),
]:
    register(OpDef(name=_name, summary=_summary, fields=dict(_fields), infer=_same,
                   count=_tf_per_element(_tf), build=_module(_torch, *_fields), dilate=unaffected))

register(OpDef(
    name="leaky_relu", summary="max(x, 0) + slope * min(x, 0)",
    fields={"slope": Field(NUMBER, 0.01, doc="slope for x < 0 (torch's negative_slope)"), **_INPLACE},
    infer=_same, count=_tf_per_element(0), dilate=unaffected,
    build=_module("LeakyReLU", "inplace", negative_slope="slope"),
    # torch's in-place leaky_relu_ has no backward for a negative slope (derivatives.yaml:
    # the input cannot be recovered from the output), so the memory pass leaves those alone.
    inplace_safe=lambda attrs: attrs["slope"] >= 0,
    notes="torch's `LeakyReLU`; in place only for a slope ≥ 0",
))

register(OpDef(
    name="gelu", summary="Gaussian error linear unit x * Phi(x); approximate: tanh for the tanh form",
    fields={"approximate": Field(CHOICE, "none", choices=("none", "tanh"),
                                 doc="torch's approximate: none (erf) or tanh")},
    infer=_same, count=_tf_per_element(_GELU_TF, "approximate"), dilate=unaffected,
    build=_module("GELU", "approximate"),
    notes="torch's `GELU`",
))


def softmax_spatial(x: Any) -> Any:
    """Softmax over the H*W pixels of each channel (attention pooling, GCNet's context weights)."""
    return x.flatten(2).softmax(-1).view_as(x)


def _softmax_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    if attrs["over"] == "spatial":
        return FunctionCall(softmax_spatial)
    from torch import nn
    return nn.Softmax(dim=1)


@described("—", "over `spatial`: error (the weights would spread over more pixels); over channels: "
           "unchanged")
def _softmax_dilate(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Over channels: pointwise. Over space: the weights of a dilated map sum to 1 over more
    pixels than in the strided network, which no rewrite makes exact."""
    return attrs if attrs["over"] == "channel" else not_dilatable(attrs, at)


register(OpDef(
    name="softmax", summary="softmax over channels at every pixel, or over the pixels of each channel",
    fields={"over": Field(CHOICE, "channel", choices=("channel", "spatial"),
                          doc="channel: at every pixel; spatial: over H*W, per channel")},
    infer=_same, count=_tf_per_element(5), build=_softmax_build, dilate=_softmax_dilate,
))
