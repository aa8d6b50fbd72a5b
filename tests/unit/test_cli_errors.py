"""``rtsegc`` on bad paths and bad files: one-line errors on stderr, exit status 2, no traceback.

Most tests call :func:`rtseg_compiler.cli.main` in-process; two run the
installed command in a subprocess, to prove that what a person sees in a
terminal has no traceback either. ``compile`` imports torch, so it is left to
tests/torch; ``validate``, ``shapes`` and ``flops`` cover the same loading path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtseg_compiler.cli import main, parse_amount

SPECS = Path(__file__).resolve().parents[2] / "specs"
MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
COMMANDS = (["validate"], ["shapes"], ["flops"])


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, the one message expected for it)."""
    (tmp / "empty.yaml").write_bytes(b"")
    (tmp / "latin1.yaml").write_bytes(b"kind: encoder\nname: caf\xe9\n")
    (tmp / "adir.yaml").mkdir()
    (tmp / "scalar.yaml").write_text("hello\n")
    return {
        "missing": (tmp / "missing.yaml", f"{tmp / 'missing.yaml'}: error: no such file"),
        "directory": (tmp / "adir.yaml", f"{tmp / 'adir.yaml'}: error: is a directory, not a spec file"),
        "empty": (tmp / "empty.yaml", f"{tmp / 'empty.yaml'}:1:1: error: file is empty"),
        "non_utf8": (tmp / "latin1.yaml",
                     f"{tmp / 'latin1.yaml'}:2:10: error: file is not valid UTF-8 (byte 0xe9 at offset 23)"),
        "scalar": (tmp / "scalar.yaml", f"{tmp / 'scalar.yaml'}:1:1: error: a spec file must be a mapping"),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("which", ["missing", "directory", "empty", "non_utf8", "scalar"])
def test_bad_file_is_one_line_and_status_2(tmp_path, capsys, command, which, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # paths print relative to the cwd when shorter
    path, expected = _bad_files(tmp_path)[which]
    status, out, err = _run(capsys, *command, str(path))
    assert status == 2
    lines = err.strip().splitlines()
    shown = expected.replace(str(tmp_path), os.path.relpath(tmp_path))
    assert lines[0].startswith(shown), err
    # validate adds a one-line count per file; the other commands print the error alone.
    assert len(lines) == (2 if command == ["validate"] else 1), err
    assert out == ""


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    """chmod 000 does not stop root (CI containers), so the open itself is made to fail."""
    path = tmp_path / "secret.yaml"
    path.write_text("kind: encoder\n")

    def deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    status, _, err = _run(capsys, "shapes", str(path))
    assert status == 2 and err.strip() == f"{path}: error: permission denied"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_file(capsys):
    status, _, err = _run(capsys, "flops", "/dev/zero")
    assert status == 2 and err.strip() == "/dev/zero: error: not a regular file (pass a .yaml file)"


def test_validate_reports_every_file_and_fails_if_any_does(tmp_path, capsys):
    bad = tmp_path / "missing.yaml"
    status, out, err = _run(capsys, "validate", str(bad), str(MODEL))
    assert status == 2
    assert out == f"{MODEL}: ok\n"
    assert "no such file" in err


def test_model_referencing_a_missing_encoder_names_both_files(tmp_path, capsys):
    model = tmp_path / "model.yaml"
    model.write_text(f"kind: model\nname: m\nencoder: nope.yaml\nmeta: {SPECS / 'meta/skipnet.yaml'}\n"
                     "num_classes: 2\n")
    status, _, err = _run(capsys, "shapes", str(model))
    assert status == 2
    assert err.splitlines() == [f"{tmp_path / 'nope.yaml'}: error: no such file",
                                f"    note: referenced at {model}:3:10"]


def test_budget_flags(capsys):
    status, _, err = _run(capsys, "flops", str(MODEL), "--max-params", "1M")
    assert status == 2
    assert "the model has 3,369,080 parameters (3.37 M), over the budget of 1,000,000" in err
    status, _, err = _run(capsys, "shapes", str(MODEL), "--max-activations", "100MiB", "--input", "1024x2048")
    assert status == 2 and "activations need 2.7 GiB" in err and "over the budget of 100.0 MiB" in err
    status, out, _ = _run(capsys, "flops", str(MODEL), "--max-params", "4M", "--max-activations", "1GiB")
    assert status == 0 and "params       3,369,080" in out


@pytest.mark.parametrize("text, value", [("2e9", 2_000_000_000), ("500M", 500_000_000), ("32GiB", 32 * 2**30),
                                         ("16G", 16 * 10**9), ("1_000", 1000), ("64kib", 65536)])
def test_parse_amount(text, value):
    assert parse_amount(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1Q", "-5", "0", "nan", "1e40"])
def test_bad_amounts_are_usage_errors(capsys, text):
    with pytest.raises(SystemExit) as exit_:
        main(["flops", str(MODEL), "--max-params", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-params: invalid amount" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    status, _, err = _run(capsys, "shapes")
    assert status == 2 and err.strip().endswith("give a model spec, or both --encoder and --meta")
    with pytest.raises(SystemExit) as exit_:
        main(["validate"])
    assert exit_.value.code == 2


def test_model_and_encoder_meta_pair_together_are_refused(capsys):
    assert main(["flops", str(MODEL), "--meta", "nope.yaml"]) == 2
    assert "not both" in capsys.readouterr().err


def test_an_internal_error_is_one_message_not_a_traceback(capsys, monkeypatch):
    """A compiler bug exits 3 with a report-this line; RTSEGC_DEBUG=1 would show the traceback."""
    monkeypatch.delenv("RTSEGC_DEBUG", raising=False)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("rtseg_compiler.pipeline.analyze", broken)
    status, _, err = _run(capsys, "flops", str(MODEL))
    assert status == 3
    assert err.startswith("rtsegc: internal compiler error: RuntimeError: boom")


# ------------------------------------------------------------------- a real terminal

def _rtsegc() -> list[str]:
    exe = shutil.which("rtsegc")
    return [exe] if exe else [sys.executable, "-m", "rtseg_compiler.cli"]


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp, "is a directory, not a spec file"),
    (lambda tmp: (tmp / "bad.yaml").write_bytes(b"kind: encoder\nname: \xff\xfe\n") and tmp / "bad.yaml",
     "file is not valid UTF-8"),
])
def test_subprocess_prints_no_traceback(tmp_path, make, expected):
    path = make(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RTSEGC_DEBUG"}
    proc = subprocess.run([*_rtsegc(), "shapes", str(path)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr


def test_version_flag_names_the_package_version(capsys):
    import importlib.metadata

    from rtseg_compiler import __version__
    from rtseg_compiler.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"rtsegc {__version__}"
    assert __version__ == importlib.metadata.version("rtseg-compiler")


def test_budget_named_in_error_hints_is_importable_from_the_package():
    from rtseg_compiler import Budget, analyze

    assert "Budget" in __import__("rtseg_compiler").__all__
    with pytest.raises(Exception) as err:
        analyze(SPECS / "models" / "skipnet_mobilenet_v1.yaml", budget=Budget(max_params=1000))
    assert "params" in str(err.value).lower() or "parameter" in str(err.value).lower()
