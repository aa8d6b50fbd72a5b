"""``rtsegc validate``, ``shapes`` and ``flops``: the audit commands, computed from the spec alone.

None of them imports torch, networkx, jsonschema (for a valid spec) or ``importlib.metadata``: a whole
``rtsegc flops`` takes about 0.2 s (tests/unit/test_import_budget.py, benchmarks/bench_startup.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..ir import human, stride_text
from .args import (add_budget_args, add_model_args, add_outputs_arg, budget, check_model_args, parse_size,
                   spec_params)
from .status import EXIT_OK, EXIT_SPEC, print_diagnostics
from .tables import dilation_text, table

__all__ = ["analysis", "cmd_flops", "cmd_shapes", "cmd_validate", "flops_parser", "shapes_parser",
           "validate_parser"]


def analysis(args: argparse.Namespace, keep_unused: bool = False) -> Any:
    """The analysis (pipeline.analyze) of the model the command line names; prints its warnings."""
    from ..pipeline import analyze

    check_model_args(args)
    result = analyze(args.model, getattr(args, "input", None), args.num_classes,
                     encoder=args.encoder, meta=args.meta, keep_unused=keep_unused,
                     output_stride=args.output_stride, budget=budget(args),
                     encoder_params=spec_params(args, "encoder_params"),
                     meta_params=spec_params(args, "meta_params"),
                     outputs=getattr(args, "outputs", "all"))
    print_diagnostics(result.warnings)
    return result


def cmd_validate(args: argparse.Namespace) -> int:
    from ..pipeline import validate_file

    status = EXIT_OK
    for path in args.paths:
        diags = validate_file(path, args.input, budget=budget(args))
        print_diagnostics(diags)
        errors = [d for d in diags if d.severity == "error"]
        if errors:
            status = EXIT_SPEC
            print(f"{path}: {len(errors)} error{'s' if len(errors) != 1 else ''}", file=sys.stderr)
        elif not args.quiet:
            print(f"{path}: ok")
    return status


def cmd_shapes(args: argparse.Namespace) -> int:
    result = analysis(args)
    rows = [(layer.name, layer.op, "x".join(map(str, layer.output_shape)), layer.stride_text,
             dilation_text(layer.dilation)) for layer in result.audit.layers]
    image = result.resolved.input
    print(f"{result.graph.name}: input {image.channels}x{image.height}x{image.width}")
    print(table(("name", "op", "output (CxHxW)", "stride", "dilation"), rows, right={3, 4}))
    taps = ", ".join(f"{t.name}={t.node.partition('.')[2] or t.node}" for t in result.graph.taps)
    if taps:
        print(f"taps: {taps}")
    if result.graph.outputs:
        print("outputs: " + ", ".join(f"{name}={node} ({result.resolved.types[node]})"
                                      for name, node in result.graph.outputs))
    return EXIT_OK


def cmd_flops(args: argparse.Namespace) -> int:
    from ..passes.count import CONVENTIONS

    result = analysis(args, keep_unused=args.count_unused)
    audit = result.audit
    conv = args.convention
    if args.json:
        print(json.dumps(audit.to_json(conv), indent=2))
        return EXIT_OK
    unit = {"mac": "MACs", "flop": "FLOPs", "tf": "FLOPs (tf)"}[conv]
    if args.per_layer:
        rows = [(layer.name, layer.op, "x".join(map(str, layer.output_shape)), f"{layer.params:,}",
                 f"{layer.value(conv):,}") for layer in audit.layers]
        print(table(("name", "op", "output", "params", unit), rows, right={3, 4}))
        print()
    n, c, h, w = audit.input
    print(f"model        {audit.model}")
    print(f"input        {n}x{c}x{h}x{w}")
    print(f"output       {'x'.join(map(str, audit.output_shape))}")
    print(f"params       {audit.params:,} ({human(audit.params)})")
    print(f"MACs         {audit.macs:,} ({human(audit.macs)})")
    print(f"FLOPs        {audit.flops:,} ({human(audit.flops)})")
    if conv == "tf":
        print(f"FLOPs (tf)   {audit.tf_flops:,} ({human(audit.tf_flops)})")
    if audit.heads:
        print()
        rows = [(h.name, h.role, "x".join(map(str, h.output_shape)) if h.output_shape else "-",
                 len(h.layers), f"{h.params:,}", f"{h.value(conv):,}", human(h.value(conv)))
                for h in audit.heads]
        print(table(("output", "role", "shape", "layers", "params", unit, ""), rows, right={3, 4, 5, 6}))
        print("main: every layer the main output needs; auxiliary: the layers only that output needs")
        print()
    print(f"convention   {conv}: {CONVENTIONS[conv]}")
    if args.count_unused:
        print("             layers whose output is unused are counted (--count-unused)")
    return EXIT_OK


# --------------------------------------------------------------------------- parsers

def validate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--input", type=parse_size, metavar="HxW", help="check shapes at this input size")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    add_budget_args(p)
    p.set_defaults(func=cmd_validate)


def shapes_parser(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_outputs_arg(p)
    add_budget_args(p)
    p.set_defaults(func=cmd_shapes)


def flops_parser(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_outputs_arg(p)
    add_budget_args(p)
    p.add_argument("--per-layer", action="store_true", help="a row per layer")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--convention", choices=("mac", "flop", "tf"), default="flop",
                   help="what the total counts: mac, flop = 2 x MACs (default), "
                        "tf = TensorFlow profiler (RTSeg paper)")
    p.add_argument("--count-unused", action="store_true",
                   help="also count layers whose output is unused (TensorFlow's profiler did)")
    p.set_defaults(func=cmd_flops)
