"""``rtsegc``: the command-line front end.

Exit status: 0 success, 2 invalid spec or usage (diagnostics on stderr as
``FILE:LINE:COL: error: MESSAGE``), 3 an internal compiler error (a bug: the
message says how to report it; ``RTSEGC_DEBUG=1`` shows the traceback).
``validate``, ``shapes``, ``flops``, ``schema`` and ``ops`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .diagnostics import Diagnostic, SpecError
from .ir import stride_text

__all__ = ["main"]

EXIT_OK, EXIT_SPEC, EXIT_INTERNAL = 0, 2, 3


class UsageError(Exception):
    """A bad command line (not a bad spec); reported like argparse does."""


def parse_size(text: str) -> tuple[int, int]:
    """'512x1024', '512,1024' or '512' (square) -> (height, width)."""
    cleaned = text.lower().replace(",", "x").replace("*", "x")
    parts = [p.strip() for p in cleaned.split("x") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: write HxW, e.g. 512x1024") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1 or max(values) > 16384:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: write HxW with 1 <= H, W <= 16384")
    return values[0], values[1]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def _print_diagnostics(diags: Sequence[Diagnostic]) -> None:
    for d in diags:
        print(d.render(), file=sys.stderr)


def _model_args(p: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    p.add_argument("model", nargs="?", help="model spec (or an encoder spec); "
                   "or give --encoder and --meta instead")
    p.add_argument("--encoder", metavar="E.yaml", help="encoder spec, with --meta, instead of a model")
    p.add_argument("--meta", metavar="M.yaml", help="meta-architecture spec, with --encoder")
    if sizes:
        p.add_argument("--input", type=parse_size, metavar="HxW",
                       help="input height x width (default: the model's 'input')")
    p.add_argument("--num-classes", type=_positive, metavar="N", help="override the model's num_classes")
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), metavar="{8,16,32}",
                   help="rewrite encoder strides into dilations to reach this output stride")
    p.add_argument("--encoder-param", action="append", type=parse_param, metavar="NAME=VALUE",
                   dest="encoder_params", help="override an encoder parameter, e.g. width=0.5 (repeatable)")
    p.add_argument("--meta-param", action="append", type=parse_param, metavar="NAME=VALUE",
                   dest="meta_params", help="override a meta-architecture parameter (repeatable)")


def parse_param(text: str) -> tuple[str, Any]:
    """'width=0.5' -> ('width', 0.5); 'bias=true' -> True; anything else stays an expression string."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"invalid parameter {text!r}: write NAME=VALUE, e.g. width=0.5")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    for convert in (int, float):
        try:
            return name, convert(value)
        except ValueError:
            pass
    return name, value


def _params(args: argparse.Namespace, which: str) -> dict[str, Any] | None:
    pairs = getattr(args, which, None)
    return dict(pairs) if pairs else None


