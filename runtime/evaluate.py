"""Evaluate a compiled network: loss, confusion matrix, per-class IoU, mIoU, pixel accuracy.

Protocol (say which one a reported mIoU uses; RTSeg's paper numbers came from the Cityscapes script at
full resolution, its in-repo numbers from the training size):

- ``--label-size input`` (default): labels are resized to the network input with nearest neighbour and
  compared with the logits' argmax there; cheap, and what RTSeg's per-epoch validation did.
- ``--label-size original``: labels stay at their stored size and logits are upsampled bilinearly to it
  before the argmax, the usual "full-resolution" protocol.

Usage::

    rtsegc eval --checkpoint out/best.pt --data ../shared/data/camvid-mini --split val
    rtsegc eval specs/models/skipnet_mobilenet_v1.yaml --weights w.pt --input 360x480 \\
        --data ../shared/data/camvid-mini --dataset camvid --json

A checkpoint carries its model, encoder, meta and dataset files' texts, so ``--checkpoint`` alone
rebuilds the network and the class list from any directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rtseg_compiler.allocator import HELP as ALLOCATOR_HELP
from rtseg_compiler.allocator import configure_allocator
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from rtseg_compiler.cli.args import add_spec_param_args, model_choice_problem, parse_size, spec_params
from rtseg_compiler.passes.dilate import VALID_OUTPUT_STRIDES

from .build import ModelArgs, build_model, make_dataset, pick_device
from .data import IGNORE_INDEX
from .losses import main_output
from .metrics import ConfusionMatrix, InstanceScores, SegMetrics, category_metrics, format_table

__all__ = ["EvalResult", "evaluate", "main"]


@dataclass(frozen=True)
class EvalResult:
    loss: float | None  # mean per-batch loss; None without a criterion
    metrics: SegMetrics
    confusion: torch.Tensor  # int64 (N, N), rows = truth
    instance: dict | None = None  # {"iiou": {class: value}, "miiou": value} when instance maps were given


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, *, device: torch.device | str = "cpu",
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             max_batches: int | None = None, ignore_index: int = IGNORE_INDEX, channels_last: bool = False,
             autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             instance_scores=None) -> EvalResult:
    """Run ``model`` in eval mode over ``loader`` (at most ``max_batches``) and score it.

    Under torch.distributed every rank scores its shard and the confusion matrix and loss sums are
    all-reduced, so all ranks return the same, global result.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    loss_stats = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of batch losses, batches)
    try:
        for i, batch in enumerate(loader):
            x, y = batch[0], batch[1]
            if max_batches is not None and i >= max_batches:
                break
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast():
                logits = main_output(model(x))  # (B, N, H, W); auxiliary heads unused
            if logits.shape[-2:] != y.shape[-2:]:
                logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear",
                                       align_corners=False)
            if criterion is not None:
                loss_stats[0] += float(criterion(logits, y))
                loss_stats[1] += 1
            cm.update(logits, y)
            if instance_scores is not None and len(batch) == 4:  # (x, y, instance ids, area ratio)
                instance_scores.update(logits.argmax(1), batch[2], batch[3])
    finally:
        model.train(was_training)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(cm.matrix)
        dist.all_reduce(loss_stats)
    loss = float(loss_stats[0] / loss_stats[1]) if criterion is not None and loss_stats[1] > 0 else None
    instance = instance_scores.compute(cm.matrix) if instance_scores is not None else None
    return EvalResult(loss, cm.compute(), cm.matrix.cpu(), instance)


def save_confusion_csv(path: str | Path, confusion: torch.Tensor, names: Sequence[str]) -> None:
    """Rows = ground truth, columns = prediction, with class names as header and first column."""
    lines = ["truth\\pred," + ",".join(names)]
    lines += [f"{n}," + ",".join(str(int(v)) for v in row) for n, row in zip(names, confusion.tolist())]
    Path(path).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- command line

