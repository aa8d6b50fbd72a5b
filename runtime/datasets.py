"""Datasets described as data: ``specs/datasets/*.yaml`` files, checked like every other spec.

A dataset file gives the class names and colours, the ignore label, how stored label values map to
classes, mean/std, the folder layout, the Cityscapes-style categories and the training augmentation.
``--dataset cityscapes`` finds ``specs/datasets/cityscapes.yaml``; ``--dataset my.yaml`` reads a file.
Files are untrusted data: they load through ``rtseg_compiler.spec.load`` (safe YAML, size limits, every
value located) and are validated with a JSON Schema whose errors are reported as ``FILE:LINE:COL``
diagnostics, exactly as model specs are (``rtseg_compiler/spec/schema.py``).

Label values: with a ``labels:`` table (Cityscapes' official id -> trainId list) a stored id maps to its
train id, 255 meaning "not scored". Without one, values ``0..N-1`` are the classes, values listed in
``void:`` and the ``ignore_index`` itself are ignored, and anything else is an error: an 11-class CamVid
label holding 40 is a broken file, not void (issue 11: such a set once reported ``mIoU nan``).

Layouts (what a sample is):

- ``segnet``: ``<root>/<split>/NAME.png`` + ``<root>/<split>annot/NAME.png`` (SegNet tutorial's CamVid);
- ``cityscapes``: ``<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` +
  ``<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (and ``_gtFine_instanceIds.png``, for iIoU);
- ``folder``: ``<root>/images/<split>/NAME.{png,jpg,jpeg}`` + ``<root>/masks/<split>/NAME.png``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

def _zoo_datasets() -> Path:
    from rtseg_compiler.zoo import FOLDER_OF_KIND, zoo_root

    root = zoo_root()
    return (root / FOLDER_OF_KIND["dataset"]) if root is not None else (
        Path(__file__).resolve().parent.parent / "specs" / "datasets")


__all__ = ["DATASET_DIR", "DataError", "DatasetSpec", "Sample", "check_dataset_file", "dataset_from_classes",
           "find_samples", "split_folder",
           "load_dataset_spec", "parse_dataset_text", "write_tiny_cityscapes"]

#: Where ``--dataset NAME`` looks: the zoo's ``datasets/`` (rtseg_compiler/zoo.py), which ships in
#: the wheel, so an installed runtime finds ``cityscapes`` as a source checkout does.
DATASET_DIR = _zoo_datasets()
LAYOUTS = ("segnet", "cityscapes", "folder")
AUGMENT_OPS = ("random_scale", "random_crop", "hflip", "photometric")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(Exception):
    """A dataset that cannot be read as described; the message names the file and what is wrong."""


def _pair(minimum: float | int | None = None, kind: str = "number") -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind}
    if minimum is not None:
        item["exclusiveMinimum" if kind == "number" else "minimum"] = minimum
    return {"type": "array", "items": item, "minItems": 2, "maxItems": 2}


_COLOR = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}, "minItems": 3,
          "maxItems": 3}
_TRIPLE = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_AUGMENT_ITEM = {
    "type": "object", "required": ["op"],
    "properties": {"op": {"enum": list(AUGMENT_OPS)}, "range": _pair(0), "size": _pair(1, "integer"),
                   "p": {"type": "number", "minimum": 0, "maximum": 1},
                   "brightness": {"type": "number", "minimum": 0, "maximum": 1},
                   "contrast": {"type": "number", "minimum": 0, "maximum": 1},
                   "saturation": {"type": "number", "minimum": 0, "maximum": 1}},
    "additionalProperties": False,
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["kind", "name", "layout", "classes"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "dataset"},
        "name": {"type": "string"},
        "doc": {"type": "string"},
        "layout": {"enum": list(LAYOUTS)},
        "ignore_index": {"type": "integer", "minimum": 0, "maximum": 255},
        # std divides: a zero makes every input NaN (and the loss with it), so it is refused here
        "mean": _TRIPLE, "std": {**_TRIPLE, "items": {"type": "number", "exclusiveMinimum": 0}},
        "splits": {"type": "object", "additionalProperties": {"type": "string"}},
        "classes": {"type": "array", "minItems": 1, "maxItems": 255, "items": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "color": _COLOR}}},
        "void": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
        "labels": {"type": "array", "items": {
            "type": "object", "required": ["id", "train_id"], "additionalProperties": False,
            "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 255},
                           "name": {"type": "string"},
                           "train_id": {"type": "integer", "minimum": 0, "maximum": 255}}}},
        "categories": {"type": "object",
                       "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "augment": {"type": "array", "items": _AUGMENT_ITEM},
        "instance_sizes": {"type": "object",
                           "additionalProperties": {"type": "number", "exclusiveMinimum": 0}},
    },
}


@dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset file. ``lut[v]`` is the class (or ``ignore_index``) of stored value v, -1 if
    v is not allowed; ``text`` is the file's text, which checkpoints embed."""

    name: str
    layout: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int
    lut: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    splits: Mapping[str, str]
    categories: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    augment: tuple[Mapping[str, Any], ...] = ()
    instance_sizes: Mapping[int, float] = field(default_factory=dict)  # class id -> mean instance pixels
    text: str = ""
    source: str = "<dataset>"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> tuple[str, ...]:  # ClassSet compatibility
        return self.classes

    def split_dir(self, split: str) -> str:
        return self.splits.get(split, split)

    def allowed_text(self) -> str:
        """The allowed stored values, for error messages ('0..10, 11, 255')."""
        allowed = [v for v in range(256) if self.lut[v] >= 0]
        runs, start = [], None
        for i, v in enumerate(allowed):
            if start is None:
                start = v
            if i + 1 == len(allowed) or allowed[i + 1] != v + 1:
                runs.append(str(start) if start == v else f"{start}..{v}")
                start = None
        return ", ".join(runs)

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        """Stored values -> class ids / ignore_index (uint8); values the table does not allow stay -1."""
        return np.asarray(self.lut, dtype=np.int16)[raw]

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colours indexed by class id; ignore and unused ids are black."""
        out = np.zeros((256, 3), dtype=np.uint8)
        out[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return out


def palette_colors(num_classes: int) -> np.ndarray:
    """Well-separated RGB colours: hues evenly spaced, alternating brightness (uint8, (N, 3))."""
    colours = []
    for c in range(num_classes):
        hue = c / max(num_classes, 1)
        value = 0.9 if c % 2 == 0 else 0.55
        rgb = [value * (0.5 + 0.5 * math.cos(2 * math.pi * (hue - shift))) for shift in (0.0, 1 / 3, 2 / 3)]
        colours.append([round(255 * v) for v in rgb])
    return np.asarray(colours, dtype=np.uint8)


def _default_colors(n: int) -> list[tuple[int, int, int]]:
    return [tuple(int(c) for c in row) for row in palette_colors(n)]


def parse_dataset_text(text: str, source: str = "<dataset>") -> DatasetSpec:
    """Load, schema-check and resolve a dataset file's text; a located SpecError on any problem."""
    from rtseg_compiler.diagnostics import Diagnostic, SpecError, did_you_mean
    from rtseg_compiler.spec.load import load_spec_text, location_of
    from rtseg_compiler.spec.schema import check_against_schema

    doc = load_spec_text(text, source)
    diags = check_against_schema(doc, SCHEMA)
    if diags:
        raise SpecError(diags)
    names = [c["name"] for c in doc["classes"]]
    ignore = int(doc.get("ignore_index", 255))
    for i, name in enumerate(names):
        if names.index(name) != i:
            diags.append(Diagnostic(f"class '{name}' is listed twice",
                                    location_of(doc, ("classes", i, "name"))))
    if ignore < len(names):
        diags.append(Diagnostic(f"ignore_index {ignore} is a class id (there are {len(names)} classes)",
                                location_of(doc, ("ignore_index",))))
    lut = [-1] * 256
    if "labels" in doc:
        if "void" in doc:
            diags.append(Diagnostic("give 'labels' (an id -> train_id table) or 'void', not both",
                                    location_of(doc, ("void",), key=True)))
        for i, row in enumerate(doc["labels"]):
            train_id = row["train_id"]
            if train_id != 255 and train_id >= len(names):
                diags.append(Diagnostic(f"train_id {train_id} is not a class (0..{len(names) - 1}) nor 255",
                                        location_of(doc, ("labels", i, "train_id"))))
            if lut[row["id"]] != -1:
                diags.append(Diagnostic(f"id {row['id']} is listed twice",
                                        location_of(doc, ("labels", i, "id"))))
            lut[row["id"]] = ignore if train_id == 255 else train_id
    else:
        for v in range(len(names)):
            lut[v] = v
        for i, v in enumerate(doc.get("void", [])):
            if v < len(names):
                diags.append(Diagnostic(f"void value {v} is a class id", location_of(doc, ("void", i))))
            lut[v] = ignore
    lut[ignore] = ignore
    categories = {}
    for cat, members in (doc.get("categories") or {}).items():
        ids = []
        for j, member in enumerate(members):
            if member not in names:
                diags.append(Diagnostic(f"category '{cat}': '{member}' is not a class",
                                        location_of(doc, ("categories", cat, j)),
                                        hint=did_you_mean(member, names)))
            else:
                ids.append(names.index(member))
        categories[cat] = tuple(ids)
    instance_sizes = {}
    for cls, size in (doc.get("instance_sizes") or {}).items():
        if cls not in names:
            diags.append(Diagnostic(f"instance_sizes: '{cls}' is not a class",
                                    location_of(doc, ("instance_sizes", cls), key=True),
                                    hint=did_you_mean(cls, names)))
        else:
            instance_sizes[names.index(cls)] = float(size)
    if diags:
        raise SpecError(diags)
    defaults = _default_colors(len(names))
    colors = tuple(tuple(c.get("color", defaults[i])) for i, c in enumerate(doc["classes"]))
    return DatasetSpec(
        name=doc["name"], layout=doc["layout"], classes=tuple(names), colors=colors, ignore_index=ignore,
        lut=tuple(lut), mean=tuple(doc.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(doc.get("std", (0.229, 0.224, 0.225))),
        splits=dict(doc.get("splits") or {}), categories=categories,
        augment=tuple(dict(a) for a in doc.get("augment", [])), instance_sizes=instance_sizes, text=text,
        source=source)


def load_dataset_spec(name_or_path: str) -> DatasetSpec:
    """``cityscapes`` -> specs/datasets/cityscapes.yaml; a path ending in .yaml/.yml -> that file."""
    from rtseg_compiler.diagnostics import Diagnostic, Location, SpecError, did_you_mean
    from rtseg_compiler.spec.load import load_spec_file

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = DATASET_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in DATASET_DIR.glob("*.yaml"))
            raise SpecError([Diagnostic(f"--dataset {name_or_path}: no such dataset",
                                        Location("<command line>"),
                                        hint=did_you_mean(name_or_path, known) or
                                        f"known: {', '.join(known)}; or give a .yaml file")])
    load_spec_file(path)  # size/encoding/YAML checks with located errors
    return parse_dataset_text(path.read_text(encoding="utf-8"), str(path))


