"""``rtsegc compile``, ``export`` and ``weights``: the commands that build the torch module.

``compile`` checks the built module against the audit (parameter count, and output shapes through a
forward pass on the meta device) and exits 3 if they disagree, since that is a compiler bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..ir import human
from .args import (add_budget_args, add_build_args, add_model_args, add_outputs_arg, budget,
                   check_model_args, spec_params)
from .status import EXIT_INTERNAL, EXIT_OK, EXIT_SPEC, CommandError, UsageError, print_diagnostics, write_file

__all__ = ["cmd_compile", "cmd_export", "cmd_weights_import", "cmd_weights_list", "compile_parser",
           "compiled_from_args", "export_parser", "weights_parser"]


def compiled_from_args(args: argparse.Namespace) -> Any:
    """compile_model with the command line's model and build options; prints the analysis warnings."""
    from .. import compile_model

    check_model_args(args)
    from ..build import is_weight_source
    from ..weights import WeightsError

    if args.weights is not None and not Path(args.weights).exists() and not is_weight_source(args.weights):
        raise UsageError(f"--weights {args.weights}: no such file")

    try:
        compiled = compile_model(args.model, getattr(args, "input", None), args.num_classes,
                                 encoder=args.encoder, meta=args.meta, output_stride=args.output_stride,
                                 budget=budget(args), encoder_params=spec_params(args, "encoder_params"),
                                 meta_params=spec_params(args, "meta_params"),
                                 inference=getattr(args, "inference", False), weights=args.weights,
                                 channels_last=getattr(args, "channels_last", False),
                                 inplace=getattr(args, "inplace", True),
                                 outputs=getattr(args, "outputs", "all"))
    except WeightsError as exc:
        raise CommandError(str(exc)) from None
    print_diagnostics(compiled.analysis.warnings)
    return compiled


def cmd_compile(args: argparse.Namespace) -> int:
    import torch

    from ..emit.torch_module import count_parameters

    compiled = compiled_from_args(args)
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
        _save_code(args, compiled)
    if not (ok_params and ok_shape):
        print("error: the emitted module disagrees with the audit (a compiler bug)", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def _save_code(args: argparse.Namespace, compiled: Any) -> None:
    """``compile --save-code FILE.py``: the standalone module source (``build.standalone_source``)."""
    from ..build import class_name_of, standalone_source
    from ..emit.python_source import SourceEmitError

    try:
        source = standalone_source(compiled, origin=str(args.model or f"{args.encoder} + {args.meta}"))
    except SourceEmitError as exc:
        raise UsageError(f"--save-code: {exc}") from None
    write_file(Path(args.save_code), source)
    print(f"standalone module ({class_name_of(compiled.audit.model)}, needs torch only) "
          f"written to {args.save_code}")


def cmd_export(args: argparse.Namespace) -> int:
    """ONNX or ExportedProgram through torch.export (rtseg_compiler/export.py)."""
    from ..export import ExportError, export_compiled

    compiled = compiled_from_args(args)
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

    from .. import compile_model
    from ..weights import WeightsError
    from ..weights.importer import import_weights
    from ..weights.mapping import WeightSourceError, parse_source

    check_model_args(args)
    try:
        source = parse_source(args.source)
    except WeightSourceError as exc:
        raise UsageError(str(exc)) from None
    compiled = compile_model(args.model, args.input, args.num_classes, encoder=args.encoder, meta=args.meta,
                             output_stride=args.output_stride,
                             encoder_params=spec_params(args, "encoder_params"),
                             meta_params=spec_params(args, "meta_params"))
    print_diagnostics(compiled.analysis.warnings)
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
    """The weight layouts the model's specs declare: its encoder's, its meta's and its own (torch-free)."""
    from ..pipeline import load_graph
    from ..spec.load import load_spec_file
    from ..weights.mapping import declared_layouts

    check_model_args(args)
    graph = load_graph(args.model, encoder=args.encoder, meta=args.meta)
    documents = {kind: (load_spec_file(path), str(path)) for kind, path in graph.files.items() if path}
    declared = declared_layouts(documents)
    if not any(declared.values()):
        path = graph.files.get("encoder")
        print(f"{path}: declares no weight layouts (docs/weights.md)")
    fills = {"encoder": "", "meta": "; the meta's layers (meta spec)",
             "model": "; the whole model (model spec)"}
    for kind in ("model", "encoder", "meta"):
        for layout in declared.get(kind, {}).values():
            head = f"; head -> meta '{layout.head.meta}'" if layout.head else ""
            print(f"{layout.label:<28} {layout.doc}{head}{fills[kind]}")
    return EXIT_OK


# --------------------------------------------------------------------------- parsers

def compile_parser(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_outputs_arg(p)
    add_budget_args(p)
    add_build_args(p)
    p.add_argument("--save-code", metavar="FILE.py",
                   help="write a standalone PyTorch module (torch only; same state-dict keys)")
    p.add_argument("--no-forward", dest="check_forward", action="store_false",
                   help="skip the shape-only forward pass on the meta device")
    p.set_defaults(func=cmd_compile)


def export_parser(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_budget_args(p)
    add_build_args(p, channels_last=False)
    p.add_argument("--format", choices=("onnx", "exported-program"), required=True,
                   help="onnx (needs the [export] extras) or exported-program (.pt2, torch.export.save)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--dynamic", action="store_true",
                   help="symbolic batch, height and width where the graph allows (else fixed; the "
                        "layer that fixes a size is named)")
    p.set_defaults(func=cmd_export)


def weights_parser(p: argparse.ArgumentParser) -> None:
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    q = wsub.add_parser("import", help="rename SOURCE:NAME[@PATH] onto the model's keys, strictly, "
                        "and save it (exit 2 with a report if it does not fit)")
    add_model_args(q)
    q.add_argument("--from", dest="source", required=True, metavar="SOURCE:NAME[@PATH]",
                   help="torchvision:resnet18@r18.pth or mylab:NAME@ckpt.pt reads a local file; without "
                        "@PATH torchvision and timm weights are fetched through the library's API")
    q.add_argument("-o", "--output", required=True, metavar="FILE.pt", help="where to write the state dict")
    q.set_defaults(func=cmd_weights_import)
    q = wsub.add_parser("list", help="the weight layouts the model's specs (encoder, meta, model) declare")
    add_model_args(q, sizes=False)
    q.set_defaults(func=cmd_weights_list)
