"""The one strict loader: source tensors placed on module keys, checked, reported, then copied.

:func:`fit` is the comparison every weight route shares. Its input is a list of placements
``(source key, module key, tensor)``, which a caller builds by its own rule: the identity for a
file in the module's own layout, a prefix rename for the runtime's ``--pretrained FILE``, or an
encoder spec's declared layout (:mod:`.importer`). It returns the tensors to copy and the
:class:`~.report.WeightsReport`. :func:`load_weights` is the plain door: read a file or mapping,
place keys by ``rename`` and ``prefix``, fit, and copy only when everything fits (strict), so a
module is never left half-loaded.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .files import read_state_dict, source_name
from .report import WeightsError, WeightsReport

__all__ = ["copy_into", "fit", "load_weights", "renamed"]

#: A BatchNorm buffer that only matters with momentum=None; checkpoints often omit it.
COUNTER = "num_batches_tracked"
#: How close (difflib ratio) a key must be to be offered as "did you mean".
_CUTOFF = 0.6


def _closest(word: str, pool: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, pool, n=1, cutoff=_CUTOFF)
    return close[0] if close else None


def fit(placed: Iterable[tuple[str, str, torch.Tensor]], wanted: Mapping[str, torch.Tensor], *,
        source: str, unused: Sequence[str] = (), unused_reason: str = "",
        reshaped: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], WeightsReport]:
    """(module key -> tensor to copy, report) for placements onto the module keys ``wanted``.

    A placement whose module key is not wanted, or is placed twice, is unexpected; one whose shape
    differs is mis-shaped; a wanted key nothing filled is missing, except BatchNorm counters, which
    keep their values. Each missing key names the closest unexpected source key and vice versa.
    """
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[tuple[str, str]] = []
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = []
    for key, new, value in placed:
        if new not in wanted or new in mapped:
            unexpected.append((key, new))
        elif value.shape != wanted[new].shape:
            mismatched.append((key, new, tuple(value.shape), tuple(wanted[new].shape)))
        else:
            mapped[new] = value
    bad = {m[1] for m in mismatched}
    unfilled = [k for k in wanted if k not in mapped and k not in bad]
    counters = sorted(k for k in unfilled if k.endswith("." + COUNTER))
    missing = sorted(k for k in unfilled if not k.endswith("." + COUNTER))
    hints: dict[str, str] = {}
    for source_key, new in unexpected:
        close = _closest(new, missing)
        if close:
            hints[source_key] = close
    placed_at = [m for _, m in unexpected]
    for key in missing:
        close = _closest(key, placed_at)
        origin = next((s for s, m in unexpected if m == close), None) if close else None
        if origin is not None and origin != close:  # a renamed key: name its source form
            hints[key] = origin
    report = WeightsReport(source, tuple(sorted(mapped)), tuple(missing), tuple(unexpected),
                           tuple(mismatched), tuple(unused), unused_reason, tuple(counters),
                           tuple(reshaped), hints)
    return mapped, report


def copy_into(module: nn.Module, mapped: Mapping[str, torch.Tensor]) -> None:
    """Copy ``mapped`` into ``module`` in place (state_dict tensors share the parameters' storage)."""
    target = module.state_dict()
    with torch.no_grad():
        for key, value in mapped.items():
            target[key].copy_(value)


def renamed(key: str, rename: Sequence[tuple[str, str]]) -> str:
    """``key`` with the first matching ``(old prefix, new prefix)`` of ``rename`` applied."""
    for old, new in rename:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_weights(module: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *, prefix: str = "",
                 rename: Sequence[tuple[str, str]] = (), strict: bool = True) -> WeightsReport:
    """Load ``source`` (a file of any supported format, or a state dict) into ``module`` by key.

    ``rename`` rewrites source-key prefixes first (``[("backbone.", "encoder.")]``); then only keys
    under ``prefix`` take part on both sides (``"encoder."`` loads an encoder and leaves the head
    as initialised; source keys outside it are listed as not used). Strict (the default):
    :class:`WeightsError` and nothing copied unless everything under the prefix fits. Not strict:
    the tensors that fit are copied and the report says what did not.
    """
    name = source_name(source)
    state = read_state_dict(source)
    wanted = {k: v for k, v in module.state_dict().items() if k.startswith(prefix)}
    placed, outside = [], []
    for key, value in state.items():
        new = renamed(key, rename)
        if new.startswith(prefix):
            placed.append((key, new, value))
        else:
            outside.append(key)
    mapped, report = fit(placed, wanted, source=name, unused=outside,
                         unused_reason=f"outside '{prefix}'" if outside else "")
    if strict and not report.ok:
        raise WeightsError(f"{name}: the weights do not fit the module", report)
    copy_into(module, mapped)
    return report
