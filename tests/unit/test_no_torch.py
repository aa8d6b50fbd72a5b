"""The analytic half of the compiler never imports torch.

``rtsegc validate/shapes/flops`` must work on a machine without torch (a CI
linter, an editor plug-in) and start in well under a second; importing torch
alone takes about 1-2 s. The checks run in fresh interpreters, since this
pytest process may already have imported torch for other tests: once with
torch importable (it must simply stay out of ``sys.modules``) and once with
every ``import torch`` made to fail, as on a machine without it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT, SPECS

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
ENCODER = SPECS / "encoders" / "mobilenet_v1.yaml"
META = SPECS / "meta" / "skipnet.yaml"
# Dataset and study files are validated by runtime modules (rtseg_runtime.datasets, .study.spec); those
# must stay as torch-free as the compiler so that ``rtsegc validate specs/**/*.yaml`` is a linter.
DATASETS = sorted((SPECS / "datasets").glob("*.yaml"))
STUDIES = sorted((SPECS / "studies").glob("*.yaml"))

_BLOCKER = '''
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
'''

_PROBE = '''
import contextlib, io, json, sys
from rtseg_compiler.pipeline import analyze
from rtseg_compiler import cli

analysis = analyze(MODEL, (360, 640))
pair = analyze(encoder=ENCODER, meta=META)
codes = {}
for argv in (["validate", "-q", *ALL_SPECS],
             ["validate", "-q", *DATASETS],
             ["validate", "-q", *STUDIES],
             ["shapes", MODEL, "--input", "360x640"],
             ["flops", MODEL, "--json"],
             ["flops", "--encoder", ENCODER, "--meta", META, "--per-layer", "--convention", "tf"],
             ["compare", MODEL, "--by", "stage", "--json"],
             ["visualize", MODEL, "-o", DOT_OUT]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        codes[argv[0] + str(len(codes))] = (cli.main([str(a) for a in argv]), err.getvalue()[-500:])
from rtseg_runtime.datasets import load_dataset_spec
dataset = load_dataset_spec(str(DATASETS[0]))
print(json.dumps({
    "dataset_colors": len(dataset.colors),
    "macs": analysis.audit.macs,
    "pair_layers": len(pair.audit.layers),
    "codes": codes,
    "torch_modules": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
}))
'''


def _run(block_torch: bool, dot_out) -> dict:
    consts = (f"MODEL = {str(MODEL)!r}\nENCODER = {str(ENCODER)!r}\nMETA = {str(META)!r}\n"
              f"DOT_OUT = {str(dot_out)!r}\nALL_SPECS = [MODEL, ENCODER, META]\n"
              f"DATASETS = {[str(p) for p in DATASETS]!r}\nSTUDIES = {[str(p) for p in STUDIES]!r}\n")
    code = (_BLOCKER if block_torch else "") + consts + _PROBE
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("block_torch", [False, True], ids=["torch-available", "torch-blocked"])
def test_analysis_and_cli_do_not_import_torch(block_torch, tmp_path):
    result = _run(block_torch, tmp_path / "net.dot")
    assert result["torch_modules"] == []
    for name, (code, stderr) in result["codes"].items():
        assert code == 0, f"rtsegc {name} exited {code}: {stderr}"
    assert result["macs"] > 0 and result["pair_layers"] > 0
    assert result["dataset_colors"] > 0


def test_dataset_and_study_files_are_probed():
    """The probe above validates every shipped dataset and study file; an empty glob would prove nothing."""
    assert DATASETS and STUDIES


def test_blocker_really_blocks():
    """The torch-blocked run above proves something only if the blocker works."""
    code = _BLOCKER + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


def _imports_torch(path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        if any(n == "torch" or n.startswith("torch.") for n in names):
            lines.append(node.lineno)
    return sorted(lines)


def test_unit_tests_do_not_import_torch():
    """tests/unit is the torch-free layer of the suite; torch tests belong in tests/torch."""
    offenders = {}
    for path in sorted((REPO_ROOT / "tests" / "unit").glob("*.py")) + [REPO_ROOT / "tests" / "conftest.py"]:
        lines = _imports_torch(path)
        if lines:
            offenders[str(path.relative_to(REPO_ROOT))] = lines
    assert not offenders, f"torch imported in the torch-free tests: {offenders}"


def test_ast_scan_finds_torch_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import os
        def f():
            from torch import nn
        import torch.fx as fx
    """))
    assert _imports_torch(probe) == [4, 5]
