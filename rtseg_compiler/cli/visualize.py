"""``rtsegc visualize`` and ``compare``: one network drawn with its cost, several side by side.

Both work from the analysis alone; torch comes in only for ``compare --bench``, Graphviz's ``dot``
program only for a rendered (not ``.dot``) diagram, matplotlib only for ``compare --plot``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..diagnostics import SpecError
from .analyse import analysis
from .args import (add_budget_args, add_model_args, add_outputs_arg, output_strides, output_strides_text,
                   parse_positive, parse_size)
from .status import EXIT_OK, EXIT_SPEC, UsageError, print_diagnostics, write_file

__all__ = ["INSTALL_GRAPHVIZ", "RENDER_FORMATS", "cmd_compare", "cmd_visualize", "compare_parser",
           "visualize_parser"]

RENDER_FORMATS = ("svg", "png", "pdf", "dot", "gv")

#: How to get Graphviz's renderer, in one line (a rendered format without it exits 2).
INSTALL_GRAPHVIZ = ("install Graphviz: apt-get install graphviz (Debian/Ubuntu), brew install graphviz "
                    "(macOS), or see https://graphviz.org/download/")


def cmd_visualize(args: argparse.Namespace) -> int:
    from ..emit.dot import diagram_dot

    result = analysis(args)
    out = Path(args.output) if args.output else Path(f"{result.graph.name}.svg")
    fmt = args.format or (out.suffix.lstrip(".").lower() or "svg")
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"cannot draw to '.{fmt}': use one of {', '.join(RENDER_FORMATS)} "
                         "(a file suffix or --format)")
    text = diagram_dot(result, args.detail, args.rankdir, args.convention)
    if fmt in ("dot", "gv"):
        write_file(out, text)
        print(f"wrote {out}")
        return EXIT_OK
    import shutil
    import subprocess

    dot_program = shutil.which("dot")
    if dot_program is None:
        dot_path = out.with_suffix(".dot")
        write_file(dot_path, text)
        print(f"rtsegc: error: drawing .{fmt} needs Graphviz's 'dot' program; wrote {dot_path} instead; "
              f"{INSTALL_GRAPHVIZ}", file=sys.stderr)
        return EXIT_SPEC
    proc = subprocess.run([dot_program, f"-T{fmt}"], input=text.encode(), capture_output=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz dot failed: {proc.stderr.decode(errors='replace').strip()}")
    write_file(out, proc.stdout)
    print(f"wrote {out}")
    return EXIT_OK


def _compare_targets(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Model files among ``paths`` (a shell glob may also match encoders and metas: noted, skipped)."""
    from ..spec.load import load_spec_file
    from ..zoo import list_models, resolve_spec

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
    from ..compare import (compare_row, plot_rows, render_csv, render_json, render_markdown,
                           render_table, stage_split)
    from ..pipeline import analyze

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
            from ..latency import bench_spec
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
                print_diagnostics(exc.diagnostics)
                status = EXIT_SPEC
                continue
            print_diagnostics(result.warnings)
            row = compare_row(result, args.convention, spec=path, by_stage=args.by == "stage")
            if bench_spec is not None:
                row.update(_bench_row(bench_spec, path, result.input_size, args))
            rows.append(row)
            if args.plot:
                plot_rows_.append({**row, **stage_split(result)})
    if not rows:
        return status
    renderers = {"json": render_json, "csv": render_csv, "markdown": render_markdown}
    render = renderers.get(args.style, render_table)
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


# --------------------------------------------------------------------------- parsers

def visualize_parser(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_outputs_arg(p)
    add_budget_args(p)
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


def compare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model specs (shell globs welcome; encoder and meta files are skipped)")
    p.add_argument("--input", type=parse_size, metavar="HxW", action="append",
                   help="input size; repeat for several (default: each model's own)")
    p.add_argument("--num-classes", type=parse_positive, metavar="N",
                   help="override every model's num_classes")
    p.add_argument("--output-stride", type=int, choices=output_strides(), metavar=output_strides_text(),
                   help="run every encoder at this output stride")
    p.add_argument("--convention", choices=("mac", "flop", "tf"), default="flop",
                   help="what the GFLOPs column counts (default flop = 2 x MACs)")
    p.add_argument("--count-unused", action="store_true", help="also count layers whose output is unused")
    p.add_argument("--by", choices=("stage",),
                   help="stage: add the encoder/decoder split and MACs per stride")
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
    p.add_argument("--batch-size", type=parse_positive, default=1, metavar="N", help="--bench batch size")
    p.add_argument("--warmup", type=parse_positive, default=5, metavar="N",
                   help="--bench untimed calls (default 5)")
    p.add_argument("--iters", type=parse_positive, default=20, metavar="N",
                   help="--bench timed calls (default 20)")
    p.set_defaults(func=cmd_compare)
