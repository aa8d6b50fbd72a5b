"""Graphviz DOT text for a diagram (``emit/diagram.py``): structure and cost at a glance.

What the picture shows, and why it is drawn this way:

* a header with the model, encoder x meta, input, classes, output stride and the totals
  (params, MACs, GFLOPs in the named convention), and a legend of the fill colours;
* one box per diagram box: its name, its key attributes (``conv 3x3 /2 dw``), output shape,
  parameters and MACs with their share of the total. The fill is a heat scale of that share in
  fixed bins (the same colour means the same share in every model, so two pictures compare);
* edges labelled C x H x W; where the decoder reads an encoder tap the edge is blue and names
  the tap, and the tapped box says so;
* stride levels as clusters ("encoder · stride 16 · 32x64"); for an encoder-decoder whose output
  is finer than its coarsest map, the decoder is laid out climbing back up beside the encoder
  (a "U"), so skip connections run sideways between clusters of the same stride instead of
  crossing the main column;
* dilated layers (after ``--output-stride``, or written so) get a purple border and say ``d2``;
* in SVG every box carries a tooltip listing each of its layers with all resolved attributes.

The text is a pure function of the analysis: nodes and edges are written in execution order,
numbers are formatted without locale or floating-point noise, nothing depends on dict or set
iteration order or on the Graphviz version, so the same spec gives byte-identical DOT (the
golden files under tests/golden/ hold it to that). Rendering needs Graphviz's ``dot``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

from ..ir import INPUT, TensorType, human, stride_text, strides_text
from .diagram import Box, Diagram, build_diagram, head_word, output_stride

__all__ = ["emit_dot", "diagram_dot", "HEAT_BINS", "heat_color", "RANKDIRS"]

RANKDIRS = ("TB", "LR")

#: Upper bounds of the heat bins (share of total MACs) and their fill / text colours:
#: ColorBrewer YlOrRd, 8 classes, white for layers without MACs.
HEAT_BINS: tuple[tuple[float, str, str], ...] = (
    (0.0, "#ffffff", "#000000"),
    (0.005, "#ffffcc", "#000000"),
    (0.01, "#ffeda0", "#000000"),
    (0.02, "#fed976", "#000000"),
    (0.05, "#feb24c", "#000000"),
    (0.10, "#fd8d3c", "#000000"),
    (0.20, "#fc4e2a", "#000000"),
    (0.40, "#e31a1c", "#ffffff"),
    (1.01, "#b10026", "#ffffff"),
)
_TAP = "#1f5fa8"
_DILATED = "#7b3294"
_PART_BORDER = {"encoder": "#4a6f94", "meta": "#b36b1e", "input": "#333333"}
_CLUSTER_BG = {"encoder": "#f3f7fb", "meta": "#fdf5ec"}
_CONVENTION_UNIT = {"mac": "MACs", "flop": "FLOPs", "tf": "FLOPs (tf)"}


def heat_color(share: float) -> tuple[str, str]:
    """(fill, font colour) for a box holding ``share`` (0..1) of the model's MACs."""
    if share <= 0:
        return HEAT_BINS[0][1], HEAT_BINS[0][2]
    for bound, fill, font in HEAT_BINS[1:]:
        if share <= bound:
            return fill, font
    return HEAT_BINS[-1][1], HEAT_BINS[-1][2]


