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
    "strides_text",
    "AnisotropicStrideError",
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


def strides_text(t: "TensorType") -> str:
    """A map's stride as ``rtsegc shapes`` prints it: '16' when both axes agree, else
    'height|width', e.g. '16|512' for a row map (C x H x 1) of a stride-16 map 32 pixels wide."""
    if t.isotropic:
        return stride_text(t.stride_h)
    return f"{stride_text(t.stride_h)}|{stride_text(t.stride_w)}"


class AnisotropicStrideError(ValueError):
    """``TensorType.stride`` read on a map whose height and width strides differ.

    One number cannot describe such a map (a row map C x H x 1 has stride s along the
    height and s*W along the width), so code that assumes one must say so loudly rather
    than compute with the height's stride and be silently wrong along the width.
    """


@dataclass(frozen=True, slots=True, init=False, repr=False)
class TensorType:
    """The type of one feature map of a batch-1 image: channels, height, width, and a stride per axis.

    ``stride_h`` and ``stride_w`` are the map's reduction relative to the input image along
    the height and along the width (a tap called ``stride16`` must have 16 on both). They are
    Fractions because transposed convolutions and upsampling divide them. Most maps are
    isotropic (both equal), and ``TensorType(c, h, w, stride)`` builds one; ``stride`` reads
    the common value and raises :class:`AnisotropicStrideError` when the axes differ.

    Anisotropic maps come from reducing one axis: ``reduce over: width`` turns a C x H x W
    map of stride s into a C x H x 1 row map with stride s along the height and s*W along
    the width (its one column is a bin as wide as the map). A map of bins pooled from an
    isotropic map (``gap``, adaptive pools, ``reduce over: spatial``) keeps one stride, the
    height's bin pitch (docs/spec-language.md, "Strides per axis").

    ``TensorType(c, h, w, stride_h=16, stride_w=512)`` builds an anisotropic map
    (``stride_w`` defaults to ``stride_h``). ``stride``, when given, sets both axes; with
    ``stride_h``/``stride_w`` also given (``dataclasses.replace(t, stride=2)`` passes them)
    they must agree with each other, so that replacing ``stride`` of a row map is an error
    rather than a silent choice of axis.
    """

    channels: int
    height: int
    width: int
    stride_h: Fraction
    stride_w: Fraction

    def __init__(self, channels: int, height: int, width: int, stride: Fraction | int | None = None,
                 *, stride_h: Fraction | int | None = None, stride_w: Fraction | int | None = None) -> None:
        if stride is not None:
            if (stride_h is not None or stride_w is not None) and stride_h != stride_w:
                raise TypeError("TensorType takes 'stride' (both axes) or 'stride_h' and 'stride_w', "
                                f"not both (got stride={stride}, stride_h={stride_h}, stride_w={stride_w})")
            stride_h = stride_w = stride
        if stride_h is None:
            stride_h = 1
        if stride_w is None:
            stride_w = stride_h
        set_field = object.__setattr__
        set_field(self, "channels", channels)
        set_field(self, "height", height)
        set_field(self, "width", width)
        set_field(self, "stride_h", stride_h if type(stride_h) is Fraction else Fraction(stride_h))
        set_field(self, "stride_w", stride_w if type(stride_w) is Fraction else Fraction(stride_w))

    @property
    def stride(self) -> Fraction:
        """The stride of an isotropic map; an :class:`AnisotropicStrideError` otherwise."""
        if not self.isotropic:
            raise AnisotropicStrideError(
                f"the {self} map has stride {stride_text(self.stride_h)} along the height and "
                f"{stride_text(self.stride_w)} along the width, so it has no single 'stride'; "
                f"read 'stride_h' and 'stride_w'")
        return self.stride_h

    @property
    def strides(self) -> tuple[Fraction, Fraction]:
        """(stride along the height, stride along the width)."""
        return (self.stride_h, self.stride_w)

    @property
    def isotropic(self) -> bool:
        # Identity first: most maps share one Fraction between the axes (Fraction's == is slow).
        return self.stride_h is self.stride_w or self.stride_h == self.stride_w

    @property
    def grid_stride(self) -> Fraction:
        """The finer of the two strides: a row or column map's stride along its axis on the
        image grid (its other axis is one bin). Diagrams and ``compare --by stage`` group maps
        by it (the output-stride rewrite uses ``passes.dilate.level``, which also knows sizes)."""
        return min(self.stride_h, self.stride_w)

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width

    @property
    def spatial(self) -> tuple[int, int]:
        return (self.height, self.width)

    def __str__(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"

    def __repr__(self) -> str:
        stride = (f"stride={self.stride_h!r}" if self.isotropic
                  else f"stride_h={self.stride_h!r}, stride_w={self.stride_w!r}")
        return f"TensorType(channels={self.channels}, height={self.height}, width={self.width}, {stride})"


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
