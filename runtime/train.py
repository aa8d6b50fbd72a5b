"""Train a compiled segmentation network; one process, or several under torchrun (DDP).

Shaped like nanoGPT's ``train.py``: config, then ``get_lr``, then one top-to-bottom loop that evaluates and
checkpoints every ``eval_interval`` iterations. Defaults follow RTSeg's paper-era configs
(``config/experiments_config/*_train.yaml``): Adam at a constant lr 1e-4, weight decay 5e-4, batch 4,
ENet-weighted cross-entropy, no augmentation.

Usage::

    rtsegc train specs/models/skipnet_mobilenet_v1.yaml --dataset camvid --data ../shared/data/camvid-mini \\
        --input 360x480 --max-iters 2000 --out-dir out/skipnet_camvid
    torchrun --standalone --nproc_per_node 2 -m rtseg_runtime.train ...  # DDP: gloo on CPU, nccl on CUDA
    python -m rtseg_runtime.train ...    # the same options, without the rtsegc front end

The checkpoint (``last.pt`` at every evaluation, ``best.pt`` when mIoU improves) holds plain data only:
tensors, numbers, strings and dicts, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rtseg_compiler.allocator import HELP as ALLOCATOR_HELP
from rtseg_compiler.allocator import configure_allocator
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from rtseg_compiler.cli.args import add_spec_param_args, model_choice_problem, parse_size, spec_params
from rtseg_compiler.passes.dilate import VALID_OUTPUT_STRIDES

from .build import SYNTHETIC, ModelArgs, build_model, check_class_outputs, make_dataset, pick_device
from .errors import RunError, guarded, signal_status
from .data import IGNORE_INDEX, class_set
from .evaluate import evaluate
from .metrics import category_metrics
from .losses import SegmentationLoss, class_pixel_counts, enet_class_weights, main_output, split_outputs

__all__ = ["Stopped", "TrainConfig", "TrainError", "get_lr", "main", "parse_config", "settings_differ",
           "train"]

CHECKPOINT_VERSION = 1


class TrainError(RunError):
    """A run that cannot start or go on as configured (no batches, a checkpoint of another model, a NaN
    loss); exit status 2, like every :class:`runtime.errors.RunError`."""


def _opt(help: str, *, choices: Sequence[Any] | None = None, metavar: str | None = None,
         **kwargs: Any) -> Any:
    return field(metadata={"help": help, "choices": choices, "metavar": metavar}, **kwargs)


@dataclass(frozen=True)
class TrainConfig:
    # model
    model: str | None = _opt("model spec (positional); or --encoder and --meta", default=None)
    encoder: str | None = _opt("encoder spec, with --meta", default=None)
    meta: str | None = _opt("meta-architecture spec, with --encoder", default=None)
    input: tuple[int, int] | None = _opt("training size HxW (default: the spec's input)", metavar="HxW",
                                         default=None)
    output_stride: int | None = _opt("dilate the encoder to output stride 8, 16 or 32", choices=VALID_OUTPUT_STRIDES,
                                     default=None)
    encoder_params: dict[str, Any] | None = _opt("encoder parameter overrides (--encoder-param NAME=VALUE, "
                                                 "repeatable)", default=None)
    meta_params: dict[str, Any] | None = _opt("meta-architecture parameter overrides "
                                              "(--meta-param NAME=VALUE, repeatable)", default=None)
    pretrained: str | None = _opt("encoder weights: a local state dict FILE, or SOURCE:NAME[@PATH] through "
                                  "the encoder spec's layout (docs/weights.md); strict; without @PATH the "
                                  "source is fetched", default=None)
    pretrained_prefix: str = _opt("keys of --pretrained that are loaded (all others are skipped)",
                                  default="encoder.")
    # data
    data: str | None = _opt("dataset folder (its layout: --dataset), or 'synthetic' (coloured rectangles); "
                            "required with --dataset; without both the run trains on synthetic data and "
                            "says so", default=None)
    dataset: str | None = _opt("dataset file: a name under specs/datasets (cityscapes, camvid, folder) or a "
                               "PATH.yaml; sets classes, label mapping, layout, mean/std, augmentation",
                               metavar="NAME|PATH.yaml", default=None)
    classes: str = _opt("without --dataset: 'camvid' (11 classes, label 11 = void) or a class count",
                        default="camvid")
    train_split: str = _opt("training split folder", default="train")
    external_splits: bool = _opt("let the dataset file's splits: name absolute folders outside --data "
                                 "(refused otherwise)", default=False)
    val_split: str = _opt("validation split folder", default="val")
    limit_train: int | None = _opt("use only the first N training images (smoke runs)", default=None)
    limit_val: int | None = _opt("use only the first N validation images", default=None)
    hflip: float = _opt("horizontal flip probability (RTSeg: 0)", default=0.0)
    augment: str | None = _opt("training augmentation, replacing the dataset file's list: e.g. "
                               "scale=0.5-2.0,crop=256x512,hflip=0.5,jitter=0.2, or none", default=None)
    skip_bad: bool = _opt("list and skip bad samples (missing or mis-sized labels, unknown label values, "
                          "unreadable images) instead of stopping at the first", default=False)
    weighted_loss: bool = _opt("ENet class weights 1/ln(1.02 + p_c) (RTSeg: on)", default=True)
    aux_weight: float = _opt("loss weight of each auxiliary output of a model with several "
                             "(torchvision's FCN/DeepLab recipe: 0.5)", default=0.5)
    # optimisation: RTSeg used Adam, lr 1e-4 constant, weight decay 5e-4, batch 4-6
    batch_size: int = _opt("images per step per process", default=4)
    max_iters: int = _opt("optimiser steps in total", default=2000)
    lr: float = _opt("peak learning rate (Adam)", default=1e-4)
    min_lr: float = _opt("final learning rate of poly/cosine decay", default=0.0)
    schedule: str = _opt("constant (RTSeg), poly (power 0.9, torchvision) or cosine",
                         choices=("constant", "poly", "cosine"), default="constant")
    warmup_iters: int = _opt("linear warm-up steps", default=0)
    weight_decay: float = _opt("L2 coefficient (Adam's coupled decay = RTSeg's wd/2*||w||^2 loss)",
                               default=5e-4)
    grad_clip: float = _opt("clip the gradient norm to this (0 = off)", default=0.0)
    # evaluation and I/O
    eval_interval: int = _opt("evaluate and checkpoint every N steps (0: only at the end)", default=250)
    eval_batches: int | None = _opt("evaluate on at most N batches per process", default=None)
    log_interval: int = _opt("print the training loss every N steps", default=10)
    out_dir: str = _opt("checkpoints and log.jsonl go here", default="out")
    resume: bool = _opt("continue from out_dir/last.pt", default=False)
    tensorboard: bool = _opt("also write TensorBoard scalars to out_dir/tb (needs the tensorboard extra)",
                             default=False)
    progress: str = _opt("progress display: auto (a tqdm bar on a terminal when tqdm is installed, "
                         "plain lines otherwise), bar or lines", choices=("auto", "bar", "lines"),
                         default="auto")
    # system
    device: str = _opt("auto, cpu, cuda or cuda:N", default="auto")
    seed: int = _opt("base random seed (rank r uses seed + r)", default=1337)
    num_workers: int | None = _opt("DataLoader worker processes (default: CPU count - 1, at most 8; "
                                   "0 loads in the training process)", default=None)
    channels_last: bool = _opt("NHWC memory format (faster convs with oneDNN and cuDNN)", default=False)
    amp: bool = _opt("mixed precision: bf16 autocast on CPU, fp16 + GradScaler on CUDA", default=False)
    deterministic: bool = _opt("torch.use_deterministic_algorithms (warn-only)", default=False)

    def __post_init__(self) -> None:
        problem = model_choice_problem(self.model, self.encoder, self.meta)
        if problem:
            raise ValueError(problem)
        if self.schedule not in ("constant", "poly", "cosine"):
            raise ValueError(f"schedule must be constant, poly or cosine, got {self.schedule!r}")
        if self.max_iters < 0 or self.batch_size < 1 or self.warmup_iters < 0:
            raise ValueError("need max_iters >= 0, batch_size >= 1, warmup_iters >= 0")
        for flag, value in (("--num-workers", self.num_workers), ("--limit-train", self.limit_train),
                            ("--limit-val", self.limit_val), ("--eval-batches", self.eval_batches),
                            ("--eval-interval", self.eval_interval)):
            if value is not None and value < 0:
                raise ValueError(f"{flag} {value}: must be 0 or more")
        if self.data is None and self.dataset:
            raise ValueError(f"--dataset {self.dataset} needs --data FOLDER, the folder holding its images "
                             "(or --data synthetic for generated images with its classes)")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input"] = list(self.input) if self.input else None
        return data

    def dataset_spec(self):
        """The dataset file in use: ``--dataset``, else the one ``--classes`` stands for."""
        from .build import dataset_spec_for
        from .datasets import load_dataset_spec

        return load_dataset_spec(self.dataset) if self.dataset else dataset_spec_for(self.classes)

    def class_names(self) -> tuple[str, ...]:
        return self.dataset_spec().classes if self.dataset else class_set(self.classes).names

    def model_args(self) -> ModelArgs:
        return ModelArgs(self.model, self.encoder, self.meta, self.input, len(self.class_names()),
                         self.output_stride, self.encoder_params, self.meta_params)

    def workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        # CPUs this process may run on (taskset, cgroup cpusets), not the machine's: one stays for the loop
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, min(8, cpus - 1))


def build_parser(prog: str = "rtsegc train") -> argparse.ArgumentParser:
    """One option per TrainConfig field (``--max-iters`` for ``max_iters``), typed from its annotation."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=ALLOCATOR_HELP)
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kind = hints[f.name]
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        # A help text that says its default itself ("the spec's input") or an unset default gets no suffix.
        stated = "(default:" in f.metadata["help"] or f.default is None
        help_text = f.metadata["help"] if stated else f"{f.metadata['help']} (default: {f.default})"
        if f.name == "model":
            p.add_argument("model", nargs="?", help=f.metadata["help"])
        elif f.name == "encoder_params":  # with meta_params: the spelling every rtsegc command shares
            add_spec_param_args(p)
        elif f.name == "meta_params":
            continue
        elif base is bool:
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                           default=f.default, help=help_text)
        else:
            convert = parse_size if typing.get_origin(base) is tuple else base  # tuple[int, int]: "HxW"
            p.add_argument(f"--{f.name.replace('_', '-')}", type=convert, default=f.default, help=help_text,
                           choices=f.metadata["choices"], metavar=f.metadata["metavar"])
    return p


