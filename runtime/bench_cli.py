"""``rtsegc bench``: forward latency and FPS of a compiled module, a runtime command.

A runtime command, so that the compiler's CLI never imports the runtime (``rtseg_compiler/commands.py``
explains the entry-point group). Its options come from the compiler CLI's public argument vocabulary
(:mod:`rtseg_compiler.cli.args`) and its errors are the CLI's (:mod:`rtseg_compiler.cli.status`): the
runtime depends on the compiler, never the other way round. Timing itself is :mod:`rtseg_compiler.latency`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from rtseg_compiler.allocator import HELP as ALLOCATOR_HELP
from rtseg_compiler.allocator import configure_allocator
from rtseg_compiler.cli.args import (add_build_args, add_model_args, check_model_args, parse_positive,
                                     spec_params)
from rtseg_compiler.cli.status import EXIT_OK, CommandError, UsageError, print_diagnostics
from rtseg_compiler.cli.tables import table
from rtseg_compiler.ir import human

__all__ = ["HELP", "build_parser", "main"]

HELP = "forward latency and FPS of the compiled module (eval, no_grad)"


def build_parser(prog: str = "rtsegc bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=HELP, epilog=ALLOCATOR_HELP)
    add_model_args(p)
    p.add_argument("--batch-size", type=parse_positive, default=1, metavar="N",
                   help="images per forward (default 1)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed calls first (default 10)")
    p.add_argument("--iters", type=parse_positive, default=50, metavar="N",
                   help="timed calls; the median is reported (default 50)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for input and weights")
    p.add_argument("--threads", type=parse_positive, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    add_build_args(p, channels_last=False)
    p.add_argument("--compile", action="store_true",
                   help="also time each build under torch.compile (needs a C++ compiler on the CPU)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return p



def cmd_bench(args: argparse.Namespace) -> int:
    """Forward latency/FPS of the compiled module; with --inference/--compile/--weights/--no-inplace,
    one row per build (``_bench_variants``)."""
    import torch

    from rtseg_compiler.latency import bench_spec, bench_variants, torch_compile_problem
    from rtseg_compiler.weights import is_source_text

    check_model_args(args)
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if args.weights is not None and not Path(args.weights).is_file() \
            and not is_source_text(args.weights, any_source=True):
        raise UsageError(f"--weights {args.weights}: no such file")
    if args.inference or args.compile or args.weights or not args.inplace:
        return _bench_variants(args, bench_variants, torch_compile_problem, device, dtype)
    result, compiled = bench_spec(args.model, args.input, args.num_classes, encoder=args.encoder,
                                  meta=args.meta, output_stride=args.output_stride,
                                  encoder_params=spec_params(args, "encoder_params"),
                                  meta_params=spec_params(args, "meta_params"),
                                  batch_size=args.batch_size, warmup=args.warmup, iters=args.iters,
                                  device=device, channels_last=args.channels_last, dtype=dtype)
    print_diagnostics(compiled.analysis.warnings)
    audit = compiled.audit
    if args.json:
        print(json.dumps({**result.to_json(), "params": audit.params, "flops": audit.flops}, indent=2))
        return EXIT_OK
    n, c, h, w = result.input
    gflops = audit.flops * n / 1e9  # the audit is per image
    print(f"model        {result.model}")
    layout = "channels_last" if result.channels_last else "NCHW"
    print(f"input        {n}x{c}x{h}x{w} ({result.dtype}, {layout})")
    print(f"device       {result.device} ({result.threads} threads)" if result.device == "cpu"
          else f"device       {result.device} ({torch.cuda.get_device_name(result.device)})")
    print(f"latency      {result.latency_ms:.2f} ms median of {result.iters} (min {result.min_ms:.2f}, "
          f"p90 {result.p90_ms:.2f}; {result.warmup} warm-up)")
    if result.faults_per_call is not None:
        print(f"page faults  {result.faults_per_call:,.0f} minor per forward; {_memory(args)}")
    print(f"throughput   {result.fps:.2f} images/s; {gflops / (result.latency_ms / 1000):.1f} GFLOP/s "
          f"({human(audit.flops)}FLOPs per image)")
    return EXIT_OK


def _bench_variants(args: argparse.Namespace, bench_variants: Callable, torch_compile_problem: Callable,
                    device: str, dtype: Any) -> int:
    """``rtsegc bench --inference/--compile``: one row per build, torch.compile'd next to eager."""
    from rtseg_compiler.weights import WeightsError

    if args.compile:
        problem = torch_compile_problem(device)
        if problem:
            raise CommandError(f"--compile: {problem}")
        if args.warmup < 1:
            raise UsageError("--compile needs --warmup >= 1 (torch.compile compiles on the first call)")
    try:
        rows, compiled = bench_variants(
            args.model, args.input, args.num_classes, inference=args.inference, weights=args.weights,
            torch_compile=args.compile, inplace=args.inplace, channels_last=args.channels_last,
            compile_kwargs=dict(encoder=args.encoder, meta=args.meta, output_stride=args.output_stride,
                                encoder_params=spec_params(args, "encoder_params"),
                                meta_params=spec_params(args, "meta_params")),
            batch_size=args.batch_size, warmup=args.warmup, iters=args.iters, device=device, dtype=dtype)
    except WeightsError as exc:
        raise CommandError(str(exc)) from None
    print_diagnostics(compiled.analysis.warnings)
    if args.json:
        print(json.dumps({"variants": [{"variant": label, **r.to_json()} for label, r in rows]}, indent=2))
        return EXIT_OK
    first = rows[0][1]
    n, c, h, w = first.input
    layout = "channels_last" if first.channels_last else "NCHW"
    print(f"model        {first.model}")
    print(f"input        {n}x{c}x{h}x{w} ({first.dtype}, {layout}); device {first.device}"
          + (f" ({first.threads} threads)" if first.device == "cpu" else ""))
    print(f"timing       median of {first.iters} calls after {first.warmup} warm-up (compilation "
          "happens in the warm-up)")
    base = first.latency_ms
    cells = [(label, f"{r.latency_ms:.2f}", f"{r.min_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.fps:.2f}",
              f"{base / r.latency_ms:.2f}x",
              "-" if r.faults_per_call is None else f"{r.faults_per_call:,.0f}")
             for label, r in rows]
    print(table(("variant", "median ms", "min ms", "p90 ms", "images/s", "vs plain", "faults/fwd"), cells,
                right={1, 2, 3, 4, 5, 6}))
    print(f"memory       {_memory(args)}")
    return EXIT_OK


def _memory(args: argparse.Namespace) -> str:
    """What ``main`` did to malloc (rtseg_compiler.allocator), for the report."""
    return getattr(args, "allocator_setting", "malloc as the process found it")


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc bench") -> int:
    """Run from ``rtsegc bench``; the compiler CLI's ``main`` reports UsageError and CommandError (shared
    with ``rtsegc``'s own commands), :func:`runtime.errors.guarded` everything else."""
    from .errors import guarded

    setting = configure_allocator()
    args = build_parser(prog).parse_args(argv)
    args.allocator_setting = setting.detail
    return guarded(prog, lambda: cmd_bench(args), passthrough=(UsageError, CommandError))
