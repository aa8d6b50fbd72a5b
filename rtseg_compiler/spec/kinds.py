"""Spec kinds other distributions define: ``rtsegc validate`` checks them without importing their owner.

The compiler knows three kinds (encoder, meta, model). A dataset file (``kind: dataset``) belongs to
the runtime, which reads it; the compiler must not import the runtime (it depends on the compiler), so
the runtime declares a checker through an entry point instead::

    [project.entry-points."rtseg_compiler.spec_kinds"]
    dataset = "rtseg_runtime.datasets:check_dataset_file"

A checker takes the file's path and returns its diagnostics (an empty list when the file is valid).
Entry points are read only when a file of an unknown kind turns up, so the common path pays nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from ..diagnostics import Diagnostic, Location

__all__ = ["BUILTIN_KINDS", "ENTRY_POINT_GROUP", "kind_checker"]

BUILTIN_KINDS = ("encoder", "meta", "model")
ENTRY_POINT_GROUP = "rtseg_compiler.spec_kinds"

Checker = Callable[[str], list[Diagnostic]]


def kind_checker(kind: Any, path: str) -> Checker | None:
    """The installed checker for ``kind``, or None; a checker that fails to load reports that instead."""
    if not isinstance(kind, str) or kind in BUILTIN_KINDS:
        return None
    from importlib import metadata

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != kind:
            continue
        try:
            checker = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is a diagnostic, not a traceback
            problem = Diagnostic(f"the checker for kind '{kind}' ({ep.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}", Location(path))
            return lambda _path: [problem]
        return checker
    return None