def parse_config(argv: Sequence[str] | None = None, prog: str = "rtsegc train") -> TrainConfig:
    args = build_parser(prog).parse_args(argv)
    options = {**vars(args), "encoder_params": spec_params(args, "encoder_params"),
               "meta_params": spec_params(args, "meta_params")}
    try:
        return TrainConfig(**options)
    except ValueError as exc:
        build_parser(prog).error(str(exc))
        raise  # unreachable: error() exits


# --------------------------------------------------------------------------- learning rate

def get_lr(it: int, cfg: TrainConfig) -> float:
    """Learning rate for step ``it`` (0-based); a pure function of the step and the config."""
    # 1) linear warm-up from lr/(warmup+1) to lr
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    # 2) constant: RTSeg (its decay code is commented out, train/train.py:584-586)
    if cfg.schedule == "constant":
        return cfg.lr
    # 3) decay from lr to min_lr over the remaining steps
    span = max(1, cfg.max_iters - cfg.warmup_iters)
    progress = min(1.0, (it - cfg.warmup_iters) / span)
    if cfg.schedule == "poly":  # torchvision's PolynomialLR, power 0.9
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - progress) ** 0.9
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- helpers

def settings_differ(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """The model settings a checkpoint and this run disagree on, by dotted key
    (``encoder_params.width: 1.0 in the checkpoint, 0.5 in this run``), instead of both whole dicts."""
    flat_saved, flat_wanted = _flatten(saved), _flatten(wanted)
    diffs = []
    for key in sorted(set(flat_saved) | set(flat_wanted)):
        old, new = flat_saved.get(key, _UNSET), flat_wanted.get(key, _UNSET)
        if old != new:
            diffs.append(f"{key}: {_shown(old)} in the checkpoint, {_shown(new)} in this run")
    return ("the model differs (" + "; ".join(diffs) + "); use the same model options, "
            "or another --out-dir for a new run")


_UNSET = object()


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shard(dataset, rank: int, world: int):
    """Every ``world``-th sample from ``rank`` on: disjoint, complete, and without the padding that
    DistributedSampler adds (padding would count some validation images twice)."""
    return dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))


