"""Checkpoints that stand alone, verify themselves, and stay consistent as a set.

Atomic: :func:`atomic_save` writes a temporary file with a unique name (``mkstemp`` in the target's
folder, ``.NAME.XXXXXXXX.tmp``), flushes it to disk, then ``os.replace``-s it over ``NAME``. A rename within
one file system is atomic on POSIX, so a SIGKILL at any moment leaves either the previous complete file or
the new complete one. Unique names mean two writers never rename each other's half-written file. A write
that fails (a full disk, a file-size limit) removes its temporary file and raises; the previous checkpoint
stays. Temporary files of a killed writer are removed by :func:`remove_temporaries` when the next run
starts in that folder (after it holds the folder's lock, so never another live run's).

Verifiable: each checkpoint stores ``checksum``, a SHA-256 over its content (every tensor's dtype, shape
and bytes, every number and string, in key order). :func:`load_checkpoint` recomputes it, so flipped
bytes in a tensor, which ``torch.load`` reads silently, are reported as a corrupted file; a truncated or
empty file, or one that is not a runtime checkpoint (a plain state dict), is a :class:`RunError` naming
the file and what to give instead. Hashing costs about 0.7 ms per MB on one core (26 ms for the 40 MB
of a SkipNet-MobileNet checkpoint with its Adam state, measured on the shared 2-core machine), once per
evaluation: :func:`save_checkpoints` hashes and serialises the state once for both files.

Consistent as a set: :func:`save_checkpoints` writes ``best.pt`` (when the evaluation improved) *before*
``last.pt``. A kill between the two leaves ``best.pt`` newer than ``last.pt``, never older, so ``best.pt``
always holds the best mIoU ever evaluated; on ``--resume`` the run takes the best mIoU from both files
(:func:`best_miou_on_disk`), so a later, worse evaluation cannot replace it.

Test hooks (read by nothing else): ``RTSEG_CHECKPOINT_PAUSE=SECONDS`` sleeps after a temporary file is
complete and before its rename, when it replaces an existing checkpoint; ``RTSEG_CHECKPOINT_PAUSE_BETWEEN=
SECONDS`` sleeps after ``best.pt`` is renamed and before ``last.pt`` is replaced. Each prints one line
first, so a test can kill the writer at a known point.

Self-contained: ``specs`` holds the texts of the model, encoder and meta files (and the dataset file),
so ``rtsegc eval --checkpoint`` and ``rtsegc predict`` work from any directory, with no spec files.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import RunError, describe_os_error

__all__ = ["PAUSE_BETWEEN_ENV", "PAUSE_ENV", "atomic_save", "best_miou_on_disk", "content_digest",
           "embed_specs", "load_checkpoint", "remove_temporaries", "save_checkpoints", "spec_documents",
           "verify_weights_file"]

PAUSE_ENV = "RTSEG_CHECKPOINT_PAUSE"
PAUSE_BETWEEN_ENV = "RTSEG_CHECKPOINT_PAUSE_BETWEEN"
#: Keys every runtime checkpoint has; a file without them is a plain state dict or something else.
REQUIRED_KEYS = ("model", "model_args")
#: What ``--resume`` needs on top: the training state.
RESUME_KEYS = ("iter_num", "best_miou", "optimizer", "scaler", "rng")


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:  # str, int, float, bool, None: their repr is exact (floats round-trip)
        h.update(f"S{type(obj).__name__}:{obj!r};".encode())


def content_digest(obj: Any) -> str:
    """SHA-256 hex digest of a checkpoint's content (without its ``checksum`` entry)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != "checksum"} if isinstance(obj, Mapping) else obj)
    return h.hexdigest()


def _pause(env: str, message: str) -> None:
    pause = os.environ.get(env)
    if pause:
        print(f"checkpoint: {message}, pausing {pause} s", flush=True)
        time.sleep(float(pause))


def _serialise(obj: Any) -> io.BytesIO:
    """``obj`` as torch.save writes it, with its ``checksum`` added when it is a dict."""
    if isinstance(obj, dict):
        obj = {**obj, "checksum": {"sha256": content_digest(obj)}}
    buffer = io.BytesIO()  # serialised first, so a failed write is a plain OSError with its errno
    torch.save(obj, buffer)
    return buffer


