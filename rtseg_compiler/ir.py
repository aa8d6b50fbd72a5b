"""The compiler's intermediate representation: small, frozen, and checked by ``passes.check``.

A spec goes through these stages, each a value of a type below::

    YAML text --load--> located data --expand--> Graph (attrs may hold Expr)
             --link--> Graph in topological order
             --infer_shapes--> Resolved (concrete attrs + TensorType per node)
             --count--> Audit

Nodes refer to their inputs by qualified name ("encoder.ds3.pw"), never by
position, so inserting a layer never silently rewires another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Mapping

from .diagnostics import Location

__all__ = [
    "TensorType",
    "Expr",
    "Literal",
    "Lazy",
    "ChannelsOf",
    "Scope",
    "BlockUse",
    "Node",
    "Tap",
    "Skip",
    "Graph",
    "Resolved",
    "INPUT",
    "frozen_map",
    "stride_text",
    "human",
]

#: The name of the image placeholder every graph starts from.
INPUT = "input"


def frozen_map(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only view of a copy, for mapping fields of frozen dataclasses."""
    return MappingProxyType(dict(mapping or {}))


def human(n: float) -> str:
    """3,369,080 -> '3.37 M' (G, M, K by powers of ten); exact decimal text, no locale."""
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def stride_text(stride: Fraction) -> str:
    """'16' for an integral stride, '1/2' for a map finer than the input."""
    return str(stride.numerator) if stride.denominator == 1 else str(stride)


