"""Pieces that training, evaluation and benchmarking share: model arguments, datasets, devices.

A checkpoint stores :class:`ModelArgs` as a plain dict, so ``rtsegc eval --checkpoint`` can
rebuild the exact network from the spec files without the training command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .data import CAMVID_CLASSES, ClassSet, SyntheticSegmentation, class_set

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


def dataset_spec_for(classes: ClassSet | str | int):
    """The dataset file that ``--classes camvid`` / ``--classes N`` stands for (SegNet layout)."""
    from .datasets import dataset_from_classes, load_dataset_spec

    if isinstance(classes, str) and classes.lower() == "camvid":
        return load_dataset_spec("camvid")
    classes = classes if isinstance(classes, ClassSet) else class_set(classes)
    if classes.names == CAMVID_CLASSES:
        return load_dataset_spec("camvid")
    # label value N marks void, as the synthetic folders and CamVid's Unlabelled (11) store it
    void = [classes.num_classes] if classes.num_classes < 255 else []
    return dataset_from_classes(classes.names, void=void)


def make_dataset(data: str, split: str, size: tuple[int, int], classes: ClassSet | str | int, *,
                 limit: int | None = None, hflip_prob: float = 0.0, label_size: str = "input",
                 synthetic_length: int = 64, seed: int = 0, dataset_spec=None, augment=(),
                 skip_bad: bool = False, instances: bool = False):
    """A dataset folder described by ``dataset_spec`` (default: the one ``classes`` stands for), or the
    synthetic set when ``data == "synthetic"``.

    Synthetic splits use disjoint seeds (train: ``seed``, val: ``seed + 1``) so validation is unseen data.
    ``augment`` steps (and ``hflip_prob``, the older flag) apply to this split; pass none for evaluation.
    """
    if data == SYNTHETIC:
        classes = classes if isinstance(classes, ClassSet) else class_set(classes)
        length = limit if limit is not None else synthetic_length
        return SyntheticSegmentation(length, size, classes.num_classes, seed=seed + (split != "train"))
    from .data import DatasetFolder

    if not Path(data).is_dir():
        raise FileNotFoundError(f"{data}: no such dataset folder (or use --data synthetic)")
    spec = dataset_spec if dataset_spec is not None else dataset_spec_for(classes)
    steps = list(augment) + ([{"op": "hflip", "p": hflip_prob}] if hflip_prob > 0 else [])
    return DatasetFolder(spec, data, split, size, label_size=label_size, augment=steps, limit=limit,
                         skip_bad=skip_bad, instances=instances)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
