"""Attention between feature maps: softmax (dot-product) attention and ReLU linear attention.

Both take three maps, ``inputs: [q, k, v]``, each C x H x W, and treat every pixel as a
token. Channels are split into ``heads`` groups of consecutive channels (head h owns
channels ``h*C/heads ... (h+1)*C/heads - 1``, the order of ``x.view(B, N, heads, C/heads)``
in transformers' and timm's attention), so a 1x1 conv in front of an ``attention`` layer
is the query/key/value projection of a ViT block and its weights are the ``nn.Linear``
weights reshaped to C x C x 1 x 1.

* ``attention``: softmax(q·kᵀ·scale)·v per head, built on
  ``F.scaled_dot_product_attention``. ``k`` and ``v`` share a grid that may be coarser than
  ``q``'s (PVT and SegFormer's spatial reduction, Wang et al. 2021, arXiv:2102.12122: keys
  and values come from a strided conv of the queries' map), and ``v`` may be wider than
  ``q``/``k`` (TopFormer's and SeaFormer's value expansion). The output has ``v``'s
  channels on ``q``'s grid. ``scale`` defaults to ``(C_qk/heads)^-1/2`` (Vaswani et al.
  2017); TopFormer's attention uses 1.

  MACs = Hq·Wq·Hk·Wk·(C_qk + C_v): the two batched products, q·kᵀ (per head
  Nq·Nk·C_qk/heads) and attn·v (per head Nq·Nk·C_v/heads), summed over heads. This is
  what torch's FlopCounterMode reports (as 2·MACs) for ``torch.matmul`` and for SDPA on the
  meta device. **On CPU, FlopCounterMode counts 0 for SDPA**: the CPU kernel
  (``_scaled_dot_product_flash_attention_for_cpu``) has no registered formula in
  torch 2.13 (docs/flops.md). ``tf``: the same products as TensorFlow ``MatMul``
  (2·MACs), the scale's ``Mul`` on each of the heads·Nq·Nk scores when ``scale != 1``, and
  ``Softmax``'s 5 per score (flops_registry.py).

* ``linear_attention``: EfficientViT's ReLU linear attention (Cai et al. 2023,
  arXiv:2205.14756, ``LiteMLA.relu_linear_att`` in mit-han-lab/efficientvit): per head,
  q and k go through ReLU, v gets an extra row of ones, ``vk = v·kᵀ`` ((C_v/heads + 1) x
  C_qk/heads), ``out = vk·q``, and the result is its first C_v/heads rows divided by the
  last one plus ``eps`` (1e-15 in EfficientViT). Cost linear in the number of pixels:
  MACs = heads·(C_v/heads + 1)·(C_qk/heads)·(Nk + Nq). ``tf``: 2·MACs, the eps ``Add`` on
  heads·Nq values and the ``RealDiv`` on C_v·Nq (ReLU and Pad are unregistered: 0).
  EfficientViT computes q, k and v with one conv whose output interleaves them head by head
  (channels ``[q_0, k_0, v_0, q_1, k_1, v_1, ...]``); here they are three maps with heads in
  consecutive channels, so its ``qkv`` weight is split per head when it is loaded.

In an encoder rewritten to a smaller output stride both run unchanged
(:func:`~rtseg_compiler.ops.base.unaffected`): every pixel of the denser map is a token. Like
``gap``, a global op, they are then not exact on the subsampled grid (they attend over r² more
tokens); in practice the strided patchify and reduction convs of these networks (kernel =
stride, no padding) already stop the rewrite with an error before it reaches them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..ir import TensorType
from .base import INT, NUMBER, REQUIRED, Cost, Field, FunctionCall, OpDef, OpError, register, unaffected
from .shape_rules import sampled


def _check_heads(attrs: Mapping[str, Any], ins: Sequence[TensorType], op: str) -> None:
    q, k, v = ins
    heads = attrs["heads"]
    if q.channels != k.channels:
        raise OpError(f"{op} needs q and k with equal channels, got {q.channels} and {k.channels}",
                      field="inputs", hint="project both with 1x1 convs of the same width")
    if k.spatial != v.spatial:
        raise OpError(f"{op} needs k and v on the same grid, got {k.height}x{k.width} and "
                      f"{v.height}x{v.width}", field="inputs", spatial=True,
                      dims=("h" if k.height != v.height else "") + ("w" if k.width != v.width else ""),
                      hint="compute k and v from the same map")
    for what, t in (("q/k", q), ("v", v)):
        if t.channels % heads:
            raise OpError(f"heads={heads} does not divide the {t.channels} channels of {what}",
                          field="heads", hint=f"use a number of heads dividing {t.channels}")


def _complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    _check_heads(attrs, ins, "attention")
    if attrs["scale"] is None:
        attrs["scale"] = (ins[0].channels // attrs["heads"]) ** -0.5
    return attrs


def _infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    q, _, v = ins
    return sampled(q, v.channels, q.height, q.width)


def _count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    q, k, v = ins
    scores = q.height * q.width * k.height * k.width
    macs = scores * (q.channels + v.channels)
    per_score = 5 + (1 if attrs["scale"] != 1 else 0)
    return Cost(macs=macs, tf_flops=2 * macs + per_score * attrs["heads"] * scores)


def attend(q: Any, k: Any, v: Any, *, heads: int, scale: float) -> Any:
    """Multi-head softmax attention of the pixels of ``q`` over those of ``k``/``v`` (N x C x H x W maps)."""
    import torch.nn.functional as F
    n, _, h, w = q.shape

    def tokens(t: Any) -> Any:  # (N, C, H, W) -> (N, heads, H*W, C/heads)
        return t.reshape(t.shape[0], heads, t.shape[1] // heads, -1).transpose(-1, -2)

    out = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v), scale=scale)
    return out.transpose(-1, -2).reshape(n, v.shape[1], h, w)


def _build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    return FunctionCall(attend, {"heads": attrs["heads"], "scale": float(attrs["scale"])})


register(OpDef(
    name="attention",
    summary="multi-head softmax attention; inputs [q, k, v] (k, v may be coarser; v may be wider)",
    fields={
        "heads": Field(INT, 1, minimum=1, doc="attention heads; each takes C/heads consecutive channels"),
        "scale": Field(NUMBER, None, doc="score scale; default (C_qk/heads)^-1/2"),
    },
    arity=(3, 3), complete=_complete, infer=_infer, count=_count, build=_build,
    dilate=unaffected,
    # SDPA's backward reads its output (and the log-sum-exp): saves_output stays True.
))


# --------------------------------------------------------------------------- linear attention

def _linear_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    _check_heads(attrs, ins, "linear_attention")
    return attrs


def _linear_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    q, k, v = ins
    heads = attrs["heads"]
    dk, dv = q.channels // heads, v.channels // heads
    nq, nk = q.height * q.width, k.height * k.width
    macs = heads * (dv + 1) * dk * (nk + nq)
    return Cost(macs=macs, tf_flops=2 * macs + heads * nq + v.channels * nq)


def relu_linear_attend(q: Any, k: Any, v: Any, *, heads: int, eps: float) -> Any:
    """EfficientViT's ReLU linear attention of the pixels of ``q`` over those of ``k``/``v``."""
    import torch.nn.functional as F
    n, _, h, w = q.shape

    def split(t: Any) -> Any:  # (N, C, H, W) -> (N, heads, C/heads, H*W)
        return t.reshape(t.shape[0], heads, t.shape[1] // heads, -1)

    q, k = F.relu(split(q)), F.relu(split(k))
    v = F.pad(split(v), (0, 0, 0, 1), mode="constant", value=1.0)
    out = (v @ k.transpose(-1, -2)) @ q
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)
    return out.reshape(n, -1, h, w)


register(OpDef(
    name="linear_attention",
    summary="EfficientViT's multi-head ReLU linear attention; inputs [q, k, v]",
    fields={
        "heads": Field(INT, REQUIRED, minimum=1, doc="heads; each takes C/heads consecutive channels"),
        "eps": Field(NUMBER, 1e-15, minimum=0, doc="added to the normaliser (EfficientViT: 1e-15)"),
    },
    required=("heads",), arity=(3, 3), complete=_linear_complete, infer=_infer,
    count=_linear_count,
    build=lambda attrs, ins, out: FunctionCall(relu_linear_attend,
                                               {"heads": attrs["heads"], "eps": float(attrs["eps"])}),
    dilate=unaffected,
))
