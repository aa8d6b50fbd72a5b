"""Training throughput of this checkout's ``rtsegc train`` against another checkout's (e.g. main's).

Both run as subprocesses with identical arguments on CamVid-mini, in alternating rounds (each round
swaps which goes first), each into a fresh out-dir. Per-step times come from each run's own
``log.jsonl`` (time between optimiser steps, data loading included, evaluation excluded); the first
``--skip`` steps are not counted (allocator growth, kernel selection, worker start-up). Reported per
round: the median ms/step of each and the throughput ratio baseline_ms / this_ms (1.0 = unchanged,
above 1 = this checkout is faster); at the end the median ratio over rounds.

    python benchmarks/bench_train_vs_baseline.py --baseline /work/main [--steps 60] [--rounds 3]

The baseline runs with its own ``.venv/bin/rtsegc`` when it has one, from its own folder, so each side
imports its own code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rtsegc(checkout: Path) -> list[str]:
    own = checkout / ".venv" / "bin" / "rtsegc"
    return [str(own)] if own.exists() else [sys.executable, "-m", "rtseg_compiler.cli"]


def _run(checkout: Path, data: str, out: Path, args: argparse.Namespace) -> float:
    spec = ROOT / "specs" / "models" / "skipnet_mobilenet_v1.yaml"
    cmd = [*_rtsegc(checkout), "train", str(spec), "--dataset", "camvid", "--data", data,
           "--input", "192x256",
           "--batch-size", str(args.batch_size), "--max-iters", str(args.steps), "--eval-interval", "0",
           "--eval-batches", "1", "--lr", "1e-3", "--num-workers", str(args.workers), "--device", "cpu",
           "--out-dir", str(out), "--progress", "lines", "--log-interval", "1000"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: exit {done.returncode}\n{done.stderr[-2000:]}")
    ms = [json.loads(line)["ms"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return statistics.median(ms[args.skip:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="the other checkout (e.g. /work/main)")
    p.add_argument("--data", default="/work/shared/data/camvid-mini")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    baseline = Path(args.baseline).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="rtsegc-bench-train-"))
    rounds = []
    try:
        for r in range(args.rounds):
            sides = [("this", ROOT), ("baseline", baseline)]
            if r % 2:
                sides.reverse()
            ms = {}
            for name, checkout in sides:
                out = scratch / f"{name}_{r}"
                ms[name] = _run(checkout, args.data, out, args)
                shutil.rmtree(out, ignore_errors=True)
            rounds.append({"round": r, "first": sides[0][0], "this_ms": round(ms["this"], 2),
                           "baseline_ms": round(ms["baseline"], 2),
                           "ratio": round(ms["baseline"] / ms["this"], 3)})
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"baseline": str(baseline), "steps": args.steps, "skip": args.skip,
              "batch_size": args.batch_size,
              "workers": args.workers, "threads": args.threads, "cpus": len(os.sched_getaffinity(0)),
              "load_average_after": os.getloadavg(), "rounds": rounds,
              "median_ratio": round(statistics.median(r["ratio"] for r in rounds), 3)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
