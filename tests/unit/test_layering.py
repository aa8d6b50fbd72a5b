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


#: The compiler's layers, lowest first. A module may import from its own layer and the ones below;
#: the front ends (the package root, the CLI, plugins of commands) may import anything.
#: Reading down the list is reading the data flow: documents -> analysis -> build -> the doors.
LAYERS = (
    ("diagnostics", "ir", "zoo", "allocator"),  # allocator: mallopt through ctypes, imports nothing
    ("ops", "spec", "weights.mapping"),  # weights.mapping: the schema and checks of a spec's 'weights:'
    ("passes",),
    ("pipeline",),
    ("emit",),
    ("inference", "weights", "export"),
    ("build",),
    ("api",),
    ("__init__", "cli", "commands", "compare", "latency"),
)


def _layer_of(module: str) -> int:
    """The layer of a module named relative to the package (``passes.fold_bn``, ``api``)."""
    best, depth = None, -1
    for level, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = level, name.count(".")
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best


def _package_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, named relative to the package; ``from . import x``
    names the package root (``__init__``)."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    parts = list(relative.parts)
    here = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "rtseg_compiler":
                target = node.module.split(".")[1:]
            else:
                continue
            found.add(".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) or "__init__" for a in node.names
                         if a.name.split(".")[0] == "rtseg_compiler")
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


#: Upward imports kept only inside deprecated aliases, each removed with its alias.
DEPRECATED_UPWARD = {
    ("inference", "build"): "inference.build_inference, the deprecated alias of build.build(inference=True)",
}


def test_no_compiler_module_imports_from_a_layer_above_it() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        level = _layer_of(name)
        for imported in sorted(_package_imports(path)):
            if _layer_of(imported) > level and (name, imported) not in DEPRECATED_UPWARD:
                upward.append(f"{name} (layer {level}) imports {imported} (layer {_layer_of(imported)})")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_the_layer_check_reads_relative_and_absolute_imports() -> None:
    imports = _package_imports(PACKAGE / "passes" / "fold_bn.py")
    assert {"ir", "passes.inplace"} <= imports
    assert "__init__" in _package_imports(PACKAGE / "latency.py")  # from rtseg_compiler import ...
    assert _layer_of("api") > _layer_of("build") > _layer_of("emit.torch_module") > _layer_of("pipeline")
    assert _layer_of("weights.importer") > _layer_of("weights.mapping")


def test_emit_torch_and_the_build_passes_have_one_caller() -> None:
    """Only build.py emits a module or runs the build passes: every door builds through it."""
    callers: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in ("emit_torch", "run_in_place", "fold_for_inference"):
                    callers.setdefault(name, set()).add(_module_name(path))
    assert callers == {name: {"build"} for name in ("emit_torch", "run_in_place", "fold_for_inference")}
