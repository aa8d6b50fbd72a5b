"""``rtsegc``: the command-line front end.

Exit status: 0 success, 2 invalid spec or usage (diagnostics on stderr as
``FILE:LINE:COL: error: MESSAGE``), 3 an internal compiler error (a bug: the
message says how to report it; ``RTSEGC_DEBUG=1`` shows the traceback).
``validate``, ``shapes``, ``flops``, ``schema`` and ``ops`` never import torch.

``train``, ``eval``, ``predict`` and ``bench`` come from the runtime (``rtseg_runtime``) through the
``rtseg_compiler.commands`` entry-point group (commands.py); this module never imports the runtime.

``rtsegc --ops MODULE COMMAND ...`` imports a module that registers user ops
(repeatable, before the command); installed ``rtseg_compiler.ops`` entry points
load by themselves. See ``ops/plugins.py`` and docs/extending.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .diagnostics import Diagnostic, SpecError, in_source_order
from .ir import human, stride_text

__all__ = ["main"]

EXIT_OK, EXIT_SPEC, EXIT_INTERNAL = 0, 2, 3


class UsageError(Exception):
    """A bad command line (not a bad spec); reported like argparse does."""


class CommandError(Exception):
    """A file or environment problem found while running a command (weights that do not fit,
    no C++ compiler for torch.compile); reported as one error line, exit status 2."""


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


def _print_diagnostics(diags: Sequence[Diagnostic]) -> None:
    for d in in_source_order(diags):
        print(d.render(), file=sys.stderr)


def _print_unlocated(d: Diagnostic) -> None:
    """A diagnostic about the command line or the environment: 'rtsegc: ' stands for a missing file."""
    print(d.render() if d.loc is not None else f"rtsegc: {d.render()}", file=sys.stderr)


def _module_name(text: str) -> str:
    from .ops.plugins import check_module_name

    try:
        return check_module_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _OpsAfterCommand(argparse.Action):
    """``rtsegc flops --ops m`` would otherwise read 'unrecognized arguments'."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        command = parser.prog.split()[-1]
        parser.error(f"--ops is a global option: give it before the command, "
                     f"e.g. rtsegc --ops {values} {command} ...")


def _load_user_ops(modules: Sequence[str]) -> int:
    """Import the --ops modules (after the installed entry points, so a clash names both)."""
    from .ops.plugins import OpsModuleError, load_entry_points, load_ops_module

    if not modules:
        return EXIT_OK
    load_entry_points()
    for module in modules:
        already = module in sys.modules
        try:
            added = load_ops_module(module)
        except OpsModuleError as exc:
            _print_unlocated(exc.diagnostic)
            return EXIT_SPEC
        if not added and not already:
            print(f"rtsegc: warning: --ops {module}: the module registered no ops", file=sys.stderr)
    return EXIT_OK


def _output_strides() -> tuple[int, ...]:
    """The output strides passes/dilate.py accepts: the policy has one home, the CLI asks it."""
    from .passes.dilate import VALID_OUTPUT_STRIDES

    return VALID_OUTPUT_STRIDES


def _output_strides_text() -> str:
    return "{" + ",".join(map(str, _output_strides())) + "}"


