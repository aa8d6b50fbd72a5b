"""``rtsegc schema``, ``models`` and ``ops``: what the installation knows, listed.

The JSON Schema of each spec kind (for editors), the zoo's model names (accepted wherever a model path
is), and the registered ops with their fields, user ops under the module or entry point they came from.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .status import EXIT_OK, CommandError

if TYPE_CHECKING:
    from ..zoo import ZooEntry

__all__ = ["ZooCost", "cmd_models", "cmd_ops", "cmd_schema", "models_parser", "ops_parser", "render_zoo",
           "schema_parser", "zoo_cost"]


def cmd_schema(args: argparse.Namespace) -> int:
    from ..ops.plugins import load_entry_points
    from ..spec.schema import KINDS, schema_for

    load_entry_points()
    kinds = [args.kind] if args.kind else list(KINDS)
    data = schema_for(kinds[0]) if len(kinds) == 1 else {k: schema_for(k) for k in kinds}
    print(json.dumps(data, indent=2))
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """The zoo's specs of one kind (zoo.py), each with its description; what create_model, every
    MODEL argument, --encoder, --meta and --dataset accept. ``-q``: names alone, for scripts."""
    from ..zoo import list_models, no_match_message, zoo_root

    if zoo_root() is None:
        raise CommandError("this installation has no model zoo (the specs/ folder is missing)")
    if args.quiet:
        names = list_models(args.pattern, args.kind)
        text = "\n".join(names)
    else:
        text = render_zoo(args.pattern, args.kind, args.verbose)
    if not text:
        raise CommandError(no_match_message(args.pattern, args.kind))
    print(text)
    return EXIT_OK


@dataclass(frozen=True)
class ZooCost:
    """What ``rtsegc models -v`` prints beside a name: size and cost at the spec's own input.

    A model or an encoder has parameters and MACs at its ``input:`` (an encoder without any head,
    at its ImageNet size); a meta has none of its own, since its channels come from the encoder it
    is paired with; a dataset has classes instead.
    """

    params: int | None = None
    macs: int | None = None
    input: tuple[int, int] | None = None
    classes: int | None = None


def zoo_cost(entry: ZooEntry) -> ZooCost:
    """Parameters and MACs of a model or encoder at its default input; classes of a dataset."""
    if entry.kind in ("meta", "study"):
        return ZooCost()
    if entry.kind == "dataset":
        from ..spec.load import load_spec_text

        doc = load_spec_text(entry.path.read_text(encoding="utf-8"), str(entry.path))
        return ZooCost(classes=len(doc.get("classes") or ()))
    from ..pipeline import analyze

    analysis = analyze(entry.path)
    return ZooCost(params=analysis.audit.params, macs=analysis.audit.macs, input=analysis.input_size)


def render_zoo(pattern: str = "*", kind: str = "model", verbose: bool = False) -> str:
    """The text of ``rtsegc models``: one line per spec, name then its one-line description;
    with ``verbose``, parameters and GMACs at the spec's default input (see :class:`ZooCost`)."""
    from ..zoo import zoo_entries

    entries = zoo_entries(pattern, kind)
    if not entries:
        return ""
    width = max(len(e.name) for e in entries)
    lines = []
    if verbose and kind in ("model", "encoder"):
        lines.append(f"{'name':<{width}}  {'input':>9}  {'params (M)':>10}  {'GMACs':>7}  description")
    elif verbose and kind == "dataset":
        lines.append(f"{'name':<{width}}  {'classes':>7}  description")
    for entry in entries:
        doc = entry.doc or "(no doc: line in the file)"
        if not verbose or kind in ("meta", "study"):
            lines.append(f"{entry.name:<{width}}  {doc}")
            continue
        cost = zoo_cost(entry)
        if kind == "dataset":
            lines.append(f"{entry.name:<{width}}  {cost.classes:>7}  {doc}")
        else:
            size = f"{cost.input[0]}x{cost.input[1]}"
            lines.append(f"{entry.name:<{width}}  {size:>9}  {cost.params / 1e6:>10.3f}  "
                         f"{cost.macs / 1e9:>7.2f}  {doc}")
    if verbose and kind == "encoder":
        lines.append("\nencoders: the encoder alone (no head) at its own input; "
                     "'rtsegc flops ENCODER' counts it")
    elif verbose and kind == "meta":
        lines.append("\nmetas: parameters and MACs depend on the encoder a meta is paired with "
                     "('rtsegc flops --encoder E --meta M')")
    return "\n".join(lines)


def cmd_ops(args: argparse.Namespace) -> int:
    from ..ops import REGISTRY, op_origin
    from ..ops.base import BUILTIN
    from ..ops.plugins import load_entry_points

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
    from ..ops.base import REQUIRED

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


# --------------------------------------------------------------------------- parsers

def schema_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=("encoder", "meta", "model"))
    p.set_defaults(func=cmd_schema)


def models_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'skipnet_*' (default: all)")
    p.add_argument("--kind", choices=("model", "encoder", "meta", "dataset", "study"), default="model",
                   help="which specs: models (default), encoders, meta-architectures, datasets or studies")
    detail = p.add_mutually_exclusive_group()
    detail.add_argument("-v", "--verbose", action="store_true",
                        help="also parameters and GMACs at the spec's own input (datasets: classes)")
    detail.add_argument("-q", "--quiet", action="store_true", help="names only, one per line")
    p.set_defaults(func=cmd_models)


def ops_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_ops)
