"""Where trials run: this process, N local worker processes, or Ray tasks on a cluster.

Every executor calls the same :func:`~.trial.run_trial` with the same :class:`~.trial.TrialJob`, and
each trial sets torch's thread count to its declared CPUs (``resources: {cpus: N}``), so with
``--deterministic`` a trial computes the same numbers wherever it runs (the float sums of a
convolution depend on how many threads split them).

- ``local`` (default): with ``--workers 1`` the trials run one after the other inside this process
  (no start-up cost); with ``--workers N`` in N spawned processes, each running one trial at a time.
- ``ray``: one Ray task per trial, declared with ``num_cpus`` and ``num_gpus`` from ``resources:``, so
  Ray's scheduler packs them onto the cluster's nodes. ``--address`` joins a running cluster
  (``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others); without it
  Ray starts on this machine with its CPUs. The study folder must be on a file system every node
  sees (run directories, results), and every node needs this project installed.

A trial with ``resources: {processes: P}`` (by default one per GPU) trains with DDP inside its
allocation: the trial runs ``torchrun --standalone --nproc_per_node P`` on its node, NCCL on the GPUs Ray
assigned to the task, gloo on CPU. Evaluation and the benchmark then run in the trial's own process.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, Sequence

from .trial import TrialJob, run_trial

__all__ = ["EXECUTORS", "RAY_INSTALL", "RAY_VERSION", "StudyError", "run_jobs"]

EXECUTORS = ("local", "ray")
#: The Ray release the study was tested with; pyproject.toml's ``study`` extra pins it.
RAY_VERSION = "2.60.0"
RAY_INSTALL = f"pip install 'rtseg-compiler[study]'  (or: pip install 'ray=={RAY_VERSION}')"

OnResult = Callable[[TrialJob, Mapping], None]


class StudyError(Exception):
    """A study that cannot run as asked (missing executor, bad folder); exit status 2, no traceback."""


def run_jobs(jobs: Sequence[TrialJob], executor: str = "local", *, workers: int = 1,
             address: str | None = None, gpus: int = 0, on_result: OnResult) -> None:
    """Run every job; ``on_result(job, row)`` is called in this process as each one finishes."""
    if executor == "local":
        _run_local(jobs, workers, on_result)
    elif executor == "ray":
        _run_ray(jobs, address, gpus, on_result)
    else:
        raise StudyError(f"unknown executor '{executor}' (choose {', '.join(EXECUTORS)})")


def _failed(job: TrialJob, error: str) -> dict:
    return {**job.row, "status": "failed", "error": error}


def _run_local(jobs: Sequence[TrialJob], workers: int, on_result: OnResult) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_result(job, run_trial(job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child would inherit this process's torch thread pools and locks
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_trial, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died is one failed trial
                row = _failed(job, f"worker process failed: {type(exc).__name__}: {exc}")
            on_result(job, row)


def ray_module():
    """``import ray``, or a StudyError that names the install line."""
    try:
        import ray
    except ImportError:
        raise StudyError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def _run_ray(jobs: Sequence[TrialJob], address: str | None, gpus: int, on_result: OnResult) -> None:
    ray = ray_module()
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": _cpus(jobs)}
        try:
            ray.init(include_dashboard=False, log_to_driver=False, **options)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError ...: one line, no traceback
            where = f"join the Ray cluster at {address}" if address else "start Ray on this machine"
            raise StudyError(f"cannot {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    try:
        task = ray.remote(run_trial)
        pending = {task.options(num_cpus=job.cpus, num_gpus=gpus, max_retries=0).remote(job): job
                   for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task that died is one failed trial
                    row = _failed(job, f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                on_result(job, row)
    finally:
        if started_here:
            ray.shutdown()


def _cpus(jobs: Iterable[TrialJob]) -> int:
    """A local Ray gets this machine's CPUs, and never fewer than the largest trial asks for."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max([available, *(job.cpus for job in jobs)])
