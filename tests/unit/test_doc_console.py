"""Every ```console block of README.md and docs/ runs, and prints what it shows.

A block is a transcript: ``$ COMMAND`` lines (a line ending in ``\\`` continues on the next), each
followed by the output the reader should see. The command runs in bash from a scratch folder
that sees the repository's ``specs/`` and ``examples/`` (so files it writes land there), with
this interpreter's ``rtsegc`` first on PATH; stdout and stderr are compared together, line by
line, trailing spaces ignored. Elisions: a line that is just ``...`` stands for any number of
lines, and ``...`` inside a line for any text. A command shown without output must exit 0; a
block with one such command followed by a table in the page (``compare --markdown``) must print
exactly the lines the page shows after the block.

An HTML comment on the line before the fence adjusts a block, invisible to readers:
``<!-- console-test: skip, REASON -->`` for a transcript that needs what the suite cannot have
(a data set, a downloaded checkpoint, a timed measurement), ``<!-- console-test: cwd=PATH -->`` to
run from a repository folder, and ``<!-- console-test: slow -->`` for a block that takes seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!--\s*console-test:\s*(.*?)\s*-->")


@dataclass
class Block:
    page: Path
    line: int
    commands: list[tuple[str, list[str]]] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    rendered_after: list[str] = field(default_factory=list)
    problem: str = ""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        k = 0
        while k < len(lines):
            if lines[k].strip() != "```console":
                k += 1
                continue
            mark = MARK.search(lines[k - 1]) if k else None
            block = Block(page, k + 1, marks=[m.strip() for m in mark.group(1).split(";")] if mark else [])
            k += 1
            body = []
            while lines[k].strip() != "```":
                body.append(lines[k])
                k += 1
            k += 1
            i = 0
            while i < len(body):
                if not body[i].startswith("$ "):
                    block.problem = (f"{block.id}: console blocks are transcripts; '{body[i]}' has no "
                                     "'$ ' command before it (fence it as text)")
                    break
                command = body[i][2:]
                while command.endswith("\\"):
                    i += 1
                    command = command[:-1] + " " + body[i].strip()
                i += 1
                output = []
                while i < len(body) and not body[i].startswith("$ "):
                    output.append(body[i])
                    i += 1
                block.commands.append((command, output))
            if len(block.commands) == 1 and not block.commands[0][1]:
                rest = lines[k:]
                while rest and not rest[0].strip():
                    rest = rest[1:]
                if rest and rest[0].startswith("|"):
                    block.rendered_after = rest
            blocks.append(block)
    return blocks


BLOCKS = _blocks()


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line lists equal, with '...' lines matching any run of lines and inline '...' any text."""
    if not expected:
        return not actual
    head = expected[0].rstrip()
    if head.strip() == "...":
        return any(_matches(expected[1:], actual[n:]) for n in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in head.split("..."))
    return re.fullmatch(pattern, actual[0].rstrip()) is not None and _matches(expected[1:], actual[1:])


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               COLUMNS="100")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)


def _param(block: Block):
    marks = []
    if "slow" in block.marks:
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.id, marks=marks)


def test_every_page_with_commands_has_blocks_and_skips_say_why() -> None:
    assert any(b.page.name == "README.md" for b in BLOCKS)
    assert not [b.problem for b in BLOCKS if b.problem]
    for block in BLOCKS:
        for mark in block.marks:
            assert mark in ("slow",) or mark.startswith("cwd=") or re.fullmatch(r"skip, \S.*", mark), \
                f"{block.id}: unknown console-test mark {mark!r}"


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_console_block_prints_what_it_shows(block: Block, tmp_path: Path) -> None:
    skip = next((m for m in block.marks if m.startswith("skip,")), None)
    if skip:
        pytest.skip(skip.partition(",")[2].strip())
    cwd_mark = next((m for m in block.marks if m.startswith("cwd=")), None)
    if cwd_mark:
        cwd = ROOT / cwd_mark.partition("=")[2]
    else:
        cwd = tmp_path
        for name in ("specs", "examples"):
            (tmp_path / name).symlink_to(ROOT / name)
    for command, shown in block.commands:
        result = _run(command, cwd)
        actual = result.stdout.rstrip("\n").splitlines()
        if block.rendered_after:
            shown = block.rendered_after[:len(actual)]
        if not shown:
            assert result.returncode == 0, f"{block.id}: $ {command}\n{result.stdout}"
            continue
        assert _matches(shown, actual), (f"{block.id}: $ {command}\n--- shown\n" + "\n".join(shown)
                                         + "\n--- printed\n" + "\n".join(actual))
