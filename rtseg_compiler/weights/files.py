"""The one weights reader: a state dict (name -> tensor) from a torch or ``.safetensors`` file, or a mapping.

Formats are told apart by their first bytes, not by the file name, because names lie (a
``.pth`` renamed ``.bin``, a safetensors file saved as ``.pt``):

* ``PK\\x03\\x04`` is the zip container ``torch.save`` has written since torch 1.6;
* ``\\x80`` is a bare pickle (the legacy ``torch.save`` format, and RTSeg's own ``.pkl`` files);
* an 8-byte little-endian header length followed by ``{`` is safetensors
  (https://github.com/huggingface/safetensors, "Format").

Torch files load with ``weights_only=True``: a weights file is data, and unpickling arbitrary
objects would run code. Checkpoints nest their weights: timm's training script writes
``state_dict`` (and ``state_dict_ema``), this project's runtime writes ``model``, many others
``state_dict``; the first of ``state_dict``, ``model``, ``state_dict_ema`` that holds a mapping is
taken. Every failure is a :class:`~rtseg_compiler.weights.report.WeightsError` naming the file, what
it turned out to be and what was expected, never a pickle or zip traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .report import WeightsError

__all__ = ["NESTED_ENTRIES", "read_state_dict", "source_name"]

#: Checkpoint entries that hold the weights, in the order they are tried.
NESTED_ENTRIES = ("state_dict", "model", "state_dict_ema")

_EXPECTED = ("expected a file written by torch.save (.pt/.pth) or a .safetensors file, holding a "
             "state dict (name -> tensor) or a checkpoint with a 'state_dict', 'model' or "
             "'state_dict_ema' entry")

#: Leading bytes of files that users hand over by mistake, and what to call them.
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
               (b"\x1f\x8b", "a gzip archive"),
               (b"\x08", "an ONNX model (a protobuf)"), (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"))


def source_name(source: Any) -> str:
    """How a report names a weights source: the path as given, or ``state dict`` for a mapping."""
    return str(source) if isinstance(source, (str, Path)) else "state dict"


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a file path or a mapping (a bare state dict or a checkpoint that nests one)."""
    if isinstance(source, Mapping):
        return _state_of(source, "state dict")
    if not isinstance(source, (str, Path)):
        raise WeightsError(f"weights: expected a file path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        raise WeightsError(f"{source}: is a folder; {_EXPECTED}")
    if not path.is_file():
        raise WeightsError(f"{source}: no such weights file")
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise WeightsError(f"{source}: cannot be opened ({exc.strerror or exc})") from None
    if not head:
        raise WeightsError(f"{source}: the file is empty (0 bytes); {_EXPECTED}")
    if _is_safetensors(head):
        return _state_of(_read_safetensors(path, source), str(source))
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return _state_of(_read_torch(path, source, head), str(source))
    raise WeightsError(f"{source}: not a weights file ({_describe(head)}); {_EXPECTED}")


def _is_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{"


def _describe(head: bytes) -> str:
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return f"it starts like {what}"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "it is text"


def _read_safetensors(path: Path, name: Any) -> Mapping[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError(f"{name}: reading a safetensors file needs the safetensors package "
                           "(pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad headers
        raise WeightsError(f"{name}: a safetensors file that cannot be read, truncated or corrupt "
                           f"({_first_line(exc)})") from None


def _read_torch(path: Path, name: Any, head: bytes) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises pickle, zip, EOF and runtime errors
        text = _first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise WeightsError(f"{name}: the torch file holds objects other than tensors and plain "
                               "containers, which weights_only=True refuses to load (it would run code "
                               f"from the file); {_EXPECTED}") from None
        kind = "torch zip file" if head.startswith(b"PK") else "pickle file"
        raise WeightsError(f"{name}: a {kind} that cannot be read, truncated or corrupt "
                           f"({type(exc).__name__}: {text})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _state_of(obj: Any, name: str) -> dict[str, torch.Tensor]:
    for entry in NESTED_ENTRIES:
        if isinstance(obj, Mapping) and isinstance(obj.get(entry), Mapping):
            obj = obj[entry]
            break
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in obj.items()):
        return dict(obj)
    if not isinstance(obj, Mapping):
        found = f"it holds a {type(obj).__name__}"
    elif not obj:
        found = "it holds an empty mapping"
    else:
        odd = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
        shown = ", ".join(repr(k) for k in odd[:4]) + (", ..." if len(odd) > 4 else "")
        found = f"its entries {shown} are not tensors"
    raise WeightsError(f"{name}: expected a state dict (name -> tensor), or a checkpoint with a "
                       f"'state_dict', 'model' or 'state_dict_ema' entry; {found}")
