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
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..ir import INPUT, Resolved, stride_text
from ..ops import REGISTRY

__all__ = ["LayerAudit", "Audit", "count", "CONVENTIONS"]

CONVENTIONS = {
    "mac": "multiply-accumulates of conv/deconv/linear, bias excluded, deconv by input size",
    "flop": "FLOPs = 2 x MACs (torch FlopCounterMode); bias, norm, activations, adds: 0",
    "tf": "TensorFlow profiler FLOPs (RTSeg paper): 2 x MACs, deconv by output/stride^2, "
          "+ bias adds, element-wise adds, pooling k^2 per output",
}


@dataclass(frozen=True, slots=True)
class LayerAudit:
    name: str
    op: str
    output_shape: tuple[int, int, int]
    stride: Fraction
    dilation: tuple[int, int]
    params: int
    macs: int
    tf_flops: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def value(self, convention: str) -> int:
        return {"mac": self.macs, "flop": self.flops, "tf": self.tf_flops}[convention]


@dataclass(frozen=True)
class Audit:
    """Totals and per-layer rows for one model at one input size."""

    model: str
    input: tuple[int, int, int, int]
    output_shape: tuple[int, int, int, int]
    layers: tuple[LayerAudit, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def tf_flops(self) -> int:
        return sum(layer.tf_flops for layer in self.layers)

    def total(self, convention: str) -> int:
        return {"mac": self.macs, "flop": self.flops, "tf": self.tf_flops}[convention]

    def to_json(self, convention: str = "flop") -> dict[str, Any]:
        return {
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
            "layers": [
                {"name": layer.name, "op": layer.op, "output_shape": list(layer.output_shape),
                 "stride": layer.stride.numerator if layer.stride.denominator == 1 else stride_text(layer.stride), "dilation": list(layer.dilation),
                 "macs": layer.macs, "flops": layer.flops, "tf_flops": layer.tf_flops,
                 "params": layer.params}
                for layer in self.layers
            ],
        }


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
        rows.append(LayerAudit(node.name, node.op, (out.channels, out.height, out.width), out.stride,
                               tuple(dilation), cost.params, cost.macs, cost.tf_flops))
    image = types[INPUT]
    out = resolved.output
    return Audit(graph.name, (1, image.channels, image.height, image.width),
                 (1, out.channels, out.height, out.width), tuple(rows))