def _model_args(p: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    p.add_argument("model", nargs="?", help="model spec (or an encoder spec); "
                   "or give --encoder and --meta instead")
    p.add_argument("--encoder", metavar="E.yaml", help="encoder spec, with --meta, instead of a model")
    p.add_argument("--meta", metavar="M.yaml", help="meta-architecture spec, with --encoder")
    if sizes:
        p.add_argument("--input", type=parse_size, metavar="HxW",
                       help="input height x width (default: the model's 'input')")
    p.add_argument("--num-classes", type=_positive, metavar="N", help="override the model's num_classes")
    p.add_argument("--output-stride", type=int, choices=_output_strides(), metavar=_output_strides_text(),
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


def _build_args(p: argparse.ArgumentParser, *, channels_last: bool = True) -> None:
    """Options of the module build shared by compile, export and bench."""
    p.add_argument("--weights", metavar="FILE.pt",
                   help="load this state dict (the compiled module's keys, or a runtime checkpoint) strictly")
    p.add_argument("--inference", action="store_true",
                   help="inference build: fold batch norm into the conv before it, drop dropout")
    p.add_argument("--no-inplace", dest="inplace", action="store_false",
                   help="keep every activation out of place (the in-place memory pass is on by default)")
    if channels_last:
        p.add_argument("--channels-last", action="store_true", help="NHWC weights (and input, for bench)")


def _compile(args: argparse.Namespace) -> Any:
    """compile_model with the command line's model and build options."""
    from . import compile_model

    _check_model_args(args)
    if args.weights is not None and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    from .inference import WeightsError

    try:
        compiled = compile_model(args.model, getattr(args, "input", None), args.num_classes,
                                 encoder=args.encoder, meta=args.meta, output_stride=args.output_stride,
                                 budget=_budget(args), encoder_params=_params(args, "encoder_params"),
                                 meta_params=_params(args, "meta_params"),
                                 inference=getattr(args, "inference", False), weights=args.weights,
                                 channels_last=getattr(args, "channels_last", False),
                                 inplace=getattr(args, "inplace", True),
                                 outputs=getattr(args, "outputs", "all"))
    except WeightsError as exc:
        raise CommandError(str(exc)) from None
    _print_diagnostics(compiled.analysis.warnings)
    return compiled


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

    from .emit.torch_module import count_parameters

    compiled = _compile(args)
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
    plan = compiled.inference
    if plan is not None:
        before = compiled.analysis.audit.params
        print(f"inference    {len(plan.folds)} batch norms folded into convs, {len(plan.kept)} kept, "
              f"{len(plan.dropped)} dropout removed; params {before:,} -> {audit.params:,}")
        for name, why in plan.kept:
            print(f"             kept {name}: {why}")
    if compiled.in_place:
        print(f"in place     {len(compiled.in_place)} layers overwrite their input "
              f"({', '.join(sorted({compiled.graph.node(n).op for n in compiled.in_place}))})")
    if args.weights:
        print(f"weights      {args.weights} (loaded strictly)")
    if args.save_code:
        from . import _class_name
        from .emit.python_source import SourceEmitError, emit_python

        try:
            # The inference build's own graph (folded), so the file's keys match that module's.
            built = compiled.inference.resolved if compiled.inference else compiled.analysis.resolved
            source = emit_python(built, _class_name(audit.model),
                                 origin=str(args.model or f"{args.encoder} + {args.meta}"))
        except SourceEmitError as exc:
            raise UsageError(f"--save-code: {exc}") from None
        _write(Path(args.save_code), source)
        print(f"standalone module ({_class_name(audit.model)}, needs torch only) written to {args.save_code}")
    if not (ok_params and ok_shape):
        print("error: the emitted module disagrees with the audit (a compiler bug)", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """ONNX or ExportedProgram through torch.export (rtseg_compiler/export.py)."""
    from .export import ExportError, export_compiled

    compiled = _compile(args)
    try:
        result = export_compiled(compiled, args.output, args.format, dynamic=args.dynamic)
    except ExportError as exc:
        print(f"rtsegc: error: cannot export {compiled.audit.model}: {exc}", file=sys.stderr)
        return EXIT_SPEC
    n, c, h, w = result.example
    print(f"exported     {compiled.audit.model} -> {result.path} ({result.format})")
    print(f"example      {n}x{c}x{h}x{w}" + (" (inference build)" if compiled.inference else ""))
    if args.dynamic:
        print("batch        dynamic, 1..1024")
        for r in result.ranges:
            print(f"{r.dim:<12} {r.describe().split(': ', 1)[1]}")
        for note in result.notes:
            print(f"note         {note}")
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


#: How to get Graphviz's renderer, in one line (a rendered format without it exits 2).
INSTALL_GRAPHVIZ = ("install Graphviz: apt-get install graphviz (Debian/Ubuntu), brew install graphviz "
                    "(macOS), or see https://graphviz.org/download/")


def cmd_visualize(args: argparse.Namespace) -> int:
    from .emit.dot import diagram_dot

    result = _analysis(args)
    out = Path(args.output) if args.output else Path(f"{result.graph.name}.svg")
    fmt = args.format or (out.suffix.lstrip(".").lower() or "svg")
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"cannot draw to '.{fmt}': use one of {', '.join(RENDER_FORMATS)} "
                         "(a file suffix or --format)")
    text = diagram_dot(result, args.detail, args.rankdir, args.convention)
    if fmt in ("dot", "gv"):
        _write(out, text)
        print(f"wrote {out}")
        return EXIT_OK
    import shutil
    import subprocess

    dot_program = shutil.which("dot")
    if dot_program is None:
        dot_path = out.with_suffix(".dot")
        _write(dot_path, text)
        print(f"rtsegc: error: drawing .{fmt} needs Graphviz's 'dot' program; wrote {dot_path} instead; "
              f"{INSTALL_GRAPHVIZ}", file=sys.stderr)
        return EXIT_SPEC
    proc = subprocess.run([dot_program, f"-T{fmt}"], input=text.encode(), capture_output=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz dot failed: {proc.stderr.decode(errors='replace').strip()}")
    _write(out, proc.stdout)
    print(f"wrote {out}")
    return EXIT_OK


def _compare_targets(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Model files among ``paths`` (a shell glob may also match encoders and metas: noted, skipped)."""
    from .spec.load import load_spec_file

    from .zoo import list_models, resolve_spec

    models, notes = [], []
    seen: set[str] = set()
    expanded: list[str] = []
    for path in paths:  # zoo names, and zoo patterns the shell left alone ('skipnet_*')
        matches = list_models(path) if any(c in path for c in "*?[") and not Path(path).exists() else []
        expanded.extend(str(resolve_spec(p)) for p in (matches or [path]))
    for path in expanded:
        key = os.path.normpath(path)
        if key in seen:
            continue
        seen.add(key)
        try:
            kind = load_spec_file(path).get("kind")
        except SpecError:
            models.append(path)  # analyze() reports the problem with its location
            continue
        if kind == "model":
            models.append(path)
        else:
            notes.append(f"rtsegc: note: skipping {path}: a{'n' if str(kind)[:1] in 'aeiou' else ''} "
                         f"{kind} spec, not a model")
    return models, notes


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import (compare_row, plot_rows, render_csv, render_json, render_markdown,
                          render_table, stage_split)
    from .pipeline import analyze

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib, an optional extra: pip install 'rtseg-compiler[plot]' "
                             "(or pip install matplotlib)") from None
        plot_path = Path(args.plot)
        if plot_path.suffix.lower().lstrip(".") not in ("svg", "png", "pdf"):
            raise UsageError(f"--plot {args.plot}: use a .svg, .png or .pdf file name")
    bench_spec = None
    if args.bench:
        # The timing loop of rtsegc bench (latency.py), imported only when asked: it needs torch.
        try:
            from .latency import bench_spec
        except ImportError as exc:
            raise UsageError(f"--bench needs torch ({exc})") from None
    models, notes = _compare_targets(args.models)
    for note in notes:
        print(note, file=sys.stderr)
    if not models:
        raise UsageError("no model specs among the given files")
    sizes = args.input or [None]
    rows: list[dict[str, Any]] = []
    plot_rows_: list[dict[str, Any]] = []  # with the stride split the plot needs, even without --by
    status = EXIT_OK
    for path in models:
        for size in sizes:
            try:
                result = analyze(path, size, args.num_classes, keep_unused=args.count_unused,
                                 output_stride=args.output_stride)
            except SpecError as exc:
                _print_diagnostics(exc.diagnostics)
                status = EXIT_SPEC
                continue
            _print_diagnostics(result.warnings)
            row = compare_row(result, args.convention, spec=path, by_stage=args.by == "stage")
            if bench_spec is not None:
                row.update(_bench_row(bench_spec, path, result.input_size, args))
            rows.append(row)
            if args.plot:
                plot_rows_.append({**row, **stage_split(result)})
    if not rows:
        return status
    render = {"json": render_json, "csv": render_csv, "markdown": render_markdown}.get(args.style, render_table)
    sys.stdout.write(render(rows, args.convention))
    if args.plot:
        plot_rows(plot_rows_, args.convention, plot_path)
        print(f"wrote {plot_path}", file=sys.stderr)
    return status


def _bench_row(bench_spec: Any, path: str, size: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """Latency and images/s of the compiled model (latency.py, the same as ``rtsegc bench``)."""
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    result, _ = bench_spec(path, size, args.num_classes, output_stride=args.output_stride,
                           batch_size=args.batch_size, warmup=args.warmup, iters=args.iters, device=device)
    return {"latency_ms": round(result.latency_ms, 4), "fps": round(result.fps, 3), "device": result.device,
            "batch_size": result.input[0], "dtype": result.dtype}


def cmd_schema(args: argparse.Namespace) -> int:
    from .ops.plugins import load_entry_points
    from .spec.schema import KINDS, schema_for

    load_entry_points()
    kinds = [args.kind] if args.kind else list(KINDS)
    data = schema_for(kinds[0]) if len(kinds) == 1 else {k: schema_for(k) for k in kinds}
    print(json.dumps(data, indent=2))
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """The zoo's model names (zoo.py): what create_model and every MODEL argument accept."""
    from .zoo import list_models, resolve_spec, zoo_root

    if zoo_root() is None:
        raise CommandError("this installation has no model zoo (the specs/ folder is missing)")
    names = list_models(args.pattern)
    if not names:
        raise CommandError(f"no zoo model matches {args.pattern!r}; 'rtsegc models' lists them all")
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {resolve_spec(name)}" if args.verbose else name)
    return EXIT_OK


def cmd_ops(args: argparse.Namespace) -> int:
    from .ops import REGISTRY, op_origin
    from .ops.base import BUILTIN
    from .ops.plugins import load_entry_points

    load_entry_points()
    width = max(10, *(len(name) + 1 for name in REGISTRY))  # built-in names fit in 10 columns
    by_origin: dict[str, list[str]] = {}
    for name in sorted(REGISTRY):
        by_origin.setdefault(op_origin(name), []).append(name)
    # Built-in ops first, unheaded as they always were; each user source under its own heading.
    for k, origin in enumerate(sorted(by_origin, key=lambda o: (o != BUILTIN, o))):
        if origin != BUILTIN:
            if k:
                print()
            print(f"from {origin}:")
        for name in by_origin[origin]:
            _print_op(name, REGISTRY[name], width)
    return EXIT_OK


def _print_op(name: str, op: Any, width: int) -> None:
    from .ops.base import REQUIRED

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
    print(f"{name:<{width}} {op.summary}")
    print(f"{'':<{width}} inputs: {arity}; fields: {', '.join(fields) or 'none'}")


def _user_op_fault(exc: BaseException) -> Diagnostic | None:
    """A user op's hook raised something other than OpError: blame that op, at its line, not rtsegc.

    The op is found by the innermost traceback frame in the package of one of its hooks
    (``rtsegc_example_ops.modules`` counts for an op whose hooks live in ``rtsegc_example_ops``).
    """
    from .diagnostics import Location
    from .ops import REGISTRY, op_origin
    from .ops.base import BUILTIN

    owners: dict[str, tuple[str, str]] = {}
    for name, op in REGISTRY.items():
        origin = op_origin(name)
        if origin == BUILTIN:
            continue
        for hook in (op.infer, op.build, op.count, op.complete, op.dilate, op.returns_extra):
            module = getattr(hook, "__module__", None) or ""
            if module and not module.startswith(__package__ + "."):
                owners.setdefault(module.partition(".")[0], (name, origin))
    found = None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] in owners:
            found = (tb, owners[module.partition(".")[0]])
        tb = tb.tb_next
    if found is None:
        return None
    tb, (name, origin) = found
    return Diagnostic(f"op '{name}' ({origin}) failed: {type(exc).__name__}: {exc}",
                      Location(tb.tb_frame.f_code.co_filename, tb.tb_lineno, 1),
                      hint="a bug in the op's own code, not in rtsegc or the spec; "
                           "RTSEGC_DEBUG=1 shows the traceback")


# --------------------------------------------------------------------------- entry

def _validate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--input", type=parse_size, metavar="HxW", help="check shapes at this input size")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    _budget_args(p)
    p.set_defaults(func=cmd_validate)


def _shapes_parser(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    p.set_defaults(func=cmd_shapes)


def _flops_parser(p: argparse.ArgumentParser) -> None:
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


def _compile_parser(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    _build_args(p)
    p.add_argument("--save-code", metavar="FILE.py", help="write a standalone PyTorch module (torch only; same state-dict keys)")
    p.add_argument("--no-forward", dest="check_forward", action="store_false",
                   help="skip the shape-only forward pass on the meta device")
    p.set_defaults(func=cmd_compile)


def _export_parser(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _budget_args(p)
    _build_args(p, channels_last=False)
    p.add_argument("--format", choices=("onnx", "exported-program"), required=True,
                   help="onnx (needs the [export] extras) or exported-program (.pt2, torch.export.save)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--dynamic", action="store_true",
                   help="symbolic batch, height and width where the graph allows (else fixed; the "
                        "layer that fixes a size is named)")
    p.set_defaults(func=cmd_export)


def _weights_parser(p: argparse.ArgumentParser) -> None:
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


def _visualize_parser(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _outputs_arg(p)
    _budget_args(p)
    p.add_argument("-o", "--output", metavar="FILE", help="output file (.svg, .png, .pdf or .dot)")
    p.add_argument("--format", choices=RENDER_FORMATS, help="output format, when the file name does not say")
    p.add_argument("--detail", choices=("stage", "block", "op"), default="block",
                   help="one box per stride level (stage), per block use with repeats folded "
                        "(block, default) or per layer (op)")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="top to bottom (default) or left to right")
    p.add_argument("--convention", choices=("mac", "flop", "tf"), default="flop",
                   help="the FLOP convention the header totals (default flop = 2 x MACs)")
    p.set_defaults(func=cmd_visualize)


def _compare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model specs (shell globs welcome; encoder and meta files are skipped)")
    p.add_argument("--input", type=parse_size, metavar="HxW", action="append",
                   help="input size; repeat for several (default: each model's own)")
    p.add_argument("--num-classes", type=_positive, metavar="N", help="override every model's num_classes")
    p.add_argument("--output-stride", type=int, choices=_output_strides(), metavar=_output_strides_text(),
                   help="run every encoder at this output stride")
    p.add_argument("--convention", choices=("mac", "flop", "tf"), default="flop",
                   help="what the GFLOPs column counts (default flop = 2 x MACs)")
    p.add_argument("--count-unused", action="store_true", help="also count layers whose output is unused")
    p.add_argument("--by", choices=("stage",), help="stage: add the encoder/decoder split and MACs per stride")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--json", dest="style", action="store_const", const="json",
                       help="a JSON list of rows (keys as rtsegc flops --json)")
    style.add_argument("--csv", dest="style", action="store_const", const="csv", help="CSV, exact integers")
    style.add_argument("--markdown", dest="style", action="store_const", const="markdown",
                       help="a Markdown table")
    p.add_argument("--plot", metavar="OUT.svg",
                   help="also draw GFLOPs vs params and MACs by stride level (needs matplotlib: .[plot])")
    p.add_argument("--bench", action="store_true",
                   help="also measure latency and images/s with rtsegc bench's method (needs torch)")
    p.add_argument("--device", default="auto", help="--bench device: cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=_positive, default=1, metavar="N", help="--bench batch size")
    p.add_argument("--warmup", type=_positive, default=5, metavar="N", help="--bench untimed calls (default 5)")
    p.add_argument("--iters", type=_positive, default=20, metavar="N", help="--bench timed calls (default 20)")
    p.set_defaults(func=cmd_compare)


def _schema_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=("encoder", "meta", "model"))
    p.set_defaults(func=cmd_schema)


def _models_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'skipnet_*' (default: all)")
    p.add_argument("-v", "--verbose", action="store_true", help="also the file each name stands for")
    p.set_defaults(func=cmd_models)

def _ops_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_ops)


#: The built-in commands in ``rtsegc --help`` order: (one-line help, what adds the options).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "validate": ("check spec files (exit 0 if all are valid, 2 otherwise)", _validate_parser),
    "shapes": ("per-layer output shapes, strides and dilations", _shapes_parser),
    "flops": ("parameters, MACs and FLOPs, computed from the spec alone", _flops_parser),
    "compile": ("build the PyTorch module and check it against the audit", _compile_parser),
    "export": ("write an ONNX file or a torch.export ExportedProgram", _export_parser),
    "weights": ("published weights through the layouts encoder specs declare", _weights_parser),
    "visualize": ("draw the network with Graphviz, with its cost", _visualize_parser),
    "compare": ("params, MACs, GFLOPs and peak memory of several models side by side", _compare_parser),
    "schema": ("print the JSON Schema of spec files, for editors", _schema_parser),
    "models": ("list the model zoo (names work wherever a model path does)", _models_parser),
    "ops": ("list the ops and their fields, and where user ops come from", _ops_parser),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``rtsegc`` parser; with a built-in ``command``, only that command's sub-parser.

    ``main`` passes the command when the command line names a built-in one: the other nine
    sub-parsers (about 140 ``add_argument`` calls, 10-20 ms) and the scan of every installed
    distribution for plugin commands (``importlib.metadata``, 80-150 ms with its imports on
    the loaded 2-core CI machine) are then skipped. Neither changes how that command parses.
    """
    parser = argparse.ArgumentParser(
        prog="rtsegc", description="Compile and audit YAML specs of real-time segmentation networks.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"rtsegc {__version__}")
    parser.add_argument("--ops", action="append", type=_module_name, default=[], metavar="MODULE",
                        help="import MODULE, which registers user ops, before the command (repeatable; "
                             "installed rtseg_compiler.ops entry points load without it)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, define) in COMMANDS.items():
        if command is None or name == command:
            define(sub.add_parser(name, help=help_text))
    for p in sub.choices.values():
        p.add_argument("--ops", action=_OpsAfterCommand, dest="misplaced_ops", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    if command not in COMMANDS:
        _add_plugin_commands(sub)
    return parser


def _builtin_command(argv: Sequence[str]) -> str | None:
    """The built-in command ``argv`` runs, when that is certain before parsing; else None.

    Certain means: only ``--ops MODULE`` / ``--ops=MODULE`` come before it. Anything else there
    (``--help``, ``--version``, an abbreviated option) and a plugin command get the full parser.
    """
    k = 0
    while k < len(argv):
        token = argv[k]
        if token == "--ops":
            k += 2
        elif token.startswith("--ops="):
            k += 1
        elif token in COMMANDS:
            return token
        else:
            return None
    return None


def _add_plugin_commands(sub: Any) -> None:
    """train/eval/predict/bench and other installed ``rtseg_compiler.commands`` (see commands.py).

    Each parses its own options: its sub-parser takes none, and ``main`` hands it the rest of argv.
    """
    from .commands import RUNTIME_COMMANDS, PluginCommand, discover_commands

    warn = lambda message: print(f"rtsegc: warning: {message}", file=sys.stderr)  # noqa: E731
    found = discover_commands(sub.choices, warn=warn)
    for name, command in found.items():
        p = sub.add_parser(name, help=command.help, add_help=False)
        p.set_defaults(func=None, plugin=command)
    for name in RUNTIME_COMMANDS:  # not installed: say what provides them instead of "invalid choice"
        if name not in found and name not in sub.choices:
            def missing(argv: Sequence[str], prog: str, name: str = name) -> int:
                print(f"rtsegc: error: '{name}' comes from the runtime package (rtseg_runtime), whose "
                      "rtseg_compiler.commands entry points are not installed; run 'pip install -e .' "
                      "in the rtseg-compiler checkout", file=sys.stderr)
                return EXIT_SPEC

            p = sub.add_parser(name, add_help=False)
            p.set_defaults(func=None, plugin=PluginCommand(name, "", missing, "nothing installed"))


def main(argv: Sequence[str] | None = None) -> int:
    from .ops.plugins import set_problem_reporter

    parser = build_parser(_builtin_command(sys.argv[1:] if argv is None else argv))
    args, rest = parser.parse_known_args(argv)
    plugin = getattr(args, "plugin", None)
    if plugin is None and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace], int] = (
        args.func if plugin is None else (lambda _: plugin.main(rest, f"rtsegc {args.command}")))
    # A broken installed entry point is one warning line, printed when entry points load.
    set_problem_reporter(_print_unlocated)
    try:
        status = _load_user_ops(args.ops)
        if status != EXIT_OK:
            return status
        return func(args)
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics)
        return EXIT_SPEC
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"rtsegc: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    except CommandError as exc:
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
        fault = _user_op_fault(exc)
        if fault is not None:
            _print_unlocated(fault)
            return EXIT_SPEC
        print(f"rtsegc: internal compiler error: {type(exc).__name__}: {exc}\n"
              "This is a bug in rtsegc, not in your spec. Re-run with RTSEGC_DEBUG=1 for the "
              "traceback and report it.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
