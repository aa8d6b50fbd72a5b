"""One run per out-dir: an advisory lock, and a refusal to mix a new run into an old one's files.

Lock: ``OUT/.lock`` held with ``fcntl.flock(LOCK_EX | LOCK_NB)`` for the life of the training process.
The OS releases it when the process ends in any way (exit, crash, SIGKILL), so a stale lock cannot
block a later run, and a second run in the same folder stops before touching anything, with an error
naming the folder and the holder's process id. The lock is advisory: it orders rtsegc runs, not other
programs. On file systems without flock (some network mounts) the lock is skipped with a warning.

A non-empty out-dir without ``--resume`` is refused (not versioned into ``version_N/`` as Lightning does):
the user names where a run goes, and a refusal cannot hide a typo in ``--resume`` behind a fresh folder.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from .errors import RunError, describe_os_error

__all__ = ["LOCK_NAME", "RUN_FILES", "OutDirLock", "claim_out_dir"]

LOCK_NAME = ".lock"
#: Files a run writes; any of them in a folder makes it a run's folder.
RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "summary.md")


class OutDirLock:
    """The held lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _make_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunError(f"--out-dir {out}: is a file, not a folder; choose another --out-dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out-dir {describe_os_error(exc, 'creating the output folder')}") from None


def claim_out_dir(out: str | Path, resume: bool) -> OutDirLock:
    """Create ``out``, take its lock, and check it suits a new run (or a resumed one)."""
    out = Path(out)
    _make_folder(out)
    lock_path = out / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"--out-dir {describe_os_error(exc, 'creating the run lock')}") from None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = ""
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            pass
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunError(f"--out-dir {out}: another run is using this folder"
                           + (f" (process {holder})" if holder else "")
                           + "; wait for it to end, or choose another --out-dir") from None
        print(f"warning: {out}: no file lock on this file system ({exc.strerror}); make sure no other run "
              "uses this folder", file=sys.stderr)
        return OutDirLock(None)
    except ImportError:  # pragma: no cover - not POSIX
        return OutDirLock(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise RunError(f"--out-dir {describe_os_error(exc, 'writing the run lock')}") from None
    lock = OutDirLock(fd)
    if not resume:
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found:
            lock.release()
            raise RunError(f"--out-dir {out}: holds another run ({', '.join(found)}); add --resume to "
                           "continue it, or choose another --out-dir (nothing was changed)")
    return lock
