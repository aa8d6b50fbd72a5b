"""Diagnostics: every problem with a spec is a located, collected message.

A compiler pass never raises on the first bad value it sees. It appends a
:class:`Diagnostic` to a :class:`Diagnostics` collector and carries on where it
can, so that a user fixing a spec sees all independent mistakes in one run. At
the end of a pass the collector raises one :class:`SpecError` holding them all.

Rendering follows the convention of C compilers and linters, which editors and
CI annotators already parse::

    specs/encoders/mobilenet_v1.yaml:41:7: error: groups=3 does not divide in_channels=32
        note: in block 'dwsep' used at specs/encoders/mobilenet_v1.yaml:30:5

Several diagnostics print in source order (:func:`in_source_order`): by file, line and
column, the way a reader walks the files, whatever order the passes found them in.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = [
    "Location",
    "Diagnostic",
    "Diagnostics",
    "SpecError",
    "did_you_mean",
    "in_source_order",
]


@dataclass(frozen=True, slots=True)
class Location:
    """A point in a spec file; line and column are 1-based, as editors show them."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        path = _display_path(self.file)
        if self.line <= 0:
            return path
        return f"{path}:{self.line}:{self.col}"


def _display_path(path: str) -> str:
    """Paths relative to the working directory when inside it and shorter, as compilers print them."""
    if not path or path.startswith("<"):
        return path or "<spec>"
    try:
        rel = os.path.relpath(path)
    except ValueError:  # different drive on Windows
        return path
    # Relative only below the working directory: "../../x.yaml" reads worse than an absolute path.
    return rel if not rel.startswith(os.pardir) and len(rel) < len(path) else path


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located message.

    ``notes`` carry context such as the chain of block uses that produced a
    layer; ``hint`` says what would be valid.
    """

    message: str
    loc: Location | None = None
    severity: str = "error"
    hint: str | None = None
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        where = f"{self.loc}: " if self.loc is not None else ""
        text = f"{where}{self.severity}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        notes = list(self.notes)
        i = 0
        while i < len(notes):  # a block that uses itself repeats one note 16 times: say so once
            j = i
            while j + 1 < len(notes) and notes[j + 1] == notes[i]:
                j += 1
            times = f" ({j - i + 1} times)" if j > i else ""
            text += f"\n    note: {notes[i]}{times}"
            i = j + 1
        return text

    def __str__(self) -> str:
        return self.render()


def in_source_order(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Diagnostics sorted by (file, line, column); those without a location come last.

    The sort is stable: diagnostics at one place keep the order they were found in (an
    error before the warnings there, as :class:`SpecError` holds them), and unlocated ones
    (about the command line, or "N more errors not shown") follow every located one in the
    order they came, as a summary after the lines a reader can jump to. A location with a
    file but no line (a file that cannot be read) sorts before that file's first line.
    """
    def key(d: Diagnostic) -> tuple[bool, str, int, int]:
        loc = d.loc
        return (False, loc.file, loc.line, loc.col) if loc is not None else (True, "", 0, 0)

    return sorted(diagnostics, key=key)


class SpecError(Exception):
    """A spec is invalid. Holds every diagnostic found, errors first; prints them in source order."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(d.render() for d in in_source_order(self.diagnostics)))

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


@dataclass
class Diagnostics:
    """A collector passes append to; :meth:`raise_if_errors` ends a pass."""

    items: list[Diagnostic] = field(default_factory=list)
    #: Past this many errors further ones are dropped: a fuzzed file can
    #: produce one error per node and nobody reads the ten-thousandth.
    limit: int = 200

    def error(self, message: str, loc: Location | None = None, *, hint: str | None = None,
              notes: Iterable[object] = ()) -> None:
        """``notes``: text, or records such as ``ir.BlockUse``, rendered here with ``str``."""
        self.add(Diagnostic(message, loc, "error", hint, tuple(map(str, notes))))

    def warning(self, message: str, loc: Location | None = None, *, hint: str | None = None,
                notes: Iterable[object] = ()) -> None:
        self.add(Diagnostic(message, loc, "warning", hint, tuple(map(str, notes))))

    #: Errors seen past ``limit``: never shown one by one, but they still fail the pass.
    dropped_errors: int = 0

    def add(self, diagnostic: Diagnostic) -> None:
        if diagnostic in self.items:
            return
        if len(self.items) < self.limit:
            self.items.append(diagnostic)
        elif diagnostic.severity == "error":
            # Errors outrank warnings: make room by dropping the latest warning, if any.
            for i in range(len(self.items) - 1, -1, -1):
                if self.items[i].severity != "error":
                    del self.items[i]
                    self.items.append(diagnostic)
                    return
            self.dropped_errors += 1

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            self.add(d)

    @property
    def full(self) -> bool:
        """True once further diagnostics would be dropped: callers may skip costly hints."""
        return len(self.items) >= self.limit

    @property
    def has_errors(self) -> bool:
        return self.dropped_errors > 0 or any(d.severity == "error" for d in self.items)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.items if d.severity == "warning")

    def raise_if_errors(self) -> None:
        if self.has_errors:
            ordered = sorted(self.items, key=lambda d: d.severity != "error")
            if self.dropped_errors:
                ordered.insert(sum(d.severity == "error" for d in ordered), Diagnostic(
                    f"{self.dropped_errors} more error{'s' if self.dropped_errors != 1 else ''} "
                    f"not shown (at most {self.limit} diagnostics are listed)"))
            raise SpecError(ordered)


#: Pools larger than this are narrowed by shared character pairs before difflib runs.
_FULL_COMPARE = 64


def _pairs(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1)} or {text}


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean" hint from the closest candidates, or None when nothing is close."""
    word = str(word)
    pool = sorted({str(c) for c in candidates})
    if len(pool) > _FULL_COMPARE:
        # difflib costs ~20 us a candidate; 2,000 misspelled references to 2,000 layers took
        # 70 s. Shared character pairs pick the likely few first (a set intersection each).
        grams = _pairs(word)
        pool = sorted(pool, key=lambda c: (-len(grams & _pairs(c)), abs(len(c) - len(word)), c))
        pool = pool[:_FULL_COMPARE]
    close = difflib.get_close_matches(word, pool, n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
