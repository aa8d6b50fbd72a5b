"""SeaFormer-T with its light segmentation head, written by hand as a reference for the spec files.

Wan, Zhang, Zhang, Lu, Zhang: "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic
Segmentation", ICLR 2023, arXiv:2301.13156. The layout and every number follow the authors'
public code (github.com/fudan-zvg/SeaFormer, seaformer-seg/: the backbone in
mmseg/models/backbones/seaformer.py, the head in mmseg/models/decode_heads/light_head.py, the
Tiny configuration in local_configs/seaformer/seaformer_tiny.py). Module and parameter names
are the authors' (``backbone.smb1.stem_block.0.c.weight``,
``backbone.trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed``,
``decode_head.fuse1.local_embedding.conv.weight`` ...), so their ADE20K checkpoints load into
:class:`SeaFormerSeg` with ``load_state_dict``.

The network, for an H x W image:

* **Shared MobileNetV2 stem** (``smb1``-``smb3``, ReLU): a 3x3/2 conv + BN + ReLU to 16
  channels, then inverted residuals given as (kernel k, expansion t, channels c, stride s):
  ``smb1``: (3,1,16,1) (3,4,16,2) (3,3,16,1); ``smb2``: (5,3,32,2) (5,3,32,1);
  ``smb3``: (3,3,64,2) (3,3,64,1). Hidden width = round(in · t); the 1x1 expansion is left out
  when t = 1; depthwise padding k // 2; no conv biases; identity shortcut when s = 1 and the
  channels are equal. ``smb2``'s output (32 channels, stride 8) is the head's detail input.
* **Two transformer stages**: ``smb4`` = (5,3,128,2) then ``trans1`` (2 blocks, dim 128, key
  dim 16, MLP ratio 2); ``smb5`` = (3,6,160,2) then ``trans2`` (2 blocks, dim 160, key dim 24,
  MLP ratio 4). Every block has 4 heads and attention ratio 2 and uses ReLU6:
  x + SeaAttention(x), then x + Mlp(x), where Mlp is Conv-BN 1x1, a 3x3 depthwise conv with
  bias, ReLU6, Conv-BN 1x1.
* **Squeeze-enhanced axial attention** on a C x H x W map, with h heads of key dim d
  (nh_kd = h·d query/key channels, dh = 2·h·d value channels): q, k, v by 1x1 Conv-BN.
  - Detail branch: concat(q, k, v) (2·dh channels), 3x3 depthwise Conv-BN, ReLU6, 1x1 Conv-BN to C.
  - Row branch: q, k, v averaged over the width (nh_kd x H, ...); q and k get a learned
    positional embedding of nh_kd x 16 resized to H by 1-D linear interpolation
    (align_corners=False); multi-head softmax attention among the H rows with scale d^-1/2;
    ReLU6 + 1x1 Conv-BN (dh -> dh). The column branch is the same over the height.
  - The two results broadcast-add to dh x H x W, v is added, then ReLU6 + 1x1 Conv-BN to C;
    the output is h_sigmoid(that) · detail, where h_sigmoid(x) = ReLU6(x + 3)/6.
* **Light head** on the stride-8, -32 and -64 maps (32, 128, 160 channels; the stem strides 2
  at the stem conv and in smb1 to smb5, so the token pyramid ends at 1/64 as TopFormer's does): two fusion blocks,
  each ``local = Conv-BN 1x1(x_detail)`` times ``resize(h_sigmoid(Conv-BN 1x1(x_global)))``
  (bilinear, align_corners=False, to the detail map's size), with 64 then 96 channels; a
  depthwise 1x1 Conv-BN-ReLU (96 channels), dropout 0.1 (identity at inference) and a 1x1
  classifier with bias. The logits are at stride 8, as the head returns them; mmseg's
  ``EncoderDecoder`` resizes them to the image only at inference.

Stochastic depth (drop_path_rate 0.1) is an identity at inference and left out. BN is plain
``nn.BatchNorm2d`` (the authors train with SyncBN, the same parameters at inference).

Counts with 150 classes (ADE20K): 1,667,318 parameters, the figure of the authors' code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SeaFormerSeg", "SeaFormer", "LightHead", "TINY", "SMALL", "BASE"]

#: The Tiny configuration (local_configs/seaformer/seaformer_tiny.py); rows are (k, t, c, s).
TINY = dict(
    cfgs=[
        [(3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)],
        [(5, 3, 32, 2), (5, 3, 32, 1)],
        [(3, 3, 64, 2), (3, 3, 64, 1)],
        [(5, 3, 128, 2)],
        [(3, 6, 160, 2)],
    ],
    channels=[16, 16, 32, 64, 128, 160],
    emb_dims=[128, 160],
    key_dims=[16, 24],
    depths=[2, 2],
    mlp_ratios=[2, 4],
    num_heads=4,
    attn_ratio=2,
    head_in_channels=[32, 128, 160],
    head_embed_dims=[64, 96],
    head_channels=96,
)


#: SeaFormer-S and -B (seaformer_small.py, seaformer_base.py): the Tiny layout with other widths,
#: depths and head counts.
SMALL = dict(
    TINY,
    cfgs=[
        [(3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1)],
        [(5, 3, 48, 2), (5, 3, 48, 1)],
        [(3, 3, 96, 2), (3, 3, 96, 1)],
        [(5, 4, 160, 2)],
        [(3, 6, 192, 2)],
    ],
    channels=[16, 24, 48, 96, 160, 192],
    emb_dims=[160, 192],
    depths=[3, 3],
    num_heads=6,
    head_in_channels=[48, 160, 192],
    head_embed_dims=[96, 128],
    head_channels=128,
)
BASE = dict(
    TINY,
    cfgs=[
        [(3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1)],
        [(5, 3, 64, 2), (5, 3, 64, 1)],
        [(3, 3, 128, 2), (3, 3, 128, 1)],
        [(5, 4, 192, 2)],
        [(3, 6, 256, 2)],
    ],
    channels=[16, 32, 64, 128, 192, 256],
    emb_dims=[192, 256],
    depths=[4, 4],
    num_heads=8,
    head_in_channels=[64, 192, 256],
    head_embed_dims=[128, 160],
    head_channels=160,
)


class Conv2dBN(nn.Sequential):
    """A conv without bias and its batch norm, as the authors' ``Conv2d_BN`` (keys ``c``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class ConvModule(nn.Module):
    """mmcv's ConvModule as the head builds it: conv (no bias, since a norm follows), BN, optional ReLU."""

    def __init__(self, cin: int, cout: int, groups: int = 1, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.activate(x) if self.activate is not None else x


def h_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3) / 6


