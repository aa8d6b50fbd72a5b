"""Ops from outside the package: installed entry points and ``rtsegc --ops MODULE``.

A user op is an :class:`~rtseg_compiler.ops.base.OpDef` passed to
:func:`~rtseg_compiler.ops.base.register` in some importable module, exactly as
the built-in families do. Two ways bring such a module in, and only these two:

* an installed distribution declares it in the entry-point group
  ``rtseg_compiler.ops`` (``example = rtsegc_example_ops`` in
  ``[project.entry-points."rtseg_compiler.ops"]``); every such module is
  imported once per process, lazily: the first time the pipeline validates a
  spec (or ``rtsegc ops``/``rtsegc schema`` lists the op set), never at
  ``import rtseg_compiler``;
* ``rtsegc --ops MODULE COMMAND ...`` imports ``MODULE`` before the command
  runs (repeatable), after the entry points, so that a name clash with an
  installed op is an error naming both.

A spec file never names code: the set of modules is fixed by the environment
and the command line before any spec is read, and an op name in a spec is only
ever looked up in the registry (the schema refuses unknown top-level keys such
as ``ops:`` or ``import:``).

Failure policy. ``--ops`` is a request of the user, so a module that cannot be
imported, raises while importing, or registers a name that is already taken is
a one-line error (located at the user's line when there is one) and exit 2.
An installed entry point is ambient: a broken one must not make every command
fail, so it is a one-line warning, the ops it managed to register before
failing are withdrawn (a plugin loads whole or not at all), and an
"unknown op" error for a spec that needed it notes the broken plugin.

Cost. Scanning entry points reads every installed distribution's metadata:
measured 9-14 ms of CPU (30-55 ms wall on a loaded 2-core machine) with 119
distributions installed, plus 25-60 ms to import ``importlib.metadata`` (nothing
else on the ``rtsegc flops`` path imports it). It runs at most once per process,
and only when some ``entry_points.txt`` on ``sys.path`` names the group at all
(:func:`_may_be_declared`, 8-17 ms against 80-105 ms for the full scan on the loaded
2-core machine), so an environment without op plugins pays for neither.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable

from ..diagnostics import Diagnostic, Location
from . import base
from .base import REGISTRY, registering_from

__all__ = [
    "ENTRY_POINT_GROUP",
    "OpsModuleError",
    "OpPluginWarning",
    "check_module_name",
    "load_ops_module",
    "load_entry_points",
    "entry_point_problems",
    "set_problem_reporter",
]

ENTRY_POINT_GROUP = "rtseg_compiler.ops"

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


class OpsModuleError(Exception):
    """A user op module could not be loaded; ``diagnostic`` says where and why."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.render())
        self.diagnostic = diagnostic


class OpPluginWarning(UserWarning):
    """An installed ``rtseg_compiler.ops`` entry point failed to load (Python API callers)."""


def _warn(diagnostic: Diagnostic) -> None:
    warnings.warn(diagnostic.render(), OpPluginWarning, stacklevel=4)


_state: dict = {"loaded": False, "problems": (), "report": _warn}


def set_problem_reporter(report: Callable[[Diagnostic], None]) -> None:
    """How broken entry points are reported when they load (the CLI prints one line each)."""
    _state["report"] = report


def check_module_name(text: str) -> str:
    """``text`` if it is an importable dotted module name, else ValueError saying what to give."""
    name = text.strip()
    is_file = name.endswith(".py") or os.sep in name or "/" in name
    if name and not is_file and all(part.isidentifier() for part in name.split(".")):
        return name
    if is_file:
        stem = Path(name).stem if name.endswith(".py") else "my_ops"
        hint = (f"give a module name, not a file: for ./{stem}.py run "
                f"'PYTHONPATH=. rtsegc --ops {stem} ...'")
    else:
        hint = "a module name is dotted identifiers, e.g. my_package.ops"
    raise ValueError(f"invalid module name {text!r} ({hint})")


