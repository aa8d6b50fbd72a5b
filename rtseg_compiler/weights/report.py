"""The one weight-loading report and the one weight error. No torch: shapes are tuples of ints.

Every route that puts tensors into a compiled module (``compile_model(weights=...)``,
``pretrained=``, ``rtsegc weights import``, ``rtsegc train --pretrained``, ``rtsegc eval --weights``)
ends in :func:`rtseg_compiler.weights.load.fit`, which fills a :class:`WeightsReport`. A strict load
that does not fit raises :class:`WeightsError` carrying that report, so a user sees the same lists
(missing, unexpected, mis-shaped, each with the closest key of the other side) whichever door they
came through. A file that cannot be read at all is the same error class, without a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

__all__ = ["WeightsError", "WeightsReport", "key_section"]


def key_section(title: str, items: Sequence[str], limit: int) -> list[str]:
    """One titled, indented list of a report (at most ``limit`` keys, then a count), or nothing for
    no items."""
    if not items:
        return []
    more = [f"    ... and {len(items) - limit} more"] if len(items) > limit else []
    return [f"  {title}:", *(f"    {item}" for item in items[:limit]), *more]


@dataclass(frozen=True)
class WeightsReport:
    """What a load did. ``ok`` when nothing is missing, unexpected or mis-shaped.

    Keys of the source and of the module differ when a declared layout renames them
    (``layer1.0.conv1.weight`` -> ``encoder.layer1_1.conv1.weight``); a file written in the module's
    own layout has the same key on both sides, and the report then shows each key once.
    """

    source: str
    loaded: tuple[str, ...]
    #: Module keys that nothing in the source filled.
    missing: tuple[str, ...]
    #: (source key, where it would go) for keys with no place in the module.
    unexpected: tuple[tuple[str, str], ...]
    #: (source key, module key, source shape, module shape).
    mismatched: tuple[tuple[str, str, tuple[int, ...], tuple[int, ...]], ...]
    #: Source keys left out on purpose (a classifier head this model lacks, keys outside a prefix).
    unused: tuple[str, ...] = ()
    unused_reason: str = ""
    #: BatchNorm ``num_batches_tracked`` counters the source lacks (left as they are).
    counters_kept: tuple[str, ...] = ()
    reshaped: tuple[str, ...] = ()
    #: missing module key -> closest unexpected source key, and unexpected source key -> closest missing key.
    hints: Mapping[str, str] = field(default_factory=dict)
    #: Sentences naming a spec parameter that would make the weights fit (``pass conv_bias=false``).
    advice: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def render(self, limit: int = 20) -> str:
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors; missing {len(self.missing)}, "
                 f"unexpected {len(self.unexpected)}, mis-shaped {len(self.mismatched)}, "
                 f"not used by this model {len(self.unused)}"]

        def section(title: str, items: Sequence[str]) -> None:
            lines.extend(key_section(title, items, limit))

        def hint(key: str) -> str:
            return f"  (did you mean {self.hints[key]}?)" if key in self.hints else ""

        section("missing (the module has them, the source does not fill them)",
                [k + hint(k) for k in self.missing])
        section("unexpected (the module has no such key; source key -> where it would go)",
                [(s if s == m else f"{s} -> {m}") + hint(s) for s, m in self.unexpected])
        section("mis-shaped (source shape vs module shape)",
                [f"{s if s == m else f'{s} -> {m}'}: {tuple(a)} vs {tuple(b)}"
                 for s, m, a, b in self.mismatched])
        if self.unused:
            section(f"not used by this model ({self.unused_reason})", list(self.unused))
        if self.reshaped:
            section("reshaped as the layout declares (same elements, new shape)", list(self.reshaped))
        if self.counters_kept:
            lines.append(f"  {len(self.counters_kept)} BatchNorm num_batches_tracked counters are not in "
                         "the source and keep their values (they are unused unless momentum is None)")
        lines += [f"  hint: {sentence}" for sentence in self.advice]
        return "\n".join(lines)


class WeightsError(ValueError):
    """Weights that cannot be used: an unreadable or wrong-kind file, an unknown source, or a strict
    load that does not fit (then ``report`` says why)."""

    def __init__(self, message: str, report: WeightsReport | None = None) -> None:
        super().__init__(message if report is None else f"{message}\n{report.render()}")
        self.report = report
