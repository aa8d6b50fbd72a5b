"""One trial: train as ``rtsegc train`` does, evaluate ``best.pt`` on the evaluation split, benchmark.

Layout of a study folder (``out:`` of the study file)::

    specs/<trial>.yaml     the trial's network as a plain model file (kind: model)
    runs/<trial>/          an ordinary ``rtsegc train`` run directory: last.pt, best.pt, log.jsonl, summary.md
    logs/<trial>.txt       what training printed (trials may run side by side)
    results/<trial>.json   the trial's row: status, audit, mIoU (per class), latency; written last

A trial is resumable because its run directory is: ``last.pt`` is written at every evaluation, so a
trial killed mid-run continues from its last evaluation (``rtsegc train --resume``), and a trial with a
``results/`` file is finished. ``rtsegc train runs/<trial>/../../specs/<trial>.yaml --out-dir ...`` by
hand is the same run.

:func:`run_trial` takes and returns plain data, so the same function runs in this process, in a local
worker process or as a Ray task.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["TrialJob", "run_trial", "trial_paths"]


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one trial; plain data, so it pickles for processes and Ray."""

    name: str
    study_dir: str
    model_spec: str  # the trial's model file (specs/<trial>.yaml)
    output_stride: int | None
    seed: int
    recipe: Mapping[str, Any]
    data: str
    dataset: str
    eval: Mapping[str, Any]
    bench: Mapping[str, Any]
    row: Mapping[str, Any]  # the trial's description and audit, copied into its result
    cpus: int = 1
    processes: int = 1  # > 1: DDP, torchrun inside the trial's allocation
    deterministic: bool = False
    quiet: bool = True  # send training output to logs/<trial>.txt
    extra: Mapping[str, Any] = field(default_factory=dict)


def trial_paths(study_dir: str | Path, name: str) -> dict[str, Path]:
    root = Path(study_dir)
    return {"spec": root / "specs" / f"{name}.yaml", "run": root / "runs" / name,
            "log": root / "logs" / f"{name}.txt", "result": root / "results" / f"{name}.json"}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def run_trial(job: TrialJob, on_eval: Callable[[int, dict], bool] | None = None) -> dict[str, Any]:
    """Train, evaluate and benchmark one trial; the result row (``status`` ok / failed / stopped)."""
    import torch

    paths = trial_paths(job.study_dir, job.name)
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {**job.row, "status": "running"}
    torch.set_num_threads(job.cpus)  # the trial's declared CPUs, the same under every executor
    started = time.perf_counter()
    with paths["log"].open("a") as log, _redirect(log if job.quiet else None):
        try:
            row.update(_train(job, paths, on_eval))
            compiled, evaluation = _evaluate(job, paths)
            row.update(evaluation)
            row.update(_bench(job, compiled.module))
            row["status"] = "stopped" if row.get("stopped_early") else "ok"
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a failing trial is recorded, the study goes on
            row["status"] = "failed"
            row["error"] = f"{type(exc).__name__}: {exc}"
            print(traceback.format_exc(), file=log)
    row["wall_s"] = round(time.perf_counter() - started, 2)
    _write_json(paths["result"], row)
    return row


@contextlib.contextmanager
def _redirect(stream):
    if stream is None:
        yield
        return
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield


def _train(job: TrialJob, paths: Mapping[str, Path], on_eval) -> dict[str, Any]:
    from ..train import TrainConfig, train

    run = paths["run"]
    saved = [p for p in (run / "last.pt", run / "best.pt") if p.is_file()]
    resume = bool(saved)  # rtsegc train --resume also repairs a kill between best.pt and last.pt
    if run.exists() and not resume:
        # Started but killed before its first checkpoint: nothing to keep, start it again.
        shutil.rmtree(run)
    recipe = dict(job.recipe)
    if "input" in recipe:
        recipe["input"] = tuple(recipe["input"])
    if job.deterministic:
        recipe["deterministic"] = True
    cfg = TrainConfig(model=job.model_spec, output_stride=job.output_stride, data=job.data,
                      dataset=job.dataset, out_dir=str(run), resume=resume, seed=job.seed, **recipe)
    resumed_at = 0
    if resume:
        resumed_at = max(int(torch_load(p).get("iter_num", 0)) for p in saved)
    if resumed_at >= cfg.max_iters and (run / "best.pt").is_file():
        summary = {"iter_num": resumed_at, "stopped_early": False}  # trained; killed before evaluating
    elif job.processes > 1:
        summary = _torchrun(cfg, job, paths)
    else:
        summary = train(cfg, on_eval=on_eval)  # its errors are the trial's error (run_trial records them)
    return {"steps": summary["iter_num"], "resumed_from": resumed_at if resume else None,
            "stopped_early": bool(summary.get("stopped_early"))}