def _write_atomic(buffer: io.BytesIO, path: Path) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            _pause(PAUSE_ENV, f"{tmp} written, before the rename to {path.name}")
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise RunError(describe_os_error(exc, f"writing {path.name}") +
                       (f"; the previous {path.name} is kept" if path.exists() else "")) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` (with its ``checksum`` when it is a dict) to ``path`` atomically; see the module doc.

    Raises :class:`RunError` naming the file when the write fails (disk full, read-only folder); the
    temporary file is removed and any previous ``path`` is untouched.
    """
    _write_atomic(_serialise(obj), Path(path))


def save_checkpoints(state: dict, folder: str | Path, improved: bool) -> None:
    """``best.pt`` first (when ``improved``), then ``last.pt``: a kill between them never leaves
    ``best.pt`` behind ``last.pt``'s record of the best. The state is hashed and serialised once."""
    folder = Path(folder)
    buffer = _serialise(state)
    if improved:
        _write_atomic(buffer, folder / "best.pt")
        if (folder / "last.pt").exists():
            _pause(PAUSE_BETWEEN_ENV, f"best.pt written at step {state.get('iter_num')}, before last.pt")
    _write_atomic(buffer, folder / "last.pt")


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary checkpoint files a killed writer left in ``folder``; returns what was removed.

    Call it only while holding the folder's run lock, so no live writer owns them.
    """
    removed = []
    for pattern in (".*.pt.*.tmp", "*.pt.tmp"):  # this module's names, and older runs' fixed names
        for p in Path(folder).glob(pattern):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _read(path: Path, map_location: Any) -> Any:
    """``torch.load`` of a file that must exist; RunError naming it when it is empty or does not load."""
    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint" + (" (it is a folder)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size == 0:
        raise RunError(f"{path}: empty file, not a checkpoint (a write that never finished?); use another "
                       "checkpoint, e.g. best.pt or last.pt of the same run")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zips, bad pickles and hostile ones raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ")[0][:160]  # torch's zip reader goes on about "an internal miniz error"
        raise RunError(f"{path}: unreadable checkpoint, truncated or corrupted ({size:,} bytes; "
                       f"{type(exc).__name__}: {first}); use another checkpoint of the run") from None


def _verify(path: Path, obj: Mapping) -> None:
    stored = obj.get("checksum")
    if isinstance(stored, Mapping) and stored.get("sha256") != content_digest(obj):
        raise RunError(f"{path}: corrupted checkpoint: its content does not match the SHA-256 stored in it "
                       "(flipped bytes on disk or in transfer); use another copy, or best.pt/last.pt")


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu", use: str = "",
                    require: tuple[str, ...] = ()) -> dict:
    """A runtime checkpoint, verified; :class:`RunError` naming the file for anything else.

    ``use`` completes the advice for a file that is a plain state dict (e.g. "give it to --weights");
    ``require`` names keys needed on top of :data:`REQUIRED_KEYS` (``--resume``: :data:`RESUME_KEYS`).
    """
    path = Path(path)
    obj = _read(path, map_location)
    if isinstance(obj, Mapping) and all(k in obj for k in REQUIRED_KEYS):
        missing = [k for k in require if k not in obj]
        if missing:
            raise RunError(f"{path}: a checkpoint without its training state ({', '.join(missing)} missing), "
                           "so training cannot continue from it; give it to eval/predict, or --pretrained")
    if not isinstance(obj, Mapping) or not all(k in obj for k in REQUIRED_KEYS):
        plain = isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
        what = "a plain state dict (name -> tensor)" if plain else f"a {type(obj).__name__}"
        raise RunError(f"{path}: {what}, not a runtime checkpoint (no {', '.join(REQUIRED_KEYS)})"
                       + (f"; {use}" if use else ""))
    _verify(path, obj)
    return dict(obj)


def verify_weights_file(path: str | Path) -> None:
    """Check a file given as weights (``--pretrained FILE``, ``--weights``): it loads, and when it is a
    runtime checkpoint its checksum matches. A plain state dict passes; the weight loader judges its keys."""
    path = Path(path)
    obj = _read(path, "cpu")
    if isinstance(obj, Mapping):
        _verify(path, obj)


def best_miou_on_disk(folder: str | Path) -> float | None:
    """The mIoU that ``folder/best.pt`` was evaluated at, or None when it is missing or unreadable."""
    path = Path(folder) / "best.pt"
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path)
    except RunError:
        return None
    return float(ckpt.get("best_miou", -1.0))  # best.pt is written when it improved: its own mIoU


def embed_specs(model: str | None, encoder: str | None, meta: str | None,
                dataset_text: str | None = None, *,
                sources: Mapping[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """{"model"|"encoder"|"meta"|"dataset": {"path": name, "text": ...}} for what was used.

    ``sources``: the texts a network was compiled from (``compiled.analysis.sources``, kind ->
    ``SpecSource``). Give them whenever the network exists: a file edited after the build would
    otherwise be read again here, and the checkpoint would embed a spec its weights do not come
    from. Without them the files are read now, resolved as the compiler resolves a model's
    encoder and meta references (``rtseg_compiler.spec.sources``); :func:`spec_documents` turns
    the result back into the compiler's input.
    """
    if sources is None:
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
