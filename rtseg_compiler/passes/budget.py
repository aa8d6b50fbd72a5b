"""Pass 5: refuse specs whose size would fill memory, from the analytic audit alone.

A spec is a few lines of text, but ``out: 1000000`` on two consecutive 3x3
convolutions asks for 9·10^12 weights (36 TB of float32), and ``input:
[16384, 16384]`` on a VGG stem asks for a 64 GiB feature map. torch would try
to allocate these and the machine would swap or be killed. This pass runs
after :func:`~rtseg_compiler.passes.count.count`, which is pure integer
arithmetic, and before anything imports torch (``compile_model`` calls
``analyze`` first), so an oversized spec fails validation with the numbers
instead.

Two quantities are budgeted (:class:`Budget`):

``params``
    The audit's parameter count. Default 2·10^9: 8 GB of float32 weights,
    plus as much again for gradients and twice that for Adam's moments, is
    what a 64 GB workstation can train. The largest model in ``specs/`` has
    138 M (VGG-16 with its ImageNet classifier).
``activations``
    The **sum** over layers of each output's element count × 4 bytes
    (float32, batch 1), plus the input image. This is what a training step
    keeps for the backward pass if nothing is freed or computed in place, so
    it bounds a forward pass from above as well. Default 32 GiB. For scale:
    SkipNet-MobileNet needs 0.67 GiB at 512x1024, SegNet 11.8 GiB at
    1024x2048 (the largest real spec at full Cityscapes resolution).

Spec files are also limited in how many layers they may *list*
(``spec.listed_layers``, checked on the raw document before schema validation)
and expand to (``expand.MAX_LAYERS``); see docs/errors.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..diagnostics import Diagnostics
from ..ir import INPUT, Resolved
from .count import Audit

__all__ = ["Budget", "DEFAULT_BUDGET", "BYTES_PER_ELEMENT", "activation_bytes", "check_budget",
           "format_bytes"]

#: float32, the dtype the compiled modules are built in.
BYTES_PER_ELEMENT = 4


@dataclass(frozen=True)
class Budget:
    """Resource limits for one model at one input size; see the module docstring."""

    max_params: int = 2_000_000_000
    max_activation_bytes: int = 32 * 2**30

    def __post_init__(self) -> None:
        if self.max_params < 1 or self.max_activation_bytes < 1:
            raise ValueError("budget limits must be positive")


DEFAULT_BUDGET = Budget()


def format_bytes(n: float) -> str:
    """Binary units, as memory is sold and as ``free -h`` prints it."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def activation_bytes(audit: Audit) -> int:
    """Bytes of every layer output plus the input, float32, batch 1 (see the module docstring)."""
    _, c, h, w = audit.input
    total = c * h * w
    for layer in audit.layers:
        oc, oh, ow = layer.output_shape
        total += oc * oh * ow
    return total * BYTES_PER_ELEMENT


def check_budget(resolved: Resolved, audit: Audit, budget: Budget, diags: Diagnostics) -> None:
    """Add an error for each budget the audit exceeds, located at the largest contributor."""
    graph = resolved.graph
    layers = audit.layers
    if audit.params > budget.max_params and layers:
        big = max(layers, key=lambda layer: layer.params)
        node = graph.node(big.name) if big.name in graph else None
        diags.error(
            f"the model has {audit.params:,} parameters ({_count(audit.params)}), over the budget of "
            f"{budget.max_params:,} ({_count(budget.max_params)}); the largest layer is {big.op} "
            f"'{_short(big.name)}' with {big.params:,} parameters",
            node.loc if node else None,
            hint="reduce 'out' or the kernel size there, or raise the limit: rtsegc --max-params N, "
                 "or analyze(..., budget=Budget(max_params=N))",
            notes=node.origin if node else ())
    used = activation_bytes(audit)
    if used > budget.max_activation_bytes:
        big = max(layers, key=lambda layer: _numel(layer.output_shape), default=None)
        node = graph.node(big.name) if big is not None and big.name in graph else None
        largest = ""
        if big is not None:
            largest = (f"; the largest output is {big.op} '{_short(big.name)}', "
                       f"{'x'.join(map(str, big.output_shape))} = "
                       f"{format_bytes(_numel(big.output_shape) * BYTES_PER_ELEMENT)}")
        image = resolved.types[INPUT]
        diags.error(
            f"activations need {format_bytes(used)} (sum of every layer's output, float32, batch 1, "
            f"input {image.height}x{image.width}), over the budget of "
            f"{format_bytes(budget.max_activation_bytes)}{largest}",
            node.loc if node else None,
            hint="use a smaller input or fewer channels, or raise the limit: rtsegc "
                 "--max-activations 64GiB, or analyze(..., budget=Budget(max_activation_bytes=N))",
            notes=node.origin if node else ())


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _short(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else name
