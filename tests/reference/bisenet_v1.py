"""BiSeNet V1 with a ResNet-18 context path, written by hand as an independent reference.

Yu, Wang, Peng, Gao, Yu, Sang: "BiSeNet: Bilateral Segmentation Network for Real-time
Semantic Segmentation", ECCV 2018, arXiv:1808.00897. The paper describes (Sec. 3, Fig. 2):

* a **spatial path** of three conv + BN + ReLU layers, each with stride 2 (output 1/8);
* a **context path**: a fast-downsampling backbone (ResNet-18 here, He et al. 2015, Table 1),
  with a global average pool on its tail for the largest receptive field, and **attention
  refinement modules** (ARM: global average pool -> 1x1 conv -> BN -> sigmoid, multiplied
  onto the features) on the stride-16 and stride-32 stages;
* a **feature fusion module** (FFM): concatenate the two paths, conv + BN + ReLU, then an
  SE-like gate (global pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid) multiplied onto the
  features and added back;
* the output at 1/8 resized to the input, and two **auxiliary heads** on the context path
  that are supervised during training only (Sec. 3, "Loss function").

The paper leaves channel counts and kernel sizes open. They follow CoinCheung/BiSeNet
(lib/models/bisenetv1.py at commit 0471e808, the most widely used PyTorch implementation,
which resizes to tensor sizes and so handles any input size):

* spatial path: 7x7/2 conv to 64, 3x3/2 to 64, 3x3/2 to 64, then a 1x1 conv to 128;
* ARM: a 3x3 conv + BN + ReLU to 128 channels before the attention (the paper's figure has
  no conv; the implementation needs one to bring 256 and 512 channels to 128), and a 1x1
  conv without bias before the attention BN;
* global context: global average pool of the stride-32 features, 1x1 conv + BN + ReLU to
  128, added (broadcast over height and width) to the stride-32 ARM output;
* each context stage is resized with nearest-neighbour interpolation to the next tap's
  size (stride 32 -> 16 -> 8) and followed by a 3x3 conv + BN + ReLU (``conv_head32``,
  ``conv_head16``); the stride-16 stage adds its ARM output first;
* FFM: 1x1 conv + BN + ReLU from 128 + 128 to 256 channels; the gate reduces to 256/4 = 64;
* heads: 3x3 conv + BN + ReLU (256 channels for the main head, 64 for the auxiliary ones)
  and a 1x1 conv to the classes without bias, then a bilinear resize to the input size with
  ``align_corners=True``. ``aux16`` reads the context path's stride-8 output (the branch fed
  by the stride-16 ARM), ``aux32`` its stride-16 output (fed by the stride-32 ARM).

Every conv before a BN has no bias. With 19 classes the network has 13,392,384
parameters, 13,242,240 without the auxiliary heads (ResNet-18's share: 11,176,512).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BiSeNetV1", "ResNet18", "ConvBNReLU"]


class ConvBNReLU(nn.Module):
    """Conv (no bias), batch norm, ReLU; submodules ``conv`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs + BN; 1x1/2 projection shortcut when striding."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNet18(nn.Module):
    """ResNet-18 without its classifier (He et al. 2015, Table 1); returns strides 8, 16, 32."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class SpatialPath(nn.Module):
    """Three stride-2 conv + BN + ReLU layers (7x7 then two 3x3, 64 channels), 1x1 to 128."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, 2)
        self.conv2 = ConvBNReLU(64, 64, 3, 2)
        self.conv3 = ConvBNReLU(64, 64, 3, 2)
        self.conv_out = ConvBNReLU(64, 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class AttentionRefinement(nn.Module):
    """ARM: 3x3 conv + BN + ReLU, then a channel gate sigmoid(BN(conv1x1(mean))) multiplied on."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))
        return feat * gate


class ContextPath(nn.Module):
    """ResNet-18 with ARMs at strides 16 and 32 and the global-context tail."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.backbone(x)
        context = self.conv_avg(feat32.mean((2, 3), keepdim=True))        # 128 x 1 x 1
        sum32 = self.arm32(feat32) + context                                # broadcast add
        up32 = self.conv_head32(F.interpolate(sum32, size=feat16.shape[-2:], mode="nearest"))
        sum16 = self.arm16(feat16) + up32
        up16 = self.conv_head16(F.interpolate(sum16, size=feat8.shape[-2:], mode="nearest"))
        return up16, up32                                                   # strides 8 and 16


class FeatureFusion(nn.Module):
    """FFM: concat, 1x1 conv + BN + ReLU, SE-like gate (reduction 4) multiplied on and added."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], 1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * gate + feat


class Head(nn.Module):
    """3x3 conv + BN + ReLU to ``mid`` channels, 1x1 conv (no bias) to the classes."""

    def __init__(self, cin: int, mid: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3)
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNetV1(nn.Module):
    """BiSeNet V1; ``forward`` returns ``{"out", "aux16", "aux32"}``, each at the input size.

    With ``aux=False`` the auxiliary heads are not built and ``forward`` returns only ``out``
    (in the dict), which is the network used at inference.
    """

    def __init__(self, num_classes: int = 19, aux: bool = True):
        super().__init__()
        self.cp = ContextPath()
        self.sp = SpatialPath()
        self.ffm = FeatureFusion(256, 256)
        self.head = Head(256, 256, num_classes)
        self.aux = aux
        if aux:
            self.head16 = Head(128, 64, num_classes)
            self.head32 = Head(128, 64, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]

        def resize(y: torch.Tensor) -> torch.Tensor:
            return F.interpolate(y, size=size, mode="bilinear", align_corners=True)

        context8, context16 = self.cp(x)
        out = {"out": resize(self.head(self.ffm(self.sp(x), context8)))}
        if self.aux:
            out["aux16"] = resize(self.head16(context8))
            out["aux32"] = resize(self.head32(context16))
        return out
