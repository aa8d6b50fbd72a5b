"""Issue 11 evidence: train SkipNet-MobileNet on CamVid-mini with ``rtsegc train``, against a minimal loop.

Two measurements, in alternating rounds on the same machine so that load drifts hit both alike:

* ``runtime``: ``runtime.train.train`` (what ``rtsegc train`` runs) from scratch: dataset file
  ``camvid``, 192x256, batch 8, Adam lr 1e-3, ENet-weighted loss, DataLoader workers chosen from the
  CPU count, evaluation only at the end. Its per-step times come from its own ``log.jsonl`` (the time
  between optimiser steps, data loading included, evaluation excluded).
* ``minimal``: the same compiled model, loss weights, optimiser, batch and images, written as the
  shortest plain PyTorch loop: every image decoded and resized once into one tensor before timing,
  batches drawn by ``randperm``. Nothing a data pipeline does is charged to it.

The first ``--skip`` steps of every run are not timed (allocator growth, oneDNN kernel selection,
worker start-up). Reported per round: the median ms/step of each, and the throughput ratio
minimal/runtime (>= 0.95 is issue 11's target); at the end, the runtime's validation mIoU of the last
round and the median ratio over rounds. ``--augment`` passes an augmentation list (issue 11 asks for a
second run with augmentation on: ``--augment scale=0.5-2.0,crop=192x256,hflip=0.5``).

Run (the issue's full evidence, about 2 x 2,500 steps per round: hours on a 2-core CPU)::

    python benchmarks/train_camvid.py --steps 2500 --rounds 2
    python benchmarks/train_camvid.py --steps 60 --rounds 2    # a smoke run, minutes

Prints one JSON object (also written to ``--out/result.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.build import ModelArgs, build_model  # noqa: E402
from runtime.data import DatasetFolder  # noqa: E402
from runtime.datasets import load_dataset_spec  # noqa: E402
from runtime.losses import SegmentationLoss, enet_class_weights  # noqa: E402
from runtime.train import TrainConfig, train  # noqa: E402

SPEC = ROOT / "specs" / "models" / "skipnet_mobilenet_v1.yaml"


def run_runtime(args, out: Path) -> tuple[list[float], float | None]:
    cfg = TrainConfig(model=str(SPEC), data=str(args.data), dataset="camvid", input=args.size,
                      batch_size=args.batch, lr=args.lr, max_iters=args.steps, eval_interval=0,
                      out_dir=str(out), log_interval=max(1, args.steps // 10), augment=args.augment or "none",
                      device="cpu", seed=args.seed, num_workers=args.workers, progress="lines")
    summary = train(cfg)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ms = [r["ms"] for r in records if "ms" in r][args.skip:]
    return ms, summary["eval"].get("miou")


def run_minimal(args) -> list[float]:
    torch.manual_seed(args.seed)
    spec = load_dataset_spec("camvid")
    data = DatasetFolder(spec, args.data, "train", args.size)
    xs, ys = zip(*(data[i] for i in range(len(data))))
    x_all, y_all = torch.stack(xs), torch.stack(ys)
    model = build_model(ModelArgs(str(SPEC), None, None, args.size, spec.num_classes)).module
    criterion = SegmentationLoss(enet_class_weights(data.class_counts), 255)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    model.train()
    times = []
    order = torch.randperm(len(x_all))
    pos = 0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = torch.randperm(len(x_all)), 0
        idx = order[pos:pos + args.batch]
        pos += args.batch
        loss = criterion(model(x_all[idx]), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1000)
        t0 = t1
    return times[args.skip:]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "camvid-mini")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=lambda t: tuple(int(v) for v in t.split("x")), default=(192, 256))
    p.add_argument("--augment", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "train_camvid")
    p.add_argument("--only", choices=("runtime", "minimal"), default=None,
                   help="run one side only (e.g. the runtime alone for a long mIoU run; no ratio then)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = []
    miou = None
    for r in range(args.rounds):
        order = ("runtime", "minimal") if r % 2 == 0 else ("minimal", "runtime")
        if args.only:
            order = (args.only,)
        result = {}
        for which in order:
            if which == "runtime":
                ms, miou = run_runtime(args, args.out / f"round{r}")
                result["runtime_ms"] = statistics.median(ms)
            else:
                result["minimal_ms"] = statistics.median(run_minimal(args))
        if len(order) == 2:
            result["ratio"] = result["minimal_ms"] / result["runtime_ms"]
        rounds.append(result)
        print(json.dumps({"round": r, **result}), flush=True)
    out = {"steps": args.steps, "batch": args.batch, "size": list(args.size), "augment": args.augment,
           "threads": torch.get_num_threads(), "rounds": rounds,
           "median_ratio": statistics.median(r["ratio"] for r in rounds) if not args.only else None,
           "val_miou_last_round": miou}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
