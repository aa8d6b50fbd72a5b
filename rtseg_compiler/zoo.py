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
from functools import cache
from pathlib import Path

__all__ = ["FOLDER_OF_KIND", "list_models", "resolve_spec", "zoo_file", "zoo_root"]

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


def list_models(pattern: str = "*") -> list[str]:
    """Names of the zoo's models matching a shell ``pattern`` (``"skipnet_*"``), sorted.

    ``models/`` gives bare names; the model files of ``baselines/`` and ``paper/`` (the
    paper-exact variants) are listed as ``folder/name``. Each name is accepted by
    :func:`rtseg_compiler.create_model` and wherever ``rtsegc`` takes a model path.
    """
    root = zoo_root()
    if root is None:
        return []
    names = [p.stem for p in (root / "models").glob("*.yaml")]
    for folder in _OTHER_MODEL_FOLDERS:
        for path in (root / folder).glob("*.yaml"):
            if _is_model_file(path):
                names.append(f"{folder}/{path.stem}")
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def _is_model_file(path: Path) -> bool:
    """True if the file's top-level ``kind:`` is ``model`` (read line by line: no YAML parse)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("kind:"):
                return line.partition(":")[2].split("#")[0].strip() == "model"
    return False
