"""The dependency runs one way: the runtime imports the compiler, never the reverse.

The compiler finds the runtime's commands and dataset checker through entry points
(commands.py, spec/kinds.py); no module of ``rtseg_compiler`` names the runtime in an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rtseg_compiler

PACKAGE = Path(rtseg_compiler.__file__).resolve().parent
RUNTIME_NAMES = ("runtime", "rtseg_runtime")


def _imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return names


def test_no_compiler_module_imports_the_runtime() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = {m for m in _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
                 if m.split(".")[0] in RUNTIME_NAMES}
        if found:
            offenders[str(path.relative_to(PACKAGE))] = sorted(found)
    assert not offenders, f"compiler modules importing the runtime: {offenders}"


def test_the_check_sees_each_kind_of_import() -> None:
    tree = ast.parse("import rtseg_runtime.train\nfrom runtime.bench import x\n"
                     "importlib.import_module('rtseg_runtime.bench')\n")
    assert _imported_modules(tree) >= {"rtseg_runtime.train", "runtime.bench", "rtseg_runtime.bench"}
