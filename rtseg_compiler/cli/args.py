"""The argument vocabulary every ``rtsegc`` command shares, the runtime's commands included.

A value's spelling is parsed in one place (sizes ``512x1024``, spec parameters ``width=0.5``, amounts
``500M``/``32GiB``), and so is each group of options: which model (a model file or zoo name, or
``--encoder`` with ``--meta``), its spec parameters, the build options, the budgets and ``--outputs``.
``train``, ``eval``, ``predict`` and ``bench`` import these public names, so an option reads the same
under every command. Nothing here imports torch: the audit commands parse with it.
"""

from __future__ import annotations

import argparse
from typing import Any

from .status import UsageError

__all__ = ["add_budget_args", "add_build_args", "add_model_args", "add_outputs_arg", "add_spec_param_args",
           "budget", "check_model_args", "model_choice_problem", "output_strides", "output_strides_text",
           "parse_amount", "parse_param", "parse_positive", "parse_size", "spec_params"]


# --------------------------------------------------------------------------- values

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


def parse_positive(text: str) -> int:
    """A count such as ``--batch-size``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _number(text: str) -> int | float | None:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return None


def parse_param(text: str) -> tuple[str, Any]:
    """'width=0.5' -> ('width', 0.5); 'bias=true' -> True; 'depths=[2,2,2,2]' -> a list of numbers
    (a list parameter); anything else stays an expression string."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"invalid parameter {text!r}: write NAME=VALUE, e.g. width=0.5")
    if value.startswith("[") and value.endswith("]"):
        items = [_number(item.strip()) for item in value[1:-1].split(",")]
        if not items or any(item is None for item in items):
            raise argparse.ArgumentTypeError(f"invalid list in {text!r}: write numbers, e.g. "
                                             f"{name}=[2,2,6,2]")
        return name, items
    lowered = value.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    for convert in (int, float):
        try:
            return name, convert(value)
        except ValueError:
            pass
    return name, value


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


def output_strides() -> tuple[int, ...]:
    """The output strides passes/dilate.py accepts: the policy has one home, the CLI asks it."""
    from ..passes.dilate import VALID_OUTPUT_STRIDES

    return VALID_OUTPUT_STRIDES


def output_strides_text() -> str:
    """The metavar of ``--output-stride``, e.g. ``{8,16,32}``."""
    return "{" + ",".join(map(str, output_strides())) + "}"


# --------------------------------------------------------------------------- which model

def add_model_args(p: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    """MODEL or --encoder/--meta, --input, --num-classes, --output-stride and the spec parameters."""
    p.add_argument("model", nargs="?", help="model spec (or an encoder spec); "
                   "or give --encoder and --meta instead")
    p.add_argument("--encoder", metavar="E.yaml", help="encoder spec, with --meta, instead of a model")
    p.add_argument("--meta", metavar="M.yaml", help="meta-architecture spec, with --encoder")
    if sizes:
        p.add_argument("--input", type=parse_size, metavar="HxW",
                       help="input height x width (default: the model's 'input')")
    p.add_argument("--num-classes", type=parse_positive, metavar="N", help="override the model's num_classes")
    p.add_argument("--output-stride", type=int, choices=output_strides(), metavar=output_strides_text(),
                   help="rewrite encoder strides into dilations to reach this output stride")
    add_spec_param_args(p)


def add_spec_param_args(p: argparse.ArgumentParser) -> None:
    """--encoder-param and --meta-param (repeatable NAME=VALUE), read back by :func:`spec_params`."""
    p.add_argument("--encoder-param", action="append", type=parse_param, metavar="NAME=VALUE",
                   dest="encoder_params", help="override an encoder parameter, e.g. width=0.5 (repeatable)")
    p.add_argument("--meta-param", action="append", type=parse_param, metavar="NAME=VALUE",
                   dest="meta_params", help="override a meta-architecture parameter (repeatable)")


def model_choice_problem(model: Any, encoder: Any, meta: Any) -> str | None:
    """What is wrong with this choice of spec files, or None: a model, or an encoder with a meta."""
    if model is None and not (encoder and meta):
        return "give a model spec, or both --encoder and --meta"
    if model is not None and (encoder or meta):
        return "give either a model spec or --encoder/--meta, not both"
    return None


def check_model_args(args: argparse.Namespace) -> None:
    """Raise UsageError unless the command line names a model, or an encoder with a meta."""
    problem = model_choice_problem(args.model, args.encoder, args.meta)
    if problem:
        raise UsageError(problem)


def spec_params(args: argparse.Namespace, which: str) -> dict[str, Any] | None:
    """``which`` = 'encoder_params' or 'meta_params': the NAME=VALUE pairs as a dict, or None if none."""
    pairs = getattr(args, which, None)
    return dict(pairs) if pairs else None


# --------------------------------------------------------------------------- build options and limits

def add_outputs_arg(p: argparse.ArgumentParser) -> None:
    """--outputs all|main, for models with auxiliary heads."""
    p.add_argument("--outputs", choices=("all", "main"), default="all",
                   help="for a model with several outputs: keep all (default), or only the main "
                        "one, dropping auxiliary heads as for inference")


def add_budget_args(p: argparse.ArgumentParser) -> None:
    """--max-params and --max-activations, read back by :func:`budget`."""
    p.add_argument("--max-params", type=parse_amount, metavar="N",
                   help="refuse models with more parameters (default 2e9)")
    p.add_argument("--max-activations", type=parse_amount, metavar="BYTES",
                   help="refuse models whose float32 layer outputs sum to more (default 32GiB)")


def budget(args: argparse.Namespace) -> Any:
    """The Budget the command line asks for, or None for the default one (passes/budget.py)."""
    from ..passes.budget import DEFAULT_BUDGET, Budget

    params = getattr(args, "max_params", None)
    acts = getattr(args, "max_activations", None)
    if params is None and acts is None:
        return None
    return Budget(params or DEFAULT_BUDGET.max_params, acts or DEFAULT_BUDGET.max_activation_bytes)


def add_build_args(p: argparse.ArgumentParser, *, channels_last: bool = True) -> None:
    """Options of the module build shared by compile, export and bench."""
    p.add_argument("--weights", metavar="FILE.pt",
                   help="load this state dict (the compiled module's keys, or a runtime checkpoint) "
                        "strictly; or SOURCE:NAME@FILE, a checkpoint renamed by a layout the specs declare "
                        "(docs/weights.md), which must fill the whole model")
    p.add_argument("--inference", action="store_true",
                   help="inference build: fold batch norm into the conv before it, drop dropout")
    p.add_argument("--no-inplace", dest="inplace", action="store_false",
                   help="keep every activation out of place (the in-place memory pass is on by default)")
    if channels_last:
        p.add_argument("--channels-last", action="store_true", help="NHWC weights (and input, for bench)")
