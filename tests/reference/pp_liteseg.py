"""PP-LiteSeg-T (STDC1 encoder), written by hand in plain torch as an independent reference.

Peng et al.: "PP-LiteSeg: A Superior Real-Time Semantic Segmentation Model", arXiv:2204.02681
(2022), Sec. 3 and Fig. 3. The authors' code is Paddle (PaddlePaddle/PaddleSeg @d7975e7c:
paddleseg/models/pp_liteseg.py, backbones/stdcnet.py, layers/tensor_fusion.py and
tensor_fusion_helper.py; the T variant is configs/pp_liteseg/
pp_liteseg_stdc1_cityscapes_1024x512_scale0.5_160k.yml). This file follows that code, and keeps its
module names, so a PaddleSeg checkpoint's keys line up (Paddle's batch-norm statistics ``_mean``
and ``_variance`` are torch's ``running_mean`` and ``running_var``):

* **STDC1 encoder** (Fan et al. 2021, arXiv:2104.13188, "STDCNet813"): ``backbone.features`` is
  two 3x3/2 conv + BN + ReLU stems (32, 64 channels) and six ``CatBottleneck`` modules, two per
  stage with widths 256, 512 and 1024, the first of each stage with stride 2. A bottleneck of
  width W chains four conv + BN + ReLU (1x1 to W/2, then 3x3 to W/4, W/8, W/8) and concatenates
  their outputs (W/2 + W/4 + W/8 + W/8 = W). A stride-2 bottleneck halves the size between the
  first two convs with a 3x3/2 depthwise conv + BN (``avd_layer``, no ReLU) and resizes the first
  output for the concatenation with a 3x3/2 average pool, padding 1. Paddle's ``AvgPool2D``
  averages over the pixels inside the image only (``exclusive=True`` by default), torch's
  ``count_include_pad=False``. Every conv here has no bias.
* **SPPM** (``ppseg_head.cm``): the stride-32 map average-pooled to 1x1, 2x2 and 4x4 bins, each
  through a 1x1 conv + BN + ReLU to 128 channels, resized bilinearly (align_corners False) back
  to the map's size and summed, then a 3x3 conv + BN + ReLU (128). These convs keep Paddle's
  default bias.
* **FLD with UAFMs** (``ppseg_head.arm_list``, strides 8, 16, 32, outputs 32, 64, 128 channels
  for T): a UAFM fuses a low-level map x (an encoder tap) with the high-level map y from the
  stage above. x goes through a 3x3 conv + BN + ReLU to y's channels; y is resized bilinearly
  (align_corners False, Paddle's default with ``align_mode=0``) to x's size. The spatial
  attention reads the channel mean and max of x and of y (4 maps, in that order: mean x, max x,
  mean y, max y), a 3x3 conv + BN + ReLU to 2 channels, a 3x3 conv + BN to 1 and a sigmoid:
  a = sigmoid(...), out = x * a + y * (s - a), with s a one-element parameter set to 1 that
  Paddle never trains (``_scale``, ``stop_gradient``). A 3x3 conv + BN + ReLU gives the output.
* **Seg heads** (``seg_heads``): a 3x3 conv + BN + ReLU (32, 64, 64 channels for T) and a 1x1 conv
  to the classes without bias, on each UAFM's output. In eval mode only the stride-8 head runs;
  training also uses the stride-16 and -32 ones (``aux16``, ``aux32``). Each is resized
  bilinearly (align_corners False) to the input.

All batch norms are Paddle's ``BatchNorm2D`` defaults (epsilon 1e-5). With 19 classes the network
has 8,141,603 parameters (all three heads and the three ``_scale`` included), 8,028,323 without the
two auxiliary heads; STDC1's share is 5,318,304. Paddle also keeps the 11,602 batch-norm
statistics as (untrained) parameters, which torch keeps as buffers. At 512x1024 the eval-mode
network (main head) costs 11,421,139,968 MACs by FlopCounterMode / 2.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PPLiteSeg", "STDCNet"]


class ConvBNRelu(nn.Module):
    """STDC's conv (no bias, padding kernel // 2) + BN + ReLU; submodules ``conv`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class CatBottleneck(nn.Module):
    """STDC module: four convs whose outputs are concatenated (W/2, W/4, W/8, W/8 channels)."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.stride = stride
        if stride == 2:
            half = width // 2
            self.avd_layer = nn.Sequential(nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False),
                                           nn.BatchNorm2d(half))
            self.skip = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.conv_list = nn.ModuleList([
            ConvBNRelu(cin, width // 2, kernel=1),
            ConvBNRelu(width // 2, width // 4),
            ConvBNRelu(width // 4, width // 8),
            ConvBNRelu(width // 8, width // 8),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_list[0](x)
        out = self.avd_layer(first) if self.stride == 2 else first
        outs = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            outs.append(out)
        if self.stride == 2:
            first = self.skip(first)
        return torch.cat([first, *outs], dim=1)


class STDCNet(nn.Module):
    """STDC1 (STDCNet813): stems to 32 and 64 channels, then (256, 512, 1024) x 2 bottlenecks.

    Returns the maps at strides 8, 16 and 32 (256, 512 and 1024 channels), the ones PP-LiteSeg
    reads (``backbone_indices: [2, 3, 4]``).
    """

    def __init__(self, base: int = 64, stage_depths: tuple[int, ...] = (2, 2, 2)):
        super().__init__()
        self.stage_depths = stage_depths
        layers: list[nn.Module] = [ConvBNRelu(3, base // 2, 3, 2), ConvBNRelu(base // 2, base, 3, 2)]
        cin = base
        for stage, depth in enumerate(stage_depths):
            width = base * 4 * 2 ** stage
            for j in range(depth):
                layers.append(CatBottleneck(cin, width, 2 if j == 0 else 1))
                cin = width
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.features[1](self.features[0](x))
        taps, index = [], 2
        for depth in self.stage_depths:
            for _ in range(depth):
                x = self.features[index](x)
                index += 1
            taps.append(x)
        return taps


class ConvBNReLU(nn.Module):
    """PaddleSeg's layers.ConvBNReLU: ``_conv`` (same padding), ``_batch_norm``, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True):
        super().__init__()
        self._conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=bias)
        self._batch_norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self._batch_norm(self._conv(x)))


