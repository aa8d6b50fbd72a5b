"""docs/spec-language.md's op table is generated from the registry and current (benchmarks/op_table.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

from conftest import REPO_ROOT
from rtseg_compiler.ops import REGISTRY, Field, op_origin
from rtseg_compiler.ops.base import BUILTIN


def _op_table():
    """benchmarks/op_table.py as a module (benchmarks/ is a script folder, not a package)."""
    if "op_table" not in sys.modules:
        spec = importlib.util.spec_from_file_location("op_table", REPO_ROOT / "benchmarks" / "op_table.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["op_table"] = module
        spec.loader.exec_module(module)
    return sys.modules["op_table"]


def test_op_table_is_current():
    table = _op_table()
    current = table.DOC.read_text()
    assert current == table.render(current), "stale: run python benchmarks/op_table.py"


def test_every_built_in_op_has_one_row():
    table = _op_table()
    text = table.DOC.read_text().partition(table.BEGIN)[2].partition(table.END)[0]
    for name in REGISTRY:
        if op_origin(name) == BUILTIN:
            assert text.count(f"\n| `{name}` |") == 1, f"op {name} has no row in docs/spec-language.md"


def test_a_row_follows_the_declaration():
    """Fields, defaults, choices, summary and notes all come from the OpDef."""
    table = _op_table()
    conv = REGISTRY["conv"]
    assert table.row(conv).startswith("| `conv` | `out`, `kernel`, `stride` 1, `padding` optional, ")
    changed = dataclasses.replace(conv, fields={**conv.fields, "bias": Field("bool", False)},
                                  summary="a | b", notes="see docs")
    assert "`bias` false |" in table.row(changed) and "| a \\| b; see docs |" in table.row(changed)
    assert "`mode` nearest (nearest\\|bilinear\\|bicubic)" in table.row(REGISTRY["upsample"])


def test_every_dilate_hook_of_a_built_in_op_is_described():
    """The dilation table has one row per hook, each built-in op in exactly one row, no blank cells."""
    table = _op_table()
    rows = table.dilation_table().splitlines()[2:]
    assert "not described" not in table.dilation_table()
    listed = [name.strip(" `") for row in rows for name in row.split(" | ")[0].strip("| ").split(",")]
    assert sorted(listed) == sorted(n for n in REGISTRY if op_origin(n) == BUILTIN)
    assert len(rows) == len({REGISTRY[n].dilate for n in listed})
