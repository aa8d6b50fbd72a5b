"""TopFormer-T, written by hand from the authors' code, as a reference for the specs.

Zhang, Huang, Luo, Chen, Wang, Liu, Yu, Shen: "TopFormer: Token Pyramid Transformer for Mobile
Semantic Segmentation", CVPR 2022, arXiv:2204.05525. The facts below were read from the
authors' repository, hustvl/TopFormer (mmseg/models/backbones/topformer.py, the head in
mmseg/models/decode_heads/simple_head.py, and the tiny configuration in
local_configs/topformer/topformer_tiny.py); this file is new code. Module and parameter names
follow the authors' (``tpm.layer3.conv.0.c``, ``trans.transformer_blocks.0.attn.to_q.bn``,
``SIM.1.local_embedding.conv``, ``decode_head.conv_seg``) so that their checkpoints' keys load
after one prefix change.

TopFormer-T, as configured for ADE20K (150 classes):

* Token pyramid module: a 3x3/2 conv to 16 channels + BN + ReLU, then nine MobileNetV2
  inverted residuals (kernel k, expansion t, width c, stride s)::

      k  t   c  s          k  t   c  s
      3  1  16  1          3  3  64  2   layer6  (1/16)
      3  4  16  2  layer2  3  3  64  1   layer7  -> tap, 64 channels
      3  3  16  1  layer3  5  6  96  2   layer8  (1/32)
      5  3  32  2  layer4  5  6  96  1   layer9  -> tap, 96 channels
      5  3  32  1  layer5

  layer3 (1/4, 16 ch) and layer5 (1/8, 32 ch) are taps too. Each residual is 1x1 expand to
  ``round(t * in)`` + BN + ReLU (absent when t = 1), k x k depthwise (padding k // 2, stride s)
  + BN + ReLU, 1x1 project + BN, and adds its input when s = 1 and the widths agree. The
  pyramid module uses ReLU (the backbone does not pass its ReLU6 down to it).
* Pyramid pooling: every tap is average-pooled (adaptive) to the size of the last one
  reduced by ``c2t_stride`` = 2, ``(H - 1) // 2 + 1`` (1/64 of the input, 8 x 8 at 512 x 512),
  and the four are concatenated: 16 + 32 + 64 + 96 = 208 channels.
* Four transformer blocks on the 208-channel map, each ``x + attn(x)`` then ``x + mlp(x)``
  (drop path is an identity in eval mode), every projection a 1x1 conv + BN (no bias):

  - attention with 4 heads, key_dim 16 (q and k: 64 channels) and attn_ratio 2 (v: 4 x 32 =
    128 channels); softmax(q·k) per head **without a scale**: the authors' module stores
    ``key_dim ** -0.5`` as ``self.scale`` but its forward never applies it; then ReLU6 and a
    1x1 conv + BN back to 208;
  - MLP with mlp_ratio 2: 1x1 conv + BN to 416, 3x3 depthwise conv with bias, ReLU6,
    1x1 conv + BN back to 208.
* Semantic injection (``muli_sum``, the default ``injection_type``) for taps 1-3: the
  transformer output is split back into 16/32/64/96 channels; for tap i with global part g,
  ``conv_bn(tap) * up(h_sigmoid(conv_bn(g))) + up(conv_bn(g))``, every conv_bn a 1x1 conv to
  128 channels + BN (mmcv ConvModule: no bias when there is a norm), ``up`` a bilinear resize
  (align_corners False) to the tap's size and h_sigmoid ReLU6(x + 3) / 6. The three results
  (1/8, 1/16, 1/32, 128 channels each) are the backbone's outputs.
* SimpleHead: the 1/16 and 1/32 maps resized bilinearly to the 1/8 one and summed; a 1x1
  depthwise conv (``is_dw=True``, 128 groups) + BN + ReLU; dropout 0.1; a 1x1 conv with bias
  to the classes. Logits at stride 8 (mmseg resizes them to the input only outside the head).

With 150 classes this has 1,389,654 parameters, the count of the authors' model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TopFormer", "TopFormerBackbone", "SimpleHead", "TOPFORMER_TINY"]

#: topformer_tiny.py's ``cfg`` rows: kernel, expansion, width, stride.
TOPFORMER_TINY = dict(
    cfgs=[(3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
          (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1)],
    channels=[16, 32, 64, 96], out_channels=[None, 128, 128, 128], embed_out_indice=[2, 4, 6, 8],
    decode_out_indices=[1, 2, 3], depths=4, key_dim=16, num_heads=4, attn_ratio=2, mlp_ratio=2,
    c2t_stride=2, head_channels=128,
)


class Conv2d_BN(nn.Sequential):  # noqa: N801 - the authors' name, whose children are c and bn
    """A conv without bias, then batch norm (children ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class ConvModule(nn.Module):
    """mmcv's ConvModule as the authors use it: 1x1 conv without bias, BN, optional ReLU."""

    def __init__(self, cin: int, cout: int, groups: int = 1, relu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class InvertedResidual(nn.Module):
    """MobileNetV2's block; ``conv`` is an nn.Sequential as in the authors' code (keys conv.0 ...)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [Conv2d_BN(cin, hidden), nn.ReLU()]
        layers += [Conv2d_BN(hidden, hidden, kernel, stride, groups=hidden), nn.ReLU(),
                   Conv2d_BN(hidden, cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class TokenPyramidModule(nn.Module):
    def __init__(self, cfgs, out_indices, stem_channels: int = 16):
        super().__init__()
        self.out_indices = list(out_indices)
        self.stem = nn.Sequential(Conv2d_BN(3, stem_channels, 3, 2), nn.ReLU())
        cin = stem_channels
        self.names = []
        for i, (k, t, c, s) in enumerate(cfgs):
            # _make_divisible(c, 8) leaves every TopFormer width (multiples of 8) unchanged.
            self.add_module(f"layer{i + 1}", InvertedResidual(cin, c, k, s, t))
            self.names.append(f"layer{i + 1}")
            cin = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i, name in enumerate(self.names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class Attention(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.d = attn_ratio * key_dim
        self.to_q = Conv2d_BN(dim, key_dim * num_heads)
        self.to_k = Conv2d_BN(dim, key_dim * num_heads)
        self.to_v = Conv2d_BN(dim, self.d * num_heads)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2d_BN(self.d * num_heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = h * w
        q = self.to_q(x).reshape(b, self.num_heads, self.key_dim, n).transpose(2, 3)  # b, heads, n, key_dim
        k = self.to_k(x).reshape(b, self.num_heads, self.key_dim, n)                  # b, heads, key_dim, n
        v = self.to_v(x).reshape(b, self.num_heads, self.d, n).transpose(2, 3)        # b, heads, n, d
        weights = torch.matmul(q, k).softmax(dim=-1)  # no 1/sqrt(key_dim): the authors' forward has none
        out = torch.matmul(weights, v).transpose(2, 3).reshape(b, self.num_heads * self.d, h, w)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Conv2d_BN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True)
        self.fc2 = Conv2d_BN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu6(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int, mlp_ratio: int):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(self, depth: int, dim: int, **block):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(Block(dim, **block) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.transformer_blocks:
            x = blk(x)
        return x


class InjectionMultiSum(nn.Module):
    """``local * up(h_sigmoid(act(global))) + up(embed(global))`` on the local map's grid."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.local_embedding = ConvModule(cin, cout)
        self.global_embedding = ConvModule(cin, cout)
        self.global_act = ConvModule(cin, cout)

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        size = local.shape[-2:]
        gate = F.interpolate(F.relu6(self.global_act(global_) + 3) / 6, size=size, mode="bilinear",
                             align_corners=False)
        feat = F.interpolate(self.global_embedding(global_), size=size, mode="bilinear", align_corners=False)
        return self.local_embedding(local) * gate + feat


class TopFormerBackbone(nn.Module):
    def __init__(self, cfgs, channels, out_channels, embed_out_indice, decode_out_indices, depths,
                 key_dim, num_heads, attn_ratio, mlp_ratio, c2t_stride, **_):
        super().__init__()
        self.channels = list(channels)
        self.decode_out_indices = list(decode_out_indices)
        self.c2t_stride = c2t_stride
        self.tpm = TokenPyramidModule(cfgs, embed_out_indice)
        self.trans = BasicLayer(depths, sum(channels), key_dim=key_dim, num_heads=num_heads,
                                attn_ratio=attn_ratio, mlp_ratio=mlp_ratio)
        self.SIM = nn.ModuleList(  # noqa: N815 - the authors' key
            InjectionMultiSum(c, o) if i in self.decode_out_indices else nn.Identity()
            for i, (c, o) in enumerate(zip(channels, out_channels)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = self.tpm(x)
        h, w = taps[-1].shape[-2:]
        size = ((h - 1) // self.c2t_stride + 1, (w - 1) // self.c2t_stride + 1)
        tokens = torch.cat([F.adaptive_avg_pool2d(t, size) for t in taps], dim=1)
        parts = self.trans(tokens).split(self.channels, dim=1)
        return [self.SIM[i](taps[i], parts[i]) for i in self.decode_out_indices]


class SimpleHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.linear_fuse = ConvModule(channels, channels, groups=channels, relu=True)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = feats[0]
        for f in feats[1:]:
            out = out + F.interpolate(f, size=out.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(self.linear_fuse(out)))


class TopFormer(nn.Module):
    """Backbone and head as mmseg's EncoderDecoder holds them (``backbone.*``, ``decode_head.*``)."""

    def __init__(self, num_classes: int = 150, config: dict | None = None):
        super().__init__()
        config = dict(TOPFORMER_TINY if config is None else config)
        self.backbone = TopFormerBackbone(**config)
        self.decode_head = SimpleHead(config["head_channels"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))
