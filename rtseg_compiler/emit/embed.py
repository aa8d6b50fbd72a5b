"""Copy a user op's own code into a standalone file (``rtsegc compile --save-code``).

A user op's ``build`` may return a module class or a ``FunctionCall`` of a function defined in its
plugin. The saved file **embeds** that code rather than importing the plugin, for two reasons:

* the file promises to need torch alone. A plugin registers its ops by importing
  ``rtseg_compiler`` (``from rtseg_compiler.ops import OpDef, register``) at import time, as the
  example package does in every file; importing any part of it would bring the compiler back;
* the file freezes the code that computed the audited numbers. An import would run whatever version
  of the plugin is installed where the file is loaded, months later.

What is copied is the closure of what the code names at module level, found from its source
(``inspect.getsource``) with ``ast``: functions and classes of the plugin's own package (the package
of the op's ``build`` hook, or ``__main__``) are copied in turn, dependencies first; names from torch,
math, operator and functools become imports; module-level constants that are plain literals (numbers,
strings, tuples ...) are written as assignments. Annotations are skipped: the file starts with
``from __future__ import annotations``, so they are never evaluated. Anything else (an object of
another library, a plugin global that is not a literal, two copied objects with one name) is a
:class:`SourceEmitError` naming the op, the layer and the name, never a file that fails when run.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import sys
import textwrap
import types
from typing import Any

__all__ = ["ALLOWED_MODULES", "Embedding", "SourceEmitError", "allowed_import", "plugin_home"]

#: Modules the generated file may import (the built-in ops' helpers and copied plugin code use these).
ALLOWED_MODULES = ("torch", "math", "operator", "functools")


class SourceEmitError(ValueError):
    """A layer that cannot be written as standalone torch code (e.g. a class of another library)."""


def plugin_home(build: Any) -> str:
    """The package a user op's code may be copied from: the top-level package of its ``build`` hook."""
    return str(getattr(build, "__module__", "") or "__main__").split(".")[0]


def allowed_import(name: str, value: Any) -> str | None:
    """The import line that binds ``name`` to ``value`` from an allowed module, or None.

    ``import math``, ``import torch.nn.functional as F``, ``from math import sqrt as root``: modules by
    their dotted name, other objects by the name their own module (or an allowed module) exports them
    under (``functools.reduce`` reports its module as ``_functools``, so the public modules are tried too).
    """
    if isinstance(value, types.ModuleType):
        if value.__name__.split(".")[0] not in ALLOWED_MODULES:
            return None
        if value.__name__ == name:
            return f"import {name}"
        home, _, leaf = value.__name__.rpartition(".")
        return f"from {home} import {leaf}" if home and leaf == name else f"import {value.__name__} as {name}"
    own = getattr(value, "__name__", None)
    module = str(getattr(value, "__module__", "") or "")
    homes = ([module] if module.split(".")[0] in ALLOWED_MODULES else []) + list(ALLOWED_MODULES)
    for home in homes:
        for exported in dict.fromkeys(n for n in (name, own) if isinstance(n, str)):
            if getattr(sys.modules.get(home), exported, None) is value:
                return f"from {home} import {exported}" + (f" as {name}" if exported != name else "")
    return None


