"""``rtsegc bench``: forward latency and FPS of a compiled module, a runtime command.

This is the former ``cmd_bench`` of ``rtseg_compiler/cli.py``, moved here unchanged so that the compiler's
CLI no longer imports the runtime (``rtseg_compiler/commands.py`` explains the entry-point group). It
reuses the compiler CLI's option helpers and error classes: the runtime depends on the compiler, never the
other way round. Timing itself is :mod:`runtime.bench`.
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from rtseg_compiler.cli import (EXIT_OK, UsageError, _check_model_args, _model_args,  # noqa: F401
                                _params, _positive, _print_diagnostics, human)

__all__ = ["HELP", "build_parser", "main"]

HELP = "forward latency and FPS of the compiled module (eval, no_grad)"


def build_parser(prog: str = "rtsegc bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=HELP)
    _model_args(p)
    p.add_argument("--batch-size", type=_positive, default=1, metavar="N",
                   help="images per forward (default 1)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed calls first (default 10)")
    p.add_argument("--iters", type=_positive, default=50, metavar="N",
                   help="timed calls; the median is reported (default 50)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for input and weights")
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return p



def cmd_bench(args: argparse.Namespace) -> int:
    """Forward latency/FPS of the compiled module (moved verbatim from rtseg_compiler/cli.py)."""
    import torch

    from .bench import bench_spec

    _check_model_args(args)
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    result, compiled = bench_spec(args.model, args.input, args.num_classes, encoder=args.encoder,
                                  meta=args.meta, output_stride=args.output_stride,
                                  encoder_params=_params(args, "encoder_params"),
                                  meta_params=_params(args, "meta_params"),
                                  batch_size=args.batch_size, warmup=args.warmup, iters=args.iters,
                                  device=device, channels_last=args.channels_last, dtype=dtype)
    _print_diagnostics(compiled.analysis.warnings)
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
    print(f"throughput   {result.fps:.2f} images/s; {gflops / (result.latency_ms / 1000):.1f} GFLOP/s "
          f"({human(audit.flops)}FLOPs per image)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc bench") -> int:
    """Run from ``rtsegc bench``; the compiler CLI's ``main`` reports SpecError and UsageError."""
    return cmd_bench(build_parser(prog).parse_args(argv))
