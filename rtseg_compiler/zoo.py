"""The model zoo: the spec files under ``specs/``, found by name from a source checkout or a wheel.

A zoo name is a spec's path under ``specs/`` without ``.yaml``, where the folder may be left out
for the folder the caller expects: ``skipnet_mobilenet_v1`` is ``models/skipnet_mobilenet_v1.yaml``,
``--encoder resnet18`` is ``encoders/resnet18.yaml``, ``--meta unet`` is ``meta/unet.yaml``, and
``paper/unet_mobilenet_v1`` or ``baselines/enet`` name the others. A file that exists always wins
over a zoo name, so a user's own ``resnet18`` file in the working directory is never shadowed.

Where the zoo lives: in a wheel, ``specs/`` ships as the data package ``rtseg_compiler/_zoo``
(setup.py maps it); in a source checkout or an editable install it is ``specs/`` beside the
package. The model files refer to their encoder and meta by relative path
(``../encoders/mobilenet_v1.yaml``), so the folder layout is the same in both.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["FOLDER_OF_KIND", "KINDS", "ZooEntry", "list_models", "no_match_message", "resolve_spec",
           "zoo_entries", "zoo_file", "zoo_root"]

#: The zoo folder searched first for a bare name, by the kind of spec the caller expects.
FOLDER_OF_KIND = {"model": "models", "encoder": "encoders", "meta": "meta", "dataset": "datasets",
                  "study": "studies"}
#: Folders holding model files besides ``models/``; their models are listed as ``folder/name``.
_OTHER_MODEL_FOLDERS = ("baselines", "paper")


@cache
def zoo_root() -> Path | None:
    """The folder holding the zoo's ``models/``, ``encoders/`` ...; None if neither layout has one."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_zoo", package.parent / "specs"):
        if (candidate / "models").is_dir():
            return candidate
    return None


def _looks_like_name(ref: str) -> bool:
    """'skipnet_resnet18' or 'paper/unet_mobilenet_v1': no suffix, at most one folder, not absolute."""
    parts = ref.split("/")
    return (not ref.endswith((".yaml", ".yml")) and not ref.startswith(("/", "."))
            and len(parts) <= 2 and all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts))


def resolve_spec(ref: str | Path, kind: str = "model") -> str | Path:
    """``ref`` if it names an existing file (or is not a zoo name); else the zoo file it names.

    Unknown names come back unchanged, so the caller's "no such file" error names what the user
    typed; :func:`zoo_hint` says what the zoo offers.
    """
    if Path(str(ref)).exists():
        return ref
    return zoo_file(ref, kind) or ref


def zoo_file(ref: str | Path, kind: str = "model") -> str | None:
    """The zoo file a name stands for (``resnet18`` as an encoder: ``encoders/resnet18.yaml``), or None.

    Looks only in the zoo: a name is searched in the folder of ``kind`` first, then at the top.
    """
    text = str(ref)
    root = zoo_root()
    if root is None or not _looks_like_name(text):
        return None
    folders = ([FOLDER_OF_KIND[kind]] if kind in FOLDER_OF_KIND else []) + [""]
    if kind == "model":  # a model argument also takes an encoder on its own (rtsegc flops ENCODER)
        folders.insert(1, "encoders")
    for folder in folders:
        candidate = (root / folder / f"{text}.yaml") if folder else (root / f"{text}.yaml")
        if candidate.is_file():
            return str(candidate)
    return None


def zoo_hint(ref: str | Path) -> str | None:
    """For a name that is neither a file nor in the zoo: how to see what the zoo has."""
    text = str(ref)
    if Path(text).exists() or not _looks_like_name(text) or zoo_root() is None:
        return None
    close = [m for m in list_models() if text in m or m in text][:5]
    known = f"did you mean {', '.join(close)}? " if close else ""
    return f"{known}nor is it a zoo name: 'rtsegc models' lists them"


KINDS = tuple(FOLDER_OF_KIND)


@dataclass(frozen=True)
class ZooEntry:
    """One shipped spec: its zoo ``name``, its ``kind``, its file and its one-line ``doc``."""

    name: str
    kind: str
    path: Path
    doc: str


def list_models(pattern: str = "*", kind: str = "model") -> list[str]:
    """Names of the zoo's specs of one ``kind`` matching a shell ``pattern`` (``"skipnet_*"``), sorted.

    ``kind`` is ``"model"`` (default), ``"encoder"``, ``"meta"``, ``"dataset"`` or ``"study"``. A kind's own
    folder (``models/``, ``encoders/``, ``meta/``, ``datasets/``) gives bare names; the files of
    that kind in ``baselines/`` and ``paper/`` are listed as ``folder/name`` (``baselines/enet``,
    ``baselines/enet_encoder``). Each name is accepted where a spec of its kind is: models by
    :func:`rtseg_compiler.create_model` and every ``MODEL`` argument, encoders by
    ``create_model(name, features_only=True)`` and ``--encoder``, metas by ``--meta``, datasets by
    ``--dataset``.
    """
    return [entry.name for entry in zoo_entries(pattern, kind)]


def zoo_entries(pattern: str = "*", kind: str = "model") -> list[ZooEntry]:
    """The zoo's specs of one ``kind`` matching ``pattern``, sorted by name (see :func:`list_models`)."""
    if kind not in FOLDER_OF_KIND:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    root = zoo_root()
    if root is None:
        return []
    entries = []
    own = root / FOLDER_OF_KIND[kind]
    candidates = [(p.stem, p) for p in own.glob("*.yaml")] if own.is_dir() else []
    for folder in _OTHER_MODEL_FOLDERS:
        candidates += [(f"{folder}/{p.stem}", p) for p in (root / folder).glob("*.yaml")]
    for name, path in candidates:
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        file_kind, doc = _head(path)
        if file_kind == kind:
            entries.append(ZooEntry(name, kind, path, doc))
    return sorted(entries, key=lambda e: e.name)


def no_match_message(pattern: str, kind: str = "model") -> str:
    """What ``rtsegc models PATTERN`` says when no spec of ``kind`` matches: the kinds that do."""
    others = {k: list_models(pattern, k) for k in KINDS if k != kind}
    found = [f"{k}s {', '.join(names[:4])}{', ...' if len(names) > 4 else ''} "
             f"(rtsegc models --kind {k} '{pattern}')" for k, names in others.items() if names]
    text = f"no zoo {kind} matches {pattern!r}"
    if found:
        return f"{text}; it matches " + "; ".join(found)
    return f"{text}; 'rtsegc models --kind {kind}' lists them all"


def _head(path: Path) -> tuple[str, str]:
    """A spec file's top-level ``kind:`` and ``doc:``, read line by line (no YAML parse: listing
    the whole zoo this way takes a few milliseconds)."""
    kind = doc = ""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            key, sep, value = line.partition(":")
            if not sep or key != key.strip():
                continue
            if key == "kind":
                kind = value.split("#")[0].strip()
            elif key == "doc":
                doc = value.strip().strip("\"'")
            if kind and doc:
                break
    return kind, doc
