"""The runtime's own error type, its exit statuses, and the one place that turns faults into one line.

Exit statuses of ``rtsegc train``, ``eval``, ``predict`` and ``bench``:

====  =====================================================================================
0     done (``--resume`` on a finished run is also 0: it says so and changes nothing)
2     the input or the machine is at fault: a spec, flag, file, dataset, checkpoint, a full or
      read-only disk, an out-dir held by another run, a NaN loss. One ``error:`` line on stderr
      names the file, flag or value and says what to do next.
3     a bug in the runtime itself (an exception nobody anticipated). The line says so and how to
      get the traceback (``RTSEGC_DEBUG=1``); only this status means "report it".
130   stopped by SIGINT (Ctrl-C), after writing ``last.pt`` at the current step
143   stopped by SIGTERM (what Slurm and Kubernetes send before a kill), ``last.pt`` written
138   stopped by SIGUSR1 (Lightning's requeue signal on Slurm), ``last.pt`` written
====  =====================================================================================

130/143/138 are 128 + the signal number, the shell's convention, so a scheduler's wrapper can tell
"stopped and saved" (``--resume`` continues) from a failure. A runtime command never reports itself as
the compiler: "internal compiler error" belongs to ``rtsegc``'s own commands.

This module imports neither torch nor the compiler at import time (``rtsegc --help`` loads the runtime's
command objects, which must stay cheap).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

__all__ = ["EXIT_BUG", "EXIT_FAULT", "EXIT_OK", "RunError", "describe_os_error", "guarded", "signal_status"]

EXIT_OK, EXIT_FAULT, EXIT_BUG = 0, 2, 3


class RunError(Exception):
    """A run that cannot go on because of its input or its machine; ``str()`` is the one line to print.

    The message names the file, flag or value at fault and says what to do; ``status`` is the exit status
    (2 unless a caller chooses another).
    """

    def __init__(self, message: str, status: int = EXIT_FAULT) -> None:
        super().__init__(message)
        self.status = status


def signal_status(signum: int) -> int:
    """Exit status after stopping cleanly on signal ``signum``: 128 + its number (SIGTERM -> 143)."""
    return 128 + int(signum)


#: What to do about an OSError, by errno; the file name comes from the exception.
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free space (or choose another --out-dir) and run again",
    errno.EFBIG: "file too large for this file system or the process's file-size limit (ulimit -f)",
    errno.EDQUOT: "disk quota exceeded: free space or raise the quota, then run again",
    errno.EROFS: "read-only file system: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
    errno.ENOTDIR: "a path component is a file, not a folder: choose another path",
    errno.EISDIR: "is a folder where a file was expected",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
}


def describe_os_error(exc: OSError, what: str = "") -> str:
    """One line for an OSError: the file, what failed and what to do (``what``: e.g. 'writing the
    checkpoint')."""
    if exc.filename is None and exc.strerror is None:  # raised with a message of its own
        return str(exc)
    where = exc.filename if exc.filename is not None else "?"
    advice = _OS_ADVICE.get(exc.errno or -1, exc.strerror or str(exc))
    doing = f" while {what}" if what else ""
    return f"{where}: {advice}{doing} ({exc.strerror or type(exc).__name__})"


def _print_diagnostics(exc) -> None:
    for d in exc.diagnostics:
        print(d.render(), file=sys.stderr)


def guarded(prog: str, body: Callable[[], int], passthrough: tuple[type[BaseException], ...] = ()) -> int:
    """Run a runtime command's body; every fault becomes one stderr line and an exit status (see above).

    Exceptions of the ``passthrough`` types propagate (to a caller that reports them itself).
    ``RTSEGC_DEBUG=1`` re-raises unanticipated exceptions, for the traceback.
    """
    from rtseg_compiler.diagnostics import SpecError

    from .datasets import DataError

    try:
        return body()
    except passthrough:
        raise
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except SpecError as exc:
        _print_diagnostics(exc)
        return EXIT_FAULT
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return signal_status(2)
    except OSError as exc:  # a machine fault outside the places that name it more precisely
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAULT
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        known = _known_user_error(exc)
        if known is not None:
            print(f"error: {known}", file=sys.stderr)
            return EXIT_FAULT
        if os.environ.get("RTSEGC_DEBUG"):
            raise
        print(f"{prog}: internal error in the runtime: {type(exc).__name__}: {exc}\n"
              "This is a bug in rtseg_runtime. Re-run with RTSEGC_DEBUG=1 for the traceback and report it.",
              file=sys.stderr)
        return EXIT_BUG


def _known_user_error(exc: Exception) -> str | None:
    """Weight-file errors of the compiler's weights readers: the user's file, not a bug."""
    for module, name in (("rtseg_compiler.weights.importer", "WeightsError"),
                         ("rtseg_compiler.weights", "WeightsError"),
                         ("rtseg_compiler.inference", "WeightsError")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return str(exc)
    runtime_weights = sys.modules.get(f"{__package__}.weights")
    cls = getattr(runtime_weights, "WeightsError", None)
    if isinstance(cls, type) and isinstance(exc, cls):
        return str(exc)
    return None
