"""The audit commands import only what they need: a whole ``rtsegc flops`` stays near 0.2 s.

Importing torch takes 1-2 s, networkx 0.2 s, jsonschema 0.1-0.2 s and ``importlib.metadata``
(for entry points) 0.03-0.06 s on the 2-core CI machine, against about 0.2 s for the whole
analytic audit (benchmarks/bench_startup.py). None of them is needed to audit a valid spec:
link sorts in plain Python, spec/precheck.py passes valid documents without jsonschema, and
built-in commands skip the plugin scan. Each check runs the commands in a fresh interpreter
and lists the heavy modules left in ``sys.modules``; an eager ``import networkx`` anywhere on
the path makes it fail. No torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SPECS

#: Modules the audit path must not import (each was imported eagerly once, or is torch).
HEAVY = ("torch", "networkx", "jsonschema", "graphviz", "importlib.metadata", "matplotlib")

MODELS = sorted((SPECS / "models").glob("*.yaml"))
SPEC_FILES = sorted(p for p in SPECS.rglob("*.yaml") if p.parent.name not in ("datasets", "studies"))

_PROBE = '''
import contextlib, io, json, sys
PRELUDE
from rtseg_compiler import cli
codes = []
for argv in ARGVS:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        codes.append((cli.main(argv), err.getvalue()[-500:]))
heavy = [h for h in HEAVY if h in sys.modules]
print(json.dumps({"codes": codes, "heavy": heavy}))
'''


def _probe(argvs: list[list[str]], prelude: str = "") -> dict:
    code = (_PROBE.replace("PRELUDE", prelude).replace("ARGVS", repr(argvs))
            .replace("HEAVY", repr(HEAVY)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_light(result: dict) -> None:
    for code, stderr in result["codes"]:
        assert code == 0, stderr
    assert result["heavy"] == [], f"the audit path imported {result['heavy']}"


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_flops_imports_nothing_heavy(model):
    """``rtsegc flops`` on each zoo model, plain, per layer and as JSON."""
    _assert_light(_probe([["flops", str(model)], ["flops", str(model), "--per-layer", "--convention", "tf"],
                          ["flops", str(model), "--json", "--input", "256x512"]]))


def test_validate_shapes_and_compare_import_nothing_heavy():
    _assert_light(_probe([["validate", "-q", *map(str, SPEC_FILES)],
                          ["shapes", str(MODELS[0])],
                          ["compare", *map(str, MODELS), "--by", "stage", "--json"]]))


def test_the_probe_sees_an_eager_import():
    """The checks above prove something only if a heavy import on the path would show."""
    result = _probe([["flops", str(MODELS[0])]], prelude="import networkx")
    assert "networkx" in result["heavy"]


def test_an_invalid_spec_still_gets_jsonschema_messages(tmp_path):
    """jsonschema stays the judge of invalid files: it is imported for them, and explains."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: encoder\nname: e\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 0}\n")
    result = _probe([["validate", str(bad)]])
    (code, stderr), = result["codes"]
    assert code == 2 and "kernel" in stderr
    assert "jsonschema" in result["heavy"] and "networkx" not in result["heavy"]
