"""EfficientViT-Seg-B0 for Cityscapes, written by hand as an independent reference for the spec files.

Cai, Li, Hu, Gan, Han: "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense
Prediction", ICCV 2023, arXiv:2205.14756. The layout follows the authors' code,
github.com/mit-han-lab/efficientvit (efficientvit/models/efficientvit/backbone.py,
``efficientvit_backbone_b0``; seg.py, ``efficientvit_seg_b0(dataset="cityscapes")``;
nn/ops.py for the building blocks). Module and parameter names are kept where they decide the
authors' checkpoint keys (``backbone.stages.2.op_list.1.context_module.main.qkv.conv.weight``), so a
state dict of theirs loads into this module; the code itself is written fresh and keeps only what
B0 uses.

The network (input 1024x2048, strides in brackets)::

    input_stem     ConvLayer 3->8, 3x3/2, BN, hardswish                               [2]
                   1 x residual DSConv 8->8 (dw 3x3 BN hardswish, 1x1 BN)
    stages.0       MBConv 8->16 /2, then 1 x residual MBConv 16->16 (expand 4)       [4]
    stages.1       MBConv 16->32 /2, then 1 x residual MBConv 32->32                 [8]
    stages.2       MBConv 32->64 /2 ("fewer norm": biases, no BN before the last 1x1),
                   2 x EfficientViT block (64 channels, heads of dim 16: 4 heads)    [16]
    stages.3       MBConv 64->128 /2 (fewer norm), 2 x EfficientViT block (8 heads)  [32]
    head           1x1 conv + BN of the stride-32, -16 and -8 maps to 32 channels; the first two
                   upsampled x4 and x2 (bicubic, align_corners=False); summed; one residual
                   MBConv 32->32 (expand 4, BN everywhere); 1x1 conv 32->128 + BN + hardswish;
                   1x1 conv 128->19 with a bias. Logits at stride 8.

MBConv: 1x1 expand (x4), 3x3 depthwise (the block's stride), 1x1 project; hardswish after the first
two, none after the projection. An EfficientViT block is ``x + LiteMLA(x)`` followed by
``x + MBConv(x)`` (its MBConv with biases and only the last BN).

LiteMLA (lightweight multi-scale linear attention), for C channels and head dim d: ``qkv`` is a
1x1 conv to 3C channels (no bias, no norm) whose channels are grouped head by head,
``[q_0 k_0 v_0 q_1 k_1 v_1 ...]`` with d channels each; ``aggreg.0`` is a depthwise 5x5 conv
followed by a 1x1 conv with 3C/d groups (one group per q, k or v of each head), both without
bias; the multi-scale tokens are ``cat([qkv, aggreg(qkv)])``, so there are 2C/d heads. Per head,
ReLU on q and k, v padded with a row of ones, ``out = (v·kᵀ)·q``, the first d rows divided by the
last plus eps = 1e-15. ``proj`` is a 1x1 conv 2C->C + BN. When a map has no more pixels than d
(H·W <= 16 here), the authors switch to the quadratic form ``v·normalise(kᵀ·q)``: the same
function up to rounding, at another cost; both are written here.

With 19 classes: 706,691 parameters; FlopCounterMode counts 2 x 4,391,436,288 FLOPs at 1024x2048
(convs and the attention's matmuls; batch norm, activations, upsampling and adds count 0).

Like the authors' code, the head upsamples by a fixed factor (``scale_factor``), so the three
projected maps only line up when ceil(H/8) and ceil(W/8) are multiples of 4 (every multiple of 32,
and also e.g. 250 -> 32 at stride 8); other sizes fail in the sum.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvLayer", "DSConv", "MBConv", "LiteMLA", "EfficientViTBlock", "ResidualBlock",
           "OpSequential", "EfficientViTBackbone", "SegHead", "EfficientViTSeg", "efficientvit_seg_b0"]


class ConvLayer(nn.Module):
    """Conv (padding k//2) with optional batch norm and hardswish, as keys ``conv``/``norm``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout) if norm else None
        self.act = nn.Hardswish() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class OpSequential(nn.Module):
    """A chain whose parameters sit under ``op_list.N`` (the authors' container)."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """``main(x) + x`` when ``residual``, else ``main(x)``; parameters under ``main``."""

    def __init__(self, main: nn.Module, residual: bool):
        super().__init__()
        self.main = main
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.residual else self.main(x)


class DSConv(nn.Module):
    """Depthwise 3x3 (BN, hardswish) then pointwise 1x1 (BN, no activation)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depth_conv = ConvLayer(cin, cin, 3, stride, groups=cin)
        self.point_conv = ConvLayer(cin, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    """Inverted bottleneck. ``fewer_norm``: the first two convs carry biases instead of BN."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4, fewer_norm: bool = False):
        super().__init__()
        mid = cin * expand
        self.inverted_conv = ConvLayer(cin, mid, 1, bias=fewer_norm, norm=not fewer_norm)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm)
        self.point_conv = ConvLayer(mid, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention over C channels, heads of ``dim`` channels, one 5x5 scale."""

    def __init__(self, channels: int, dim: int, eps: float = 1e-15):
        super().__init__()
        self.dim, self.eps = dim, eps
        heads = channels // dim
        total = 3 * heads * dim
        self.qkv = ConvLayer(channels, total, 1, norm=False, act=False)
        self.aggreg = nn.ModuleList([nn.Sequential(
            nn.Conv2d(total, total, 5, padding=2, groups=total, bias=False),
            nn.Conv2d(total, total, 1, groups=3 * heads, bias=False),
        )])
        self.proj = ConvLayer(2 * heads * dim, channels, 1, act=False)

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, _, h, w = qkv.shape
        packed = qkv.reshape(n, -1, 3 * self.dim, h * w)  # (N, heads, [q k v], pixels)
        d = self.dim
        return F.relu(packed[:, :, :d]), F.relu(packed[:, :, d:2 * d]), packed[:, :, 2 * d:]

    def linear_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        n, _, h, w = qkv.shape
        q, k, v = self._heads(qkv)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # the ones row turns the last output row into the normaliser
        out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return out.reshape(n, -1, h, w)

    def quadratic_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        n, _, h, w = qkv.shape
        q, k, v = self._heads(qkv)
        scores = torch.matmul(k.transpose(-1, -2), q)  # (N, heads, keys, queries)
        scores = scores / (scores.sum(dim=2, keepdim=True) + self.eps)
        return torch.matmul(v, scores).reshape(n, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        h, w = qkv.shape[-2:]
        attend = self.linear_attention if h * w > self.dim else self.quadratic_attention
        return self.proj(attend(qkv))


class EfficientViTBlock(nn.Module):
    """``x + LiteMLA(x)``, then ``x + MBConv(x)`` (biases on the first two convs, BN on the last)."""

    def __init__(self, channels: int, dim: int, expand: int = 4):
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim), residual=True)
        self.local_module = ResidualBlock(MBConv(channels, channels, 1, expand, fewer_norm=True), residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class EfficientViTBackbone(nn.Module):
    """The B-series backbone; returns the maps of every stride (``stage0`` ... ``stage4``)."""

    def __init__(self, widths: list[int], depths: list[int], dim: int, expand: int = 4):
        super().__init__()
        stem: list[nn.Module] = [ConvLayer(3, widths[0], 3, 2)]
        stem += [ResidualBlock(DSConv(widths[0], widths[0]), residual=True) for _ in range(depths[0])]
        self.input_stem = OpSequential(stem)
        stages, cin = [], widths[0]
        for width, depth in zip(widths[1:3], depths[1:3]):
            ops = [ResidualBlock(MBConv(cin if i == 0 else width, width, 2 if i == 0 else 1, expand),
                                 residual=i > 0) for i in range(depth)]
            stages.append(OpSequential(ops))
            cin = width
        for width, depth in zip(widths[3:], depths[3:]):
            ops = [ResidualBlock(MBConv(cin, width, 2, expand, fewer_norm=True), residual=False)]
            ops += [EfficientViTBlock(width, dim, expand) for _ in range(depth)]
            stages.append(OpSequential(ops))
            cin = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = {"stage0": self.input_stem(x)}
        for index, stage in enumerate(self.stages, 1):
            maps[f"stage{index}"] = stage(maps[f"stage{index - 1}"])
        return maps


class SegHead(nn.Module):
    """Project the stride-32/16/8 maps, upsample to stride 8, add, refine, classify."""

    def __init__(self, in_channels: list[int], strides: list[int], width: int, depth: int,
                 expand: int, final_expand: int, num_classes: int, head_stride: int = 8):
        super().__init__()
        inputs: list[nn.Module] = []
        for cin, stride in zip(in_channels, strides):
            project = ConvLayer(cin, width, 1, act=False)
            factor = stride // head_stride
            inputs.append(project if factor == 1 else OpSequential([project, _Upsample(factor)]))
        self.input_ops = nn.ModuleList(inputs)
        self.middle = OpSequential([ResidualBlock(MBConv(width, width, 1, expand), residual=True)
                                    for _ in range(depth)])
        self.output_ops = nn.ModuleList([OpSequential([
            ConvLayer(width, width * final_expand, 1),
            ConvLayer(width * final_expand, num_classes, 1, bias=True, norm=False, act=False),
        ])])

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        fused = sum(op(x) for op, x in zip(self.input_ops, maps))
        return self.output_ops[0](self.middle(fused))


class _Upsample(nn.Module):
    """Bicubic upsampling by a fixed factor (align_corners=False), as the authors' UpSampleLayer."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bicubic", align_corners=False)


class EfficientViTSeg(nn.Module):
    def __init__(self, backbone: EfficientViTBackbone, head: SegHead, taps: list[str]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.taps = taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)
        return self.head([maps[name] for name in self.taps])


def efficientvit_seg_b0(num_classes: int = 19) -> EfficientViTSeg:
    """B0 backbone (widths 8/16/32/64/128, depths 1/2/2/2/2, head dim 16) with the Cityscapes head."""
    backbone = EfficientViTBackbone([8, 16, 32, 64, 128], [1, 2, 2, 2, 2], dim=16)
    head = SegHead([128, 64, 32], [32, 16, 8], width=32, depth=1, expand=4, final_expand=4,
                   num_classes=num_classes)
    return EfficientViTSeg(backbone, head, ["stage4", "stage3", "stage2"])
