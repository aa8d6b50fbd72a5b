"""Pass 4: count parameters, MACs and FLOPs per layer, analytically.

Conventions (see docs/flops.md):

``mac``  multiply-accumulates of conv, transposed conv and linear layers,
         bias excluded, transposed conv counted by input size. Batch norm,
         activations, pooling, adds and resampling: 0.
``flop`` 2 x ``mac``. This is exactly what ``torch.utils.flop_counter.
         FlopCounterMode`` reports for the emitted module (tests check it).
``tf``   TensorFlow 1's profiler (``float_operation``), which the RTSeg paper's
         GFLOPs use: 2·MAC, transposed conv as 2·Hout·Wout·k²·Cin·Cout/s²,
         plus bias adds, element-wise adds and k² per pooled output element.

All counts are for one image (batch 1); multiply by the batch size for more.

A model with several outputs (``outputs:``) also gets a cost per head
(:class:`HeadAudit`): the main head is every layer the main output needs
(encoder included); an auxiliary head is the layers only that output needs.
Layers that two auxiliary heads share but the main output does not are one
more row, so the rows always sum to the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..ir import INPUT, Resolved, TensorType, strides_text
from ..ops import REGISTRY

__all__ = ["LayerAudit", "HeadAudit", "Audit", "count", "CONVENTIONS"]

CONVENTIONS = {
    "mac": "multiply-accumulates of conv/deconv/linear and attention products, bias excluded, deconv by input size",
    "flop": "FLOPs = 2 x MACs (torch FlopCounterMode); bias, norm, activations, adds: 0",
    "tf": "TensorFlow profiler FLOPs (RTSeg paper): 2 x MACs, deconv by output/stride^2, "
          "+ bias adds, element-wise adds, pooling k^2 per output",
}


class _Costs:
    """``flops`` and ``value(convention)`` from ``macs`` and ``tf_flops``: the one rule for a layer's,
    a head's and a model's row (FLOPs = 2 x MACs is FlopCounterMode's count)."""

    __slots__ = ()
    macs: int
    tf_flops: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def value(self, convention: str) -> int:
        return {"mac": self.macs, "flop": self.flops, "tf": self.tf_flops}[convention]


@dataclass(frozen=True, slots=True)
class LayerAudit(_Costs):
    name: str
    op: str
    output_shape: tuple[int, int, int]
    #: The output's (height, width) strides (``TensorType.strides``).
    strides: tuple[Fraction, Fraction]
    dilation: tuple[int, int]
    params: int
    macs: int
    tf_flops: int

    @property
    def stride(self) -> Fraction:
        """The output's stride when both axes agree; ``AnisotropicStrideError`` otherwise."""
        c, h, w = self.output_shape
        return TensorType(c, h, w, stride_h=self.strides[0], stride_w=self.strides[1]).stride

    @property
    def grid_stride(self) -> Fraction:
        """The finer of the two strides (``TensorType.grid_stride``)."""
        return min(self.strides)

    @property
    def stride_text(self) -> str:
        """'16', '1/2', or '16|512' (height|width) for a row map."""
        c, h, w = self.output_shape
        return strides_text(TensorType(c, h, w, stride_h=self.strides[0], stride_w=self.strides[1]))


@dataclass(frozen=True, slots=True)
class HeadAudit(_Costs):
    """The cost of one output of a model with several: see the module docstring."""

    name: str
    #: "main", "auxiliary", "shared" (by auxiliary heads only) or "unused" (kept by keep_unused).
    role: str
    node: str | None
    output_shape: tuple[int, int, int, int] | None
    layers: tuple[str, ...]
    params: int
    macs: int
    tf_flops: int


@dataclass(frozen=True)
class Audit(_Costs):
    """Totals and per-layer rows for one model at one input size."""

    model: str
    input: tuple[int, int, int, int]
    output_shape: tuple[int, int, int, int]
    layers: tuple[LayerAudit, ...]
    #: Per-output costs when the model declares several outputs; empty otherwise.
    heads: tuple[HeadAudit, ...] = ()

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def tf_flops(self) -> int:
        return sum(layer.tf_flops for layer in self.layers)

    def total(self, convention: str) -> int:
        """The model's total in ``convention`` (``value`` under the name the CLI and JSON use)."""
        return self.value(convention)

    def to_json(self, convention: str = "flop", *, layers: bool = True) -> dict[str, Any]:
        """The audit as JSON-ready data; ``layers=False`` leaves out the per-layer rows (``flops --json
        --totals``): SegFormer-B0's object shrinks from about 44 kB to under 1 kB, the size a script
        polling many models wants."""
        data = {
            "model": self.model,
            "input": list(self.input),
            "convention": convention,
            "convention_note": CONVENTIONS[convention],
            "macs": self.macs,
            "flops": self.flops,
            "tf_flops": self.tf_flops,
            "total": self.total(convention),
            "params": self.params,
            "output_shape": list(self.output_shape),
            **({"outputs": [
                {"name": h.name, "role": h.role, "node": h.node,
                 "output_shape": list(h.output_shape) if h.output_shape else None,
                 "layers": len(h.layers), "params": h.params, "macs": h.macs, "flops": h.flops,
                 "tf_flops": h.tf_flops, "total": h.value(convention)}
                for h in self.heads]} if self.heads else {}),
            "layers": [
                {"name": layer.name, "op": layer.op, "output_shape": list(layer.output_shape),
                 "stride": _json_stride(layer), "dilation": list(layer.dilation),
                 "macs": layer.macs, "flops": layer.flops, "tf_flops": layer.tf_flops,
                 "params": layer.params}
                for layer in self.layers
            ],
        }
        if not layers:
            del data["layers"]
        return data


def _json_stride(layer: LayerAudit) -> int | str:
    """An integral stride as a number; a fractional one ('1/2') or a row map's ('16|512') as text."""
    sh, sw = layer.strides
    return sh.numerator if sh == sw and sh.denominator == 1 else layer.stride_text


def count(resolved: Resolved) -> Audit:
    """Per-layer and total costs of a resolved graph."""
    graph, types = resolved.graph, resolved.types
    rows = []
    for node in graph.nodes:
        op = REGISTRY[node.op]
        ins = [types[i] for i in node.inputs]
        out = types[node.name]
        cost = op.count(node.attrs, ins, out)
        dilation = node.attrs.get("dilation") or (1, 1)
        if isinstance(dilation, int):  # a user op may declare dilation as an "int" field
            dilation = (dilation, dilation)
        rows.append(LayerAudit(node.name, node.op, (out.channels, out.height, out.width), out.strides,
                               tuple(dilation), cost.params, cost.macs, cost.tf_flops))
    image = types[INPUT]
    out = resolved.output
    return Audit(graph.name, (1, image.channels, image.height, image.width),
                 (1, out.channels, out.height, out.width), tuple(rows), _heads(resolved, rows))


def _heads(resolved: Resolved, rows: list[LayerAudit]) -> tuple[HeadAudit, ...]:
    graph = resolved.graph
    if not graph.outputs:
        return ()
    inputs = {n.name: n.inputs for n in graph.nodes}

    def needed(root: str) -> set[str]:
        seen: set[str] = set()
        stack = [root]
        while stack:
            name = stack.pop()
            if name in seen or name not in inputs:
                continue
            seen.add(name)
            stack.extend(inputs[name])
        return seen

    by_output = [(name, node, needed(node)) for name, node in graph.outputs]
    main = by_output[0][2]
    groups: list[tuple[str, str, str | None, set[str]]] = [(by_output[0][0], "main", by_output[0][1], main)]
    for k, (name, node, layers) in enumerate(by_output[1:], start=1):
        others = set().union(*(s for j, (_, _, s) in enumerate(by_output) if j != k))
        groups.append((name, "auxiliary", node, layers - others))
    aux_any = set().union(*(s for _, _, s in by_output[1:])) if len(by_output) > 1 else set()
    own = set().union(*(g[3] for g in groups))
    shared = aux_any - own
    if shared:
        groups.append(("shared by auxiliary heads", "shared", None, shared))
    unused = set(inputs) - main - aux_any
    if unused:
        groups.append(("unused (counted)", "unused", None, unused))
    out = []
    for name, role, node, layers in groups:
        picked = [r for r in rows if r.name in layers]
        t = resolved.types[node] if node is not None else None
        out.append(HeadAudit(name, role, node, (1, t.channels, t.height, t.width) if t else None,
                             tuple(r.name for r in picked), sum(r.params for r in picked),
                             sum(r.macs for r in picked), sum(r.tf_flops for r in picked)))
    return tuple(out)
