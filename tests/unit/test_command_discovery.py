"""rtsegc's plugin commands (rtseg_compiler/commands.py), with injected entry points: no torch here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rtseg_compiler.commands import discover_commands


class FakeEntryPoint:
    def __init__(self, name: str, value: str, obj=None, error: Exception | None = None):
        self.name, self.value, self.obj, self.error, self.dist = name, value, obj, error, None

    def load(self):
        if self.error is not None:
            raise self.error
        return self.obj


def _command(help_text: str = "does a thing", result: int = 0):
    calls = []

    def main(argv, prog):
        calls.append((list(argv), prog))
        return result

    return SimpleNamespace(help=help_text, main=main), calls


def test_commands_are_found_and_called_with_the_rest_of_argv():
    train, calls = _command("train it")
    warnings: list[str] = []
    found = discover_commands({"validate"}, entry_points=[FakeEntryPoint("train", "pkg.cmds:TRAIN", train)],
                              warn=warnings.append)
    assert list(found) == ["train"] and found["train"].help == "train it" and not warnings
    assert found["train"].main(["--max-iters", "3"], "rtsegc train") == 0
    assert calls == [(["--max-iters", "3"], "rtsegc train")]


def test_broken_clashing_and_malformed_commands_are_one_warning_each():
    good, _ = _command()
    warnings: list[str] = []
    eps = [FakeEntryPoint("broken", "missing.mod:X", error=ModuleNotFoundError("No module named 'missing'")),
           FakeEntryPoint("validate", "pkg:V", good),
           FakeEntryPoint("odd", "pkg:ODD", object()),
           FakeEntryPoint("eval", "a:EVAL", good),
           FakeEntryPoint("eval", "b:EVAL", good)]
    found = discover_commands({"validate"}, entry_points=eps, warn=warnings.append)
    assert list(found) == ["eval"]
    text = "\n".join(warnings)
    assert len(warnings) == 4
    assert "'broken' (missing.mod:X)" in text and "cannot be loaded: ModuleNotFoundError" in text
    assert "'validate' is a built-in rtsegc command" in text
    assert "needs a 'help' string and a 'main(argv, prog)' function" in text
    assert "'eval' is already provided by a:EVAL" in text


def test_the_same_entry_point_seen_twice_is_silent():
    good, _ = _command()
    warnings: list[str] = []
    eps = [FakeEntryPoint("bench", "x:BENCH", good), FakeEntryPoint("bench", "x:BENCH", good)]
    assert list(discover_commands((), entry_points=eps, warn=warnings.append)) == ["bench"]
    assert warnings == []


def test_the_runtime_command_module_is_torch_free():
    """rtsegc --help loads every command object; runtime/commands.py must not pull in torch."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "import sys, rtseg_runtime.commands as c; assert c.TRAIN.help; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_runtime_commands_without_the_runtime_say_what_to_install(monkeypatch, capsys):
    import rtseg_compiler.commands as commands
    from rtseg_compiler import cli

    monkeypatch.setattr(commands, "_installed", lambda: [])
    assert cli.main(["train", "spec.yaml", "--max-iters", "3"]) == 2
    err = capsys.readouterr().err
    assert "'train' comes from the runtime package (rtseg_runtime)" in err and "pip install -e ." in err


def test_builtin_commands_skip_the_plugin_scan_and_help_does_not(monkeypatch, capsys):
    """rtsegc flops needs no entry-point scan; --help and unknown commands still list plugins."""
    import rtseg_compiler.commands as commands
    from rtseg_compiler import cli

    scans: list[int] = []
    eps = [FakeEntryPoint("lint", "pkg:LINT", _command("lint specs")[0])]
    monkeypatch.setattr(commands, "_installed", lambda: scans.append(1) or eps)
    assert cli._builtin_command(["--ops", "m", "flops", "x.yaml"]) == "flops"
    assert cli._builtin_command(["--ops=m", "validate"]) == "validate"
    for argv in (["--help"], ["lint"], ["--op", "m", "flops"], ["--version"], []):
        assert cli._builtin_command(argv) is None
    cli.build_parser("flops")
    assert scans == []
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert scans == [1] and "lint specs" in capsys.readouterr().out


def test_the_short_parser_parses_like_the_full_one():
    from rtseg_compiler import cli

    for command, argv in [("flops", ["flops", "m.yaml", "--input", "256x512", "--per-layer", "--json"]),
                          ("validate", ["validate", "a.yaml", "b.yaml", "-q", "--max-params", "5M"]),
                          ("weights", ["weights", "list", "m.yaml"])]:
        short, _ = cli.build_parser(command).parse_known_args(argv)
        full, _ = cli.build_parser().parse_known_args(argv)
        assert vars(short) == vars(full)
