"""``load_pretrained``: the runtime's name for loading a local state dict onto a compiled module by key.

The reading, matching and report live in :mod:`rtseg_compiler.weights` (one reader, one strict
loader, one :class:`WeightsError`); this module keeps the runtime's defaults: an encoder is what a
pretrained file usually initialises, so only keys under ``encoder.`` take part unless ``prefix``
says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from rtseg_compiler.weights.files import read_state_dict
from rtseg_compiler.weights.load import load_weights
from rtseg_compiler.weights.report import WeightsError, WeightsReport

__all__ = ["LoadReport", "WeightsError", "load_pretrained", "read_state_dict"]

#: The one weights report, under the name this module has always exported.
LoadReport = WeightsReport


def load_pretrained(module: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *,
                    prefix: str = "encoder.", rename: Sequence[tuple[str, str]] = (),
                    strict: bool = True) -> WeightsReport:
    """:func:`rtseg_compiler.weights.load.load_weights` with ``prefix="encoder."`` by default."""
    return load_weights(module, source, prefix=prefix, rename=rename, strict=strict)
