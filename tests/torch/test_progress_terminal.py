"""Training progress shows on any terminal, including one that reports a size of 0x0."""

from __future__ import annotations

import os
import sys

import pytest

from rtseg_runtime import report
from rtseg_runtime.report import Progress


def _terminal(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(report, "_terminal_columns", lambda: columns)


def test_a_zero_width_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _terminal(monkeypatch, 0)
    progress = Progress(10, 0, "auto", log_interval=5)
    assert progress.bar is None
    for it in range(1, 11):
        progress.step(it, 1.0 / it, 1e-3, 12.5, 80.0)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["step 1", "step 5", "step 10"]


def test_a_sized_terminal_gets_the_bar_and_a_forced_bar_a_fixed_width(monkeypatch) -> None:
    pytest.importorskip("tqdm")
    _terminal(monkeypatch, 120)
    bar = Progress(10, 0, "auto", log_interval=5)
    assert bar.bar is not None and bar.bar.dynamic_ncols
    bar.close()
    _terminal(monkeypatch, 0)
    forced = Progress(10, 0, "bar", log_interval=5)
    assert forced.bar is not None and forced.bar.ncols == 80
    forced.close()


def test_terminal_columns_is_zero_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_terminal(fd: int) -> os.terminal_size:
        raise OSError("not a terminal")

    monkeypatch.setattr(os, "get_terminal_size", no_terminal)
    assert report._terminal_columns() == 0
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    assert report._terminal_columns() == 0
