"""The torch module behind ``blur_pool``; imported only when a network is built."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blur_pool import binomial


class BlurPool2d(nn.Module):
    """Per-channel binomial blur of size ``kernel``, then subsampling by ``stride``."""

    def __init__(self, channels: int, kernel: int = 3, stride: int = 2, dilation: int = 1,
                 pad: str = "reflect"):
        super().__init__()
        # Every argument kept under its own name: `rtsegc compile --save-code` reads them back to write
        # the constructor call (and checks the result against this module).
        self.channels, self.kernel, self.stride = channels, kernel, stride
        self.dilation, self.pad = dilation, pad
        self.padding = dilation * (kernel - 1) // 2
        row = torch.tensor(binomial(kernel))
        taps = (row[:, None] * row[None, :]).expand(channels, 1, kernel, kernel).contiguous()
        # A buffer, not a parameter: fixed, moved by .to(), and left out of the state dict.
        self.register_buffer("filter", taps, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == "reflect" and self.padding:
            x = F.pad(x, [self.padding] * 4, mode="reflect")
            return F.conv2d(x, self.filter, stride=self.stride, dilation=self.dilation, groups=self.channels)
        return F.conv2d(x, self.filter, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.channels)

    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel={self.filter.shape[-1]}, stride={self.stride}, "
                f"dilation={self.dilation}, pad={self.pad}")