class InvertedResidual(nn.Module):
    """MobileNetV2's block; ``conv`` is numbered like the authors' nn.Sequential (activations included)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [Conv2dBN(cin, hidden), nn.ReLU()]
        layers += [Conv2dBN(hidden, hidden, kernel, stride, groups=hidden), nn.ReLU(), Conv2dBN(hidden, cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class StackedMV2Block(nn.Module):
    """One ``smbN`` stage: an optional stem, then inverted residuals ``layer1``, ``layer2`` ..."""

    def __init__(self, rows, cin: int, stem: bool) -> None:
        super().__init__()
        self.stem_block = nn.Sequential(Conv2dBN(3, cin, 3, 2), nn.ReLU()) if stem else None
        self.names = []
        for j, (k, t, c, s) in enumerate(rows, start=1):
            self.add_module(f"layer{j}", InvertedResidual(cin, c, k, s, t))
            self.names.append(f"layer{j}")
            cin = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem_block is not None:
            x = self.stem_block(x)
        for name in self.names:
            x = getattr(self, name)(x)
        return x


class SqueezeAxialPositionalEmbedding(nn.Module):
    """A learned C x 16 embedding, resized linearly (align_corners=False) to the squeezed axis."""

    def __init__(self, dim: int, length: int = 16) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, dim, length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B x C x N
        return x + F.interpolate(self.pos_embed, size=x.shape[-1], mode="linear", align_corners=False)


class SeaAttention(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int) -> None:
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        nh_kd = key_dim * num_heads
        self.dh = dh = int(attn_ratio * key_dim) * num_heads
        self.to_q = Conv2dBN(dim, nh_kd)
        self.to_k = Conv2dBN(dim, nh_kd)
        self.to_v = Conv2dBN(dim, dh)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2dBN(dh, dim))
        self.proj_encode_row = nn.Sequential(nn.ReLU6(), Conv2dBN(dh, dh))
        self.pos_emb_rowq = SqueezeAxialPositionalEmbedding(nh_kd)
        self.pos_emb_rowk = SqueezeAxialPositionalEmbedding(nh_kd)
        self.proj_encode_column = nn.Sequential(nn.ReLU6(), Conv2dBN(dh, dh))
        self.pos_emb_columnq = SqueezeAxialPositionalEmbedding(nh_kd)
        self.pos_emb_columnk = SqueezeAxialPositionalEmbedding(nh_kd)
        self.dwconv = Conv2dBN(2 * dh, 2 * dh, 3, groups=2 * dh)
        self.act = nn.ReLU6()
        self.pwconv = Conv2dBN(2 * dh, dim)

    def _axial(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Multi-head attention among the N positions of B x C x N sequences; returns B x dh x N."""
        b, _, n = q.shape
        q = q.reshape(b, self.num_heads, -1, n).transpose(2, 3)  # B heads N d
        k = k.reshape(b, self.num_heads, -1, n)                  # B heads d N
        v = v.reshape(b, self.num_heads, -1, n).transpose(2, 3)  # B heads N 2d
        attn = (torch.matmul(q, k) * self.scale).softmax(dim=-1)
        return torch.matmul(attn, v).transpose(2, 3).reshape(b, self.dh, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        detail = self.pwconv(self.act(self.dwconv(torch.cat([q, k, v], dim=1))))
        row = self._axial(self.pos_emb_rowq(q.mean(-1)), self.pos_emb_rowk(k.mean(-1)), v.mean(-1))
        row = self.proj_encode_row(row.unsqueeze(-1))             # B dh H 1
        column = self._axial(self.pos_emb_columnq(q.mean(-2)), self.pos_emb_columnk(k.mean(-2)), v.mean(-2))
        column = self.proj_encode_column(column.unsqueeze(-2))    # B dh 1 W
        gate = self.proj(v + (row + column))
        return h_sigmoid(gate) * detail


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Conv2dBN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.ReLU6()
        self.fc2 = Conv2dBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, mlp_ratio: int, attn_ratio: int) -> None:
        super().__init__()
        self.attn = SeaAttention(dim, key_dim, num_heads, attn_ratio)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(self, depth: int, dim: int, key_dim: int, num_heads: int, mlp_ratio: int, attn_ratio: int) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            Block(dim, key_dim, num_heads, mlp_ratio, attn_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


class SeaFormer(nn.Module):
    """The backbone; returns the stride-8, -32 and -64 maps."""

    def __init__(self, cfg: dict = TINY) -> None:
        super().__init__()
        self.num_smb = len(cfg["cfgs"])
        self.num_trans = len(cfg["depths"])
        for i, rows in enumerate(cfg["cfgs"]):
            setattr(self, f"smb{i + 1}", StackedMV2Block(rows, cfg["channels"][i], stem=i == 0))
        for i, depth in enumerate(cfg["depths"]):
            setattr(self, f"trans{i + 1}", BasicLayer(depth, cfg["emb_dims"][i], cfg["key_dims"][i],
                                                      cfg["num_heads"], cfg["mlp_ratios"][i], cfg["attn_ratio"]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i in range(self.num_smb):
            x = getattr(self, f"smb{i + 1}")(x)
            if i == 1:
                outputs.append(x)
            t = i + self.num_trans - self.num_smb  # the last num_trans stages carry a transformer
            if t >= 0:
                x = getattr(self, f"trans{t + 1}")(x)
                outputs.append(x)
        return outputs


class FusionBlock(nn.Module):
    def __init__(self, cin_local: int, cin_global: int, embed: int) -> None:
        super().__init__()
        self.local_embedding = ConvModule(cin_local, embed)
        self.global_act = ConvModule(cin_global, embed)

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        gate = F.interpolate(h_sigmoid(self.global_act(x_global)), size=x_local.shape[-2:],
                             mode="bilinear", align_corners=False)
        return self.local_embedding(x_local) * gate


class LightHead(nn.Module):
    def __init__(self, num_classes: int, cfg: dict = TINY) -> None:
        super().__init__()
        cin, embeds, channels = cfg["head_in_channels"], cfg["head_embed_dims"], cfg["head_channels"]
        self.linear_fuse = ConvModule(channels, channels, groups=channels, relu=True)
        for i, embed in enumerate(embeds):
            setattr(self, f"fuse{i + 1}", FusionBlock(cin[0] if i == 0 else embeds[i - 1], cin[i + 1], embed))
        self.num_fuse = len(embeds)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0]
        for i in range(self.num_fuse):
            x = getattr(self, f"fuse{i + 1}")(x, features[i + 1])
        return self.conv_seg(self.dropout(self.linear_fuse(x)))


class SeaFormerSeg(nn.Module):
    """Backbone + light head under mmseg's key prefixes; logits at stride 8."""

    def __init__(self, num_classes: int = 150, cfg: dict = TINY) -> None:
        super().__init__()
        self.backbone = SeaFormer(cfg)
        self.decode_head = LightHead(num_classes, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))
