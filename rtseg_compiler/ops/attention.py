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
  MACs = heads·(C_v/heads + 1)·(C_qk/heads)·(Nk + Nq), the two matmuls FlopCounterMode sees.
  ``tf``: 2·MACs, the eps ``Add`` on heads·Nq values and the ``RealDiv`` on C_v·Nq (ReLU and
  Pad are unregistered: 0).

  It takes ``[q, k, v]``, or one **packed** map, ``inputs: [qkv]``, in EfficientViT's own
  layout: each head owns C/heads consecutive channels, the first third its q, the second its k,
  the last its v (``[q_0 k_0 v_0 q_1 k_1 v_1 ...]``, what ``qkv.reshape(N, heads, 3·d, H·W)``
  splits), and the output has C/3 channels. LiteMLA computes that map with one 1x1 conv
  (``qkv``) and its multi-scale copy with a depthwise 5x5 and a 1x1 conv of 3·heads groups
  (``aggreg``), then concatenates the two, doubling the heads; the packed form takes the
  concatenation as it is, so the authors' ``qkv`` and ``aggreg`` weights load unchanged.

  EfficientViT switches to the quadratic form ``v·(kᵀq / (Σ kᵀq + eps))`` on maps of at most
  d = C_qk/heads pixels (``relu_quadratic_att``). Both compute the same function (up to
  rounding; the test of specs/models/efficientvit_seg_b0.yaml checks it at such a size), so this
  op always uses the linear form and counts its cost; on those tiny maps the reference's
  FlopCounterMode count differs (heads·Nq·Nk·(d_k + d_v) there).

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

def _linear_split(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> tuple[int, int, int, int]:
    """(heads, d_k, d_v, N_k): per-head widths and the key count, for three maps or a packed one."""
    heads = attrs["heads"]
    if len(ins) == 1:
        d = ins[0].channels // heads // 3
        return heads, d, d, ins[0].height * ins[0].width
    q, k, v = ins
    return heads, q.channels // heads, v.channels // heads, k.height * k.width


def _linear_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    if len(ins) == 2:
        raise OpError("linear_attention takes three maps [q, k, v] or one packed map [qkv], got 2",
                      field="inputs", hint="give k and v separately, or one map with q, k, v per head")
    if len(ins) == 3:
        _check_heads(attrs, ins, "linear_attention")
        return attrs
    channels, heads = ins[0].channels, attrs["heads"]
    if channels % (3 * heads):
        raise OpError(f"a packed qkv map needs 3 x heads = {3 * heads} to divide its {channels} channels "
                      f"(each head owns its q, k and v)", field="heads",
                      hint=f"use a number of heads dividing {channels // 3}" if channels % 3 == 0
                      else "a packed map has 3 x heads x head-dim channels")
    return attrs


def _linear_infer(attrs: Mapping[str, Any], ins: Sequence[TensorType]) -> TensorType:
    if len(ins) == 1:
        x = ins[0]
        return TensorType(x.channels // 3, x.height, x.width, x.stride)
    return _infer(attrs, ins)


def _linear_count(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    heads, dk, dv, nk = _linear_split(attrs, ins)
    nq = out.height * out.width
    macs = heads * (dv + 1) * dk * (nk + nq)
    return Cost(macs=macs, tf_flops=2 * macs + heads * nq + out.channels * nq)


def relu_linear_attend(q: Any, k: Any, v: Any, *, heads: int, eps: float) -> Any:
    """EfficientViT's ReLU linear attention of the pixels of ``q`` over those of ``k``/``v``."""
    import torch.nn.functional as F
    n, _, h, w = q.shape

    def split(t: Any) -> Any:  # (N, C, H, W) -> (N, heads, C/heads, H*W)
        return t.reshape(t.shape[0], heads, t.shape[1] // heads, -1)

    q, k = F.relu(split(q)), F.relu(split(k))
    v = F.pad(split(v), (0, 0, 0, 1), mode="constant", value=1.0)  # its row of ones becomes the normaliser
    out = (v @ k.transpose(-1, -2)) @ q
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)
    return out.reshape(n, -1, h, w)


def relu_linear_attend_packed(qkv: Any, *, heads: int, eps: float) -> Any:
    """The same on one map whose heads each hold their q, k and v, as LiteMLA's ``qkv``.

    Self-contained like every function a layer calls: ``--save-code`` copies it into the
    generated file, which cannot import a shared private helper.
    """
    import torch.nn.functional as F
    n, c, h, w = qkv.shape
    d = c // heads // 3
    packed = qkv.reshape(n, heads, 3 * d, h * w)  # (N, heads, [q k v], pixels)
    q, k = F.relu(packed[:, :, :d]), F.relu(packed[:, :, d:2 * d])
    v = F.pad(packed[:, :, 2 * d:], (0, 0, 0, 1), mode="constant", value=1.0)
    out = (v @ k.transpose(-1, -2)) @ q
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)
    return out.reshape(n, -1, h, w)


def _linear_build(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Any:
    fn = relu_linear_attend_packed if len(ins) == 1 else relu_linear_attend
    return FunctionCall(fn, {"heads": attrs["heads"], "eps": float(attrs["eps"])})


register(OpDef(
    name="linear_attention",
    summary="EfficientViT's multi-head ReLU linear attention; inputs [q, k, v] or one packed [qkv]",
    fields={
        "heads": Field(INT, REQUIRED, minimum=1, doc="heads; each takes C/heads consecutive channels "
                       "(of a packed map: its q, k and v)"),
        "eps": Field(NUMBER, 1e-15, minimum=0, doc="added to the normaliser (EfficientViT: 1e-15)"),
    },
    required=("heads",), arity=(1, 3), complete=_linear_complete, infer=_linear_infer,
    count=_linear_count, build=_linear_build,
    dilate=unaffected,
))
