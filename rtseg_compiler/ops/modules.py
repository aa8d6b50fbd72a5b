"""The few torch modules built-in ops need that ``torch.nn`` lacks; imported by build hooks only.

Each class depends on torch alone, so ``rtsegc compile --save-code`` copies its source into
the generated file (``emit/python_source.py`` reads ``standalone_source``), and the saved
file still needs nothing but torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelLayerNorm", "LearnedTensor"]


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels of each pixel of an N x C x H x W map.

    Same parameters and state-dict keys as ``nn.LayerNorm(C)`` applied to the (N, H*W, C)
    tokens of a vision transformer; the map is viewed channels-last, normalised, and viewed
    back (no copy).
    """

    #: emit/python_source.py may copy this class into a standalone file.
    standalone_source = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class LearnedTensor(nn.Module):
    """A learned ``channels x height x width`` tensor, repeated over the batch of its input.

    The input only gives the batch size: a positional embedding or a learned scale is a
    parameter of the network, not a function of the image. ``trainable=False`` fixes it
    (``requires_grad`` false) without leaving the state dict.
    """

    standalone_source = True

    def __init__(self, channels: int, height: int = 1, width: int = 1, fill: float = 0.0,
                 trainable: bool = True) -> None:
        super().__init__()
        self.channels, self.height, self.width, self.fill = channels, height, width, fill
        self.trainable = trainable
        self.weight = nn.Parameter(torch.full((1, channels, height, width), float(fill)),
                                   requires_grad=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under no_grad a view of a parameter still says requires_grad, with no grad_fn, which
        # breaks torch's module hooks (FlopCounterMode's tracker); a detached view does not.
        weight = self.weight if torch.is_grad_enabled() else self.weight.detach()
        return weight.expand(x.shape[0], -1, -1, -1)