@dataclass(frozen=True, slots=True)
class TensorType:
    """The type of one feature map of a batch-1 image: channels, height, width.

    ``stride`` is the map's reduction relative to the input image (a tap
    called ``stride16`` must have stride 16). It is a Fraction because
    transposed convolutions and upsampling divide it.
    """

    channels: int
    height: int
    width: int
    stride: Fraction = Fraction(1)

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width

    @property
    def spatial(self) -> tuple[int, int]:
        return (self.height, self.width)

    def __str__(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"


@dataclass(frozen=True, slots=True)
class Expr:
    """An unevaluated expression from a spec, with where it was written."""

    text: str
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class Literal:
    """A parameter bound to a plain value."""

    value: Any
    #: Where the value was written, when it came from a spec (for errors about the value).
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class Lazy:
    """A parameter bound to an expression, evaluated in the scope where it was written."""

    expr: Expr
    scope: "Scope"
    #: For block arguments: the node whose channels ``in_channels`` means at the use site.
    input_ref: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelsOf:
    """A parameter bound to the channel count of a node, known once shapes are inferred."""

    ref: str


@dataclass(frozen=True, slots=True)
class Scope:
    """Names visible to expressions: a chain of frozen binding maps."""

    bindings: Mapping[str, Any] = field(default_factory=frozen_map)
    parent: "Scope | None" = None

    def lookup(self, name: str) -> Any | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.bindings:
                return scope.bindings[name]
            scope = scope.parent
        return None

    def names(self) -> set[str]:
        out: set[str] = set()
        scope: Scope | None = self
        while scope is not None:
            out.update(scope.bindings)
            scope = scope.parent
        return out

    def child(self, bindings: Mapping[str, Any]) -> "Scope":
        return Scope(frozen_map(bindings), self)


@dataclass(frozen=True, slots=True)
class BlockUse:
    """Where a layer came from: a use of block ``block``, written at ``loc``.

    A node carries one per block it sits in (``Node.origin``), innermost first. They stay
    records until a diagnostic is made: ``Diagnostics`` renders each note with ``str``, so
    passes that need the block (``emit/diagram.py`` groups layers by it) read a field, not text.
    ``name_segments`` is how many dotted segments the use adds to its layers' names: 1 for
    ``cm``, 2 for a numbered copy (``layer1.2``, from ``repeat`` or ``start``). A use may itself be
    named by a number (``features.2``), so the count cannot be read back from the names.
    """

    block: str
    loc: Location | None = None
    name_segments: int = 1

    def __str__(self) -> str:
        return f"in block '{self.block}' used at {self.loc}"


@dataclass(frozen=True, slots=True)
class Node:
    """One layer. ``attrs`` hold Expr values until shape inference resolves them."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    loc: Location | None = None
    attr_locs: Mapping[str, Location] = field(default_factory=frozen_map)
    #: The block uses the layer sits in, innermost first (outermost last); each renders as a
    #: note "in block 'dwsep' used at FILE:LINE:COL".
    origin: tuple[BlockUse, ...] = ()
    scope: Scope | None = None
    #: "encoder" or "meta": which file of a model the layer came from.
    part: str = "encoder"
    #: The layer's ``when:`` condition (an Expr, or a plain bool), evaluated by ``infer_shapes``
    #: in ``scope``; when false the layer is absent and its readers read its first input.
    when: Any = None

    def attr_loc(self, attr: str) -> Location | None:
        return self.attr_locs.get(attr, self.loc)

    def replace(self, **changes: Any) -> "Node":
        """A copy with ``changes``; unknown fields are an error, no change returns self."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        assert not unknown, f"Node has no fields {sorted(unknown)}"
        if all(getattr(self, k) == v for k, v in changes.items()):
            return self
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Tap:
    """A named feature map an encoder offers to meta-architectures (``stride16`` ...)."""

    name: str
    node: str
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """A layer that is absent: its name stands for ``passthrough`` (its first input).

    Made by ``expand`` for ``repeat: 0`` and a block use whose ``when:`` is false, and by
    ``infer_shapes`` for an op layer whose ``when:`` is false. ``why`` says which, for notes
    on errors that arise because a reader got the layer's input instead of its output.
    """

    name: str
    passthrough: str
    why: str
    loc: Location | None = None


@dataclass(frozen=True)
class Graph:
    """A whole network: nodes in declaration (after ``link``: topological) order."""

    name: str
    nodes: tuple[Node, ...]
    output: str
    taps: tuple[Tap, ...] = ()
    input_channels: int = 3
    #: (height, width) from the spec, used when the caller gives none.
    default_input: tuple[int, int] | None = None
    num_classes: int | None = None
    #: The spec files the graph came from: {"model": path, "encoder": path, "meta": path}.
    files: Mapping[str, str] = field(default_factory=frozen_map)
    #: The encoder's output (its last layer, or its ``output:``), in a model and in an encoder
    #: on its own: where the output-stride rewrite must end (``passes/dilate.py``).
    encoder_output: str | None = None
    #: The output stride the meta-architecture is written for (its ``output_stride:``), if any.
    meta_output_stride: int | None = None
    #: The encoder taps the meta-architecture reads (its ``requires:``), in the order written.
    meta_requires: tuple[str, ...] = ()
    #: Named outputs, in order, as (name, node); the first is the main output (``output``).
    #: Empty for a model with one ``output``: its module returns a tensor, not a dict.
    outputs: tuple[tuple[str, str], ...] = ()
    #: Absent layers by name (see :class:`Skip`); references to them read their input.
    skipped: Mapping[str, Skip] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n.name: i for i, n in enumerate(self.nodes)})

    def node(self, name: str) -> Node:
        return self.nodes[self._index[name]]  # type: ignore[attr-defined]

    def __contains__(self, name: str) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every output node: the named outputs, or the one ``output``."""
        return tuple(node for _, node in self.outputs) or (self.output,)

    def tap(self, name: str) -> Tap | None:
        return next((t for t in self.taps if t.name == name), None)

    def replace(self, **changes: Any) -> "Graph":
        return replace(self, **changes)


@dataclass(frozen=True)
class Resolved:
    """A graph whose attributes are concrete, with the type of every node for one input size."""

    graph: Graph
    input: TensorType
    types: Mapping[str, TensorType]

    @property
    def output(self) -> TensorType:
        return self.types[self.graph.output]