_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_amount(text: str) -> int:
    """'2e9', '500M', '32GiB', '16G' -> a positive integer (K/M/G/T decimal, Ki/Mi/Gi/Ti binary)."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    cleaned = cleaned[:-1] if cleaned.endswith("b") else cleaned
    number = cleaned.rstrip("kmgti")
    suffix = cleaned[len(number):]
    try:
        value = float(number) * _SCALE[suffix]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"invalid amount {text!r}: write e.g. 2e9, 500M or 32GiB") from None
    if not 1 <= value < 1e30:
        raise argparse.ArgumentTypeError(f"invalid amount {text!r}: must be at least 1")
    return int(value)


def _outputs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outputs", choices=("all", "main"), default="all",
                   help="for a model with several outputs: keep all (default), or only the main "
                        "one, dropping auxiliary heads as for inference")


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-params", type=parse_amount, metavar="N",
                   help="refuse models with more parameters (default 2e9)")
    p.add_argument("--max-activations", type=parse_amount, metavar="BYTES",
                   help="refuse models whose float32 layer outputs sum to more (default 32GiB)")


def _budget(args: argparse.Namespace) -> Any:
    from .passes.budget import DEFAULT_BUDGET, Budget

    params = getattr(args, "max_params", None)
    acts = getattr(args, "max_activations", None)
    if params is None and acts is None:
        return None
    return Budget(params or DEFAULT_BUDGET.max_params, acts or DEFAULT_BUDGET.max_activation_bytes)


def _check_model_args(args: argparse.Namespace) -> None:
    if args.model is None and not (args.encoder and args.meta):
        raise UsageError("give a model spec, or both --encoder and --meta")
    if args.model is not None and (args.encoder or args.meta):
        raise UsageError("give either a model spec or --encoder/--meta, not both")


def _analysis(args: argparse.Namespace, keep_unused: bool = False) -> Any:
    from .pipeline import analyze

    _check_model_args(args)
    result = analyze(args.model, getattr(args, "input", None), args.num_classes,
                     encoder=args.encoder, meta=args.meta, keep_unused=keep_unused,
                     output_stride=args.output_stride, budget=_budget(args),
                     encoder_params=_params(args, "encoder_params"), meta_params=_params(args, "meta_params"),
                     outputs=getattr(args, "outputs", "all"))
    _print_diagnostics(result.warnings)
    return result


# --------------------------------------------------------------------------- commands

def cmd_validate(args: argparse.Namespace) -> int:
    from .pipeline import validate_file

    status = EXIT_OK
    for path in args.paths:
        diags = validate_file(path, args.input, budget=_budget(args))
        _print_diagnostics(diags)
        errors = [d for d in diags if d.severity == "error"]
        if errors:
            status = EXIT_SPEC
            print(f"{path}: {len(errors)} error{'s' if len(errors) != 1 else ''}", file=sys.stderr)
        elif not args.quiet:
            print(f"{path}: ok")
    return status


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int] = frozenset()) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _dilation(d: Sequence[int]) -> str:
    return str(d[0]) if d[0] == d[1] else f"{d[0]}x{d[1]}"


def cmd_shapes(args: argparse.Namespace) -> int:
    result = _analysis(args)
    rows = [(layer.name, layer.op, "x".join(map(str, layer.output_shape)), stride_text(layer.stride),
             _dilation(layer.dilation)) for layer in result.audit.layers]
    image = result.resolved.input
    print(f"{result.graph.name}: input {image.channels}x{image.height}x{image.width}")
    print(_table(("name", "op", "output (CxHxW)", "stride", "dilation"), rows, right={3, 4}))
    taps = ", ".join(f"{t.name}={t.node.partition('.')[2] or t.node}" for t in result.graph.taps)
    if taps:
        print(f"taps: {taps}")
    if result.graph.outputs:
        print("outputs: " + ", ".join(f"{name}={node} ({result.resolved.types[node]})"
                                      for name, node in result.graph.outputs))
    return EXIT_OK


def cmd_flops(args: argparse.Namespace) -> int:
    from .passes.count import CONVENTIONS

    result = _analysis(args, keep_unused=args.count_unused)
    audit = result.audit
    conv = args.convention
    if args.json:
        print(json.dumps(audit.to_json(conv), indent=2))
        return EXIT_OK
    unit = {"mac": "MACs", "flop": "FLOPs", "tf": "FLOPs (tf)"}[conv]
    if args.per_layer:
        rows = [(layer.name, layer.op, "x".join(map(str, layer.output_shape)), f"{layer.params:,}",
                 f"{layer.value(conv):,}") for layer in audit.layers]
        print(_table(("name", "op", "output", "params", unit), rows, right={3, 4}))
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
        print(_table(("output", "role", "shape", "layers", "params", unit, ""), rows, right={3, 4, 5, 6}))
        print("main: every layer the main output needs; auxiliary: the layers only that output needs")
        print()
    print(f"convention   {conv}: {CONVENTIONS[conv]}")
    if args.count_unused:
        print("             layers whose output is unused are counted (--count-unused)")
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    import torch

    from . import compile_model
    from .emit.torch_module import count_parameters

    _check_model_args(args)
    compiled = compile_model(args.model, args.input, args.num_classes, encoder=args.encoder, meta=args.meta,
                             output_stride=args.output_stride, budget=_budget(args),
                             encoder_params=_params(args, "encoder_params"),
                             meta_params=_params(args, "meta_params"), outputs=args.outputs)
    _print_diagnostics(compiled.analysis.warnings)
    audit = compiled.audit
    params = count_parameters(compiled.module)
    n, c, h, w = audit.input
    with torch.device("meta"):
        probe = torch.empty(1, c, h, w)
    module = compiled.module
    result = module.to("meta")(probe) if args.check_forward else None
    out_shape = audit.output_shape
    ok_shape = True
    if result is not None:
        outs = result if isinstance(result, dict) else {None: result}
        types = compiled.analysis.resolved.types
        inferred = {name: (1, types[node].channels, types[node].height, types[node].width)
                    for name, node in compiled.graph.outputs} or {None: audit.output_shape}
        ok_shape = list(outs) == list(inferred) and all(
            tuple(outs[k].shape) == tuple(v) for k, v in inferred.items())
        out_shape = tuple(next(iter(outs.values())).shape)
    ok_params = params == audit.params
    print(f"compiled     {audit.model} ({len(audit.layers)} layers)")
    print(f"input        {n}x{c}x{h}x{w}")
    print(f"output       {'x'.join(map(str, out_shape))} "
          f"({'matches' if ok_shape else 'DIFFERS FROM'} inferred {'x'.join(map(str, audit.output_shape))})")
    for head in audit.heads[1:]:
        if head.output_shape:
            print(f"  {head.name:<10} {'x'.join(map(str, head.output_shape))} (auxiliary output)")
    print(f"params       {params:,} ({'matches' if ok_params else 'DIFFERS FROM'} audit {audit.params:,})")
    print(f"MACs         {audit.macs:,} ({human(audit.macs)});  FLOPs {audit.flops:,} ({human(audit.flops)})")
    if args.save_code:
        from . import _class_name
        from .emit.python_source import SourceEmitError, emit_python

        try:
            source = emit_python(compiled.analysis.resolved, _class_name(audit.model),
                                 origin=str(args.model or f"{args.encoder} + {args.meta}"))
        except SourceEmitError as exc:
            raise UsageError(f"--save-code: {exc}") from None
        _write(Path(args.save_code), source)
        print(f"standalone module ({_class_name(audit.model)}, needs torch only) written to {args.save_code}")
    if not (ok_params and ok_shape):
        print("error: the emitted module disagrees with the audit (a compiler bug)", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    """Forward latency/FPS of the compiled module (runtime.bench, imported only here: it needs torch)."""
    try:
        from runtime.bench import bench_spec
    except ImportError as exc:
        print(f"rtsegc: error: 'bench' needs torch and the runtime package ({exc})", file=sys.stderr)
        return EXIT_SPEC
    import torch

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


def cmd_weights_import(args: argparse.Namespace) -> int:
    """Published weights renamed onto the compiled module's keys, written as a plain state dict."""
    import torch

    from . import compile_model
    from .weights.importer import WeightsError, import_weights
    from .weights.mapping import WeightSourceError, parse_source

    _check_model_args(args)
    try:
        source = parse_source(args.source)
    except WeightSourceError as exc:
        raise UsageError(str(exc)) from None
    compiled = compile_model(args.model, args.input, args.num_classes, encoder=args.encoder, meta=args.meta,
                             output_stride=args.output_stride,
                             encoder_params=_params(args, "encoder_params"),
                             meta_params=_params(args, "meta_params"))
    _print_diagnostics(compiled.analysis.warnings)
    try:
        report = import_weights(compiled, source)
    except WeightsError as exc:
        print(f"rtsegc: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    state = compiled.module.state_dict()
    # Only what the source filled (and the BN counters beside it): a segmentation model's decoder
    # stays out of the file, so `--pretrained FILE` and strict loaders see exactly the import.
    keys = sorted(report.loaded) + sorted(report.counters_kept)
    out = Path(args.output)
    try:
        torch.save({k: state[k].clone() for k in keys}, out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(report.render())
    print(f"wrote {len(keys)} tensors with {compiled.graph.name}'s keys to {out}")
    return EXIT_OK


def cmd_weights_list(args: argparse.Namespace) -> int:
    """The weight layouts an encoder spec declares (torch-free)."""
    from .pipeline import load_graph
    from .spec.load import load_spec_file
    from .weights.mapping import parse_layouts

    _check_model_args(args)
    graph = load_graph(args.model, encoder=args.encoder, meta=args.meta)
    path = graph.files.get("encoder")
    layouts = parse_layouts(load_spec_file(path), str(path)) if path else {}
    if not layouts:
        print(f"{path}: declares no weight layouts (docs/weights.md)")
    for layout in layouts.values():
        head = f"; head -> meta '{layout.head.meta}'" if layout.head else ""
        print(f"{layout.label:<28} {layout.doc}{head}")
    return EXIT_OK


RENDER_FORMATS = ("svg", "png", "pdf", "dot", "gv")


def _write(path: Path, data: str | bytes) -> None:
    """Write an output file; a bad path is the user's to fix (exit 2), not a compiler bug."""
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_visualize(args: argparse.Namespace) -> int:
    from .emit.dot import emit_dot

    result = _analysis(args)
    dot = emit_dot(result.resolved)
    out = Path(args.output) if args.output else Path(f"{result.graph.name}.svg")
    fmt = args.format or (out.suffix.lstrip(".").lower() or "svg")
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"cannot draw to '.{fmt}': use one of {', '.join(RENDER_FORMATS)} "
                         "(a file suffix or --format)")
    if fmt in ("dot", "gv"):
        _write(out, dot.source)
        print(f"wrote {out}")
        return EXIT_OK
    import shutil
    if shutil.which("dot") is None:
        dot_path = out.with_suffix(".dot")
        _write(dot_path, dot.source)
        print(f"error: rendering {fmt} needs Graphviz's 'dot' program (Debian: apt-get install graphviz); "
              f"wrote the DOT source to {dot_path}", file=sys.stderr)
        return EXIT_SPEC
    _write(out, dot.pipe(format=fmt))
    print(f"wrote {out}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .spec.schema import KINDS, schema_for

    kinds = [args.kind] if args.kind else list(KINDS)
    data = schema_for(kinds[0]) if len(kinds) == 1 else {k: schema_for(k) for k in kinds}
    print(json.dumps(data, indent=2))
    return EXIT_OK


def cmd_ops(args: argparse.Namespace) -> int:
    from .ops import REGISTRY
    from .ops.base import REQUIRED

    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        fields = []
        for key, f in op.fields.items():
            if f.default is REQUIRED:
                fields.append(f"{key}")
            elif f.default is None:
                fields.append(f"{key}=auto")
            else:
                fields.append(f"{key}={f.default}")
        lo, hi = op.arity
        arity = f"{lo}" if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        print(f"{name:<10} {op.summary}")
        print(f"{'':<10} inputs: {arity}; fields: {', '.join(fields) or 'none'}")
    return EXIT_OK


# --------------------------------------------------------------------------- entry

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtsegc", description="Compile and audit YAML specs of real-time segmentation networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check spec files (exit 0 if all are valid, 2 otherwise)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--input", type=parse_size, metavar="HxW", help="check shapes at this input size")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    _budget_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("shapes", help="per-layer output shapes, strides and dilations")
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser("flops", help="parameters, MACs and FLOPs, computed from the spec alone")
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    p.add_argument("--per-layer", action="store_true", help="a row per layer")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--convention", choices=("mac", "flop", "tf"), default="flop",
                   help="what the total counts: mac, flop = 2 x MACs (default), "
                        "tf = TensorFlow profiler (RTSeg paper)")
    p.add_argument("--count-unused", action="store_true",
                   help="also count layers whose output is unused (TensorFlow's profiler did)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("compile", help="build the PyTorch module and check it against the audit")
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    p.add_argument("--save-code", metavar="FILE.py", help="write a standalone PyTorch module (torch only; same state-dict keys)")
    p.add_argument("--no-forward", dest="check_forward", action="store_false",
                   help="skip the shape-only forward pass on the meta device")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("bench", help="forward latency and FPS of the compiled module (eval, no_grad)")
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
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("weights", help="published weights through the layouts encoder specs declare")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    q = wsub.add_parser("import", help="rename SOURCE:NAME[@PATH] onto the model's keys, strictly, "
                        "and save it (exit 2 with a report if it does not fit)")
    _model_args(q)
    q.add_argument("--from", dest="source", required=True, metavar="SOURCE:NAME[@PATH]",
                   help="torchvision:resnet18@r18.pth reads a local file; without @PATH the weights "
                        "are fetched through torchvision's or timm's API")
    q.add_argument("-o", "--output", required=True, metavar="FILE.pt", help="where to write the state dict")
    q.set_defaults(func=cmd_weights_import)
    q = wsub.add_parser("list", help="the weight layouts the model's encoder spec declares")
    _model_args(q, sizes=False)
    q.set_defaults(func=cmd_weights_list)

    p = sub.add_parser("visualize", help="draw the network with Graphviz")
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    p.add_argument("-o", "--output", metavar="FILE", help="output file (.svg, .png, .pdf or .dot)")
    p.add_argument("--format", choices=RENDER_FORMATS, help="output format, when the file name does not say")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("schema", help="print the JSON Schema of spec files, for editors")
    p.add_argument("kind", nargs="?", choices=("encoder", "meta", "model"))
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("ops", help="list the ops and their fields")
    p.set_defaults(func=cmd_ops)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics)
        return EXIT_SPEC
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"rtsegc: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    except KeyboardInterrupt:
        print("rtsegc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("RTSEGC_DEBUG"):
            raise
        print(f"rtsegc: internal compiler error: {type(exc).__name__}: {exc}\n"
              "This is a bug in rtsegc, not in your spec. Re-run with RTSEGC_DEBUG=1 for the "
              "traceback and report it.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