def _html(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _quote(text: str) -> str:
    """A DOT double-quoted string (newlines as Graphviz's centred line break)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**items: Any) -> str:
    parts = []
    for key, value in items.items():
        if value is None:
            continue
        if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={_quote(str(value))}")
    return "[" + " ".join(parts) + "]" if parts else ""


def _hw(t: TensorType) -> str:
    return f"{t.height}x{t.width}"


def _percent(share: float) -> str:
    if share <= 0:
        return "0%"
    return f"{share:.1%}" if share >= 0.001 else "<0.1%"


def _wrap(items: Iterable[str], per_line: int = 3) -> list[str]:
    items = list(items)
    return [" · ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]


def _box_label(box: Box, total_macs: int) -> str:
    fill, font = heat_color(box.macs / total_macs if total_macs else 0.0)
    rows = []
    head = f"<B>{_html(box.title)}</B>"
    if box.block:
        head += f' <FONT POINT-SIZE="9">({_html(box.block)})</FONT>'
    if box.repeat > 1:
        head += f" <B>x {box.repeat}</B>"
    rows.append(head)
    for line in _wrap(box.summary):
        rows.append(f'<FONT POINT-SIZE="9">{_html(line)}</FONT>')
    if box.kind == "input":
        rows.append(f'<FONT POINT-SIZE="9">{box.output}</FONT>')
    else:
        share = box.macs / total_macs if total_macs else 0.0
        cost = f"{human(box.params)} params · {human(box.macs)} MACs ({_percent(share)})"
        rows.append(f'<FONT POINT-SIZE="9">out {box.output} · {_html(cost)}</FONT>')
    if box.dilations:
        rates = ", ".join(f"d{d}" for d in box.dilations)
        rows.append(f'<FONT POINT-SIZE="9" COLOR="{_DILATED if font == "#000000" else font}">'
                    f'dilated {rates}</FONT>')
    if box.outputs:
        rows.append(f'<FONT POINT-SIZE="9"><B>output {_html(", ".join(box.outputs))}</B></FONT>')
    if box.taps:
        color = _TAP if font == "#000000" else font
        rows.append(f'<FONT POINT-SIZE="9" COLOR="{color}"><B>tap {", ".join(box.taps)}</B></FONT>')
    body = "".join(f"<TR><TD>{r}</TD></TR>" for r in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{body}</TABLE>>'


def _tooltip(box: Box) -> str:
    lines = [f"{box.title}" + (f" ({box.block})" if box.block else "")
             + (f" x {box.repeat}" if box.repeat > 1 else "")]
    lines.append(f"output {box.output}, stride {strides_text(box.output)}; params {box.params:,}; "
                 f"MACs {box.macs:,}")
    shown = box.details if len(box.details) <= 60 else box.details[:59] + (
        f"... and {len(box.details) - 59} more layers",)
    lines.extend(shown)
    return "\n".join(lines)


def _header(analysis: Any, diagram: Diagram, convention: str) -> str:
    """The graph label: model facts and totals on top, the heat legend under them."""
    graph, audit = analysis.graph, analysis.audit
    files = graph.files
    enc = Path(files["encoder"]).stem if "encoder" in files else ""
    meta = Path(files["meta"]).stem if "meta" in files else ""
    arch = f"{enc} x {meta}" if enc and meta else (enc or meta or "")
    _, c, h, w = audit.input
    out_stride = stride_text(output_stride(analysis.resolved))
    value = audit.total(convention)
    unit = _CONVENTION_UNIT[convention]
    facts = [f"<B>{_html(graph.name)}</B>" + (f" · {_html(arch)}" if arch else "")]
    line = f"input {c}x{h}x{w}"
    if graph.num_classes:
        line += f" · {graph.num_classes} classes"
    line += f" · output stride {out_stride} · {diagram.detail} view"
    facts.append(line)
    facts.append(f"params {audit.params:,} ({human(audit.params)}) · MACs {audit.macs:,} "
                 f"({human(audit.macs)}) · {unit} {value:,} (G{unit.split(' ')[0]} "
                 f"{value / 1e9:.2f}, convention {convention})")
    rows = "".join(f'<TR><TD COLSPAN="{len(HEAT_BINS) + 1}" ALIGN="LEFT">{f}</TD></TR>' for f in facts)
    swatches = ['<TD ALIGN="RIGHT"><FONT POINT-SIZE="9">fill = share of MACs:</FONT></TD>']
    lower = 0.0
    for i, (bound, fill, font) in enumerate(HEAT_BINS):
        if i == 0:
            text = "0"
        elif i == len(HEAT_BINS) - 1:
            text = f"&gt;{lower:.0%}"
        else:
            text = f"≤{bound:.1%}".replace(".0%", "%")
        swatches.append(f'<TD BGCOLOR="{fill}" BORDER="1"><FONT POINT-SIZE="9" COLOR="{font}">'
                        f'{text}</FONT></TD>')
        lower = bound
    legend = "<TR>" + "".join(swatches) + "</TR>"
    keys = (f'<TR><TD COLSPAN="{len(HEAT_BINS) + 1}" ALIGN="LEFT"><FONT POINT-SIZE="9">'
            f'<FONT COLOR="{_TAP}"><B>blue</B></FONT>: the decoder reads an encoder tap · '
            f'<FONT COLOR="{_DILATED}"><B>purple border</B></FONT>: dilated layers · '
            f'dashed: max-pool indices · boxes grouped by stride (input H/stride x W/stride)'
            f'</FONT></TD></TR>')
    return (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">{rows}{legend}{keys}'
            f'</TABLE>>')


def diagram_dot(analysis: Any, detail: str = "block", rankdir: str = "TB",
                convention: str = "flop") -> str:
    """The DOT text of ``analysis`` (a pipeline Analysis) at one level of detail."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    diagram = build_diagram(analysis, detail)
    audit = analysis.audit
    total = audit.macs
    unit = _CONVENTION_UNIT[convention]
    boxes = {b.id: b for b in diagram.boxes}
    deepest = max((b.stride for b in diagram.boxes), default=Fraction(1))
    # A model may name several outputs (``outputs:``); the finest decides the layout.
    outputs = analysis.graph.output_names
    final = min((boxes[diagram.box_of[o]] for o in outputs if o in diagram.box_of),
                key=lambda b: b.stride, default=boxes[INPUT])
    # The "U": the decoder climbs back up when it ends finer than the coarsest map.
    u_layout = any(b.part == "meta" for b in diagram.boxes) and final.stride < deepest

    lines = [f"digraph {_quote(diagram.name)} {{"]
    lines.append(f"  graph {_attrs(rankdir=rankdir, fontname='Helvetica', fontsize='11', labelloc='t', labeljust='l', newrank='true', nodesep='0.25', ranksep='0.3', label=_header(analysis, diagram, convention))}")
    lines.append(f"  node {_attrs(shape='box', style='rounded,filled', fontname='Helvetica', fontsize='10', margin='0.08,0.04')}")
    lines.append(f"  edge {_attrs(fontname='Helvetica', fontsize='8', color='#555555', fontcolor='#444444', arrowsize='0.6')}")

    def node_line(box: Box, indent: str) -> str:
        fill, font = heat_color(box.macs / total if total else 0.0)
        border = _DILATED if box.dilations else _PART_BORDER.get(box.part, "#333333")
        return (f"{indent}{_quote(box.id)} "
                + _attrs(label=_box_label(box, total), fillcolor=fill, fontcolor=font,
                         color=border, penwidth="2.5" if box.dilations else "1",
                         shape="oval" if box.kind == "input" else None,
                         tooltip=_tooltip(box)))

    # Clusters: one per (part, stride), in order of first appearance.
    order: list[tuple[str, Fraction]] = []
    members: dict[tuple[str, Fraction], list[Box]] = {}
    for box in diagram.boxes:
        if box.kind == "input":
            continue
        key = (box.part, box.stride)
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(box)
    lines.append("  " + node_line(boxes[INPUT], "").strip())
    coarsest = output_stride(analysis.resolved)
    for n, key in enumerate(order):
        part, stride = key
        where = "encoder" if part == "encoder" else head_word(analysis.resolved)
        size = ""
        t = members[key][0].output
        size = f" · {_hw(t)}"
        if detail == "stage":
            lines.extend(node_line(b, "  ") for b in members[key])
            continue
        cluster = f"cluster_{n}_{part}_" + stride_text(stride).replace("/", "_")
        lines.append(f"  subgraph {_quote(cluster)} {{")
        level = f"stride {stride_text(stride)}"
        if t.height == t.width == 1 and stride > coarsest:
            level = "global"  # pooled to 1x1: its 'stride' is the input size, which misleads
        lines.append(f"    graph {_attrs(label=f'{where} · {level}{size}', style='rounded,filled', fillcolor=_CLUSTER_BG.get(part, '#f5f5f5'), color='#bbbbbb', fontsize='10', fontcolor='#555555', labeljust='l')}")
        lines.extend(node_line(b, "    ") for b in members[key])
        lines.append("  }")

    same_rank: list[tuple[str, str]] = []
    aligned: set[str] = set()
    # The encoder's last box feeds the decoder's start: the bottom of the "U".
    main_src = next((b.id for b in reversed(diagram.boxes) if b.part == "encoder"), INPUT)
    labelled: set[tuple[str, bool]] = set()
    for link in diagram.links:
        src, dst = boxes[link.src], boxes[link.dst]
        # A tensor read by several boxes is labelled once: repeated labels pile up on each other.
        first = (link.tensor, link.extra, dst.part) not in labelled
        labelled.add((link.tensor, link.extra, dst.part))
        label = str(link.type)
        style: dict[str, Any] = {}
        if link.extra:
            label = f"indices {link.type.height}x{link.type.width}"
            style.update(style="dashed")
        if link.tap:
            label = f"{link.tap}\n{label}"  # two short lines: a long one collided with others
            style.update(color=_TAP, fontcolor=_TAP, penwidth="1.5")
        reverse = False
        if src.part == dst.part and not link.extra:
            style.update(weight="8")  # keep each column straight; skips bend instead
        if u_layout:
            if src.part == "meta" and dst.part == "meta":
                reverse = True
            elif src.part != "meta" and dst.part == "meta" and src.id != main_src:
                # A skip: drawn sideways to the decoder box at the same height (a flat edge,
                # which also puts the encoder left of the decoder), never pulling the decoder
                # down; one alignment per decoder box, or they could conflict.
                if src.id != INPUT and first and dst.id not in aligned:
                    aligned.add(dst.id)
                    same_rank.append((src.id, dst.id))
                else:
                    style.update(constraint="false")
        if src.id == INPUT and dst.part == "meta":
            # The image read again by the decoder (a crop to its size): a reference, not data flow.
            style.update(style="dotted", color="#aaaaaa", fontcolor="#999999")
        if not first and src.part != dst.part:
            label = ""
        label_key = "label"
        if reverse:
            lines.append(f"  {_quote(dst.id)} -> {_quote(src.id)} "
                         + _attrs(**{label_key: label or None}, dir="back", **style))
        else:
            lines.append(f"  {_quote(src.id)} -> {_quote(dst.id)} "
                         + _attrs(**{label_key: label or None}, **style))
    for a, b in same_rank:
        lines.append(f"  {{rank=same; {_quote(a)}; {_quote(b)}}}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def emit_dot(resolved: Any, detail: str = "op", rankdir: str = "TB", convention: str = "flop") -> Any:
    """A ``graphviz.Source`` for a resolved graph (kept for callers of the old API).

    ``detail`` defaults to ``op``, what this function drew before levels of detail existed; the
    result has ``.source`` and ``.pipe(format=...)`` like the ``graphviz.Digraph`` it used to be.
    """
    import graphviz

    from ..passes.count import count
    from ..pipeline import Analysis

    analysis = Analysis(resolved.graph, resolved, count(resolved))
    return graphviz.Source(diagram_dot(analysis, detail, rankdir, convention))
