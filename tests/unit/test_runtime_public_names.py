"""The runtime uses the compiler only through public names.

A ``_``-prefixed name is the compiler's to rename or remove; if ``rtseg_runtime`` reached for one,
a refactor inside the compiler would break ``rtsegc train`` with no test of the compiler noticing.
This walks every runtime module's syntax tree (no import, no torch) and lists each private name it
takes from ``rtseg_compiler``: in an import (``from rtseg_compiler.x import _y``, ``import
rtseg_compiler._x``) or as an attribute of something imported from it (``schema._explain``).
"""

from __future__ import annotations

import ast

from conftest import REPO_ROOT

RUNTIME = REPO_ROOT / "runtime"
COMPILER = "rtseg_compiler"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_compiler_names(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) for each private compiler name ``source`` uses."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    bound: dict[str, str] = {}  # local name -> the compiler name it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == COMPILER:
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append((node.lineno, alias.name))
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else COMPILER
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == COMPILER:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if any(_private(part) for part in full.split(".")):
                    found.append((node.lineno, full))
                bound[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, root = [node.attr], node.value
            while isinstance(root, ast.Attribute):
                chain.append(root.attr)
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append((node.lineno, ".".join([bound[root.id], *reversed(chain)])))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in bound \
                and isinstance(node.args[1], ast.Constant) and _private(str(node.args[1].value)):
            found.append((node.lineno, f"{bound[node.args[0].id]}.{node.args[1].value}"))
    return sorted(set(found))


def test_the_runtime_imports_no_private_compiler_name() -> None:
    modules = sorted(RUNTIME.rglob("*.py"))
    assert modules, f"no runtime modules under {RUNTIME}"
    offenders = {}
    for path in modules:
        names = private_compiler_names(path.read_text(encoding="utf-8"))
        if names:
            offenders[str(path.relative_to(REPO_ROOT))] = [f"line {line}: {name}" for line, name in names]
    assert not offenders, f"runtime modules using private compiler names: {offenders}"


def test_the_walk_sees_each_way_of_reaching_a_private_name() -> None:
    source = ("from rtseg_compiler.cli import _model_args, main\n"
              "import rtseg_compiler._zoo\n"
              "from rtseg_compiler.spec import schema\n"
              "import rtseg_compiler.passes.dilate as dilate\n"
              "import rtseg_compiler\n"
              "def f():\n"
              "    schema._explain(1, 2)\n"
              "    dilate._rule\n"
              "    rtseg_compiler.api._encoder_module\n"
              "    getattr(schema, '_LAYER_SCHEMAS')\n")
    names = [name for _, name in private_compiler_names(source)]
    assert names == ["rtseg_compiler.cli._model_args", "rtseg_compiler._zoo",
                     "rtseg_compiler.spec.schema._explain", "rtseg_compiler.passes.dilate._rule",
                     "rtseg_compiler.api._encoder_module", "rtseg_compiler.spec.schema._LAYER_SCHEMAS"]


def test_public_and_dunder_names_pass() -> None:
    source = ("from rtseg_compiler import SpecError, __version__\n"
              "from rtseg_compiler.cli.args import parse_size\n"
              "import rtseg_compiler.zoo as zoo\n"
              "zoo.resolve_spec('x'); zoo.__file__\n"
              "class Local:\n"
              "    def _helper(self): return self._state\n")
    assert private_compiler_names(source) == []
