"""What ``rtsegc`` loads from outside the package: user op modules and plugin commands.

``rtsegc --ops MODULE COMMAND ...`` imports a module that registers user ops (repeatable, before the
command); installed ``rtseg_compiler.ops`` entry points load by themselves (``ops/plugins.py``,
docs/extending.md). ``train``, ``eval``, ``predict``, ``bench`` and any other installed
``rtseg_compiler.commands`` entry point become sub-commands here (``commands.py``); the compiler never
imports the runtime itself. When a user op's own code raises, :func:`user_op_fault` blames that op.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from ..diagnostics import Diagnostic
from .status import EXIT_OK, EXIT_SPEC, print_unlocated

__all__ = ["OpsAfterCommand", "add_plugin_commands", "load_user_ops", "module_name", "user_op_fault"]

#: The installed package's top-level name: hooks defined under it are built-in code, not a user's.
_PACKAGE = __name__.partition(".")[0]


def module_name(text: str) -> str:
    """The argparse type of ``--ops``: a dotted module name, refused early when it cannot be one."""
    from ..ops.plugins import check_module_name

    try:
        return check_module_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class OpsAfterCommand(argparse.Action):
    """``rtsegc flops --ops m`` would otherwise read 'unrecognized arguments'."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        command = parser.prog.split()[-1]
        parser.error(f"--ops is a global option: give it before the command, "
                     f"e.g. rtsegc --ops {values} {command} ...")


def load_user_ops(modules: Sequence[str]) -> int:
    """Import the --ops modules (after the installed entry points, so a clash names both)."""
    from ..ops.plugins import OpsModuleError, load_entry_points, load_ops_module

    if not modules:
        return EXIT_OK
    load_entry_points()
    for module in modules:
        already = module in sys.modules
        try:
            added = load_ops_module(module)
        except OpsModuleError as exc:
            print_unlocated(exc.diagnostic)
            return EXIT_SPEC
        if not added and not already:
            print(f"rtsegc: warning: --ops {module}: the module registered no ops", file=sys.stderr)
    return EXIT_OK


def add_plugin_commands(sub: Any) -> None:
    """train/eval/predict/bench and other installed ``rtseg_compiler.commands`` (see commands.py).

    Each parses its own options: its sub-parser takes none, and ``main`` hands it the rest of argv.
    """
    from ..commands import RUNTIME_COMMANDS, PluginCommand, discover_commands

    warn = lambda message: print(f"rtsegc: warning: {message}", file=sys.stderr)  # noqa: E731
    found = discover_commands(sub.choices, warn=warn)
    for name, command in found.items():
        p = sub.add_parser(name, help=command.help, add_help=False)
        p.set_defaults(func=None, plugin=command)
    for name in RUNTIME_COMMANDS:  # not installed: say what provides them instead of "invalid choice"
        if name not in found and name not in sub.choices:
            def missing(argv: Sequence[str], prog: str, name: str = name) -> int:
                print(f"rtsegc: error: '{name}' comes from the runtime package (rtseg_runtime), whose "
                      "rtseg_compiler.commands entry points are not installed; run 'pip install -e .' "
                      "in the rtseg-compiler checkout", file=sys.stderr)
                return EXIT_SPEC

            p = sub.add_parser(name, add_help=False)
            p.set_defaults(func=None, plugin=PluginCommand(name, "", missing, "nothing installed"))


def user_op_fault(exc: BaseException) -> Diagnostic | None:
    """A user op's hook raised something other than OpError: blame that op, at its line, not rtsegc.

    The op is found by the innermost traceback frame in the package of one of its hooks
    (``rtsegc_example_ops.modules`` counts for an op whose hooks live in ``rtsegc_example_ops``).
    """
    from ..diagnostics import Location
    from ..ops import REGISTRY, op_origin
    from ..ops.base import BUILTIN

    owners: dict[str, tuple[str, str]] = {}
    for name, op in REGISTRY.items():
        origin = op_origin(name)
        if origin == BUILTIN:
            continue
        for hook in (op.infer, op.build, op.count, op.complete, op.dilate, op.returns_extra):
            module = getattr(hook, "__module__", None) or ""
            if module and not module.startswith(_PACKAGE + "."):
                owners.setdefault(module.partition(".")[0], (name, origin))
    found = None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] in owners:
            found = (tb, owners[module.partition(".")[0]])
        tb = tb.tb_next
    if found is None:
        return None
    tb, (name, origin) = found
    return Diagnostic(f"op '{name}' ({origin}) failed: {type(exc).__name__}: {exc}",
                      Location(tb.tb_frame.f_code.co_filename, tb.tb_lineno, 1),
                      hint="a bug in the op's own code, not in rtsegc or the spec; "
                           "RTSEGC_DEBUG=1 shows the traceback")
