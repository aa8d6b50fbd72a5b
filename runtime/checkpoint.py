"""Checkpoints that stand alone: atomic writes, and the spec texts that rebuild the network.

Atomic: :func:`atomic_save` writes ``NAME.tmp`` in the same folder, flushes it to disk, then
``os.replace``-s it over ``NAME``. A rename within one file system is atomic on POSIX, so a SIGKILL at
any moment leaves either the previous complete file or the new complete one, never a truncated one
(tests/torch/test_runtime_data.py kills a writer with a real SIGKILL between the two steps).
``RTSEG_CHECKPOINT_PAUSE=SECONDS`` makes the writer sleep after the temporary file is complete and
before the rename, when it replaces an existing checkpoint (the case a crash could damage), so that test
can kill it at a known point; nothing else reads it.

Self-contained: ``specs`` holds the texts of the model, encoder and meta files (and the dataset file),
so ``rtsegc eval --checkpoint`` and ``rtsegc predict`` work from any directory, with no spec files.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["PAUSE_ENV", "atomic_save", "embed_specs", "restore_specs"]

PAUSE_ENV = "RTSEG_CHECKPOINT_PAUSE"


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    pause = os.environ.get(PAUSE_ENV)
    if pause and path.exists():
        print(f"checkpoint: {tmp} written, pausing {pause} s before the rename", flush=True)
        time.sleep(float(pause))
    os.replace(tmp, path)


def _text(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def embed_specs(model: str | None, encoder: str | None, meta: str | None,
                dataset_text: str | None = None) -> dict[str, dict[str, str]]:
    """{"model"|"encoder"|"meta"|"dataset": {"path": as given, "text": ...}} for what was used.

    A model file's encoder and meta references are resolved against the model file, as the compiler does.
    """
    from rtseg_compiler.spec.load import load_spec_file
    from rtseg_compiler.zoo import resolve_spec

    model = None if model is None else resolve_spec(model, "model")
    encoder = None if encoder is None else resolve_spec(encoder, "encoder")
    meta = None if meta is None else resolve_spec(meta, "meta")
    out: dict[str, dict[str, str]] = {}
    if model is not None:
        out["model"] = {"path": str(model), "text": _text(model)}
        doc = load_spec_file(model)
        if doc.get("kind") == "model":
            for key in ("encoder", "meta"):
                ref = Path(doc[key])
                resolved = ref if ref.is_absolute() else Path(model).parent / ref
                out[key] = {"path": str(resolved), "text": _text(resolved)}
    else:
        for key, value in (("encoder", encoder), ("meta", meta)):
            if value is not None:
                out[key] = {"path": str(value), "text": _text(value)}
    if dataset_text is not None:
        out["dataset"] = {"path": "", "text": dataset_text}
    return out


def restore_specs(specs: Mapping[str, Mapping[str, str]], folder: str | Path) -> dict[str, str | None]:
    """Write the embedded spec texts under ``folder``; returns the model/encoder/meta paths to compile.

    A model file is rewritten to point at the restored encoder and meta (its other keys unchanged;
    YAML comments are lost, which the compiler does not read).
    """
    import yaml

    folder = Path(folder)
    paths: dict[str, str | None] = {"model": None, "encoder": None, "meta": None}
    for key in ("encoder", "meta"):
        if key in specs:
            target = folder / f"{key}_{Path(specs[key]['path']).name or key + '.yaml'}"
            target.write_text(specs[key]["text"], encoding="utf-8")
            paths[key] = str(target)
    if "model" in specs:
        doc = yaml.safe_load(specs["model"]["text"])
        target = folder / Path(specs["model"]["path"]).name
        if isinstance(doc, dict) and doc.get("kind") == "model":
            doc["encoder"], doc["meta"] = Path(paths["encoder"]).name, Path(paths["meta"]).name
            doc.setdefault("name", Path(specs["model"]["path"]).stem)
            target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        else:
            target.write_text(specs["model"]["text"], encoding="utf-8")
        paths = {"model": str(target), "encoder": None, "meta": None}
    return paths


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="rtseg_specs_")