def check_dataset_file(path: str) -> list:
    """``rtsegc validate FILE`` for ``kind: dataset`` (the rtseg_compiler.spec_kinds entry point)."""
    from rtseg_compiler.diagnostics import SpecError
    from rtseg_compiler.spec.load import load_spec_file

    try:
        load_spec_file(path)  # size, encoding and YAML limits, as for every spec
        parse_dataset_text(Path(path).read_text(encoding="utf-8"), str(path))
    except SpecError as exc:
        return list(exc.diagnostics)
    return []


def dataset_from_classes(classes: Sequence[str], *, void: Sequence[int] = (), layout: str = "segnet",
                         name: str = "custom") -> DatasetSpec:
    """The spec that ``--classes camvid`` / ``--classes N`` stood for: a SegNet layout whose value N is
    void (CamVid's Unlabelled = 11), like the older reader."""
    items = "\n".join(f"  - {{name: {n!r}}}" for n in classes)
    text = (f"kind: dataset\nname: {name}\nlayout: {layout}\nvoid: {list(void)}\nclasses:\n{items}\n")
    return parse_dataset_text(text, f"<--classes {name}>")


# --------------------------------------------------------------------------- samples on disk

@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None
    instances: Path | None = None

    @property
    def name(self) -> str:
        return self.image.name


