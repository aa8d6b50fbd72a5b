"""The command-line package keeps its shape: one module per job, none grown past about 300 lines.

``rtseg_compiler/cli/`` has five jobs: the option vocabulary, the command bodies (one module per
family), tables, plugin loading and exit statuses. A module past the limit below is a sign that a
new job moved in: give it a module of its own (``__init__.py`` lists the layout) rather than
raising the number.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rtseg_compiler.cli

CLI = Path(rtseg_compiler.cli.__file__).resolve().parent
MAX_LINES = 300


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_cli_is_a_package_of_small_modules() -> None:
    assert not (CLI.parent / "cli.py").exists(), "a cli.py beside cli/ would be dead code"
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in CLI.glob("*.py")}
    assert {"__init__.py", "args.py", "status.py"} <= set(sizes)
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"cli modules over {MAX_LINES} lines: {too_long}"


def test_every_builtin_command_runs_a_function_of_its_family_module() -> None:
    """COMMANDS names the module that defines each command's options; its function lives there too."""
    from rtseg_compiler.cli import COMMANDS, build_parser

    for name, (_, target) in COMMANDS.items():
        module = target.partition(":")[0]
        (only, command), = _sub_parsers(build_parser(name)).items()
        assert only == name
        # weights has actions (import, list), each with its own function
        parsers = _sub_parsers(command).values() if name == "weights" else [command]
        for p in parsers:
            func = p.get_default("func")
            assert func.__module__ == f"rtseg_compiler.cli.{module}", (name, func)