def _literal_text(value: Any) -> str | None:
    """``repr(value)`` when it is a plain literal that reads back as itself, else None."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, (tuple, list, set, frozenset)):
        items = [_literal_text(v) for v in value]
        if any(i is None for i in items) or (isinstance(value, (set, frozenset)) and not items):
            return None
        if isinstance(value, tuple):
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
        text = f"[{', '.join(items)}]" if isinstance(value, list) else f"{{{', '.join(items)}}}"
        return f"frozenset({text})" if isinstance(value, frozenset) else text
    if isinstance(value, dict):
        pairs = [(_literal_text(k), _literal_text(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return None


def _global_names(tree: ast.AST) -> list[str]:
    """Names the code reads that it does not bind itself, outside annotations, in order of first use."""
    bound: set[str] = set()
    read: dict[str, None] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                visit(d)
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None:
                    bound.add(a.arg)
            for default in [*args.defaults, *args.kw_defaults]:
                if default is not None:
                    visit(default)
            for statement in node.body:
                visit(statement)
            return
        if isinstance(node, ast.ClassDef):
            for child in [*node.decorator_list, *node.bases, *node.keywords]:
                visit(child)
            for statement in node.body:
                visit(statement)
            return
        if isinstance(node, ast.AnnAssign):
            visit(node.target)
            if node.value is not None:
                visit(node.value)
            return
        if isinstance(node, ast.arg):  # a lambda's parameter (annotations are never evaluated)
            bound.add(node.arg)
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                read.setdefault(node.id, None)
            else:
                bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [name for name in read if name not in bound]


class Embedding:
    """The plugin code one standalone file copies: definitions (dependencies first), constants, imports.

    ``reserved`` are names the file defines already (the built-in helpers, the model class); a copied
    object may not take one of them.
    """

    def __init__(self, reserved: set[str] | None = None) -> None:
        self.reserved = set(reserved or ())
        self.definitions: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.imports: set[str] = set()
        self._objects: dict[str, Any] = {}
        self._busy: set[int] = set()

    @property
    def names(self) -> set[str]:
        return set(self._objects) | set(self.constants)

    def add(self, obj: Any, *, op: str, where: str, home: str) -> str:
        """Copy the function or class ``obj`` (and what it needs); returns the name the file calls it by."""
        name = obj.__name__
        if self._objects.get(name) is obj or id(obj) in self._busy:
            return name
        what = f"op '{op}' (layer '{where}')"
        if name in self.reserved or (name in self._objects and self._objects[name] is not obj) \
                or name in self.constants:
            raise SourceEmitError(f"{what}: {obj.__module__}.{obj.__qualname__} would be copied into the "
                                  f"file under the name '{name}', which another definition there has "
                                  "already; rename one of the two in the plugin")
        if obj.__qualname__ != name:
            raise SourceEmitError(f"{what}: {obj.__module__}.{obj.__qualname__} is defined inside another "
                                  "function or class, so it cannot be copied on its own; define it at "
                                  "module level in the plugin")
        try:
            source = textwrap.dedent(inspect.getsource(obj))
        except (OSError, TypeError):
            raise SourceEmitError(
                f"{what}: the source of {obj.__module__}.{obj.__qualname__} cannot be found (it was defined "
                "in an interactive session or 'python -c'), so --save-code cannot copy it into the file; "
                "define the op in a module file and load it with --ops MODULE or an entry point "
                "(docs/extending.md)") from None
        self._busy.add(id(obj))
        module = sys.modules.get(obj.__module__)
        scope = vars(module) if module is not None else getattr(obj, "__globals__", {})
        for ref in _global_names(ast.parse(source)):
            if ref not in scope:
                if hasattr(builtins, ref):
                    continue
                raise SourceEmitError(f"{what}: {obj.__qualname__} reads '{ref}', which its module "
                                      f"{obj.__module__} does not define")
            self._need(ref, scope[ref], what=what, owner=obj, home=home, op=op, where=where)
        self._busy.discard(id(obj))
        self._objects[name] = obj
        self.definitions[name] = source.rstrip() + "\n"
        return name

    def _need(self, ref: str, value: Any, *, what: str, owner: Any, home: str, op: str, where: str) -> None:
        line = allowed_import(ref, value)
        if line is not None:
            self.imports.add(line)
            return
        module = str(getattr(value, "__module__", "") or "")
        if isinstance(value, (types.FunctionType, type)) and module.split(".")[0] == home:
            copied = self.add(value, op=op, where=where, home=home)
            if copied != ref:
                raise SourceEmitError(f"{what}: {owner.__qualname__} calls {module}.{value.__qualname__} by "
                                      f"another name, '{ref}'; use its own name in the plugin")
            return
        literal = _literal_text(value)
        if literal is not None and not isinstance(value, type):
            if ref in self.reserved or ref in self._objects or self.constants.get(ref, literal) != literal:
                raise SourceEmitError(f"{what}: the plugin constant '{ref}' clashes with another name the "
                                      "file defines; rename it in the plugin")
            self.constants[ref] = literal
            return
        kind = type(value).__name__
        origin = f" from {module}" if module else ""
        raise SourceEmitError(f"{what}: {owner.__qualname__} uses '{ref}' (of type {kind}{origin}), which "
                              "the saved file can neither copy (only functions, classes and literal "
                              f"constants of the plugin package '{home}') nor import (only "
                              f"{', '.join(ALLOWED_MODULES)})")

    def text(self) -> list[str]:
        """The lines to put after the imports: constants, then the copied definitions."""
        lines = [f"{name} = {value}" for name, value in self.constants.items()]
        lines += [""] * (2 if lines else 0)
        for source in self.definitions.values():
            lines += source.rstrip().splitlines() + ["", ""]
        return lines