def _log(path: Path | None, record: dict) -> None:
    if path is not None:
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def _tensorboard_images(tb, model, val_set, spec, device, step: int, count: int = 3) -> None:
    """The first ``count`` validation images: image | ground truth | prediction, in the palette."""
    from .report import side_by_side

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(min(count, len(val_set))):
                x, y = val_set[i][:2]
                logits = main_output(model(x[None].to(device)))
                if logits.shape[-2:] != y.shape[-2:]:
                    logits = torch.nn.functional.interpolate(logits.float(), size=y.shape[-2:],
                                                             mode="bilinear", align_corners=False)
                tb.add_image(f"val/{i}", side_by_side(x, y, logits.argmax(1)[0], spec), step)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- training

def train(cfg: TrainConfig, on_eval: Callable[[int, dict], bool] | None = None) -> dict[str, Any]:
    """Run the whole training; returns a summary (losses per step, last evaluation, checkpoint paths).

    ``on_eval(step, metrics)`` is called after each evaluation and its checkpoint; returning True stops
    the run there (``stopped_early`` in the summary). ``rtsegc study``'s early-stopping rules use it.
    """
    # ---- processes and devices: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
    ddp = int(os.environ.get("RANK", -1)) != -1
    device = pick_device(cfg.device)
    if ddp:
        import torch.distributed as dist

        use_nccl = device.type == "cuda"
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if use_nccl:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    master = rank == 0
    try:
        return _train(cfg, device, rank, world, master, ddp, on_eval)
    finally:
        if ddp:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int, master: bool,
           ddp: bool, on_eval: Callable[[int, dict], bool] | None = None) -> dict[str, Any]:
    from .checkpoint import load_checkpoint, remove_temporaries
    from .outdir import claim_out_dir

    torch.manual_seed(cfg.seed + rank)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
    out_dir = Path(cfg.out_dir)
    lock, refused = None, None
    if master:
        try:
            lock = claim_out_dir(out_dir, cfg.resume)  # before anything in the folder is read or written
            remove_temporaries(out_dir)
        except RunError as exc:
            refused = exc
    if ddp:  # the other ranks learn of a refusal instead of waiting for rank 0 in the first collective
        import torch.distributed as dist

        flag = torch.tensor([1.0 if refused else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and refused is None:
            raise TrainError(f"rank {rank}: rank 0 refused --out-dir {out_dir} (its message says why)")
    if refused is not None:
        raise refused
    try:
        checkpoint = None
        if cfg.resume:
            checkpoint = _resume_point(out_dir, device, master)
            if checkpoint["iter_num"] >= cfg.max_iters:
                if master:
                    print(f"{out_dir}: the run already finished at step {checkpoint['iter_num']} "
                          f"(--max-iters {cfg.max_iters}); nothing to do, every file kept. Raise "
                          "--max-iters to train further.")
                return {"iter_num": checkpoint["iter_num"], "losses": [],
                        "eval": checkpoint.get("metrics", {}), "best_miou": checkpoint.get("best_miou", -1.0),
                        "out_dir": str(out_dir), "rank": rank, "world_size": world, "finished": True}
        return _train_loop(cfg, device, rank, world, master, ddp, out_dir, checkpoint, on_eval)
    finally:
        if lock is not None:
            lock.release()


def _resume_point(out_dir: Path, device: torch.device, master: bool) -> dict:
    """The newest of ``last.pt`` and ``best.pt``: normally ``last.pt``; ``best.pt`` when a kill came after
    ``best.pt`` was replaced and before ``last.pt`` was (the one write order, runtime/checkpoint.py)."""
    from functools import partial

    from .checkpoint import RESUME_KEYS
    from .checkpoint import load_checkpoint as load_any

    load_checkpoint = partial(load_any, require=RESUME_KEYS)
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    if not last.exists() and not best.exists():
        raise TrainError(f"--resume: {last} does not exist, so there is nothing to continue; drop --resume "
                         "to start a new run")
    try:
        checkpoint = load_checkpoint(last, map_location=device) if last.exists() else None
    except RunError as exc:
        try:
            intact = load_checkpoint(best, map_location=device)["iter_num"] if best.exists() else None
        except RunError:
            intact = None
        if intact is None:
            raise
        raise TrainError(f"{exc}; {best} (step {intact}) is intact: copy it over {last.name} to resume "
                         "from it") from None
    if best.exists():
        try:
            newer = load_checkpoint(best, map_location=device)
        except RunError as exc:
            if checkpoint is None:
                raise
            if master:
                print(f"warning: {exc}; resuming from {last.name}, and the next improvement replaces it",
                      file=sys.stderr)
            newer = None
        if newer is not None and (checkpoint is None or newer["iter_num"] > checkpoint["iter_num"]):
            if master:
                print(f"resume: {best} (step {newer['iter_num']}) is newer than {last.name}"
                      + (f" (step {checkpoint['iter_num']})" if checkpoint is not None else " (missing)")
                      + f": a run stopped between the two writes; continuing from {best.name}")
            checkpoint = newer
    return checkpoint


def _load_pretrained(cfg: TrainConfig, compiled, raw_model, master: bool) -> None:
    from rtseg_compiler.weights.importer import import_weights, is_source_text, looks_like_source

    from .weights import WeightsError, load_pretrained

    from .checkpoint import verify_weights_file

    source = is_source_text(cfg.pretrained) or looks_like_source(cfg.pretrained)  # torchvision:resnet18[@F]
    local = cfg.pretrained.rpartition("@")[2] if source else cfg.pretrained
    if not source or "@" in cfg.pretrained:
        verify_weights_file(local)  # empty, truncated or corrupted: named before any key is matched
    try:
        if source:
            report = import_weights(compiled, cfg.pretrained)
        else:
            report = load_pretrained(raw_model, cfg.pretrained, prefix=cfg.pretrained_prefix)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files and failed fetches raise many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if ":" in cfg.pretrained and not Path(cfg.pretrained).exists():  # SOURCE:NAME, fetched
            raise TrainError(f"--pretrained {cfg.pretrained}: could not fetch the weights "
                             f"({type(exc).__name__}: {first}); without network, download them elsewhere "
                             "and give SOURCE:NAME@FILE") from None
        raise TrainError(f"--pretrained {cfg.pretrained}: not a readable weights file "
                         f"({type(exc).__name__}: {first}); give a complete state dict or checkpoint") \
            from None
    if master:
        print(f"pretrained: {report.render()}")


def _changed_specs(stored: dict, current: dict) -> list[str]:
    """Paths of the spec files whose text differs from the one the checkpoint embeds."""
    return [current[key]["path"] or key for key in ("model", "encoder", "meta")
            if key in stored and key in current and stored[key].get("text") != current[key]["text"]]


def _nan_cause(cfg: TrainConfig, dataset_spec, x: torch.Tensor, lr: float) -> str:
    """The probable cause of a non-finite loss, in the order they are most likely."""
    if any(float(s) == 0.0 for s in dataset_spec.std):
        return (f"the dataset file's std {list(dataset_spec.std)} holds a zero, so normalising divides by "
                "zero; fix std in the dataset file")
    if not bool(torch.isfinite(x).all()):
        return "the input batch holds NaN or infinite values; check the images and the dataset's mean/std"
    return (f"the optimisation diverged; lower --lr (now {lr:g})" +
            (", add --grad-clip 1.0" if cfg.grad_clip <= 0 else "") +
            (", or train without --amp" if cfg.amp else ""))


def _train_loop(cfg: TrainConfig, device: torch.device, rank: int, world: int, master: bool, ddp: bool,
                out_dir: Path, checkpoint: dict | None,
                on_eval: Callable[[int, dict], bool] | None = None) -> dict[str, Any]:
    from .checkpoint import best_miou_on_disk, embed_specs, save_checkpoints
    from .signals import StopSignals

    log_path = out_dir / "log.jsonl" if master else None
    dataset_spec = cfg.dataset_spec()
    data = cfg.data
    if data is None:
        data = SYNTHETIC
        if master:
            print("warning: no --data given: training on SYNTHETIC data (generated coloured rectangles). "
                  "Give --data FOLDER and --dataset NAME for real images.", file=sys.stderr, flush=True)
    classes = class_set(cfg.classes) if not cfg.dataset else dataset_spec

    # ---- model
    margs = cfg.model_args()
    compiled = build_model(margs)
    check_class_outputs(compiled, classes.num_classes)
    raw_model = compiled.module
    _, _, height, width = compiled.audit.input
    margs = ModelArgs(**{**asdict(margs), "input_size": (height, width)})  # pin the resolved size
    if cfg.pretrained and not cfg.resume:
        _load_pretrained(cfg, compiled, raw_model, master)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    raw_model.to(device=device, memory_format=fmt)

    # ---- data
    if cfg.augment is not None:
        from .augment import parse_augment

        augment = parse_augment(cfg.augment)
    else:
        augment = list(dataset_spec.augment) if cfg.dataset else []
    train_set = make_dataset(data, cfg.train_split, (height, width), classes, limit=cfg.limit_train,
                             hflip_prob=cfg.hflip, seed=cfg.seed, dataset_spec=dataset_spec, augment=augment,
                             skip_bad=cfg.skip_bad, external_splits=cfg.external_splits)
    val_set = make_dataset(data, cfg.val_split, (height, width), classes, limit=cfg.limit_val,
                           seed=cfg.seed, dataset_spec=dataset_spec, skip_bad=cfg.skip_bad,
                           external_splits=cfg.external_splits)
    if master:
        for split, data_set in ((cfg.train_split, train_set), (cfg.val_split, val_set)):
            for problem in getattr(data_set, "skipped", ()):
                print(f"skipped [{split}]: {problem}")
    skip_log = out_dir / "skipped.txt"  # samples that fail to decode at load time, with --skip-bad
    skip_log_start = skip_log.stat().st_size if skip_log.exists() else 0
    for data_set in (train_set, val_set):
        if hasattr(data_set, "skip_log"):
            data_set.skip_log = skip_log
    workers = cfg.workers()
    from .signals import WorkerSignals

    # Workers leave the stop signals to the training process, which finishes its step and saves; a
    # terminal's Ctrl-C (or a scheduler's SIGTERM to the whole process group) would otherwise kill them
    # first and fail the step in flight.
    worker_signals = WorkerSignals()
    loader_extra = {"persistent_workers": True, "worker_init_fn": worker_signals} if workers > 0 else {}
    pin = device.type == "cuda"
    if ddp:
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                     drop_last=len(train_set) >= world)
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,
                                  num_workers=workers, pin_memory=pin, **loader_extra)
    else:
        sampler = None
        generator = torch.Generator().manual_seed(cfg.seed)
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                                  num_workers=workers, pin_memory=pin,
                                  drop_last=len(train_set) >= cfg.batch_size, **loader_extra)
    if len(train_loader) == 0:
        raise TrainError(f"{data} [{cfg.train_split}]: no training batches "
                         "(empty split or --limit-train 0)")
    val_loader = DataLoader(_shard(val_set, rank, world), batch_size=cfg.batch_size, shuffle=False,
                            num_workers=workers, pin_memory=pin, **loader_extra)

    # ---- loss: ENet weights over the training labels, void excluded
    weights = None
    if cfg.weighted_loss:
        counts = getattr(train_set, "class_counts", None)
        if counts is None:
            counts = class_pixel_counts(train_set.labels(), classes.num_classes)
        weights = enet_class_weights(counts)
    criterion = SegmentationLoss(weights, IGNORE_INDEX).to(device)

    # ---- optimiser, precision, resume
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if cfg.amp else None
    autocast = ((lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None
                else contextlib.nullcontext)
    use_scaler = amp_dtype == torch.float16
    scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=use_scaler))
    # The texts the network was compiled from, not the files as they are now (they may have been edited).
    specs = embed_specs(margs.model, margs.encoder, margs.meta, dataset_spec.text,
                        sources=compiled.analysis.sources)
    iter_num, best_miou = 0, -1.0
    if checkpoint is not None:
        last_pt = out_dir / "last.pt"
        changed = _changed_specs(checkpoint.get("specs") or {}, specs)
        saved_args = ModelArgs.from_dict(checkpoint["model_args"])
        if saved_args != margs:
            raise TrainError(f"cannot resume from {last_pt}: "
                             + settings_differ(saved_args.to_dict(), margs.to_dict()))
        try:
            raw_model.load_state_dict(checkpoint["model"])
        except RuntimeError:
            files = ", ".join(changed) if changed else "the spec files"
            raise TrainError(f"cannot resume from {last_pt}: {files} changed since it was written and the "
                             "weights no longer fit; restore the spec (the checkpoint embeds its text: "
                             "rtsegc eval --checkpoint rebuilds it) or start a new run in another "
                             "--out-dir") from None
        if changed and master:
            print(f"warning: {', '.join(changed)} changed since {last_pt} was written; the weights still "
                  "fit, so the run goes on with the edited spec", file=sys.stderr)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        iter_num, best_miou = checkpoint["iter_num"], checkpoint["best_miou"]
        on_disk = best_miou_on_disk(out_dir) if master else None
        if on_disk is not None and on_disk > best_miou:  # a kill after best.pt, before last.pt
            best_miou = on_disk
        torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
        if master:
            print(f"resumed from {out_dir} at step {iter_num} (best mIoU {best_miou:.4f})")
        checkpoint = None  # free the tensors
    model = raw_model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        raw_model = model.module

    def batches():
        """Endless training batches; the epoch (and so the shuffle) follows from the step count."""
        epoch = iter_num // max(1, len(train_loader))
        while True:
            if sampler is not None:
                sampler.set_epoch(epoch)
            yield from train_loader
            epoch += 1

    def checkpoint_dict(metrics: dict) -> dict:
        return {"version": CHECKPOINT_VERSION, "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "model_args": margs.to_dict(), "config": cfg.to_dict(), "iter_num": iter_num,
                "best_miou": best_miou, "metrics": metrics, "class_weights": weights,
                "rng": {"torch": torch.get_rng_state()}, "specs": specs,
                "classes": list(classes.names)}

    if master:
        print(f"{compiled.audit.model}: {compiled.audit.params:,} params, input {height}x{width}, "
              f"{len(train_set)} train / {len(val_set)} val images, {world} process(es) on {device}")
        if weights is not None:
            named = zip(classes.names, weights.tolist())
            print("class weights: " + ", ".join(f"{name} {w:.2f}" for name, w in named))

    # ---- the loop
    from .report import Progress, tensorboard_writer, write_summary

    try:
        tb = tensorboard_writer(out_dir / "tb") if cfg.tensorboard and master else None
    except RuntimeError as exc:
        raise TrainError(str(exc)) from None
    progress = Progress(cfg.max_iters, iter_num, cfg.progress, cfg.log_interval, enabled=master)
    losses: list[float] = []
    last_eval: dict = {}
    stream = batches()
    stopped_early = False
    stop_flag = torch.zeros(1, device=device) if ddp else None
    stopped_by: int | None = None
    t0 = time.perf_counter()
    model.train()
    try:
        with StopSignals(announce=master) as signals:
            while iter_num < cfg.max_iters:
                if ddp:  # every rank leaves at the same step, whichever of them got the signal
                    import torch.distributed as dist

                    stop_flag.fill_(float(signals.signum or 0))
                    dist.all_reduce(stop_flag, op=dist.ReduceOp.MAX)
                    stopped_by = int(stop_flag.item()) or None
                else:
                    stopped_by = signals.signum
                if stopped_by is not None:
                    break
                lr = get_lr(iter_num, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = _next_batch(stream)
                x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
                y = y.to(device, non_blocking=True)
                with autocast():
                    try:
                        logits, aux = split_outputs(model(x))  # (B, N, H, W), and any auxiliary heads
                    except ValueError as exc:
                        if "Expected more than 1 value per channel" not in str(exc):
                            raise
                        raise TrainError(f"--batch-size {x.shape[0]}: a BatchNorm layer sees a single value "
                                         f"per channel in training mode (a 1x1 feature map at input "
                                         f"{height}x{width}); use --batch-size 2 or more, or a larger "
                                         "--input") from None
                loss = criterion(logits, y)
                for aux_logits in aux.values():  # deep supervision: FCN/DeepLab 'aux', BiSeNet's heads
                    if aux_logits.shape[-2:] != y.shape[-2:]:
                        aux_logits = torch.nn.functional.interpolate(aux_logits.float(), size=y.shape[-2:],
                                                                     mode="bilinear", align_corners=False)
                    loss = loss + cfg.aux_weight * criterion(aux_logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                iter_num += 1
                loss_value = loss.item()
                losses.append(loss_value)
                if not math.isfinite(loss_value):
                    kept = ("last.pt and best.pt keep the last good evaluation"
                            if (out_dir / "last.pt").exists() else "no checkpoint was written yet")
                    raise TrainError(f"step {iter_num}: the loss is {loss_value}; probable cause: "
                                     f"{_nan_cause(cfg, dataset_spec, x, lr)} ({kept})")
                t1 = time.perf_counter()
                dt, t0 = t1 - t0, t1
                progress.step(iter_num, loss_value, lr, x.shape[0] * world / max(dt, 1e-9), dt * 1000)
                _log(log_path, {"iter": iter_num, "loss": loss_value, "lr": lr, "ms": round(dt * 1000, 2)})
                if tb is not None:
                    tb.add_scalar("train/loss", loss_value, iter_num)
                    tb.add_scalar("train/lr", lr, iter_num)

                # ---- evaluate and checkpoint (every rank evaluates its shard; results are all-reduced)
                if (cfg.eval_interval > 0 and iter_num % cfg.eval_interval == 0) or iter_num == cfg.max_iters:
                    result = evaluate(raw_model, val_loader, classes.num_classes, device=device,
                                      criterion=criterion, max_batches=cfg.eval_batches,
                                      channels_last=cfg.channels_last, autocast=autocast)
                    last_eval = {"iter": iter_num, "val_loss": result.loss,
                                 **result.metrics.to_json(classes.names),
                                 **category_metrics(result.confusion, dataset_spec)}
                    miou = result.metrics.miou
                    improved = miou == miou and miou > best_miou  # NaN never improves
                    if improved:
                        best_miou = miou
                    if master:
                        progress.write(f"step {iter_num}: val loss {result.loss:.4f}, "
                                       f"mIoU {100 * miou:.2f} %, "
                                       f"pixel acc {100 * result.metrics.pixel_accuracy:.2f} %")
                        _log(log_path, {"eval": last_eval})
                        if tb is not None:
                            tb.add_scalar("val/mIoU", miou, iter_num)
                            tb.add_scalar("val/loss", result.loss, iter_num)
                            for name, value in last_eval["iou"].items():
                                if value is not None:
                                    tb.add_scalar(f"val_iou/{name}", value, iter_num)
                            _tensorboard_images(tb, raw_model, val_set, dataset_spec, device, iter_num)
                        save_checkpoints(checkpoint_dict(last_eval), out_dir, improved)
                    if on_eval is not None and on_eval(iter_num, last_eval):
                        stopped_early = True
                        if master:
                            progress.write(f"step {iter_num}: stopped early")
                        break
                    t0 = time.perf_counter()  # do not charge evaluation to the next step
    except KeyboardInterrupt:
        if master:
            progress.close()
            save_checkpoints(checkpoint_dict(last_eval), out_dir, improved=False)
            print(f"interrupted at step {iter_num}: wrote {out_dir / 'last.pt'} (continue with --resume)",
                  file=sys.stderr)
        raise
    finally:
        worker_signals.release()
        progress.close()
        if tb is not None:
            tb.close()
        if master and skip_log.exists() and skip_log.stat().st_size > skip_log_start:
            with skip_log.open(encoding="utf-8") as fh:
                fh.seek(skip_log_start)
                lines = [line.rstrip("\n") for line in fh if line.strip()]
            print(f"skipped at load time: {len(lines)} read(s) of samples that no longer decode "
                  f"(listed in {skip_log}):", file=sys.stderr)
            for line in dict.fromkeys(lines):
                print(f"  {line}", file=sys.stderr)
    if stopped_by is not None:
        import signal

        if master:
            save_checkpoints(checkpoint_dict(last_eval), out_dir, improved=False)
            print(f"stopped by {signal.Signals(stopped_by).name} at step {iter_num}: wrote "
                  f"{out_dir / 'last.pt'} (continue with --resume)", file=sys.stderr, flush=True)
        raise Stopped(stopped_by)
    if master:
        summary = write_summary(out_dir, f"{compiled.audit.model} on {cfg.dataset or data}", last_eval)
        print(f"summary: {summary}")
    return {"iter_num": iter_num, "losses": losses, "eval": last_eval, "best_miou": best_miou,
            "out_dir": str(out_dir), "rank": rank, "world_size": world, "stopped_early": stopped_early}


class Stopped(Exception):
    """Training stopped on a signal after writing ``last.pt``; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def _next_batch(stream):
    """The next training batch; a sample that fails to decode in a DataLoader worker is named in one line."""
    from .datasets import DataError

    try:
        return next(stream)
    except DataError as exc:  # re-raised by DataLoader with the worker's traceback in the message
        lines = [line for line in str(exc).splitlines() if line.strip()]
        last = lines[-1] if lines else str(exc)
        raise DataError(last.split("DataError: ", 1)[-1]) from None


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc train") -> int:
    """Exit status 0; 2 for a fault of the input or the machine (one ``error:`` line naming the file, flag
    or value); 3 for a bug in the runtime; 130/143/138 after SIGINT/SIGTERM/SIGUSR1, ``last.pt`` written
    first (:mod:`runtime.errors`)."""
    configure_allocator()  # keep freed tensor memory for reuse (rtseg_compiler/allocator.py)
    cfg = parse_config(argv, prog)
    if cfg.augment is not None:
        from .augment import parse_augment

        try:
            parse_augment(cfg.augment)
        except ValueError as exc:
            build_parser(prog).error(str(exc))

    def body() -> int:
        try:
            train(cfg)
        except Stopped as exc:
            return signal_status(exc.signum)
        return 0

    return guarded(prog, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
