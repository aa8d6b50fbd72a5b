"""Stop a training run cleanly on the signals that schedulers and users send.

SIGTERM is what Slurm (``scancel``, a time limit) and Kubernetes (pod deletion) send before SIGKILL,
after a grace period (Kubernetes' default: 30 s); SIGUSR1 is the signal PyTorch Lightning's Slurm
support asks for (``#SBATCH --signal=SIGUSR1@90``) to save and requeue; SIGINT is Ctrl-C. On any of
them the loop finishes the step in flight, writes ``last.pt`` at that step and exits with 128 + the
signal's number (143, 138, 130), so ``--resume`` loses nothing. A second SIGINT stops at once (a
KeyboardInterrupt, still saving ``last.pt`` from the state between steps).

DataLoader workers ignore these signals (a terminal sends Ctrl-C to the whole process group, and some
schedulers signal every process of a job), so the step in flight can finish with its data.

Under torchrun every rank installs the handlers and the ranks agree on the stop through one all-reduce
of a flag per step, so they leave the loop at the same step and no rank waits forever in a collective
whose peers have gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["StopSignals", "WorkerSignals", "ignore_stop_signals"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores the stop signals; the training process handles
    them. Workers still end with it (DataLoader shuts them down, and they watch their parent).

    A worker that ignores SIGTERM for good cannot be stopped by ``multiprocessing``'s exit handler,
    which terminates daemonic children (SIGTERM) and then joins them: a process exiting while such
    a worker is alive waits forever. The training loop uses :class:`WorkerSignals`, which ends that
    once the loop is over."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class WorkerSignals:
    """DataLoader ``worker_init_fn`` for the training loop: workers ignore the stop signals while
    the loop runs, and SIGTERM ends them again after :meth:`release`.

    While the loop runs, a terminal's Ctrl-C or a scheduler's SIGTERM to the whole process group must
    not kill a worker before the training process finishes its step and saves. After the loop,
    nothing is left to protect, and SIGTERM is how ``multiprocessing`` stops daemonic children when
    the process exits: a persistent worker still referenced then (by an exception's traceback, for
    one) would otherwise leave the exit waiting for it forever. The flag is one shared byte, read
    without a lock in the worker's signal handler.
    """

    def __init__(self) -> None:
        import multiprocessing

        self._released = multiprocessing.RawValue("b", 0)

    def __call__(self, worker_id: int = 0) -> None:
        ignore_stop_signals(worker_id)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame) -> None:
        if self._released.value:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def release(self) -> None:
        """From now on SIGTERM ends the workers (the loop is over; called in its ``finally``)."""
        self._released.value = 1


class StopSignals:
    """Context manager: while active, the signals above set :attr:`signum` instead of killing the process."""

    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
            if self.announce:
                print(f"received {signal.Signals(signum).name}: stopping after this step and writing last.pt"
                      + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""),
                      file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers only install there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
