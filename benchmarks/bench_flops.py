"""How long counting FLOPs takes: the analytic audit against torch's FlopCounterMode.

The compiler counts MACs from the spec in pure Python: the work is one pass
over ~100 layers and does not depend on the input resolution. FlopCounterMode
has to run a forward pass, with real tensors (the usual way, seconds on a
CPU at Cityscapes sizes) or with meta tensors (no arithmetic, but still one
dispatch per op through torch). Both give exactly the same total (checked).

Timed, per input size (best of N):

* ``analyze``   ``rtseg_compiler.pipeline.analyze(spec, size)`` in-process, from the YAML files
* ``reinfer``   shapes and counts only, for a graph already loaded (``infer_shapes`` + ``count``)
* ``rtsegc``    the ``rtsegc flops`` command in a subprocess, Python start-up included
* ``build``     ``compile_model`` (what FlopCounterMode needs first; not added to its times)
* ``cpu 1st``   the first forward under FlopCounterMode on a real CPU tensor (cold: allocations)
* ``cpu best``  the same, warm
* ``meta``      the same on the meta device

Run: ``python benchmarks/bench_flops.py [--spec PATH] [--repeat N] [--threads 2]``.
Prints a table and exits 0 (1 if the counts disagree).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from rtseg_compiler import compile_model
from rtseg_compiler.diagnostics import Diagnostics
from rtseg_compiler.passes import count, infer_shapes, link
from rtseg_compiler.pipeline import analyze, load_graph

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "specs" / "models" / "skipnet_mobilenet_v1.yaml"
SIZES = [(256, 512), (512, 1024), (1024, 2048)]


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls, in seconds (the least disturbed run)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def torch_count(module: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def cli_argv() -> list[str]:
    exe = shutil.which("rtsegc")
    return [exe] if exe else [sys.executable, "-m", "rtseg_compiler.cli"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing; the best is kept")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 on the CI machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    analyze(args.spec)  # warm caches (schema validators, imports) before timing
    diags = Diagnostics()
    linked = link(load_graph(args.spec, diags=diags), diags)
    argv = cli_argv()

    rows, ok = [], True
    for h, w in SIZES:
        size = (h, w)
        t_analyze = best_of(lambda: analyze(args.spec, size), args.repeat)
        t_reinfer = best_of(lambda: count(infer_shapes(linked, size, Diagnostics())), args.repeat)
        cmd = [*argv, "flops", str(args.spec), "--input", f"{h}x{w}"]
        t_cli = best_of(lambda: subprocess.run(cmd, check=True, capture_output=True),
                        max(2, args.repeat // 2))
        t_build = best_of(lambda: compile_model(args.spec, size), 2)
        compiled = compile_model(args.spec, size)
        expected = compiled.audit.flops

        x = torch.randn(compiled.audit.input)
        cpu_runs = 2 if h * w <= 512 * 1024 else 1
        t_cold = best_of(lambda: torch_count(compiled.module, x), 1)  # first run: allocator, kernels
        t_cpu = best_of(lambda: torch_count(compiled.module, x), cpu_runs)
        cpu_flops = torch_count(compiled.module, x) if cpu_runs == 1 else None
        meta_module = compiled.module.to("meta")
        xm = torch.empty(compiled.audit.input, device="meta")
        torch_count(meta_module, xm)
        t_meta = best_of(lambda: torch_count(meta_module, xm), args.repeat)
        meta_flops = torch_count(meta_module, xm)
        if meta_flops != expected or (cpu_flops is not None and cpu_flops != expected):
            ok = False
        rows.append((f"{h}x{w}", expected, t_analyze, t_reinfer, t_cli, t_build, t_cold, t_cpu, t_meta))

    print(f"model: {args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec}; "
          f"torch {torch.__version__}, {args.threads} threads; times in ms, best of {args.repeat}")
    head = ("input", "GFLOPs", "analyze", "reinfer", "rtsegc", "build", "cpu 1st", "cpu best",
            "meta", "cpu/analyze", "meta/analyze")
    print("  ".join(f"{c:>11}" for c in head))
    for size, flops, ta, tr, tc, tb, tcold, tcpu, tmeta in rows:
        cells = (size, f"{flops / 1e9:.3f}",
                 *(f"{t * 1e3:.1f}" for t in (ta, tr, tc, tb, tcold, tcpu, tmeta)),
                 f"{tcpu / ta:.0f}x", f"{tmeta / ta:.1f}x")
        print("  ".join(f"{c:>11}" for c in cells))
    print("(cpu 1st: the first counted forward; cpu best: warm, best of 2 (1 at 1024x2048); "
          "ratios use cpu best)")
    mid = next(r for r in rows if r[0] == "512x1024")
    speedup = mid[7] / mid[2]
    print(f"\nanalytic vs FlopCounterMode on CPU tensors at 512x1024: {speedup:.0f}x faster "
          f"(target >= 10x: {'met' if speedup >= 10 else 'NOT met'}); "
          f"analyze time across sizes: {min(r[2] for r in rows) * 1e3:.1f}-"
          f"{max(r[2] for r in rows) * 1e3:.1f} ms")
    print("counts: " + ("torch == 2 x analytic MACs at every size" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