def build_parser(prog: str = "rtsegc eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=ALLOCATOR_HELP)
    p.add_argument("model", nargs="?", help="model spec (or give --encoder/--meta, or --checkpoint)")
    p.add_argument("--encoder", help="encoder spec, with --meta")
    p.add_argument("--meta", help="meta-architecture spec, with --encoder")
    p.add_argument("--checkpoint", help="a runtime checkpoint (best.pt/last.pt); rebuilds its model "
                   "(from the spec texts it embeds, unless a spec is given too)")
    p.add_argument("--weights", help="a state dict (or checkpoint) to load strictly into the spec's model")
    p.add_argument("--data", required=True, help="dataset folder (layout: --dataset), or 'synthetic'")
    p.add_argument("--dataset", metavar="NAME|PATH.yaml",
                   help="dataset file (default: the one embedded in the checkpoint, else --classes)")
    p.add_argument("--skip-bad", action="store_true", help="list and skip bad samples instead of stopping")
    p.add_argument("--external-splits", action="store_true", help="let the dataset file's splits: name "
                   "absolute folders outside --data (refused otherwise)")
    p.add_argument("--split", default="val")
    p.add_argument("--classes", default=None,
                   help="'camvid' or a class count (default: the checkpoint's, else camvid)")
    p.add_argument("--input", type=parse_size, metavar="HxW",
                   help="network input size (default: checkpoint/spec)")
    p.add_argument("--output-stride", type=int, choices=VALID_OUTPUT_STRIDES)
    add_spec_param_args(p)  # with --checkpoint: on top of the parameters it records
    p.add_argument("--label-size", choices=("input", "original"), default="input",
                   help="score at the input size (labels resized nearest) or at the labels' stored size")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--save-confusion", metavar="FILE.csv", help="write the confusion matrix")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc eval") -> int:
    """Exit status 0; 2 for a bad spec, dataset, checkpoint or weights file (one line naming it); 3 for a
    bug in the runtime (:mod:`runtime.errors`)."""
    configure_allocator()  # keep freed tensor memory for reuse (rtseg_compiler/allocator.py)
    from .errors import guarded

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    problem = None if args.checkpoint else model_choice_problem(args.model, args.encoder, args.meta)
    if problem:
        parser.error(f"{problem}, or --checkpoint")
    for flag, value, least in (("--limit", args.limit, 0), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < least:
            parser.error(f"{flag} {value}: must be {least} or more")
    return guarded(prog, lambda: _run(args))


def load_checkpoint_model(path: str | Path, override: ModelArgs | None = None,
                          input_size: tuple[int, int] | None = None, *,
                          encoder_params: Mapping[str, Any] | None = None,
                          meta_params: Mapping[str, Any] | None = None):
    """(compiled model with the checkpoint's weights, checkpoint dict, dataset spec or None).

    The network is rebuilt from the spec texts the checkpoint embeds (handed to the compiler as
    documents, no files written), so it does not matter where training ran; older checkpoints fall
    back to the stored spec paths. It is built with the spec parameters the checkpoint records
    (``--encoder-param width=0.5`` at training); ``encoder_params``/``meta_params`` override single
    ones on top.
    """
    from .checkpoint import load_checkpoint, spec_documents
    from .datasets import parse_dataset_text

    checkpoint = load_checkpoint(path, use="give a state dict to --weights with a model spec instead")
    margs = ModelArgs.from_dict(checkpoint["model_args"])
    if override is not None:  # spec files given on the command line replace the embedded ones
        margs = replace(margs, model=override.model, encoder=override.encoder, meta=override.meta)
    if input_size is not None:
        margs = replace(margs, input_size=tuple(input_size))
    if encoder_params or meta_params:
        margs = replace(margs, encoder_params={**(margs.encoder_params or {}), **(encoder_params or {})},
                        meta_params={**(margs.meta_params or {}), **(meta_params or {})})
    specs = checkpoint.get("specs") or {}
    if override is None and specs.get("model", specs.get("encoder")):
        embedded = spec_documents(specs)
        documents = embedded.pop("documents")
        compiled = build_model(replace(margs, **embedded), documents=documents)
    else:
        compiled = build_model(margs)
    try:
        compiled.module.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        from .errors import RunError

        built = "the spec files given" if override is not None else "the spec texts it embeds"
        raise RunError(f"{path}: its weights do not fit the network built from {built} "
                       f"({str(exc).splitlines()[0][:160]}); give the spec it was trained with") from None
    dataset = specs.get("dataset")
    spec = parse_dataset_text(dataset["text"], f"{path} (embedded dataset)") if dataset else None
    return compiled, checkpoint, spec


def _run(args: argparse.Namespace) -> int:
    from .build import dataset_spec_for
    from .datasets import load_dataset_spec

    spec = load_dataset_spec(args.dataset) if args.dataset else None
    if args.checkpoint:
        override = None
        if args.model or args.encoder or args.meta:
            override = ModelArgs(args.model, args.encoder, args.meta, None, 0, args.output_stride)
        compiled, checkpoint, embedded = load_checkpoint_model(
            args.checkpoint, override, args.input, encoder_params=spec_params(args, "encoder_params"),
            meta_params=spec_params(args, "meta_params"))
        if spec is None:
            spec = embedded
        if spec is None:
            spec = dataset_spec_for(args.classes or checkpoint.get("config", {}).get("classes", "camvid"))
        num_classes = compiled.audit.output_shape[1]
    else:
        if spec is None:
            spec = dataset_spec_for(args.classes or "camvid")
        margs = ModelArgs(args.model, args.encoder, args.meta, args.input, spec.num_classes,
                          args.output_stride, spec_params(args, "encoder_params"),
                          spec_params(args, "meta_params"))
        compiled = build_model(margs)
        if args.weights:
            from .checkpoint import verify_weights_file
            from .weights import WeightsError, load_pretrained

            verify_weights_file(args.weights)
            try:
                load_pretrained(compiled.module, args.weights, prefix="")
            except WeightsError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated and foreign files raise many types
                from .errors import RunError

                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise RunError(f"--weights {args.weights}: not a readable weights file "
                               f"({type(exc).__name__}: {first})") from None
        else:
            print("warning: no --checkpoint or --weights: evaluating a randomly initialised network",
                  file=sys.stderr)
        num_classes = spec.num_classes
    if spec.num_classes != num_classes:
        print(f"error: the model predicts {num_classes} classes, dataset '{spec.name}' has "
              f"{spec.num_classes}", file=sys.stderr)
        return 2
    model = compiled.module
    _, _, h, w = compiled.audit.input
    dataset = make_dataset(args.data, args.split, (h, w), spec, limit=args.limit, label_size=args.label_size,
                           dataset_spec=spec, skip_bad=args.skip_bad, instances=bool(spec.instance_sizes),
                           external_splits=args.external_splits)
    for problem in getattr(dataset, "skipped", ()):
        print(f"skipped: {problem}", file=sys.stderr)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    device = pick_device(args.device)
    scores = InstanceScores(spec) if getattr(dataset, "with_instances", False) else None
    result = evaluate(model.to(device), loader, spec.num_classes, device=device, instance_scores=scores)
    if args.save_confusion:
        save_confusion_csv(args.save_confusion, result.confusion, spec.classes)
    categories = {**category_metrics(result.confusion, spec), **(result.instance or {})}
    if args.json:
        out = {"model": compiled.audit.model, "dataset": spec.name, "input": [h, w], "split": args.split,
               "images": len(dataset), "label_size": args.label_size,
               **result.metrics.to_json(spec.classes), **categories}
        print(json.dumps(out, indent=2))
    else:
        print(f"{compiled.audit.model} at {h}x{w} on {args.data} [{args.split}] ({spec.name}), "
              f"{len(dataset)} "
              f"images, labels at {args.label_size} size")
        print(format_table(result.metrics, spec.classes))
        if categories:
            print("categories: " + ", ".join(f"{k} {100 * v:.1f}" if v is not None else f"{k} -"
                                            for k, v in categories["category_iou"].items())
                  + f"; category mIoU {100 * categories['category_miou']:.1f} %")
        if result.instance is not None and result.instance["miiou"] is not None:
            print("iIoU: " + ", ".join(f"{k} {100 * v:.1f}" if v is not None else f"{k} -"
                                      for k, v in result.instance["iiou"].items())
                  + f"; mean iIoU {100 * result.instance['miiou']:.1f} %")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