def _frame_location(exc: BaseException) -> Location | None:
    """Where in the user's code ``exc`` happened: its deepest frame outside this package and importlib."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return Location(exc.filename, exc.lineno, exc.offset or 1)
    import traceback  # only for a failing plugin; with textwrap it is 5-8 ms of start-up

    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        file = frame.filename
        if file.startswith("<") or file.startswith(_PACKAGE_DIR + os.sep) or "importlib" in file:
            continue
        col = getattr(frame, "colno", None)
        return Location(file, frame.lineno or 0, (col or 0) + 1)
    return None


def _is_missing(exc: BaseException, module: str) -> bool:
    """True when ``module`` itself (or a package above it) is not installed, not one of its imports."""
    missing = getattr(exc, "name", None)
    return isinstance(exc, ModuleNotFoundError) and missing is not None and (
        module == missing or module.startswith(missing + "."))


def _import(module: str, origin: str, label: str, where: Location | None) -> tuple[str, ...]:
    """Import ``module`` with its registrations attributed to ``origin``; all or nothing."""
    before = set(REGISTRY)
    with registering_from(origin):
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code: report, never a traceback
            for name in set(REGISTRY) - before:  # a module that failed half-way registers nothing
                base.unregister(name)
            sys.modules.pop(module, None)
            raise OpsModuleError(_explain(exc, module, label, where)) from None
    return tuple(sorted(set(REGISTRY) - before))


def _explain(exc: BaseException, module: str, label: str, where: Location | None) -> Diagnostic:
    if _is_missing(exc, module):
        hint = "install it, or put its directory on PYTHONPATH"
        if "." not in module and Path(f"{module}.py").is_file():
            hint = f"{module}.py is in this directory, which is not on the module path: run with PYTHONPATH=."
        return Diagnostic(f"{label}: no module named '{getattr(exc, 'name', module)}'", where, hint=hint)
    text = str(exc)
    if isinstance(exc, ValueError) and "is already registered" in text:
        return Diagnostic(f"{label}: {text}", _frame_location(exc) or where,
                          hint="an op name is registered once; choose another name")
    if isinstance(exc, SyntaxError):
        text = exc.msg
    return Diagnostic(f"{label}: importing '{module}' raised {type(exc).__name__}: {text}",
                      _frame_location(exc) or where)


def load_ops_module(module: str) -> tuple[str, ...]:
    """Import one ``--ops`` module; returns the op names it registered. Raises OpsModuleError."""
    name = check_module_name(module)
    return _import(name, f"--ops {name}", f"--ops {name}", None)


def _entry_point_location(ep: object) -> Location | None:
    """The line of ``ep`` in its distribution's entry_points.txt, when the metadata is a file."""
    dist_path = getattr(getattr(ep, "dist", None), "_path", None)
    if dist_path is None:
        return None
    path = Path(dist_path) / "entry_points.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for number, line in enumerate(lines, start=1):
        if line.split("=", 1)[0].strip() == getattr(ep, "name", None):
            return Location(str(path), number, 1)
    return Location(str(path))


def _distribution(ep: object) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown distribution"
    try:
        return f"{dist.metadata['Name']} {dist.version}"
    except Exception:  # noqa: BLE001 - broken metadata must not break the report
        return "an unknown distribution"


def _entry_points() -> Iterable[object]:
    if not _may_be_declared(ENTRY_POINT_GROUP):
        return ()
    from importlib import metadata

    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _may_be_declared(group: str) -> bool:
    """False only when no distribution that ``importlib.metadata`` finds can declare ``group``.

    Most environments have no op plugins, and importing ``importlib.metadata`` (it parses
    e-mail headers) then reading every distribution's metadata cost 80-105 ms on the loaded
    2-core CI machine, where a whole ``rtsegc flops`` now takes 0.3-0.4 s. Its path finder looks at the
    ``*.dist-info`` and ``*.egg-info`` folders directly on ``sys.path``; reading just their
    ``entry_points.txt`` for the group's name takes 8-17 ms. Whatever this cannot rule out
    cheaply (a zip file or an ``.egg`` on ``sys.path``, another finder that lists
    distributions) answers True, and the full scan decides.
    """
    from importlib.machinery import PathFinder

    if any(finder is not PathFinder and getattr(finder, "find_distributions", None) is not None
           for finder in sys.meta_path):
        return True
    for entry in sys.path:
        root = entry or "."
        if not os.path.isdir(root):
            if os.path.exists(root):  # a zip archive: importlib.metadata reads inside it
                return True
            continue
        if root.lower().endswith(".egg"):
            return True
        try:
            children = os.listdir(root)
        except OSError:
            continue
        for child in children:
            if not child.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(root, child, "entry_points.txt"), encoding="utf-8",
                          errors="replace") as f:
                    if group in f.read():
                        return True
            except OSError:  # no entry points, or an .egg-info file rather than a folder
                continue
    return False


def load_entry_points() -> tuple[Diagnostic, ...]:
    """Import every ``rtseg_compiler.ops`` entry point, once per process; returns the problems.

    Each problem is also passed to the reporter (:func:`set_problem_reporter`) when it
    first happens, so a broken plugin is reported once per process, as one line.
    """
    if _state["loaded"]:
        return _state["problems"]
    _state["loaded"] = True
    problems = []
    seen: set[str] = set()
    for ep in sorted(_entry_points(), key=lambda e: (e.name, e.value)):
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        dist = _distribution(ep)
        label = f"entry point '{ep.name}' of {dist}"
        where = _entry_point_location(ep)
        module, _, attr = ep.value.partition(":")
        module = module.strip()
        try:
            if attr.strip():
                raise OpsModuleError(Diagnostic(
                    f"{label} names '{ep.value}', an object; an rtseg_compiler.ops entry point names a "
                    f"module, whose import registers its ops", where, "warning",
                    hint=f"write '{ep.name} = {module}'"))
            check_module_name(module)
            _import(module, f"entry point '{ep.name}' ({dist})", label, where)
        except ValueError as exc:  # check_module_name
            problems.append(Diagnostic(f"{label}: {exc}", where, "warning"))
        except OpsModuleError as exc:
            d = exc.diagnostic
            problems.append(Diagnostic(d.message, d.loc, "warning",
                                       (d.hint + "; " if d.hint else "") + "its ops are not available",
                                       d.notes))
        else:
            continue
        _state["report"](problems[-1])
    _state["problems"] = tuple(problems)
    return _state["problems"]


def entry_point_problems() -> tuple[Diagnostic, ...]:
    """The problems of the entry points loaded so far (empty before they are loaded)."""
    return _state["problems"]


def _reset_for_tests() -> None:
    """Forget that entry points were loaded (their ops stay registered)."""
    _state.update(loaded=False, problems=(), report=_warn)
