"""Class-weighted cross-entropy with ENet weights, as RTSeg trained with ``weighted_loss: True``.

ENet (Paszke et al. 2016, arXiv:1606.02147, §5.2) weights class c by ``w_c = 1 / ln(k + p_c)`` with
``p_c`` the fraction of counted pixels that are class c and ``k = 1.02``, which bounds the weights to
(1.42, 50.5]: rare classes get up to ~50x the weight of a class covering everything. RTSeg
(``utils/misc.py::get_class_weights``) uses the same formula over the training labels. It then sets the void
class's weight to 0. Here void pixels carry the ignore index instead and never enter the sum, which gives
the same gradient. One caveat carries over from ``F.cross_entropy``: with ``reduction='mean'`` the loss is
divided by the summed weights of the counted pixels, not by their number.

RTSeg also added ``wd * 1/2 ||w||^2`` for every conv to the loss. Its gradient is ``wd * w``, which is exactly
what ``torch.optim.Adam(weight_decay=wd)`` adds, so the training script passes weight decay to the optimiser.

>>> [round(w, 3) for w in enet_class_weights(torch.tensor([3, 1])).tolist()]  # p = 0.75, 0.25
[1.751, 4.184]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .data import IGNORE_INDEX

__all__ = ["ENET_K", "SegmentationLoss", "class_pixel_counts", "enet_class_weights"]

#: ENet's constant k in w = 1 / ln(k + p); also RTSeg's.
ENET_K = 1.02


def class_pixel_counts(labels: Iterable[torch.Tensor], num_classes: int,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """int64 (N,) pixel counts per class over label maps; ignored and out-of-range values are dropped first.

    Dropping 255 before ``bincount`` matters: ``minlength`` would otherwise grow the histogram to 256 bins.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for y in labels:
        y = y.reshape(-1)
        y = y[(y != ignore_index) & (y >= 0) & (y < num_classes)]
        counts += torch.bincount(y.long().cpu(), minlength=num_classes)
    return counts


def enet_class_weights(counts: torch.Tensor, k: float = ENET_K) -> torch.Tensor:
    """float32 (N,) weights ``1 / ln(k + p_c)`` from pixel counts per class (absent: ``1/ln(k)``)."""
    counts = counts.to(torch.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("no labelled pixels: cannot compute class frequencies")
    if k <= 1.0:
        raise ValueError(f"k must exceed 1 (ln(k) would be <= 0 for an absent class), got {k}")
    return (1.0 / torch.log(k + counts / total)).to(torch.float32)


class SegmentationLoss(nn.Module):
    """Per-pixel cross-entropy over (B, N, H, W) logits and (B, H, W) targets, optionally class-weighted."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight.float() if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Logits may be bf16 under autocast; CE in float32 keeps the log-sum-exp accurate.
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index)


def split_outputs(result: Any) -> tuple[Any, dict[str, Any]]:
    """(main logits, auxiliary logits by name) of a compiled module's result.

    A model whose meta declares ``outputs:`` returns a dict, main output first (FCN/DeepLab's
    ``aux``, BiSeNet's context heads); one with a single ``output:`` returns the tensor itself.
    """
    if isinstance(result, Mapping):
        items = list(result.items())
        return items[0][1], dict(items[1:])
    return result, {}


def main_output(result: Any) -> Any:
    """The main logits of a compiled module's result (evaluation and prediction use only these)."""
    return split_outputs(result)[0]
