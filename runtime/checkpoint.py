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
import time
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["PAUSE_ENV", "atomic_save", "embed_specs", "spec_documents"]

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


def embed_specs(model: str | None, encoder: str | None, meta: str | None,
                dataset_text: str | None = None) -> dict[str, dict[str, str]]:
    """{"model"|"encoder"|"meta"|"dataset": {"path": name, "text": ...}} for what was used.

    The compiler resolves a model's encoder and meta references (``rtseg_compiler.spec.sources``), so
    the texts are the ones it builds from; :func:`spec_documents` turns them back into its input.
    """
    from rtseg_compiler.spec.sources import read_sources

    sources = read_sources(model, encoder=encoder, meta=meta)
    out = {kind: {"path": source.name, "text": source.text} for kind, source in sources.items()}
    if dataset_text is not None:
        out["dataset"] = {"path": "", "text": dataset_text}
    return out


def spec_documents(specs: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The compiler's arguments that rebuild a network from a checkpoint's embedded texts, with no files:
    ``{"model"|"encoder"|"meta": SpecSource or None, "documents": {name: text}}``.

    A model is rebuilt with its own encoder and meta texts, wherever its references pointed when it
    was trained (``bind_model_parts``).
    """
    from rtseg_compiler import SpecSource
    from rtseg_compiler.spec.sources import bind_model_parts

    given = {kind: SpecSource(str(specs[kind].get("path") or f"<checkpoint {kind}>"), specs[kind]["text"])
             for kind in ("model", "encoder", "meta") if kind in specs}
    if "model" in given:
        documents = {}
        if "encoder" in given and "meta" in given:
            documents = bind_model_parts(given["model"], given["encoder"], given["meta"])
        return {"model": given["model"], "encoder": None, "meta": None, "documents": documents}
    return {"model": None, "encoder": given.get("encoder"), "meta": given.get("meta"), "documents": {}}