class ConvBN(nn.Module):
    """PaddleSeg's layers.ConvBN: ``_conv`` (same padding) and ``_batch_norm``, no activation."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True):
        super().__init__()
        self._conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=bias)
        self._batch_norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._batch_norm(self._conv(x))


class SPPM(nn.Module):
    """Simple pyramid pooling: bins 1, 2, 4 -> 1x1 conv + BN + ReLU -> resize, sum -> 3x3 conv."""

    def __init__(self, cin: int, inter: int, cout: int, bins: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(cin, inter, 1))
                                     for b in bins])
        self.conv_out = ConvBNReLU(inter, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for stage in self.stages:
            y = F.interpolate(stage(x), x.shape[2:], mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.conv_out(out)


class UAFM(nn.Module):
    """Unified attention fusion with spatial attention (PaddleSeg's UAFM_SpAtten)."""

    def __init__(self, x_ch: int, y_ch: int, out_ch: int):
        super().__init__()
        self.conv_x = ConvBNReLU(x_ch, y_ch, 3, bias=False)
        self.conv_out = ConvBNReLU(y_ch, out_ch, 3, bias=False)
        self.conv_xy_atten = nn.Sequential(ConvBNReLU(4, 2, 3, bias=False), ConvBN(2, 1, 3, bias=False))
        self._scale = nn.Parameter(torch.ones(1), requires_grad=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.conv_x(x)
        y = F.interpolate(y, x.shape[2:], mode="bilinear", align_corners=False)
        stats = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True),
                           y.mean(1, keepdim=True), y.amax(1, keepdim=True)], dim=1)
        atten = torch.sigmoid(self.conv_xy_atten(stats))
        return self.conv_out(x * atten + y * (self._scale - atten))


class PPLiteSegHead(nn.Module):
    """SPPM on the deepest map, then UAFMs from stride 32 up to stride 8."""

    def __init__(self, in_chs: tuple[int, ...], out_chs: tuple[int, ...], cm_out: int = 128):
        super().__init__()
        self.cm = SPPM(in_chs[-1], cm_out, cm_out)
        highs = [*out_chs[1:], cm_out]
        self.arm_list = nn.ModuleList([UAFM(low, high, out)
                                       for low, high, out in zip(in_chs, highs, out_chs)])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        high = self.cm(feats[-1])
        outs = []
        for i in reversed(range(len(feats))):
            high = self.arm_list[i](feats[i], high)
            outs.insert(0, high)
        return outs


class SegHead(nn.Module):
    """3x3 conv + BN + ReLU (no bias), 1x1 conv to the classes (no bias)."""

    def __init__(self, cin: int, mid: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, bias=False)
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class PPLiteSeg(nn.Module):
    """PP-LiteSeg; the defaults are the T variant (STDC1, UAFM outputs 32/64/128, heads 32/64/64).

    ``aux=True`` returns ``{"out", "aux16", "aux32"}`` (the three training outputs), else the
    eval-mode prediction alone. The parameters of all three heads exist either way, as in Paddle.
    """

    def __init__(self, num_classes: int = 19, arm_out_chs: tuple[int, ...] = (32, 64, 128),
                 seg_head_inter_chs: tuple[int, ...] = (32, 64, 64), aux: bool = False):
        super().__init__()
        self.aux = aux
        self.backbone = STDCNet()
        self.ppseg_head = PPLiteSegHead((256, 512, 1024), arm_out_chs)
        self.seg_heads = nn.ModuleList([SegHead(c, mid, num_classes)
                                        for c, mid in zip(arm_out_chs, seg_head_inter_chs)])

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[2:]
        feats = self.ppseg_head(self.backbone(x))
        count = len(feats) if self.aux else 1
        logits = [F.interpolate(head(f), size, mode="bilinear", align_corners=False)
                  for head, f in zip(self.seg_heads[:count], feats[:count])]
        if not self.aux:
            return logits[0]
        return dict(zip(("out", "aux16", "aux32"), logits))
