"""Exit statuses, the two command-line error classes, and how a command's failure reaches the user.

Every ``rtsegc`` command, the runtime's included, ends in :func:`run_reported`: a bad spec prints its
diagnostics as ``FILE:LINE:COL: error: MESSAGE`` lines and exits 2, a bad command line prints the usage
and exits 2, and anything unexpected is an internal compiler error (exit 3) with a one-line message,
never a traceback unless ``RTSEGC_DEBUG=1`` asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..diagnostics import Diagnostic, SpecError, in_source_order

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_SPEC", "CommandError", "UsageError", "print_diagnostics",
           "print_unlocated", "run_reported", "write_file"]

#: 0 success; 2 an invalid spec, command line, file or environment; 3 a bug in rtsegc.
EXIT_OK, EXIT_SPEC, EXIT_INTERNAL = 0, 2, 3

#: The status of a run stopped by Ctrl-C, as a shell reports 128 + SIGINT.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line (not a bad spec); reported like argparse does."""


class CommandError(Exception):
    """A file or environment problem found while running a command (weights that do not fit,
    no C++ compiler for torch.compile); reported as one error line, exit status 2."""


def print_diagnostics(diags: Sequence[Diagnostic]) -> None:
    """Diagnostics on stderr in the order of the source, so an editor can step through them."""
    for d in in_source_order(diags):
        print(d.render(), file=sys.stderr)


def print_unlocated(d: Diagnostic) -> None:
    """A diagnostic about the command line or the environment: 'rtsegc: ' stands for a missing file."""
    print(d.render() if d.loc is not None else f"rtsegc: {d.render()}", file=sys.stderr)


def write_file(path: Path, data: str | bytes) -> None:
    """Write an output file; a bad path is the user's to fix (exit 2), not a compiler bug."""
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def run_reported(command: Callable[[], int], parser: argparse.ArgumentParser) -> int:
    """Run ``command`` and turn what it raises into messages on stderr and an exit status."""
    try:
        return command()
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        return EXIT_SPEC
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"rtsegc: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    except CommandError as exc:
        print(f"rtsegc: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    except KeyboardInterrupt:
        print("rtsegc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("RTSEGC_DEBUG"):
            raise
        from .plugins import user_op_fault

        fault = user_op_fault(exc)
        if fault is not None:
            print_unlocated(fault)
            return EXIT_SPEC
        print(f"rtsegc: internal compiler error: {type(exc).__name__}: {exc}\n"
              "This is a bug in rtsegc, not in your spec. Re-run with RTSEGC_DEBUG=1 for the "
              "traceback and report it.", file=sys.stderr)
        return EXIT_INTERNAL
