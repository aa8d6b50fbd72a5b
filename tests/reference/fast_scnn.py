"""Fast-SCNN, written by hand from the paper, as an independent reference for the spec files.

Poudel, Liwicki, Cipolla: "Fast-SCNN: Fast Semantic Segmentation Network", BMVC 2019,
arXiv:1902.04502. Table 1 of the paper gives the layer table (input 1024x2048x3)::

    input            block        t    c    n  s
    1024x2048x3      Conv2D       -   32    1  2
    512x1024x32      DSConv       -   48    1  2
    256x512x48       DSConv       -   64    1  2
    128x256x64       bottleneck   6   64    3  2
    64x128x64        bottleneck   6   96    3  2
    32x64x96         bottleneck   6  128    3  1
    32x64x128        PPM          -  128    -  -
    32x64x128        FFM          -  128    -  -
    128x256x128      DSConv       -  128    2  1
    128x256x128      Conv2D       -   19    1  1

Table 2 gives the bottleneck (MobileNetV2's inverted residual: 1x1 expand by t, 3x3
depthwise with stride s, linear 1x1 projection; identity shortcut when s = 1 and the
channels are equal) and Table 3 the feature fusion module (FFM) for a low-resolution input
X times smaller: ``Upsample xX -> DWConv (dilation X) 3x3 -> Conv2D 1x1`` on the low-resolution
branch, ``Conv2D 1x1`` on the high-resolution branch, then add and a non-linearity.

Every choice the paper leaves open, and how it is settled here. "Tramac" is
Tramac/Fast-SCNN-pytorch (models/fast_scnn.py), the most widely used PyTorch
implementation; "mmseg" is mmsegmentation's backbones/fast_scnn.py.

* Every convolution is followed by batch norm, and by ReLU (not MobileNetV2's ReLU6),
  except the bottleneck's projection and the FFM's two 1x1 convs (the sum gets the ReLU).
  Convs before a BN carry no bias, except the FFM's two 1x1 convs, which keep one as in
  Tramac.
* The first conv is 3x3/2 with padding 1, as Table 1's 1024 -> 512 requires; Tramac and
  mmseg pad 0, which makes 511x1023 (the same parameters, slightly fewer MACs).
* In each group of n bottlenecks only the first strides, as in MobileNetV2 (Tramac, mmseg).
* PPM: bins 1, 2, 3 and 6 (PSPNet's, which the paper cites), each an adaptive average pool,
  a 1x1 conv to 128/4 = 32 channels + BN + ReLU, and a bilinear resize back; the input and
  the four branches are concatenated (256 channels) and a 1x1 conv + BN + ReLU makes 128
  (Tramac, mmseg).
* FFM: the low-resolution map is resized to the high-resolution map's size (x4 for input
  sizes divisible by 32; resizing to a size, as mmseg does, also works for other sizes,
  where Tramac's scale_factor=4 fails), and the 3x3 depthwise conv has dilation 4 (= X)
  and padding 4, as Table 3 says (Tramac: dilation 1, with the same parameters and MACs).
* Classifier: two DSConv 128 and a 1x1 conv to the classes with a bias, with dropout 0.1
  before it (Tramac; identity in eval mode); the logits are resized to the input size.
* All bilinear resizes use ``align_corners=True`` (Tramac).

With 19 classes (Cityscapes) this network has 1,138,051 parameters (Tramac's has the same
count: padding and dilation add none); the paper reports 1.11 million.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FastSCNN", "ConvBNReLU", "DSConv", "Bottleneck", "PyramidPooling"]


class ConvBNReLU(nn.Module):
    """Conv, batch norm and (unless ``relu=False``) ReLU; submodules ``conv`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = False, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class DSConv(nn.Module):
    """Depthwise separable conv (Table 1's DSConv): 3x3 depthwise with ``stride``, 1x1 pointwise."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = ConvBNReLU(cin, cin, 3, stride, 1, groups=cin)
        self.pw = ConvBNReLU(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class Bottleneck(nn.Module):
    """MobileNetV2's inverted residual (Table 2): expand by ``t``, depthwise, linear project."""

    def __init__(self, cin: int, cout: int, stride: int, t: int = 6):
        super().__init__()
        hidden = cin * t
        self.expand = ConvBNReLU(cin, hidden, 1)
        self.dw = ConvBNReLU(hidden, hidden, 3, stride, 1, groups=hidden)
        self.project = ConvBNReLU(hidden, cout, 1, relu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


def bottlenecks(cin: int, cout: int, n: int, stride: int, t: int = 6) -> nn.Sequential:
    """``n`` bottlenecks; the first has ``stride`` and changes the channels (Table 1 rows)."""
    return nn.Sequential(*(Bottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1, t)
                           for i in range(n)))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling with bins 1, 2, 3, 6; output ``cout`` channels."""

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = bins
        self.branches = nn.ModuleList(ConvBNReLU(cin, cin // 4, 1) for _ in bins)
        self.out = ConvBNReLU(cin + len(bins) * (cin // 4), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = [x]
        for b, branch in zip(self.bins, self.branches):
            pooled = branch(F.adaptive_avg_pool2d(x, b))
            feats.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=True))
        return self.out(torch.cat(feats, 1))


class LearningToDownsample(nn.Module):
    """Table 1 rows 1-3: conv 32 /2, DSConv 48 /2, DSConv 64 /2 (stride 8 overall)."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(3, 32, 3, 2, 1)
        self.dsconv1 = DSConv(32, 48, 2)
        self.dsconv2 = DSConv(48, 64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dsconv2(self.dsconv1(self.conv(x)))


class GlobalFeatureExtractor(nn.Module):
    """Table 1 rows 4-7: bottlenecks 64 x3 /2, 96 x3 /2, 128 x3 /1 (stride 32), then PPM."""

    def __init__(self):
        super().__init__()
        self.bottleneck1 = bottlenecks(64, 64, 3, 2)
        self.bottleneck2 = bottlenecks(64, 96, 3, 2)
        self.bottleneck3 = bottlenecks(96, 128, 3, 1)
        self.ppm = PyramidPooling(128, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ppm(self.bottleneck3(self.bottleneck2(self.bottleneck1(x))))


class FeatureFusion(nn.Module):
    """Table 3's FFM: low-res branch resized, dilated depthwise 3x3, 1x1; high-res 1x1; add, ReLU."""

    def __init__(self, high_in: int = 64, low_in: int = 128, cout: int = 128, dilation: int = 4):
        super().__init__()
        self.dwconv = ConvBNReLU(low_in, cout, 3, 1, dilation, dilation, groups=low_in)
        self.conv_lower = ConvBNReLU(cout, cout, 1, bias=True, relu=False)
        self.conv_higher = ConvBNReLU(high_in, cout, 1, bias=True, relu=False)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=True)
        low = self.conv_lower(self.dwconv(low))
        return F.relu(self.conv_higher(high) + low)


class Classifier(nn.Module):
    """Table 1 rows 9-10: two DSConv 128, dropout 0.1, 1x1 conv to the classes (with bias)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.dsconv1 = DSConv(channels, channels)
        self.dsconv2 = DSConv(channels, channels)
        self.dropout = nn.Dropout(0.1)
        self.conv = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dropout(self.dsconv2(self.dsconv1(x))))


class FastSCNN(nn.Module):
    """Fast-SCNN; ``forward`` returns logits at the input's size."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.learning_to_downsample = LearningToDownsample()
        self.global_feature_extractor = GlobalFeatureExtractor()
        self.feature_fusion = FeatureFusion()
        self.classifier = Classifier(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = self.learning_to_downsample(x)
        low = self.global_feature_extractor(high)
        logits = self.classifier(self.feature_fusion(high, low))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