def train_argv(cfg: Any) -> list[str]:
    """The ``rtsegc train`` command line that builds ``cfg`` (TrainConfig) again."""
    from dataclasses import fields

    argv = [cfg.model] if cfg.model else []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "model" or value is None or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("encoder_params", "meta_params"):  # --encoder-param NAME=VALUE, repeated
            for key, item in value.items():
                argv += [f"--{f.name[:-1].replace('_', '-')}", f"{key}={item}"]
        elif isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, "x".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def _torchrun(cfg: Any, job: TrialJob, paths: Mapping[str, Path]) -> dict[str, Any]:
    """DDP inside the trial: ``torchrun --standalone --nproc_per_node P -m rtseg_runtime.train ...``, one
    process per GPU of the trial's allocation (Ray sets CUDA_VISIBLE_DEVICES for the task), gloo on CPU.
    Output goes to the trial's log; the run's ``last.pt`` says how far it got."""
    import subprocess
    import sys

    package = __package__.rsplit(".", 1)[0]  # rtseg_runtime, or runtime from a source checkout
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={job.processes}", "-m", f"{package}.train", *train_argv(cfg)]
    with paths["log"].open("a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {job.processes} processes exited with status {done.returncode} "
                           f"(see {paths['log']})")
    return {"iter_num": int(torch_load(paths["run"] / "last.pt").get("iter_num", 0)), "stopped_early": False}


def torch_load(path: Path) -> dict[str, Any]:
    """A checkpoint of the trial's run, verified as ``rtsegc eval`` reads it."""
    from ..checkpoint import load_checkpoint

    return load_checkpoint(path)


def _evaluate(job: TrialJob, paths: Mapping[str, Path]) -> tuple[Any, dict[str, Any]]:
    """Score ``best.pt`` on the evaluation split as ``rtsegc eval --checkpoint`` does; (model, row)."""
    from torch.utils.data import DataLoader

    from ..build import make_dataset, pick_device
    from ..evaluate import evaluate, load_checkpoint_model

    best = paths["run"] / "best.pt"
    compiled, checkpoint, spec = load_checkpoint_model(best)
    _, _, h, w = compiled.audit.input
    settings = dict(job.eval)
    split = settings.get("split", "val")
    dataset = make_dataset(job.data, split, (h, w), spec, limit=settings.get("limit"),
                           label_size=settings.get("label_size", "input"), dataset_spec=spec)
    loader = DataLoader(dataset, batch_size=settings.get("batch_size", 1), shuffle=False)
    device = pick_device(job.recipe.get("device", "auto"))
    result = evaluate(compiled.module.to(device), loader, spec.num_classes, device=device)
    metrics = result.metrics.to_json(spec.classes)
    return compiled, {"miou": metrics["miou"], "pixel_accuracy": metrics.get("pixel_accuracy"),
            "iou": metrics["iou"], "eval_split": split, "eval_images": len(dataset),
            "best_step": int(checkpoint.get("iter_num", 0)), "val_miou_at_best": checkpoint.get("best_miou")}


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _bench(job: TrialJob, module: Any) -> dict[str, Any]:
    """Forward latency of the trained network at each benchmark input (eval, no_grad).

    The compiled module takes any input size its layers allow (the audit's size only fixes the
    analysis), so the evaluated module is timed as it is, at each size."""
    import torch
    from rtseg_compiler.latency import benchmark

    from ..build import pick_device

    settings = dict(job.bench)
    if settings.get("skip"):
        return {"bench": []}
    results = []
    device = pick_device(settings.get("device", "cpu"))
    dtype = getattr(torch, _DTYPES[settings.get("dtype", "float32")])
    for size in settings.get("inputs") or []:
        result = benchmark(module, tuple(size), batch_size=settings.get("batch", 1),
                           warmup=settings.get("warmup", 10), iters=settings.get("iters", 50), device=device,
                           dtype=dtype, channels_last=settings.get("channels_last", False), name=job.name)
        results.append(result.to_json())
    first = results[0] if results else {}
    return {"bench": results, "latency_ms": first.get("latency_ms"), "images_per_s": first.get("fps")}
