"""docs/zoo.md's model table is current and lists every model file (benchmarks/zoo_table.py)."""

from __future__ import annotations

import importlib.util
import sys

from conftest import REPO_ROOT
from rtseg_compiler import analyze


def _zoo_table():
    """benchmarks/zoo_table.py as a module (benchmarks/ is a script folder, not a package)."""
    if "zoo_table" not in sys.modules:
        spec = importlib.util.spec_from_file_location("zoo_table", REPO_ROOT / "benchmarks" / "zoo_table.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["zoo_table"] = module
        spec.loader.exec_module(module)
    return sys.modules["zoo_table"]


def test_zoo_doc_is_current():
    table = _zoo_table()
    current = table.DOC.read_text()
    assert current == table.render(current), "stale: run python benchmarks/zoo_table.py"


def test_every_model_file_has_a_row():
    text = _zoo_table().DOC.read_text()
    for path in sorted((REPO_ROOT / "specs" / "models").glob("*.yaml")):
        assert f"[{path.stem}](../specs/models/{path.name})" in text, f"{path.name} missing from docs/zoo.md"


def test_row_reports_the_audit():
    """A row's cells are the audit's numbers (params at the default input, GFLOPs at 512x1024)."""
    table = _zoo_table()
    path = REPO_ROOT / "specs" / "models" / "skipnet_mobilenet_v1.yaml"
    cells = [c.strip() for c in table.row(path).strip("|").split("|")]
    assert cells[5] == f"{analyze(path).audit.params:,}"
    assert cells[6] == f"{analyze(path, (512, 1024)).audit.flops / 1e9:,.2f}"

