"""Keep freed tensor memory in the process, so CPU forwards stop paying page faults for it.

Why: under glibc's default malloc, a block of at least the *mmap threshold* is its own ``mmap``
and goes back to the OS when freed, and free memory above ``M_TRIM_THRESHOLD`` at the top of the
heap is returned too. The threshold starts at 128 KiB and rises with freed blocks up to 32 MiB
(``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit, mallopt(3)); the trim threshold follows at twice that.
A segmentation network at 512x1024 allocates maps of 8-128 MB, so every forward maps fresh pages
and faults each of them in again: SkipNet-MobileNet at 512x1024 takes about 90,000-130,000 minor
page faults per forward, about half its CPU time (docs/deployment.md has the measurements).
jemalloc and tcmalloc keep such memory for reuse; PyTorch's CPU performance tuning guide
recommends them for this reason.

:func:`configure_allocator` gives glibc the same habit from inside a running interpreter, through
``mallopt(3)`` (nothing has to be set before Python starts):

* ``M_MMAP_THRESHOLD`` = :data:`MMAP_THRESHOLD` (1 GiB): blocks below it come from the heap, and
  a fixed threshold also stops glibc's dynamic adjustment (mallopt(3), "M_MMAP_THRESHOLD").
* ``M_TRIM_THRESHOLD`` = :data:`TRIM_THRESHOLD` (2 GiB - 1, the largest ``int`` mallopt takes):
  free memory at the top of the heap stays mapped up to that size.
* A glibc that refuses a threshold above 32 MiB (mallopt(3) documents that limit; glibc 2.36
  accepts more) gets ``M_MMAP_MAX`` = 0 instead, which serves every block from the heap.

The price is resident memory: the process keeps the peak of what it allocated instead of handing
it back between forwards. That suits a process that runs networks (``rtsegc bench``, ``predict``,
``eval``, ``train``), not necessarily a long-lived service that runs one rarely.

It does nothing, and says so, when

* ``RTSEGC_ALLOCATOR=system`` is set (the opt-out);
* jemalloc or tcmalloc is already loaded (``LD_PRELOAD``): they keep memory by design;
* the user already tunes glibc malloc (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or
  ``glibc.malloc`` in ``GLIBC_TUNABLES``): their setting wins;
* the C library is not glibc (musl, macOS, Windows).

This module imports neither torch nor anything heavy, so calling it first costs about a
millisecond.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Mapping

__all__ = ["ENV_VAR", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "AllocatorSetting", "HELP",
           "configure_allocator"]

#: The opt-out: ``RTSEGC_ALLOCATOR=system`` leaves malloc as the process found it.
ENV_VAR = "RTSEGC_ALLOCATOR"

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_M_MMAP_MAX = -4

#: Blocks below 1 GiB come from the heap: every map of the zoo networks at 1024x2048 (the largest,
#: a 1x20x1024x2048 float logit map, is 160 MB). A block above it is rare, and the work done on
#: it dwarfs the cost of mapping it.
MMAP_THRESHOLD = 1 << 30
#: ``mallopt`` takes an ``int``; 2 GiB - 1 is the largest top-of-heap slack it can be told to keep.
TRIM_THRESHOLD = (1 << 31) - 1

#: Environment settings by which a user already tunes glibc malloc; when present they are left alone.
_USER_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                    "MALLOC_MMAP_MAX_")

#: One sentence for the ``--help`` of the commands that call :func:`configure_allocator`.
HELP = (f"CPU memory: on glibc this command keeps freed tensor memory for reuse (mallopt "
        f"M_MMAP_THRESHOLD/M_TRIM_THRESHOLD), which avoids most page faults and can double CPU speed at "
        f"large inputs, at the cost of holding peak memory; {ENV_VAR}=system leaves malloc alone, and a "
        f"preloaded jemalloc or tcmalloc is used as it is (docs/deployment.md).")


@dataclass(frozen=True)
class AllocatorSetting:
    """What :func:`configure_allocator` found and did.

    ``allocator``: ``glibc``, ``jemalloc``, ``tcmalloc`` or ``unknown``; ``tuned``: whether this call
    (or an earlier one) changed glibc's settings; ``detail``: one line for logs and reports.
    """

    allocator: str
    tuned: bool
    detail: str


_done: AllocatorSetting | None = None


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the symbols the process has loaded, LD_PRELOAD first
    except OSError:  # pragma: no cover - Windows has no global symbol namespace
        return None


def _preloaded(libc: ctypes.CDLL) -> str | None:
    """``jemalloc`` or ``tcmalloc`` when that allocator serves this process's malloc."""
    if hasattr(libc, "mallctl"):  # jemalloc's control interface, exported by libjemalloc.so
        return "jemalloc"
    if hasattr(libc, "tc_malloc") or hasattr(libc, "MallocExtension_GetNumericProperty"):
        return "tcmalloc"
    return None


def configure_allocator(environ: Mapping[str, str] | None = None) -> AllocatorSetting:
    """Make CPU forwards reuse freed memory (see the module docstring); safe to call repeatedly.

    Call it once at the start of a process that runs compiled networks on the CPU, before the first
    forward: ``from rtseg_compiler import configure_allocator; configure_allocator()``. ``environ``
    stands in for ``os.environ`` in the checks. Returns what was found and done; never raises.
    """
    global _done
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR, "").strip().lower() == "system":
        return AllocatorSetting("unknown", False, f"malloc left as configured ({ENV_VAR}=system)")
    if _done is not None and _done.tuned:
        return _done
    libc = _libc()
    if libc is None:
        return AllocatorSetting("unknown", False, "malloc left as configured (no C library handle)")
    other = _preloaded(libc)
    if other:
        return AllocatorSetting(other, False, f"{other} is loaded and keeps freed memory; left as it is")
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return AllocatorSetting("unknown", False, "malloc left as configured (the C library is not glibc)")
    user = [name for name in _USER_MALLOC_ENV if name in env]
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        user.append("GLIBC_TUNABLES")
    if user:
        return AllocatorSetting("glibc", False, f"glibc malloc left as set by {', '.join(user)}")
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
        no_mmap = f"M_MMAP_THRESHOLD={MMAP_THRESHOLD}"
    elif libc.mallopt(_M_MMAP_MAX, 0) == 1:
        no_mmap = "M_MMAP_MAX=0"
    else:
        return AllocatorSetting("glibc", False, "glibc refused mallopt M_MMAP_THRESHOLD and M_MMAP_MAX; "
                                "malloc left as configured")
    trim = (f"M_TRIM_THRESHOLD={TRIM_THRESHOLD}" if libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            else "M_TRIM_THRESHOLD refused")
    _done = AllocatorSetting("glibc", True, f"glibc malloc keeps freed memory (mallopt {no_mmap}, {trim}; "
                             f"{ENV_VAR}=system to opt out)")
    return _done
