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

__all__ = ["FOLDER_OF_KIND", "KINDS", "ZooCost", "ZooEntry", "list_models", "no_match_message",
           "render_zoo", "resolve_spec", "zoo_cost", "zoo_entries", "zoo_file", "zoo_root"]

#: The zoo folder searched first for a bare name, by the kind of spec the caller expects.
FOLDER_OF_KIND = {"model": "models", "encoder": "encoders", "meta": "meta", "dataset": "datasets"}
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

    ``kind`` is ``"model"`` (default), ``"encoder"``, ``"meta"`` or ``"dataset"``. A kind's own
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


@dataclass(frozen=True)
class ZooCost:
    """What ``rtsegc models -v`` prints beside a name: size and cost at the spec's own input.

    A model or an encoder has parameters and MACs at its ``input:`` (an encoder without any head,
    at its ImageNet size); a meta has none of its own, since its channels come from the encoder it
    is paired with; a dataset has classes instead.
    """

    params: int | None = None
    macs: int | None = None
    input: tuple[int, int] | None = None
    classes: int | None = None


def zoo_cost(entry: ZooEntry) -> ZooCost:
    """Parameters and MACs of a model or encoder at its default input; classes of a dataset."""
    if entry.kind == "meta":
        return ZooCost()
    if entry.kind == "dataset":
        from .spec.load import load_spec_text

        doc = load_spec_text(entry.path.read_text(encoding="utf-8"), str(entry.path))
        return ZooCost(classes=len(doc.get("classes") or ()))
    from .pipeline import analyze

    analysis = analyze(entry.path)
    return ZooCost(params=analysis.audit.params, macs=analysis.audit.macs, input=analysis.input_size)


def render_zoo(pattern: str = "*", kind: str = "model", verbose: bool = False) -> str:
    """The text of ``rtsegc models``: one line per spec, name then its one-line description;
    with ``verbose``, parameters and GMACs at the spec's default input (see :class:`ZooCost`)."""
    entries = zoo_entries(pattern, kind)
    if not entries:
        return ""
    width = max(len(e.name) for e in entries)
    lines = []
    if verbose and kind in ("model", "encoder"):
        lines.append(f"{'name':<{width}}  {'input':>9}  {'params (M)':>10}  {'GMACs':>7}  description")
    elif verbose and kind == "dataset":
        lines.append(f"{'name':<{width}}  {'classes':>7}  description")
    for entry in entries:
        doc = entry.doc or "(no doc: line in the file)"
        if not verbose or kind == "meta":
            lines.append(f"{entry.name:<{width}}  {doc}")
            continue
        cost = zoo_cost(entry)
        if kind == "dataset":
            lines.append(f"{entry.name:<{width}}  {cost.classes:>7}  {doc}")
        else:
            size = f"{cost.input[0]}x{cost.input[1]}"
            lines.append(f"{entry.name:<{width}}  {size:>9}  {cost.params / 1e6:>10.3f}  "
                         f"{cost.macs / 1e9:>7.2f}  {doc}")
    if verbose and kind == "encoder":
        lines.append("\nencoders: the encoder alone (no head) at its own input; "
                     "'rtsegc flops ENCODER' counts it")
    elif verbose and kind == "meta":
        lines.append("\nmetas: parameters and MACs depend on the encoder a meta is paired with "
                     "('rtsegc flops --encoder E --meta M')")
    return "\n".join(lines)
