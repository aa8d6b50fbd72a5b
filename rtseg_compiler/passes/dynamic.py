"""Which input heights and widths a compiled graph accepts: for export with dynamic shapes.

``torch.export`` (and the ONNX exporter built on it) can keep height and width symbolic, but
only if every size relation the graph relies on holds for every size in the declared range.
This pass answers that from the IR, per dimension, without torch, by re-running shape
inference over sizes:

* **Weights sized by the input.** A layer whose parameter count changes with the size (a
  ``linear`` on a flattened map: VGG's and the ImageNet classifiers' fc layers) fixes that
  dimension. Found by counting parameters at two sizes.
* **Sizes that must line up.** An ``add`` or ``concat`` of a decoder map and an encoder tap,
  without a ``crop``, needs the size to be a multiple of the network stride (UNet at 360 rows).
  Found by inferring shapes at every size in two windows of twice the largest stride ``P``
  (one from the smallest working size up, one around the example size): every size relation in
  the graph is a floor-affine function of the input whose pattern repeats with period ``P``.
  The dimension is then dynamic in steps of the smallest ``m`` that works, ``m·k + r``.
* **Smallest size.** The lower bound is the smallest size at which shapes infer and every map
  whose size depends on this dimension has at least 2 rows (columns): torch specialises sizes
  0 and 1 (broadcasting), so a range that includes 1 for some map cannot be exported.

What the probe cannot see (a guard torch's symbolic reasoning cannot discharge) is caught when
exporting, in ``rtseg_compiler/export.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import Diagnostics
from ..ir import INPUT, Resolved
from .count import count
from .shapes import MAX_SPATIAL, infer_shapes

__all__ = ["DimRange", "dynamic_ranges"]

DIMS = ("height", "width")


@dataclass(frozen=True)
class DimRange:
    """What one spatial dimension may be.

    ``dynamic``: exportable as a symbol ``multiple·k + remainder`` with ``minimum <= size <=
    maximum``. Otherwise ``blockers`` say which layers fix it, as (layer, reason) pairs.
    """

    dim: str
    example: int
    dynamic: bool
    minimum: int
    maximum: int
    multiple: int = 1
    remainder: int = 0
    blockers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        if not self.dynamic:
            return f"{self.dim}: fixed at {self.example}"
        step = "" if self.multiple == 1 else f" in steps of {self.multiple}"
        return f"{self.dim}: dynamic, {self.minimum}..{self.maximum}{step}"


def _period(resolved: Resolved) -> int:
    # A row map's other axis is one bin as long as the map, not a step the input size must divide.
    strides = [t.grid_stride for t in resolved.types.values()]
    return max(1, max(int(s) for s in strides if s >= 1))


def _probe(resolved: Resolved, size: tuple[int, int]) -> tuple[Resolved | None, str | None, str | None]:
    """(resolved, None, None) if shapes infer at ``size``, else (None, layer, message)."""
    diags = Diagnostics()
    again = infer_shapes(resolved.graph, size, diags, suggest=False, check_taps=False)
    errors = [d for d in diags.items if d.severity == "error"]
    if not errors:
        return again, None, None
    message = errors[0].message
    layer = message.split("at layer '", 1)[1].split("'", 1)[0] if "at layer '" in message else "?"
    return None, layer, message


def dynamic_ranges(resolved: Resolved, maximum: int = 4096) -> tuple[DimRange, DimRange]:
    """Height and width ranges for export; see the module docstring."""
    example = (resolved.input.height, resolved.input.width)
    period = _period(resolved)
    base_params = {layer.name: layer.params for layer in count(resolved).layers}
    return tuple(_dim_range(resolved, axis, example, period, base_params, maximum)  # type: ignore
                 for axis in (0, 1))


def _dim_range(resolved: Resolved, axis: int, example: tuple[int, int], period: int,
               base_params: dict[str, int], maximum: int) -> DimRange:
    name = DIMS[axis]
    base = example[axis]
    maximum = min(max(maximum, base), MAX_SPATIAL)

    def at(size: int) -> tuple[int, int]:
        return (size, example[1]) if axis == 0 else (example[0], size)

    # Weights sized by the input: compare parameter counts one period up.
    other, _, _ = _probe(resolved, at(base + period))
    if other is not None:
        changed = [(layer.name, f"its weights are sized for the {base}-{name[0]} map it was "
                    f"compiled for ({base_params[layer.name]:,} parameters, "
                    f"{layer.params:,} at {base + period})")
                   for layer in count(other).layers if layer.params != base_params.get(layer.name)]
        if changed:
            return DimRange(name, base, False, base, base, blockers=tuple(changed))

    def extent(t) -> int:
        return t.height if axis == 0 else t.width

    # Nodes whose size along this axis moves with the input.
    moving = {k for k, t in resolved.types.items()
              if other is None or extent(other.types.get(k, t)) != extent(t)}
    results: dict[int, tuple[bool, str | None, str | None]] = {}

    def ok(size: int) -> bool:
        if size not in results:
            again, layer, message = _probe(resolved, at(size))
            if again is None:
                results[size] = (False, layer, message)
            else:
                small = [k for k in moving if k != INPUT and k in again.types
                         and extent(again.types[k]) < 2]
                results[size] = (not small, small[0] if small else None,
                                 f"its output is 1 {('row', 'column')[axis]} at {name} {size}, and "
                                 f"torch.export cannot keep a size that may be 1 symbolic"
                                 if small else None)
        return results[size][0]

    lowest = next((s for s in range(1, base + 1) if ok(s)), base)
    # Above lowest + P the pattern is periodic; sample two periods there and around the example.
    regular = set(range(lowest + period, lowest + 3 * period + 1))
    regular |= set(range(max(lowest, base - period), base + period + 1))
    regular = {s for s in regular if s <= maximum}
    for multiple in _divisors(2 * period):
        good = sorted(s for s in regular if (s - base) % multiple == 0)
        if good and all(ok(s) for s in good):
            minimum = good[0]
            while minimum - multiple >= 1 and ok(minimum - multiple):
                minimum -= multiple
            remainder = base % multiple
            failing = sorted(s for s in regular if not ok(s))
            blockers = ((results[failing[0]][1] or "?", results[failing[0]][2] or ""),) if failing else ()
            top = maximum - (maximum - remainder) % multiple
            return DimRange(name, base, True, minimum, top, multiple, remainder, blockers)
    bad = sorted(s for s in regular if not ok(s))
    return DimRange(name, base, False, base, base,
                    blockers=((results[bad[0]][1] or "?", results[bad[0]][2] or ""),) if bad else ())


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
