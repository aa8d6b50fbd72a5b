"""Where spec documents come from: files, zoo names, or texts held in memory.

The compiler reads a model, an encoder and a meta document. Each may be given as

* a path (``specs/models/skipnet_mobilenet_v1.yaml``) or a zoo name (``skipnet_mobilenet_v1``,
  resolved by ``zoo.py``);
* a :class:`SpecSource`, a text with the file name its diagnostics should carry;
* a name listed in a ``documents`` mapping (name -> text), so a whole set of files can be handed
  over at once, as a checkpoint does with the texts it embeds.

A model file names its encoder and meta (``encoder: ../encoders/resnet18.yaml`` or ``encoder:
resnet18``). :func:`model_parts` is the one place that turns those references into documents: a
path relative to the model file first, then a zoo name. Every caller (the pipeline, parameter
routing in ``create_model``, the runtime's checkpoints) goes through it, so they cannot disagree.

A :class:`SpecReader` serves one compilation: it looks names up in its ``documents`` before the disk
and keeps every text it read, so the built module can carry the exact texts it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

from ..diagnostics import SpecError
from ..zoo import resolve_spec, zoo_file
from .load import load_spec_text, read_spec_text

__all__ = ["SpecRef", "SpecReader", "SpecSource", "bind_model_parts", "model_parts", "read_sources"]

#: The kinds of document a network is built from, in the order a model names them.
PARTS = ("encoder", "meta")


@dataclass(frozen=True)
class SpecSource:
    """A spec document given as text; ``name`` is the file name its diagnostics point at."""

    name: str
    text: str

    def __str__(self) -> str:
        return self.name


SpecRef = Union[str, Path, SpecSource]


def _key(name: str | Path) -> str:
    """Names compare after normalisation: ``specs/models/../encoders/x.yaml`` is ``specs/encoders/x.yaml``."""
    return os.path.normpath(str(name))


class SpecReader:
    """Reads the documents of one compilation: ``documents`` (name -> text) first, then files and the zoo.

    ``texts`` records every document read, by the name it was read under.
    """

    def __init__(self, documents: Mapping[str, str] | None = None) -> None:
        self._documents = {_key(name): (str(name), text) for name, text in (documents or {}).items()}
        self.texts: dict[str, str] = {}

    def has(self, name: str | Path) -> bool:
        """Whether ``name`` is a held document or an existing file."""
        return _key(name) in self._documents or Path(str(name)).is_file()

    def resolve(self, ref: SpecRef, kind: str) -> SpecRef:
        """A held document as a :class:`SpecSource`, else the path or zoo file ``ref`` names."""
        if isinstance(ref, SpecSource):
            return ref
        held = self._documents.get(_key(ref))
        if held is not None:
            return SpecSource(*held)
        return resolve_spec(ref, kind)

    def load(self, ref: SpecRef) -> Any:
        """The located document of ``ref`` (already resolved); raises a located SpecError."""
        if isinstance(ref, SpecSource):
            name, text = ref.name, ref.text
        else:
            held = self._documents.get(_key(ref))
            name, text = held if held is not None else (str(ref), read_spec_text(ref))
        doc = load_spec_text(text, name)
        self.texts[name] = text
        return doc

    def source(self, name: str) -> SpecSource:
        """The document read under ``name``, as text."""
        return SpecSource(name, self.texts[name])


def model_parts(model: SpecRef, doc: Mapping[str, Any],
                reader: SpecReader | None = None) -> dict[str, SpecRef]:
    """``{"encoder": ref, "meta": ref}`` for the documents a model file names.

    A reference is a path relative to the model file's folder (or absolute); if nothing is there and
    it is a zoo name (``encoder: mobilenet_v1``), the zoo's file. Otherwise the relative path comes
    back, so the "no such file" error names where the compiler looked.
    """
    reader = reader or SpecReader()
    folder = Path(str(model)).parent
    parts: dict[str, SpecRef] = {}
    for kind in PARTS:
        written = str(doc[kind])
        candidate = Path(written) if Path(written).is_absolute() else folder / written
        if reader.has(candidate):
            parts[kind] = reader.resolve(candidate, kind)
            continue
        in_zoo = zoo_file(written, kind)
        parts[kind] = reader.resolve(in_zoo, kind) if in_zoo else candidate
    return parts


def read_sources(model: SpecRef | None = None, *, encoder: SpecRef | None = None,
                 meta: SpecRef | None = None,
                 documents: Mapping[str, str] | None = None) -> dict[str, SpecSource]:
    """``{"model"|"encoder"|"meta": SpecSource}``: the texts a model (or encoder + meta) is built from.

    Resolves names as the compiler does (:func:`model_parts`); raises SpecError for a document that
    cannot be read.
    """
    reader = SpecReader(documents)
    out: dict[str, SpecSource] = {}
    if model is not None:
        ref = reader.resolve(model, "model")
        doc = reader.load(ref)
        out["model"] = reader.source(str(ref))
        if isinstance(doc, Mapping) and doc.get("kind") == "model":
            for kind, part in model_parts(ref, doc, reader).items():
                reader.load(part)
                out[kind] = reader.source(str(part))
        return out
    for kind, given in (("encoder", encoder), ("meta", meta)):
        if given is not None:
            ref = reader.resolve(given, kind)
            reader.load(ref)
            out[kind] = reader.source(str(ref))
    return out


def bind_model_parts(model: SpecSource, encoder: SpecSource, meta: SpecSource) -> dict[str, str]:
    """Documents under which ``model`` reads ``encoder`` and ``meta``, wherever its references point.

    For a model saved elsewhere (a checkpoint's embedded texts): its ``encoder:``/``meta:`` references
    are resolved here, by :func:`model_parts`, and those names are bound to the given texts.
    """
    try:
        doc = load_spec_text(model.text, model.name)
    except SpecError:
        return {model.name: model.text}
    documents = {model.name: model.text}
    if isinstance(doc, Mapping) and doc.get("kind") == "model":
        for kind, part in model_parts(model.name, doc).items():
            given = encoder if kind == "encoder" else meta
            documents[str(part)] = given.text
    return documents
