"""The ``rtsegc`` sub-commands this package provides, found through the ``rtseg_compiler.commands`` group.

This module must stay cheap to import: ``rtsegc --help`` and ``rtsegc validate`` load every installed
command object, and the compiler's torch-free commands must not pay for torch. Each :class:`Command`
imports its implementation only when it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Sequence

__all__ = ["BENCH", "EVAL", "PREDICT", "STUDY", "TRAIN", "Command"]


@dataclass(frozen=True)
class Command:
    """``help`` for ``rtsegc --help``; ``target`` = ``module:function`` inside this package."""

    help: str
    target: str

    def main(self, argv: Sequence[str], prog: str) -> int:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(list(argv), prog=prog)


TRAIN = Command("train a compiled network on a dataset (one process, or DDP under torchrun)", "train:main")
EVAL = Command("score a checkpoint or weights on a dataset split: mIoU, accuracies, per-class IoU",
               "evaluate:main")
PREDICT = Command("write colour masks, overlays and label PNGs for images with a checkpoint",
                  "predict:main")
BENCH = Command("forward latency and FPS of the compiled module (eval, no_grad)", "bench_cli:main")
STUDY = Command("train, evaluate, benchmark and compare a grid of networks from one study file "
                "(locally or on Ray)", "study.cli:main")
