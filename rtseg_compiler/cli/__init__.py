"""``rtsegc``: the command-line front end.

Exit status: 0 success, 2 invalid spec or usage (diagnostics on stderr as
``FILE:LINE:COL: error: MESSAGE``), 3 an internal compiler error (a bug: the
message says how to report it; ``RTSEGC_DEBUG=1`` shows the traceback).
``validate``, ``shapes``, ``flops``, ``schema`` and ``ops`` never import torch.

The package, one module per job:

- ``args.py``: the argument vocabulary (sizes, model selection, spec parameters, build options,
  budgets), public, so the runtime's commands spell their options the same way;
- ``status.py``: exit statuses, UsageError/CommandError, diagnostics on stderr;
- ``tables.py``: plain-text tables; ``plugins.py``: ``--ops`` modules and plugin commands;
- one module per command family: ``analyse.py`` (validate, shapes, flops), ``build.py`` (compile,
  export, weights), ``visualize.py`` (visualize, compare), ``catalogue.py`` (schema, models, ops).

``train``, ``eval``, ``predict`` and ``bench`` come from the runtime (``rtseg_runtime``) through the
``rtseg_compiler.commands`` entry-point group (commands.py); this package never imports the runtime.

``rtsegc --ops MODULE COMMAND ...`` imports a module that registers user ops
(repeatable, before the command); installed ``rtseg_compiler.ops`` entry points
load by themselves. See ``ops/plugins.py`` and docs/extending.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from .args import parse_amount, parse_param, parse_size
from .plugins import OpsAfterCommand, add_plugin_commands, load_user_ops, module_name
from .status import EXIT_INTERNAL, EXIT_OK, EXIT_SPEC, CommandError, UsageError, print_unlocated, run_reported

__all__ = ["COMMANDS", "EXIT_INTERNAL", "EXIT_OK", "EXIT_SPEC", "CommandError", "UsageError", "build_parser",
           "main", "parse_amount", "parse_param", "parse_size"]

#: The built-in commands in ``rtsegc --help`` order: (one-line help, ``module:function`` in this package
#: that adds the command's options). The module is imported only when its command's parser is built.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("check spec files (exit 0 if all are valid, 2 otherwise)", "analyse:validate_parser"),
    "shapes": ("per-layer output shapes, strides and dilations", "analyse:shapes_parser"),
    "flops": ("parameters, MACs and FLOPs, computed from the spec alone", "analyse:flops_parser"),
    "compile": ("build the PyTorch module and check it against the audit", "build:compile_parser"),
    "export": ("write an ONNX file or a torch.export ExportedProgram", "build:export_parser"),
    "weights": ("published weights through the layouts encoder specs declare", "build:weights_parser"),
    "visualize": ("draw the network with Graphviz, with its cost", "visualize:visualize_parser"),
    "compare": ("params, MACs, GFLOPs and peak memory of several models side by side",
                "visualize:compare_parser"),
    "schema": ("print the JSON Schema of spec files, for editors", "catalogue:schema_parser"),
    "models": ("list the model zoo (names work wherever a model path does)", "catalogue:models_parser"),
    "ops": ("list the ops and their fields, and where user ops come from", "catalogue:ops_parser"),
}


def _definer(target: str) -> Callable[[argparse.ArgumentParser], None]:
    """The function that adds a built-in command's options, from its ``module:function``."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``rtsegc`` parser; with a built-in ``command``, only that command's sub-parser.

    ``main`` passes the command when the command line names a built-in one: the other ten
    sub-parsers (about 140 ``add_argument`` calls, 10-20 ms) and the scan of every installed
    distribution for plugin commands (``importlib.metadata``, 80-150 ms with its imports on
    the loaded 2-core CI machine) are then skipped. Neither changes how that command parses.
    """
    parser = argparse.ArgumentParser(
        prog="rtsegc", description="Compile and audit YAML specs of real-time segmentation networks.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"rtsegc {__version__}")
    parser.add_argument("--ops", action="append", type=module_name, default=[], metavar="MODULE",
                        help="import MODULE, which registers user ops, before the command (repeatable; "
                             "installed rtseg_compiler.ops entry points load without it)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, target) in COMMANDS.items():
        if command is None or name == command:
            _definer(target)(sub.add_parser(name, help=help_text))
    for p in sub.choices.values():
        p.add_argument("--ops", action=OpsAfterCommand, dest="misplaced_ops", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    if command not in COMMANDS:
        add_plugin_commands(sub)
    return parser


def _builtin_command(argv: Sequence[str]) -> str | None:
    """The built-in command ``argv`` runs, when that is certain before parsing; else None.

    Certain means: only ``--ops MODULE`` / ``--ops=MODULE`` come before it. Anything else there
    (``--help``, ``--version``, an abbreviated option) and a plugin command get the full parser.
    """
    k = 0
    while k < len(argv):
        token = argv[k]
        if token == "--ops":
            k += 2
        elif token.startswith("--ops="):
            k += 1
        elif token in COMMANDS:
            return token
        else:
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from ..ops.plugins import set_problem_reporter

    parser = build_parser(_builtin_command(sys.argv[1:] if argv is None else argv))
    args, rest = parser.parse_known_args(argv)
    plugin = getattr(args, "plugin", None)
    if plugin is None and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace], int] = (
        args.func if plugin is None else (lambda _: plugin.main(rest, f"rtsegc {args.command}")))
    # A broken installed entry point is one warning line, printed when entry points load.
    set_problem_reporter(print_unlocated)

    def run() -> int:
        status = load_user_ops(args.ops)
        return status if status != EXIT_OK else func(args)

    return run_reported(run, parser)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
