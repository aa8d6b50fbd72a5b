"""Pieces that training, evaluation and benchmarking share: model arguments, datasets, devices.

A checkpoint stores :class:`ModelArgs` as a plain dict, so ``python -m runtime.evaluate --checkpoint`` can
rebuild the exact network from the spec files without the training command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .data import ClassSet, SegmentationFolder, SyntheticSegmentation, class_set

__all__ = ["ModelArgs", "build_model", "make_dataset", "pick_device", "SYNTHETIC"]

#: ``--data synthetic`` selects the generated dataset instead of a folder.
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class ModelArgs:
    """Everything :func:`rtseg_compiler.compile_model` needs; spec paths are stored as given."""

    model: str | None
    encoder: str | None
    meta: str | None
    input_size: tuple[int, int] | None
    num_classes: int
    output_stride: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size) if self.input_size else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelArgs":
        size = data.get("input_size")
        return cls(model=data.get("model"), encoder=data.get("encoder"), meta=data.get("meta"),
                   input_size=tuple(size) if size else None, num_classes=int(data["num_classes"]),
                   output_stride=data.get("output_stride"))


def build_model(args: ModelArgs):
    """Compile the spec; returns the CompiledModel (``.module`` is the network, ``.audit`` its counts)."""
    from rtseg_compiler import compile_model

    if args.model is None and not (args.encoder and args.meta):
        raise ValueError("give a model spec, or both an encoder and a meta spec")
    return compile_model(args.model, args.input_size, args.num_classes, encoder=args.encoder, meta=args.meta,
                         output_stride=args.output_stride)


def make_dataset(data: str, split: str, size: tuple[int, int], classes: ClassSet | str | int, *,
                 limit: int | None = None, hflip_prob: float = 0.0, label_size: str = "input",
                 synthetic_length: int = 64, seed: int = 0):
    """A CamVid-layout folder dataset, or the synthetic one when ``data == "synthetic"``.

    Synthetic splits use disjoint seeds (train: ``seed``, val: ``seed + 1``) so validation is unseen data.
    """
    classes = classes if isinstance(classes, ClassSet) else class_set(classes)
    if data == SYNTHETIC:
        length = limit if limit is not None else synthetic_length
        return SyntheticSegmentation(length, size, classes.num_classes, seed=seed + (split != "train"))
    if not Path(data).is_dir():
        raise FileNotFoundError(f"{data}: no such dataset folder (or use --data synthetic)")
    return SegmentationFolder(data, split, size, num_classes=classes.num_classes, limit=limit,
                              hflip_prob=hflip_prob, label_size=label_size)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
