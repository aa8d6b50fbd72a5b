"""``rtsegc validate`` on files of kinds other packages own (rtseg_compiler/spec/kinds.py).

The runtime owns ``kind: dataset``; the compiler reaches its checker through an entry point and
never imports the runtime for encoder, meta or model files.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rtseg_compiler.cli import main
from rtseg_compiler.spec import kinds

ROOT = Path(__file__).resolve().parents[2]
DATASETS = sorted((ROOT / "specs" / "datasets").glob("*.yaml"))
RUNTIME_CHECKER = metadata.EntryPoint(name="dataset", value="rtseg_runtime.datasets:check_dataset_file",
                                      group=kinds.ENTRY_POINT_GROUP)


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch):
    """Replace the installed spec-kind entry points with the given ones."""
    def install(*eps: metadata.EntryPoint) -> None:
        monkeypatch.setattr(metadata, "entry_points",
                            lambda group=None: [e for e in eps if e.group == group])
    return install


def test_every_dataset_file_validates_through_the_runtime(entry_points, capsys) -> None:
    pytest.importorskip("rtseg_runtime")
    entry_points(RUNTIME_CHECKER)
    assert DATASETS and main(["validate", *map(str, DATASETS)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(DATASETS)


def test_a_bad_dataset_file_is_a_located_error(entry_points, capsys, tmp_path: Path) -> None:
    pytest.importorskip("rtseg_runtime")
    entry_points(RUNTIME_CHECKER)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: dataset\nname: x\nlayout: folder\nclasses:\n  - {name: a, color: [1, 2]}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5:" in err and "color" in err and "Traceback" not in err


def test_without_a_checker_the_kind_is_unknown(entry_points, capsys) -> None:
    entry_points()
    assert main(["validate", str(DATASETS[0])]) == 2
    assert "unknown kind 'dataset' (one of encoder, meta, model)" in capsys.readouterr().err


def test_a_checker_that_fails_to_load_is_one_diagnostic(entry_points, capsys) -> None:
    entry_points(metadata.EntryPoint(name="dataset", value="no_such_module_anywhere:check",
                                     group=kinds.ENTRY_POINT_GROUP))
    assert main(["validate", str(DATASETS[0])]) == 2
    err = capsys.readouterr().err
    assert "checker for kind 'dataset'" in err and "ModuleNotFoundError" in err and "Traceback" not in err


def test_model_files_never_read_the_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.entry_points

    def refuse(group=None, **kwargs):
        if group == kinds.ENTRY_POINT_GROUP:
            raise AssertionError("spec-kind entry points read for a built-in kind")
        return installed(group=group, **kwargs) if group is not None else installed(**kwargs)
    monkeypatch.setattr(metadata, "entry_points", refuse)
    assert main(["validate", "-q", str(ROOT / "specs" / "models" / "unet_resnet18.yaml")]) == 0


def test_validating_a_model_never_loads_the_dataset_checker() -> None:
    code = ("import sys; from rtseg_compiler.cli import main; main(['validate', '-q', sys.argv[1]]);"
            "print(sorted(m for m in sys.modules if m.startswith('rtseg_runtime.datasets')))")
    run = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "models" / "fast_scnn.yaml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
