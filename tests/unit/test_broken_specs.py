"""The broken-spec corpus (tests/cases): every file fails with the message and location it states.

Each case's header names fragments of the expected errors and where they must
point (see tests/cases/README.md). Beyond the stated fragments, every case must
also fail *cleanly*: ``validate_file`` returns diagnostics instead of raising,
every error names a file (and a line and column whenever the file could be
read), and ``rtsegc validate`` exits with status 2 without a traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import Diagnostic
from rtseg_compiler.pipeline import validate_file

CASES = Path(__file__).resolve().parent.parent / "cases"
CATEGORIES = ("schema", "graph", "arithmetic", "shape", "tap", "hostile", "budget")
#: Problems with a whole file, which have no line to point at.
FILE_LEVEL = ("no such file", "is a directory", "not a regular file", "invalid file name",
              "permission denied", "cannot read file")

_EXPECT = re.compile(rb"^# expect: (\S+) (.+)$", re.M)
_ERRORS = re.compile(rb"^# errors: (\d+)$", re.M)
_INPUT = re.compile(rb"^# input: (\d+)x(\d+)$", re.M)
_WHERE = re.compile(r"^(?:(?P<file>.*?):)?(?P<line>\d+):(?P<col>\d+)$")


@dataclass(frozen=True)
class Expect:
    fragment: str
    file: Path
    line: int  # 0: the whole file
    col: int


def _case_files() -> list[Path]:
    return sorted(p for p in CASES.rglob("*.yaml") if "_support" not in p.parts)


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _expectations(case: Path) -> tuple[list[Expect], int | None, tuple[int, int] | None]:
    raw = case.read_bytes()
    expects = []
    for where, fragment in _EXPECT.findall(raw):
        where_text, text = where.decode(), fragment.decode().strip()
        match = _WHERE.match(where_text)
        if match:
            file = match.group("file")
            target = case if not file else (Path(file) if file.startswith("/") else case.parent / file)
            expects.append(Expect(text, target, int(match.group("line")), int(match.group("col"))))
        else:
            target = Path(where_text) if where_text.startswith("/") else case.parent / where_text
            expects.append(Expect(text, target, 0, 0))
    count = _ERRORS.search(raw)
    size = _INPUT.search(raw)
    return (expects, int(count.group(1)) if count else None,
            (int(size.group(1)), int(size.group(2))) if size else None)


def _located_at(d: Diagnostic, e: Expect) -> bool:
    if d.loc is None or _norm(d.loc.file) != _norm(e.file):
        return False
    return (d.loc.line, d.loc.col) == (e.line, e.col)


def test_corpus_is_complete():
    """At least 40 cases, every category represented, and each case states what it expects."""
    files = _case_files()
    assert len(files) >= 40
    for category in CATEGORIES:
        assert any(p.parent.name == category for p in files), f"no cases in tests/cases/{category}"
    for path in files:
        assert _expectations(path)[0], f"{path} has no '# expect:' line"


def test_did_you_mean_covers_layers_taps_ops_and_parameters():
    """The issue asks for suggestions on misspelled layer, tap, op and parameter names."""
    texts = b"\n".join(p.read_bytes() for p in _case_files()).decode("utf-8", "replace")
    for kind in ("unknown layer 'cnv1'", "tap 'strid16'", "unknown op 'convv'",
                 "has no parameter 'outt'", "unknown field 'kernal'", "unknown name 'widht'"):
        line = next((ln for ln in texts.splitlines() if kind in ln), None)
        assert line is not None, kind
    assert texts.count("did you mean") >= 10


@pytest.mark.parametrize("case", _case_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case(case: Path):
    expects, count, size = _expectations(case)
    diags = validate_file(case, size)  # must return, never raise
    errors = [d for d in diags if d.severity == "error"]
    rendered = "\n".join(d.render() for d in errors)
    assert errors, f"{case.name} compiled without errors"
    for e in expects:
        hits = [d for d in errors if e.fragment in d.render()]
        assert hits, f"no error mentions {e.fragment!r}; got:\n{rendered}"
        assert any(_located_at(d, e) for d in hits), (
            f"{e.fragment!r} is not located at {e.file}:{e.line}:{e.col}; got:\n{rendered}")
    if count is not None:
        assert len(errors) == count, rendered
    for d in errors:
        assert d.loc is not None and d.loc.file, f"unlocated error: {d.render()}"
        if not any(k in d.message for k in FILE_LEVEL):
            assert d.loc.line >= 1 and d.loc.col >= 1, f"no line:col in {d.render()}"


@pytest.mark.parametrize("case", _case_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case_through_cli(case: Path, capsys: pytest.CaptureFixture[str]):
    """``rtsegc validate`` exits 2 and prints the errors, never a traceback."""
    expects, _, size = _expectations(case)
    argv = ["validate", str(case)] + (["--input", f"{size[0]}x{size[1]}"] if size else [])
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal compiler error" not in err
    assert expects[0].fragment in err


@pytest.mark.parametrize("name", ["typo.yaml", "groups.yaml"])
def test_the_readmes_broken_examples_fail_with_status_2(name, capsys):
    """README.md shows these files' errors (tests/unit/test_doc_console.py compares the text); each
    must stay broken in exactly one located way, with exit status 2."""
    path = CASES.parent.parent / "examples" / "broken" / name
    assert main(["validate", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].split(":")[0].endswith(f"examples/broken/{name}")
