"""Load pretrained (encoder) weights from a local file onto a compiled module, key by key.

No weights ship with the project and nothing is downloaded: RTSeg's ImageNet encoders came as
``pretrained_weights/*.pkl`` files, and several of its issues (#8, #9, #15, ...) are about missing ones.
A user brings a state dict; this module maps its keys onto the compiled module's, whose names follow the
spec (``encoder.ds3.pw.weight``), and reports exactly what did not fit.

Mapping: ``rename`` rewrites source-key prefixes in order (``("features.", "encoder.")``); then only keys
under ``prefix`` (default ``"encoder."``, i.e. the encoder of a model) take part on both sides. Source keys
outside the prefix, such as an ImageNet classifier head, are *skipped* and listed, not errors. Strict
loading fails on any missing key, unexpected key or shape mismatch, and the error names them all, with
close matches for renamed keys.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from rtseg_compiler.weights.importer import key_section

__all__ = ["LoadReport", "WeightsError", "load_pretrained", "read_state_dict"]


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did; ``ok`` when every key under the prefix matched."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (key, source shape, target shape)
    skipped: tuple[str, ...]
    hints: Mapping[str, str] = field(default_factory=dict)  # unexpected key -> closest missing key

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def render(self, limit: int = 10) -> str:
        """Human-readable summary, at most ``limit`` keys per list."""
        lines = [f"loaded {len(self.loaded)} tensors; missing {len(self.missing)}, unexpected "
                 f"{len(self.unexpected)}, shape mismatches {len(self.mismatched)}, "
                 f"skipped (outside prefix) {len(self.skipped)}"]

        def section(title: str, items: Sequence[str]) -> None:
            lines.extend(key_section(title, items, limit))

        section("missing from the file (the module has them)", self.missing)
        section("unexpected in the file (the module lacks them)",
                [f"{k}  (did you mean {self.hints[k]}?)" if k in self.hints else k for k in self.unexpected])
        section("shape mismatches (file vs module)",
                [f"{k}: {tuple(s)} vs {tuple(t)}" for k, s, t in self.mismatched])
        return "\n".join(lines)


class WeightsError(ValueError):
    """Strict loading failed; ``report`` says why."""

    def __init__(self, report: LoadReport, source: str) -> None:
        super().__init__(f"{source}: weights do not fit the module\n{report.render()}")
        self.report = report


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a bare state dict, or a runtime checkpoint (its ``'model'`` entry).

    ``weights_only=True``: a weights file is data, and unpickling arbitrary objects would run code.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor) or a checkpoint with a "
                         "'model' entry")
    return dict(obj)


def _rename(key: str, rename: Sequence[tuple[str, str]]) -> str:
    for old, new in rename:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_pretrained(module: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *,
                    prefix: str = "encoder.", rename: Sequence[tuple[str, str]] = (),
                    strict: bool = True) -> LoadReport:
    """Copy matching tensors from ``source`` into ``module``; :class:`WeightsError` if strict and not ok.

    Non-strict loading copies every key present on both sides with equal shapes and reports the rest.
    Nothing is copied when strict loading fails, so a module is never left half-loaded.
    """
    name = str(source) if isinstance(source, (str, Path)) else "state dict"
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    target = {k: v for k, v in module.state_dict().items() if k.startswith(prefix)}
    mapped: dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in state.items():
        new = _rename(key, rename)
        if new.startswith(prefix):
            mapped[new] = value
        else:
            skipped.append(key)
    missing = sorted(k for k in target if k not in mapped)
    unexpected = sorted(k for k in mapped if k not in target)
    mismatched = sorted((k, tuple(mapped[k].shape), tuple(target[k].shape))
                        for k in mapped if k in target and mapped[k].shape != target[k].shape)
    bad = {m[0] for m in mismatched}
    loaded = tuple(sorted(k for k in mapped if k in target and k not in bad))
    hints = {}
    for k in unexpected:
        close = difflib.get_close_matches(k, missing, n=1, cutoff=0.8)
        if close:
            hints[k] = close[0]
    report = LoadReport(loaded, tuple(missing), tuple(unexpected), tuple(mismatched), tuple(skipped), hints)
    if strict and not report.ok:
        raise WeightsError(report, name)
    with torch.no_grad():
        current = module.state_dict()  # tensors share storage with the parameters and buffers
        for k in loaded:
            current[k].copy_(mapped[k])
    return report