def _require_dir(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder (the {layout} layout needs it; see specs/datasets/)")


def split_folder(spec: DatasetSpec, root: Path, split: str, allow_external: bool = False) -> str:
    """The folder name of ``split``, refused when it leads outside ``root``.

    A dataset file travels inside every checkpoint, so a ``splits:`` entry such as ``../other`` would make
    ``rtsegc eval --checkpoint`` score a folder the user never named. Relative entries must stay under
    ``--data``; absolute ones need ``--external-splits``, the user's explicit consent.
    """
    folder = spec.split_dir(split)
    path = Path(folder)
    if path.is_absolute():
        if not allow_external:
            raise DataError(f"{spec.source}: split '{split}' is the absolute folder {folder}, outside --data "
                            f"{root}; pass --external-splits to read it, or make it relative to --data")
        return folder
    inside = (root / path).resolve()
    if inside != root.resolve() and root.resolve() not in inside.parents:
        raise DataError(f"{spec.source}: split '{split}' -> {folder} leads outside --data {root}; dataset "
                        "files name folders under --data (an absolute path with --external-splits is the "
                        "one way out)")
    return folder


def find_samples(spec: DatasetSpec, root: str | Path, split: str, *,
                 allow_external: bool = False) -> list[Sample]:
    """Every image of ``split`` with its label path (None when the label file is missing), sorted."""
    root = Path(root)
    _require_dir(root, spec.layout)
    folder = split_folder(spec, root, split, allow_external)
    out = []
    if spec.layout == "segnet":
        images, labels = root / folder, root / f"{folder}annot"
        _require_dir(images, spec.layout)
        _require_dir(labels, spec.layout)
        for p in sorted(images.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                label = labels / (p.stem + ".png")
                out.append(Sample(p, label if label.is_file() else None))
    elif spec.layout == "folder":
        images, labels = root / "images" / folder, root / "masks" / folder
        _require_dir(images, spec.layout)
        _require_dir(labels, spec.layout)
        for p in sorted(images.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                label = labels / (p.stem + ".png")
                out.append(Sample(p, label if label.is_file() else None))
    else:  # cityscapes
        images, labels = root / "leftImg8bit" / folder, root / "gtFine" / folder
        _require_dir(images, spec.layout)
        _require_dir(labels, spec.layout)
        for p in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = p.name[: -len("_leftImg8bit.png")]
            label = labels / p.parent.name / f"{stem}_gtFine_labelIds.png"
            inst = labels / p.parent.name / f"{stem}_gtFine_instanceIds.png"
            out.append(Sample(p, label if label.is_file() else None, inst if inst.is_file() else None))
    if not out:
        raise DataError(f"{images}: no images (expected {', '.join(IMAGE_SUFFIXES)} files, "
                        f"{spec.layout} layout)")
    return out


@dataclass(frozen=True)
class SampleFacts:
    """What fully decoding one sample found, independent of any dataset file (so it can be cached)."""

    image_size: tuple[int, int] | None = None  # (W, H), as Pillow gives it
    label_size: tuple[int, int] | None = None
    label_mode: str | None = None
    label_counts: Mapping[int, int] | None = None  # stored value -> pixels
    error: str | None = None

    def to_json(self) -> dict:
        return {"image_size": self.image_size, "label_size": self.label_size, "label_mode": self.label_mode,
                "label_counts": None if self.label_counts is None else
                {str(k): v for k, v in self.label_counts.items()}, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping) -> "SampleFacts":
        counts = data.get("label_counts")
        return cls(tuple(data["image_size"]) if data.get("image_size") else None,
                   tuple(data["label_size"]) if data.get("label_size") else None, data.get("label_mode"),
                   None if counts is None else {int(k): int(v) for k, v in counts.items()}, data.get("error"))


def inspect_sample(sample: Sample) -> SampleFacts:
    """Decode the image and the label completely (``Image.verify()`` alone checks PNG chunk CRCs without
    decompressing and nothing of a JPEG, so a PNG with cut pixel data or a cut-short JPEG passed it)."""
    from PIL import Image

    if sample.label is None:
        return SampleFacts(error=f"{sample.image}: no label file for this image")
    try:
        with Image.open(sample.image) as im:
            im.load()  # every pixel: raises for truncated or corrupt data
            image_size = im.size
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file
        return SampleFacts(error=f"{sample.image}: unreadable image ({type(exc).__name__}: {exc})")
    try:
        with Image.open(sample.label) as im:
            mode = im.mode
            if mode not in ("L", "P"):
                return SampleFacts(image_size, im.size, mode)
            raw = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        return SampleFacts(image_size,
                           error=f"{sample.label}: unreadable label ({type(exc).__name__}: {exc})")
    counts = np.bincount(raw.reshape(-1), minlength=256)
    return SampleFacts(image_size, (raw.shape[1], raw.shape[0]), mode,
                       {int(v): int(counts[v]) for v in np.flatnonzero(counts)})


def judge_sample(spec: DatasetSpec, sample: Sample,
                 facts: SampleFacts) -> tuple[str | None, np.ndarray | None]:
    """(problem, pixels per mapped id (256 counts)) of one sample under ``spec``: the first thing wrong
    with it, or None and its counts."""
    if facts.error is not None:
        return facts.error, None
    if facts.label_mode not in ("L", "P"):
        return (f"{sample.label}: label must be single-channel (mode L or P), got mode "
                f"{facts.label_mode}"), None
    if facts.label_size != facts.image_size:
        (lw, lh), (iw, ih) = facts.label_size, facts.image_size
        return (f"{sample.label}: label is {lh}x{lw} but its image {sample.image.name} is "
                f"{ih}x{iw} (HxW)"), None
    lut = np.asarray(spec.lut, dtype=np.int16)
    values = np.fromiter(facts.label_counts.keys(), dtype=np.int64, count=len(facts.label_counts))
    pixels = np.fromiter(facts.label_counts.values(), dtype=np.int64, count=len(facts.label_counts))
    mapped = lut[values]
    if (mapped < 0).any():
        bad = sorted(values[mapped < 0].tolist())
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        return (f"{sample.label}: label values {shown} are neither classes nor ignored in dataset "
                f"'{spec.name}' (allowed: {spec.allowed_text()})"), None
    return None, np.bincount(mapped, weights=pixels, minlength=256).astype(np.int64)


def check_sample(spec: DatasetSpec, sample: Sample) -> tuple[str | None, np.ndarray | None]:
    """(problem, pixels per mapped id) for one sample, decoding it fully; see :func:`check_samples`."""
    return judge_sample(spec, sample, inspect_sample(sample))


# --------------------------------------------------------------------------- the pre-training check

#: Where decoded-sample facts are cached: ``$RTSEGC_DATA_CACHE`` (a folder, or ``off``), else
#: ``$XDG_CACHE_HOME/rtsegc/data-check`` (``~/.cache/rtsegc/data-check``).
CACHE_ENV = "RTSEGC_DATA_CACHE"


def _cache_file(root: Path) -> Path | None:
    import hashlib
    import os

    setting = os.environ.get(CACHE_ENV)
    if setting == "off":
        return None
    base = Path(setting) if setting else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "rtsegc" / "data-check"
    return base / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20] + ".json")


def _stamp(path: Path | None) -> list[int] | None:
    if path is None:
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_cache(path: Path | None) -> dict:
    import json

    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("version") == 1 else {}
    except (OSError, ValueError):
        return {}  # a damaged cache is only a slower check


def _write_cache(path: Path | None, entries: dict) -> None:
    import json
    import os
    import tempfile

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".check.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "samples": entries}, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache folder: the next check decodes again


def check_samples(spec: DatasetSpec, samples: Sequence[Sample], root: str | Path, *,
                  workers: int | None = None) -> list[tuple[str | None, np.ndarray | None]]:
    """:func:`judge_sample` for every sample, each decoded fully once per change of its files.

    Decoding runs in a thread pool (Pillow releases the GIL while it inflates PNG and decodes JPEG data);
    results are cached per image/label pair, keyed on both files' size and modification time, so a
    second run over unchanged data reads only the cache. The cached facts do not depend on the dataset
    file, so one cache serves every ``--dataset`` over the same folder.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    cache_path = _cache_file(Path(root))
    cached = _read_cache(cache_path).get("samples", {})
    keys, stamps, facts = [], [], [None] * len(samples)
    todo = []
    for i, sample in enumerate(samples):
        key = f"{sample.image}|{sample.label}"
        try:
            stamp = [_stamp(sample.image), _stamp(sample.label)]
        except OSError:
            stamp = None
        keys.append(key)
        stamps.append(stamp)
        entry = cached.get(key)
        if stamp is not None and isinstance(entry, dict) and entry.get("stamp") == stamp:
            try:
                facts[i] = SampleFacts.from_json(entry["facts"])
                continue
            except (KeyError, TypeError, ValueError):
                pass
        todo.append(i)
    if todo:
        if workers is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            workers = max(1, min(8, cpus))
        if workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rtsegc-check") as pool:
                for i, found in zip(todo, pool.map(lambda j: inspect_sample(samples[j]), todo)):
                    facts[i] = found
        else:
            for i in todo:
                facts[i] = inspect_sample(samples[i])
        entries = dict(cached)
        for i in todo:
            if stamps[i] is not None:
                entries[keys[i]] = {"stamp": stamps[i], "facts": facts[i].to_json()}
        _write_cache(cache_path, entries)
    return [judge_sample(spec, sample, f) for sample, f in zip(samples, facts)]


def write_tiny_cityscapes(root: str | Path, *, size: tuple[int, int] = (32, 64), seed: int = 0,
                          splits: Mapping[str, int] | None = None, cities: Sequence[str] = ("aachen", "bonn"),
                          instances: bool = True) -> Path:
    """A seeded, tiny tree in the official Cityscapes layout, for tests.

    Each image is road (id 7) at the bottom, sky (23) at the top, building (11) between, and one or two
    cars (26) and persons (24) as rectangles, coloured with the classes' palette plus noise; a few pixels
    are ego vehicle (1), which maps to ignore. ``_instanceIds.png`` stores id*1000 + k for the cars and
    persons (16-bit, as the official files), the label id elsewhere.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    spec = load_dataset_spec("cityscapes")
    colors = {7: spec.colors[0], 11: spec.colors[2], 23: spec.colors[10], 26: spec.colors[13],
              24: spec.colors[11], 1: (0, 0, 0)}
    root = Path(root)
    h, w = size
    for split, count in (splits or {"train": 4, "val": 2}).items():
        for i in range(count):
            city = cities[i % len(cities)]
            ids = np.full((h, w), 11, dtype=np.uint8)
            ids[: h // 4] = 23
            ids[h * 2 // 3:] = 7
            ids[-1, : w // 8] = 1
            inst = ids.astype(np.int32)
            for cls in (26, 24):
                for k in range(int(rng.integers(1, 3))):
                    y0, x0 = int(rng.integers(h // 3, h - h // 6)), int(rng.integers(0, w - w // 6))
                    y1 = min(h, y0 + int(rng.integers(2, h // 4 + 3)))
                    x1 = min(w, x0 + int(rng.integers(3, w // 5 + 4)))
                    ids[y0:y1, x0:x1] = cls
                    inst[y0:y1, x0:x1] = cls * 1000 + k
            rgb = np.zeros((h, w, 3), dtype=np.float32)
            for label_id, colour in colors.items():
                rgb[ids == label_id] = colour
            rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
            stem = f"{city}_{i:06d}_000019"
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            if instances:
                Image.fromarray(inst.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
    return root


def iter_problems(spec: DatasetSpec, samples: Sequence[Sample]) -> Iterator[tuple[int, str]]:
    for i, s in enumerate(samples):
        problem, _ = check_sample(spec, s)
        if problem:
            yield i, problem
