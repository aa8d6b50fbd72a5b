"""The diagram model: which layers a picture draws as one box, at three levels of detail.

Pure Python over the analysed graph (no torch, no Graphviz), so the grouping is unit-tested on
its own and every renderer (``emit/dot.py`` today) draws the same boxes.

* ``op``: one box per layer, as the audit lists them.
* ``block`` (default): one box per block use (the innermost use, for blocks that use blocks);
  consecutive identical uses fold into one box marked "x N"; outside blocks, a layer and the
  shape-preserving, MAC-free single-input layers that follow it (batch norm, activation,
  dropout ...) read as one "chain" box. SkipNet-MobileNet goes from 92 layers to 21 boxes.
* ``stage``: one box per stride level of the encoder and per stride level of the decoder.

Nothing here lists op names: what folds into a chain is decided from the shapes and the
counted cost (an op whose output has its input's type and that costs no MACs), and block
membership from the layer names and origins the ``expand`` pass writes, so ops added later
group sensibly without changes here.

Every box carries the sum of its layers' parameters and MACs, so the boxes of a diagram add up
to the audit's totals exactly (tests/unit/test_diagram.py checks it on every zoo model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from ..ir import INPUT, Node, TensorType, stride_text
from ..ops import REGISTRY

__all__ = ["DETAILS", "Box", "Link", "Diagram", "build_diagram", "block_use", "op_summary",
           "attr_text", "output_stride", "head_word"]

DETAILS = ("stage", "block", "op")


@dataclass(frozen=True)
class Box:
    """One drawn node: a layer, a chain of layers, a (folded) block use, or a stride level."""

    id: str
    #: "input", "op", "chain", "block" or "stage".
    kind: str
    #: The spec name a reader looks for: "ds7_11", "conv1", "encoder 1/16".
    title: str
    #: The block's name for block boxes ("dwsep"), else "".
    block: str
    #: Every layer the box stands for, in execution order.
    members: tuple[str, ...]
    #: How many identical consecutive block uses were folded into the box.
    repeat: int
    #: "encoder", "meta" or "input".
    part: str
    output: TensorType
    params: int
    macs: int
    tf_flops: int
    #: Short attribute text of the layers that matter, e.g. ("conv 3x3 /2 dw", "conv 1x1").
    summary: tuple[str, ...]
    #: Encoder taps whose layer is in the box.
    taps: tuple[str, ...] = ()
    #: Dilation rates > 1 found inside the box (after an output-stride rewrite, or native).
    dilations: tuple[int, ...] = ()
    #: One line per layer with its full attributes, for tooltips.
    details: tuple[str, ...] = ()
    #: Names of the model outputs (``outputs:``) produced in the box.
    outputs: tuple[str, ...] = ()

    @property
    def stride(self) -> Fraction:
        """The output's stride; a row or column map's along its axis on the image grid, the
        stride level the layout places it at (``TensorType.grid_stride``)."""
        return self.output.grid_stride


@dataclass(frozen=True)
class Link:
    """An edge between boxes, carrying the tensor that flows along it."""

    src: str
    dst: str
    #: The producing layer (the tensor's name).
    tensor: str
    type: TensorType
    #: The encoder tap name when the decoder reads the encoder here.
    tap: str | None = None
    #: True for a producer's extra output (max-pool indices read by unpool).
    extra: bool = False


@dataclass(frozen=True)
class Diagram:
    """Boxes and links in a deterministic order (the graph's execution order)."""

    name: str
    detail: str
    boxes: tuple[Box, ...]
    links: tuple[Link, ...]
    #: Layer name -> id of the box that draws it.
    box_of: Mapping[str, str] = field(default_factory=dict)

    def box(self, box_id: str) -> Box:
        return next(b for b in self.boxes if b.id == box_id)


# --------------------------------------------------------------------------- attribute text

def _pair(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    return None


def _pair_text(value: Any, sep: str = "x") -> str:
    p = _pair(value)
    if p is None:
        return str(value)
    return str(p[0]) if p[0] == p[1] else f"{p[0]}{sep}{p[1]}"


#: Fields already shown by the output shape or too fine for a label (kept in the tooltip).
_QUIET_FIELDS = {"out", "padding", "bias", "eps", "momentum", "affine", "inplace", "init",
                 "output_padding", "count_include_pad", "align_corners", "per_channel"}


def attr_text(node: Node, in_types: Sequence[TensorType]) -> str:
    """'conv 3x3 /2 d2 g32', 'conv 3x3 dw', 'dropout p=0.5': the op and the attributes that matter.

    Kernel, stride, dilation and groups get compact forms; any other field of the op that differs
    from its declared default is written ``name=value``, so a new op shows what is special about
    a layer without this function knowing it.
    """
    op = REGISTRY.get(node.op)
    attrs = node.attrs
    bits = [node.op]
    kernel = attrs.get("kernel")
    if kernel is not None:
        bits.append("x".join(map(str, _pair(kernel) or (kernel,))))
    stride = _pair(attrs.get("stride"))
    if stride and stride != (1, 1) and kernel is not None:
        bits.append("/" + _pair_text(stride))
    dilation = _pair(attrs.get("dilation"))
    if dilation and dilation != (1, 1):
        bits.append("d" + _pair_text(dilation))
    groups = attrs.get("groups")
    if isinstance(groups, int) and groups != 1 and op is not None and "kernel" in op.fields:
        depthwise = in_types and groups == in_types[0].channels
        bits.append("dw" if depthwise else f"g{groups}")
    if op is not None:
        for key, f in op.fields.items():
            if key in ("kernel", "stride", "dilation", "groups") or key in _QUIET_FIELDS:
                continue
            if key == "groups":
                continue
            value = attrs.get(key)
            if value is None or f.default is None or value == f.default:
                continue
            if isinstance(value, bool):
                bits.append(key if value else f"no {key}")
            else:
                bits.append(f"{key}={_pair_text(value) if isinstance(value, (tuple, list)) else value}")
    return " ".join(bits)


def _full_attrs(node: Node) -> str:
    """Every resolved attribute, for tooltips: 'kernel=3x3 stride=2 padding=1 ...'."""
    parts = []
    for key in sorted(node.attrs):
        value = node.attrs[key]
        text = _pair_text(value) if isinstance(value, (tuple, list)) else str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def op_summary(nodes: Iterable[Node], types: Mapping[str, TensorType], folds: set[str]) -> tuple[str, ...]:
    """The attribute texts of the layers of a box that are not folded followers (bn, relu ...)."""
    out = []
    for node in nodes:
        if node.name in folds:
            continue
        out.append(attr_text(node, [types[i] for i in node.inputs]))
    return tuple(out)


# --------------------------------------------------------------------------- block membership

#: The most boxes the block view draws before it merges nested block uses into their parents
#: (a diagram past about 60 boxes no longer fits a page readably).
BLOCK_VIEW_BOXES = 58


def block_use(node: Node, levels: int | None = None) -> tuple[str | None, str]:
    """(the innermost block use a layer belongs to, e.g. 'encoder.ds7_11.2', or None; block name).

    ``expand`` names a layer PART.USE[.N].USE[.N]...LAYER[.N], with one ``BlockUse`` in its
    origin per block it sits in, innermost first, each knowing how many name segments it adds (a
    use may be named by a number, ``features.2``, so a numeric segment is not always a repeat
    index). With ``levels``, uses nested deeper than that many blocks count as part of their
    enclosing use.
    """
    depth = len(node.origin)
    if depth == 0:
        return None, ""
    part, *rest = node.name.split(".")
    if sum(use.name_segments for use in node.origin) >= len(rest):
        return None, ""  # the name is all uses: not a layer inside a block
    kept = depth if levels is None else min(depth, levels)
    taken = sum(use.name_segments for use in node.origin[depth - kept:])
    return ".".join([part, *rest[:taken]]), node.origin[depth - kept].block


# --------------------------------------------------------------------------- grouping

@dataclass
class _Group:
    kind: str
    key: str
    block: str
    members: list[str]
    repeat: int = 1
    title: str = ""


def _consumers(nodes: Sequence[Node]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node in nodes:
        for src in node.inputs:
            out.setdefault(src, []).append(node.name)
    return out


def head_word(resolved: Any) -> str:
    """What to call the meta part: 'decoder' when the model outputs a map, 'head' for a classifier."""
    out = resolved.output
    return "decoder" if out.height * out.width > 1 else "head"


def output_stride(resolved: Any) -> Fraction:
    """The encoder's coarsest stride (32 for SkipNet-MobileNet, 8 once dilated).

    Only encoder layers on the image grid count: a classifier head's global pooling, or a
    squeeze-excitation gate inside MobileNetV3's encoder, makes a 1x1 map whose "stride" is the
    input size (224, 512), which is not what output stride means (``off_grid_maps``).
    """
    from ..passes.dilate import off_grid_maps

    graph, types = resolved.graph, resolved.types
    off_grid = off_grid_maps(graph)
    strides = [types[n.name].grid_stride for n in graph.nodes
               if n.part == "encoder" and n.name not in off_grid]
    return max(strides or [t.grid_stride for t in types.values()] or [Fraction(1)])


def build_diagram(analysis: Any, detail: str = "block") -> Diagram:
    """Group the layers of ``analysis`` (a :class:`~rtseg_compiler.pipeline.Analysis`) into boxes."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    resolved, audit = analysis.resolved, analysis.audit
    graph, types = resolved.graph, resolved.types
    nodes = graph.nodes
    by_name = {n.name: n for n in nodes}
    cost = {row.name: row for row in audit.layers}
    consumers = _consumers(nodes)
    tapped = {t.node: t.name for t in graph.taps}
    outputs = set(graph.output_names)

    def follower(node: Node, prev: str) -> bool:
        """A MAC-free single-input layer keeping its input's type, after a layer only it reads."""
        return (len(node.inputs) == 1 and node.inputs[0] == prev and cost[node.name].macs == 0
                and types[node.name] == types[prev] and consumers.get(prev) == [node.name]
                and prev not in tapped and prev not in outputs and by_name[prev].part == node.part
                and not REGISTRY[node.op].extra_inputs and not REGISTRY[by_name[prev].op].returns_extra(
                    by_name[prev].attrs))

    folds: set[str] = set()  # layers drawn as a follower of the layer before them
    for node in nodes:
        if node.inputs and node.inputs[0] in by_name and follower(node, node.inputs[0]):
            folds.add(node.name)

    groups: list[_Group] = []
    if detail == "op":
        groups = [_Group("op", n.name, "", [n.name], title=_short(n.name)) for n in nodes]
    elif detail == "block":
        # Uses as deep as the author nested them, unless that draws more than BLOCK_VIEW_BOXES
        # boxes: then nested uses merge into their enclosing ones, one level at a time (TopFormer-T's
        # conv+BN blocks inside inverted residuals: 99 boxes with them, 29 merged into the residuals).
        deepest = max((len(n.origin) for n in nodes), default=0)
        for levels in [None, *range(deepest - 1, 0, -1)]:
            groups = _block_groups(nodes, types, by_name, consumers, tapped, outputs, folds, levels)
            if len(groups) <= BLOCK_VIEW_BOXES:
                break
    else:
        index: dict[tuple[str, Fraction], _Group] = {}
        for node in nodes:
            key = (node.part, types[node.name].grid_stride)
            if key not in index:
                name = "encoder" if node.part == "encoder" else head_word(resolved)
                index[key] = _Group("stage", f"{node.part}.stride{stride_text(key[1]).replace('/', '_')}",
                                    "", [], title=f"{name} stride {stride_text(key[1])}")
                groups.append(index[key])
            index[key].members.append(node.name)

    boxes: list[Box] = []
    box_of: dict[str, str] = {INPUT: INPUT}
    image = types[INPUT]
    boxes.append(Box(INPUT, "input", "input", "", (INPUT,), 1, "input", image, 0, 0, 0, ()))
    for grp in groups:
        member_nodes = [by_name[m] for m in grp.members]
        member_set = set(grp.members)
        outside = [m for m in grp.members
                   if any(c not in member_set for c in consumers.get(m, ())) or m in outputs]
        out_name = outside[-1] if outside else grp.members[-1]
        dil = sorted({d for n in member_nodes for d in (_pair(n.attrs.get("dilation")) or ()) if d > 1})
        details = tuple(f"{n.name} ({n.op}) {types[n.name]}; {_full_attrs(n)}".rstrip("; ")
                        for n in member_nodes)
        one_use = member_nodes[:len(member_nodes) // grp.repeat]
        summary = op_summary(one_use, types, (folds - {one_use[0].name}) if grp.kind != "stage" else set())
        if grp.kind == "stage":
            summary = ()
        if grp.kind == "chain" and len(member_nodes) > 1:
            tail = "+".join(n.op for n in member_nodes[1:])
            summary = (summary[0] + " +" + tail,) + summary[1:] if summary else (tail,)
        box_id = grp.key
        boxes.append(Box(
            box_id, grp.kind, grp.title, grp.block, tuple(grp.members), grp.repeat,
            member_nodes[0].part, types[out_name],
            sum(cost[m].params for m in grp.members), sum(cost[m].macs for m in grp.members),
            sum(cost[m].tf_flops for m in grp.members), summary,
            tuple(tapped[m] for m in grp.members if m in tapped), tuple(dil), details,
            tuple(name for name, node in graph.outputs if node in member_set)))
        for m in grp.members:
            box_of[m] = box_id

    links: list[Link] = []
    seen: set[tuple[str, str, str, bool]] = set()
    for node in nodes:
        op = REGISTRY[node.op]
        for pos, src in enumerate(node.inputs):
            a, b = box_of[src], box_of[node.name]
            extra = pos in op.extra_inputs
            key = (a, b, src, extra)
            if a == b or key in seen:
                continue
            seen.add(key)
            tap = tapped.get(src) if by_name.get(src) is not None and by_name[src].part != node.part else None
            links.append(Link(a, b, src, types[src], tap, extra))
    return Diagram(graph.name, detail, tuple(boxes), tuple(links), box_of)


def _short(name: str) -> str:
    """The name without its part prefix: 'encoder.ds3.pw' -> 'ds3.pw'."""
    return name.partition(".")[2] or name


def _signature(members: Sequence[Node], prefix: str, types: Mapping[str, TensorType],
               first_input: TensorType) -> tuple:
    """What makes two uses of a block identical: the same layers with the same attrs and shapes."""
    rows = []
    for node in members:
        rel = node.name[len(prefix):]
        attrs = tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))
        ins = tuple(("in" if not i.startswith(prefix) else i[len(prefix):]) for i in node.inputs)
        t = types[node.name]
        rows.append((rel, node.op, attrs, ins, (t.channels, t.height, t.width, t.strides)))
    return (first_input.channels, first_input.height, first_input.width, tuple(rows))


def _block_groups(nodes: Sequence[Node], types: Mapping[str, TensorType], by_name: Mapping[str, Node],
                  consumers: Mapping[str, list[str]], tapped: Mapping[str, str], outputs: set[str],
                  folds: set[str], levels: int | None = None) -> list[_Group]:
    """Block uses (nested at most ``levels`` deep) and chains, then consecutive identical uses
    folded into one group."""
    groups: list[_Group] = []
    use_group: dict[str, _Group] = {}
    chain_of: dict[str, _Group] = {}
    for node in nodes:
        use, block = block_use(node, levels)
        if use is not None:
            grp = use_group.get(use)
            if grp is None:
                grp = _Group("block", use, block, [], title=_short(use))
                use_group[use] = grp
                groups.append(grp)
            grp.members.append(node.name)
            continue
        if node.name in folds and node.inputs[0] in chain_of:
            grp = chain_of[node.inputs[0]]
            grp.members.append(node.name)
            grp.kind = "chain"
        else:
            grp = _Group("op", node.name, "", [node.name], title=_short(node.name))
            groups.append(grp)
        chain_of[node.name] = grp

    # Fold runs of identical consecutive uses: B joins A's box when B reads only A's output,
    # nothing else reads inside A, and both have the same layers, attributes and shapes.
    folded: list[_Group] = []
    last_sig: tuple | None = None
    for grp in groups:
        sig = None
        if grp.kind == "block":
            members = [by_name[m] for m in grp.members]
            member_set = set(grp.members)
            external = sorted({i for n in members for i in n.inputs if i not in member_set})
            if len(external) == 1:
                sig = (grp.block, _signature(members, grp.key + ".", types, types[external[0]]))
            prev = folded[-1] if folded else None
            if (sig is not None and prev is not None and prev.kind == "block" and sig == last_sig
                    and _reads_only_last(prev, external[0], consumers, member_set, tapped, outputs)):
                prev.members.extend(grp.members)
                prev.repeat += 1
                prev.title = _fold_title(prev.title, grp.title)
                continue
        folded.append(grp)
        last_sig = sig
    titles = [g.title for g in folded]
    for grp in folded:
        if grp.repeat > 1:
            whole = _whole_repeat(grp.title, grp.repeat)
            if not any(t != grp.title and t.startswith(whole + ".") for t in titles):
                grp.title = whole
    return folded


def _whole_repeat(title: str, repeat: int) -> str:
    """'ds7_11.1-5' folded 5 times is all of 'ds7_11' (a use with repeat: 5): say just that."""
    head, sep, last = title.rpartition("-")
    base, _, first = head.rpartition(".")
    if sep and first == "1" and last == str(repeat) and base:
        return base
    return title


def _reads_only_last(prev: _Group, external: str, consumers: Mapping[str, list[str]],
                     next_members: set[str], tapped: Mapping[str, str], outputs: set[str]) -> bool:
    """True when ``external`` is ``prev``'s output and nothing outside reads ``prev`` elsewhere."""
    if external not in prev.members:
        return False
    prev_set = set(prev.members)
    for m in prev.members:
        if m in outputs or m in tapped:
            return False
        for c in consumers.get(m, ()):
            if c in prev_set:
                continue
            if m != external or c not in next_members:
                return False
    return True


def _fold_title(first: str, last: str) -> str:
    """'ds7_11.1' + 'ds7_11.5' -> 'ds7_11.1-5'; 'stage2' + 'stage2b' -> 'stage2..stage2b'."""
    head = first.split("-")[0].split("..")[0]
    a, _, ai = head.rpartition(".")
    b, _, bi = last.rpartition(".")
    if a and a == b and ai.isdigit() and bi.isdigit():
        return f"{a}.{ai}-{bi}"
    return f"{head}..{last}"
