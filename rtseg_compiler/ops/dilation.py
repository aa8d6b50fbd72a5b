"""What an op becomes when its encoder runs at a smaller output stride: ``AtRate``, ``Replace`` and
the ready-made ``dilate`` declarations (``unaffected``, ``size_independent``, ``not_dilatable``).

``passes/dilate.py`` walks the encoder and calls each op's ``dilate`` hook with an :class:`AtRate`;
conv and pool declare their own rules in their files. Everything is importable from
:mod:`rtseg_compiler.ops.base` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping

from .kinds import OpError

__all__ = ["DILATION_ROWS", "AtRate", "DilateHook", "Replace", "described", "not_dilatable",
           "size_independent", "unaffected"]


@dataclass(frozen=True, slots=True)
class AtRate:
    """Where one encoder layer sits when the encoder is rewritten to ``output_stride``.

    The rewrite (``passes/dilate.py``; Yu & Koltun 2016, arXiv:1511.07122, and
    DeepLab) stops downsampling at ``output_stride``: a map that had stride
    ``s > output_stride`` in the original network now has stride
    ``output_stride`` and is sampled ``rate = s / output_stride`` times more
    densely, so an op with spatial extent must look ``rate`` times further
    (dilation) to read the same pixels. Strides here are the *original*
    network's, from its resolved types, and one number per map: the stride of
    its axes on the image grid (``passes.dilate.level``). For a row map
    (C x H x 1, stride s along the height and s·W along the width, a bin) that
    is s; a map whose two on-grid axes would need different rates never reaches
    a hook (the rewrite refuses it), so one ``rate`` serves both axes.
    """

    #: The dilation rate of the op's input map: ``max(1, in_stride / output_stride)``.
    rate: int
    #: The op's output would pass the output stride (``out_stride > max(in_stride,
    #: output_stride)``): it must stop downsampling, e.g. stride s -> 1.
    passes_output_stride: bool
    output_stride: int
    #: Stride of the op's finest input (the one a broadcast op's output follows).
    in_stride: Fraction
    out_stride: Fraction
    #: The rate of each input, in input order (1 for a 1x1 map, which has no grid).
    in_rates: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Replace:
    """A ``dilate`` hook's answer that swaps the op, e.g. a 2x2/2 max pool for ``identity``."""

    op: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


#: ``dilate(attrs, at) -> attrs | Replace``; raise :class:`OpError` (with ``field``) to refuse.
DilateHook = Callable[[dict[str, Any], AtRate], "dict[str, Any] | Replace"]

#: hook -> (what the op becomes past the output stride, what it becomes reading a map at rate r):
#: the two cells of the dilation table in docs/spec-language.md, beside the ops that use the hook.
DILATION_ROWS: dict[Callable[..., Any], tuple[str, str]] = {}


def described(past: str, at_rate: str) -> Callable[[DilateHook], DilateHook]:
    """Decorator: record what ``hook`` does for the docs' dilation table (``benchmarks/op_table.py``)."""
    def record(hook: DilateHook) -> DilateHook:
        DILATION_ROWS[hook] = (past, at_rate)
        return hook
    return record


@described("unchanged", "unchanged")
def unaffected(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Declaration for ops whose result does not depend on the input's sampling grid.

    Pointwise ops (activations, batch norm, add, concat) compute each output
    pixel from the same pixel of their inputs, so they are exact at any rate and
    need no change. (Ops that pool to a fixed size declare :func:`size_independent`.)
    """
    return attrs


@described("unchanged", "unchanged; the output is a grid of bins, off the image grid")
def size_independent(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Declaration for ops whose output is a fixed grid of bins (``gap``, ``adaptive_avgpool``,
    ``linear``): unchanged at any rate, and their output, with everything computed
    only from it, is off the image grid: a conv on a 6x6 pyramid-pooling map is not dilated."""
    return attrs


@described("—", "error: no dilated form")
def not_dilatable(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Declaration for ops that cannot run on a dilated map (transposed conv, upsampling).

    Fine before the output stride; an error once any input is at rate > 1 or
    the op would pass the output stride: an encoder that upsamples a map the
    rewrite has already kept dense would no longer have the sizes it was written for.
    """
    if at.passes_output_stride or max(at.in_rates or (at.rate,)) > 1:
        raise OpError(f"it reads a map past output stride {at.output_stride}, and this op "
                      f"has no dilated form", hint="move it to the meta-architecture, or use a "
                      "larger output stride")
    return attrs
