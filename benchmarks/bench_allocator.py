"""``rtsegc bench`` under each CPU allocator: glibc as it comes, glibc after mallopt, jemalloc, tcmalloc.

Question: what does the allocator setting that ``rtsegc bench``/``predict``/``eval``/``train`` make at
start (rtseg_compiler/allocator.py) do to CPU inference, and how does it compare with preloading
jemalloc or tcmalloc? Each configuration is one ``rtsegc bench --json`` process:

* ``system``: ``RTSEGC_ALLOCATOR=system``, glibc malloc with its defaults;
* ``mallopt``: the command's own setting (glibc told to keep freed memory);
* ``jemalloc`` / ``tcmalloc``: ``LD_PRELOAD`` of the Debian libraries ``libjemalloc2`` and
  ``libtcmalloc-minimal4`` (skipped when not installed; neither is a dependency);
* ``jemalloc+conf``: jemalloc with :data:`JEMALLOC_CONF` in ``MALLOC_CONF``.

``--rounds`` rounds run every configuration once, in an order rotated round by round, so load changes
on a shared machine hit all alike. Reported per configuration: median latency and minor page faults
per forward over the rounds, and the speed-up over ``system`` as the median over rounds of the
paired ratio.

Run: ``python benchmarks/bench_allocator.py [--model skipnet_mobilenet_v1] [--input 512x1024]
[--rounds 3] [--iters 10] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

LIBRARIES = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
#: jemalloc 5.3 (Debian's libjemalloc2) gives freed pages back to the OS after a decay time, and
#: at once for requests above ``opt.oversize_threshold`` (8 MiB): feature maps then fault as under
#: glibc's defaults (about 184,000 faults per SkipNet-MobileNet forward at 512x1024, measured here).
#: A decay time of -1 turns purging off (jemalloc's manual, ``opt.dirty_decay_ms``); with it, 0
#: faults. The settings ``oversize_threshold:1,background_thread:true,metadata_thp:auto,
#: dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000`` often quoted for PyTorch left 184,000.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
LIBRARY_DIRS = (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib"))


def configurations() -> dict[str, dict[str, str]]:
    """Environment changes per configuration; MALLOC_* and GLIBC_TUNABLES are cleared for all."""
    configs = {"system": {"RTSEGC_ALLOCATOR": "system"}, "mallopt": {}}
    for name, soname in LIBRARIES.items():
        found = next((d / soname for d in LIBRARY_DIRS if (d / soname).exists()), None)
        if found:
            configs[name] = {"LD_PRELOAD": str(found)}
    if "jemalloc" in configs:
        configs["jemalloc+conf"] = {**configs["jemalloc"], "MALLOC_CONF": JEMALLOC_CONF}
    return configs


def run_bench(args: argparse.Namespace, extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "RTSEGC_ALLOCATOR")}
    env.update(extra_env)
    beside = Path(sys.executable).parent / "rtsegc"  # this interpreter's virtualenv first
    command = str(beside) if beside.exists() else shutil.which("rtsegc") or "rtsegc"
    argv = [command, "bench", args.model, "--input", args.input,
            "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--device", "cpu", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"rtsegc bench failed ({extra_env}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="skipnet_mobilenet_v1")
    parser.add_argument("--input", default="512x1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configs = configurations()
    names = list(configs)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(run_bench(args, configs[name]))
    print(f"rtsegc bench {args.model} --input {args.input}: {args.rounds} rounds x {args.iters} forwards "
          f"(after {args.warmup} warm-up), {args.threads} threads, batch 1, eval + no_grad, "
          "one process per run")
    print(f"{'allocator':<14} {'median ms':>10} {'faults/forward':>15} {'speed-up vs system (paired)':>28}")
    for name in names:
        latency = [row["latency_ms"] for row in results[name]]
        faults = [row["faults_per_call"] for row in results[name]]
        speedup = statistics.median(s["latency_ms"] / row["latency_ms"]
                                    for s, row in zip(results["system"], results[name]))
        print(f"{name:<14} {statistics.median(latency):10.1f} {statistics.median(faults):15,.0f} "
              f"{speedup:27.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
