"""``rtsegc schema``, ``models`` and ``ops``: what the installation knows, listed.

The JSON Schema of each spec kind (for editors), the zoo's model names (accepted wherever a model path
is), and the registered ops with their fields, user ops under the module or entry point they came from.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .status import EXIT_OK, CommandError

__all__ = ["cmd_models", "cmd_ops", "cmd_schema", "models_parser", "ops_parser", "schema_parser"]


def cmd_schema(args: argparse.Namespace) -> int:
    from ..ops.plugins import load_entry_points
    from ..spec.schema import KINDS, schema_for

    load_entry_points()
    kinds = [args.kind] if args.kind else list(KINDS)
    data = schema_for(kinds[0]) if len(kinds) == 1 else {k: schema_for(k) for k in kinds}
    print(json.dumps(data, indent=2))
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """The zoo's model names (zoo.py): what create_model and every MODEL argument accept."""
    from ..zoo import list_models, resolve_spec, zoo_root

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
    p.add_argument("-v", "--verbose", action="store_true", help="also the file each name stands for")
    p.set_defaults(func=cmd_models)


def ops_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_ops)
