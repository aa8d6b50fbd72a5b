"""Wall time of ``rtsegc study`` against the same trials run by hand, in alternating rounds.

"By hand" is what a user would type for each trial of the study: ``rtsegc train`` on the trial's model
file with the recipe's options, ``rtsegc eval --checkpoint best.pt`` and ``rtsegc bench`` at the study's
benchmark size, each a separate process. The study side is one ``rtsegc study FILE`` process, which also
plans (audits every trial), writes the per-trial results and the report with its plots. Both sides use
one torch thread per trial (the study's ``resources: {cpus: 1}``; ``OMP_NUM_THREADS=1`` and
``--threads 1`` by hand) on the same data and seeds. Rounds alternate (study, hand, study, hand, ...) so
that load from other jobs on a shared machine falls on both sides alike; the ratio of the medians is the
overhead.

    python benchmarks/study_overhead.py --data ../shared/data/camvid-mini [--rounds 3] [--iters 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TRIALS = (("skipnet", "mobilenet_v1"), ("skipnet", "shufflenet_v1"))


def study_file(folder: Path, data: str, iters: int) -> Path:
    path = folder / "overhead.yaml"
    path.write_text(textwrap.dedent(f"""\
        kind: study
        name: overhead
        grid: {{encoders: [{', '.join(e for _, e in TRIALS)}], metas: [skipnet]}}
        dataset: {{spec: camvid, data: {data}}}
        train: {{input: [96, 128], max_iters: {iters}, batch_size: 4, lr: 1.0e-3, eval_interval: {iters},
                 log_interval: {iters}, num_workers: 0, progress: lines}}
        eval: {{split: val}}
        bench: {{inputs: [[360, 640]], device: cpu, batch: 1, warmup: 2, iters: 5}}
        audit: {{input: [360, 640]}}
        resources: {{cpus: 1}}
        """))
    return path


def run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def by_study(study: Path, out: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    run(["rtsegc", "study", str(study), "--out-dir", str(out)], env)
    return time.perf_counter() - start


def by_hand(spec_dir: Path, data: str, iters: int, out: Path, env: dict[str, str]) -> float:
    env = {**env, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    for meta, encoder in TRIALS:
        name = f"{meta}_{encoder}"
        spec = str(spec_dir / f"{name}.yaml")
        run_dir = out / name
        run(["rtsegc", "train", spec, "--dataset", "camvid", "--data", data, "--input", "96x128",
             "--max-iters", str(iters), "--batch-size", "4", "--lr", "1e-3", "--eval-interval", str(iters),
             "--log-interval", str(iters), "--num-workers", "0", "--progress", "lines", "--seed", "1337",
             "--out-dir", str(run_dir)], env)
        run(["rtsegc", "eval", "--checkpoint", str(run_dir / "best.pt"), "--data", data, "--split", "val",
             "--json", "--device", "cpu"], env)
        run(["rtsegc", "bench", spec, "--input", "360x640", "--warmup", "2", "--iters", "5",
             "--device", "cpu", "--threads", "1", "--json"], env)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=30, help="training steps per trial")
    args = p.parse_args()
    data = str(Path(args.data).resolve())
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = study_file(tmp, data, args.iters)
        # one untimed study run: warms the file cache and writes the trial model files the hand side uses
        by_study(study, tmp / "warm", env)
        spec_dir = tmp / "warm" / "specs"
        times: dict[str, list[float]] = {"study": [], "hand": []}
        for k in range(args.rounds):
            times["study"].append(by_study(study, tmp / f"study{k}", env))
            times["hand"].append(by_hand(spec_dir, data, args.iters, tmp / f"hand{k}", env))
            print(f"round {k + 1}: study {times['study'][-1]:.1f} s, by hand {times['hand'][-1]:.1f} s",
                  flush=True)
    s, h = statistics.median(times["study"]), statistics.median(times["hand"])
    print(f"median: study {s:.1f} s, by hand {h:.1f} s, study / hand = {s / h:.3f} "
          f"({len(TRIALS)} trials of {args.iters} steps, {args.rounds} alternating rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
