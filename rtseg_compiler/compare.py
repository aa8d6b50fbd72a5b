"""Side-by-side comparison of architectures: ``rtsegc compare MODEL... [--input HxW ...]``.

One row per model and input size, with the numbers the RTSeg paper's Tables 2-3 compare
(parameters, GFLOPs) and what a deployment also needs (peak activation memory, and with
``--bench`` the measured latency). Rows are plain dicts whose keys are those of
``rtsegc flops --json`` (``model``, ``input``, ``params``, ``macs``, ``flops``, ``tf_flops``,
``total``, ``convention`` ...) plus the comparison's own, so a script reading one reads both.

Peak activation memory (``peak_activation_bytes``), precisely: run the layers one at a time in
the graph's execution order (the order the emitted torch.fx module runs them). While layer k
runs, the live tensors are (a) the input image, until its last reader has run, (b) every
earlier layer's output that layer k or a later layer still reads, (c) layer k's own output,
and (d) the model's outputs, which are never freed. A layer whose output is a view of its input
(``OpDef.output_is_view``: crop, split, identity, dropout) adds no bytes of its own; it keeps its
input's storage alive for as long as the view is read. A layer that also returns max-pool indices
keeps them live until their last reader, at 8 bytes (int64) per element. Feature maps count 4
bytes (float32) per element, for one image. The peak is the largest live total over all k.
This is what an inference run (``no_grad``, no in-place ops) must hold at once; torch.fx's
generated ``forward`` drops each intermediate after its last use, which is exactly this
schedule. Weights, gradients, allocator rounding and convolution workspaces are not included.

Pure Python except ``--bench`` (``latency.py``, torch) and ``--plot`` (matplotlib, the
optional ``[plot]`` extra), both imported only when asked for.
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

from .ir import INPUT, stride_text
from .ops import REGISTRY
from .passes.count import CONVENTIONS

__all__ = ["peak_activation_bytes", "compare_row", "stage_split", "render_table", "render_markdown",
           "render_csv", "render_json", "place_labels", "plot_rows", "FLOAT_BYTES", "INDEX_BYTES"]

#: float32 feature maps.
FLOAT_BYTES = 4
#: int64 max-pool indices (torch.nn.MaxPool2d(return_indices=True)).
INDEX_BYTES = 8

_UNIT = {"mac": "GMACs", "flop": "GFLOPs", "tf": "GFLOPs (tf)"}


def peak_activation_bytes(analysis: Any) -> int:
    """The peak of live activation bytes over an execution in graph order (module docstring)."""
    resolved = analysis.resolved
    graph, types = resolved.graph, resolved.types
    nodes = graph.nodes
    end = len(nodes)
    last_read: dict[str, int] = {}
    last_extra: dict[str, int] = {}
    for k, node in enumerate(nodes):
        extra_positions = REGISTRY[node.op].extra_inputs
        for pos, src in enumerate(node.inputs):
            target = last_extra if pos in extra_positions else last_read
            target[src] = max(target.get(src, -1), k)
    for name in graph.output_names:
        last_read[name] = end
    # A view (a crop's slice, an identity, eval-mode dropout) allocates nothing: its bytes are its
    # base's, whose storage then lives until the view's last reader too.
    base_of = {INPUT: INPUT}
    produced = {INPUT: -1}
    for k, node in enumerate(nodes):
        produced[node.name] = k
        view = REGISTRY[node.op].output_is_view and node.inputs
        base_of[node.name] = base_of[node.inputs[0]] if view else node.name
    storage_end: dict[str, int] = {}
    for name, base in base_of.items():
        storage_end[base] = max(storage_end.get(base, -1), last_read.get(name, produced[name]))
    # Each storage is live on [produced, last read of it or of a view of it]; the image from before step 0.
    intervals: list[tuple[int, int, int]] = []
    for base, stop in storage_end.items():
        start = produced[base]
        intervals.append((start, max(start, stop), types[base].numel * FLOAT_BYTES))
    for k, node in enumerate(nodes):
        if REGISTRY[node.op].returns_extra(node.attrs):
            intervals.append((k, max(k, last_extra.get(node.name, k)), types[node.name].numel * INDEX_BYTES))
    delta = [0] * (end + 3)
    for start, stop, size in intervals:
        delta[start + 1] += size
        delta[stop + 2] -= size
    peak = live = 0
    for step in range(end + 2):
        live += delta[step]
        peak = max(peak, live)
    return peak


def stage_split(analysis: Any) -> dict[str, Any]:
    """Encoder vs decoder params/MACs and MACs per stride level (a layer's output stride; a row
    map's along its axis on the image grid, ``LayerAudit.grid_stride``)."""
    graph = analysis.graph
    split = {"encoder": {"params": 0, "macs": 0}, "decoder": {"params": 0, "macs": 0}}
    by_stride: dict[Fraction, int] = {}
    for layer in analysis.audit.layers:
        part = "encoder" if graph.node(layer.name).part == "encoder" else "decoder"
        split[part]["params"] += layer.params
        split[part]["macs"] += layer.macs
        by_stride[layer.grid_stride] = by_stride.get(layer.grid_stride, 0) + layer.macs
    split["macs_by_stride"] = {stride_text(s): by_stride[s] for s in sorted(by_stride)}
    return split


def compare_row(analysis: Any, convention: str = "flop", *, spec: str | None = None,
                by_stage: bool = False) -> dict[str, Any]:
    """One row: the keys of ``rtsegc flops --json`` without per-layer rows, plus peak memory."""
    row = analysis.audit.to_json(convention)
    row.pop("layers")
    if spec is not None:
        row["spec"] = spec
    row["peak_activation_bytes"] = peak_activation_bytes(analysis)
    if by_stage:
        row.update(stage_split(analysis))
    return row


# --------------------------------------------------------------------------- rendering

def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _strides(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: set[Fraction] = set()
    for row in rows:
        seen.update(Fraction(s) for s in row.get("macs_by_stride", {}))
    return [stride_text(s) for s in sorted(seen)]


def _columns(rows: Sequence[Mapping[str, Any]], convention: str) -> list[tuple[str, Any, bool]]:
    """(header, row -> cell text, right-aligned) for the human-readable tables."""
    cols: list[tuple[str, Any, bool]] = [
        ("model", lambda r: r["model"], False),
        ("input", lambda r: f"{r['input'][2]}x{r['input'][3]}", False),
        ("params (M)", lambda r: f"{r['params'] / 1e6:.3f}", True),
        ("GMACs", lambda r: f"{r['macs'] / 1e9:.2f}", True),
    ]
    if convention != "mac":
        cols.append((_UNIT[convention], lambda r: f"{r['total'] / 1e9:.2f}", True))
    cols.append(("peak act. (MiB)", lambda r: _mib(r["peak_activation_bytes"]), True))
    if rows and "encoder" in rows[0]:
        cols.append(("enc GMACs", lambda r: f"{r['encoder']['macs'] / 1e9:.2f}", True))
        cols.append(("dec GMACs", lambda r: f"{r['decoder']['macs'] / 1e9:.2f}", True))
        for s in _strides(rows):
            cols.append((f"@{s}", lambda r, s=s: _share(r, s), True))
    if rows and "latency_ms" in rows[0]:
        cols.append(("latency (ms)", lambda r: f"{r['latency_ms']:.2f}", True))
        cols.append(("images/s", lambda r: f"{r['fps']:.1f}", True))
    return cols


def _share(row: Mapping[str, Any], stride: str) -> str:
    macs = row["macs_by_stride"].get(stride, 0)
    return f"{macs / row['macs']:.0%}" if row["macs"] and macs else "-"


def _footer(rows: Sequence[Mapping[str, Any]], convention: str) -> list[str]:
    notes = [f"convention {convention}: {CONVENTIONS[convention]}",
             "peak act.: largest float32 activation total live at once, one image (docs/diagrams.md)"]
    if rows and "encoder" in rows[0]:
        notes.append("@S: share of MACs in layers whose output has stride S")
    if rows and "latency_ms" in rows[0]:
        r = rows[0]
        notes.append(f"latency: median forward of batch {r['batch_size']} on {r['device']} "
                     f"({r['dtype']}), images/s = batch / latency")
    return notes


def render_table(rows: Sequence[Mapping[str, Any]], convention: str) -> str:
    cols = _columns(rows, convention)
    cells = [[h for h, _, _ in cols]] + [[f(r) for _, f, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = []
    for k, line in enumerate(cells):
        lines.append("  ".join(c.rjust(widths[i]) if cols[i][2] else c.ljust(widths[i])
                               for i, c in enumerate(line)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [""] + _footer(rows, convention)) + "\n"


def render_markdown(rows: Sequence[Mapping[str, Any]], convention: str) -> str:
    cols = _columns(rows, convention)
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |",
             "|" + "|".join("---:" if right else "---" for _, _, right in cols) + "|"]
    lines += ["| " + " | ".join(f(r) for _, f, _ in cols) + " |" for r in rows]
    return "\n".join(lines + [""] + [f"{n}." if not n.endswith(".") else n
                                     for n in _footer(rows, convention)]) + "\n"


def render_csv(rows: Sequence[Mapping[str, Any]], convention: str) -> str:
    """Exact integers, one column per key; nested keys flattened as encoder_macs, macs_stride_8."""
    flat = []
    for r in rows:
        out: dict[str, Any] = {}
        for key, value in r.items():
            if key in ("convention_note",):
                continue
            if key == "input" or key == "output_shape":
                out[key] = "x".join(map(str, value))
            elif key in ("encoder", "decoder"):
                for k, v in value.items():
                    out[f"{key}_{k}"] = v
            elif key == "macs_by_stride":
                for s in _strides(rows):
                    out[f"macs_stride_{s.replace('/', '_')}"] = value.get(s, 0)
            else:
                out[key] = value
        flat.append(out)
    fields: list[str] = []
    for r in flat:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def render_json(rows: Sequence[Mapping[str, Any]], convention: str) -> str:
    return json.dumps(list(rows), indent=2) + "\n"


# --------------------------------------------------------------------------- plot

#: Where a point's label may go, in points from the point, tried in order: right, left, above,
#: below, then the same further out (joined to the point by a thin line).
_LABEL_OFFSETS = [(5, -3), (-5, -3), (0, 6), (0, -12), (5, 8), (5, -14), (-5, 8), (-5, -14),
                  (14, -3), (-14, -3), (0, 18), (0, -24), (14, 16), (14, -22), (-14, 16), (-14, -22),
                  (26, 4), (-26, 4), (26, -10), (-26, -10), (0, 30), (0, -36)]


def place_labels(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> list[Any]:
    """Annotate each point with its label where it overlaps no label placed before it and no point.

    Greedy: points are labelled left to right, each at the first offset of ``_LABEL_OFFSETS``
    whose text box (measured by the renderer) is free and inside the axes. A label with no free
    place keeps the last candidate. Returns the annotations.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    inside = ax.get_window_extent(renderer)
    placed: list[Any] = []
    boxes: list[Any] = []
    for k in sorted(range(len(labels)), key=lambda i: (xs[i], ys[i])):
        for n, (dx, dy) in enumerate(_LABEL_OFFSETS):
            far = n >= 8
            text = ax.annotate(labels[k], (xs[k], ys[k]), textcoords="offset points", xytext=(dx, dy),
                               fontsize=7, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                               arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if far else None)
            box = text.get_window_extent(renderer).expanded(1.02, 1.1)
            free = (not any(box.overlaps(b) for b in boxes)
                    and not any(box.contains(px, py) for j, (px, py) in enumerate(points) if j != k)
                    and inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1))
            if free or n == len(_LABEL_OFFSETS) - 1:
                boxes.append(box)
                placed.append(text)
                break
            text.remove()
    return placed


def plot_rows(rows: Sequence[Mapping[str, Any]], convention: str, out: Path) -> None:
    """GFLOPs against params (one labelled point per row) and MACs by stride level per row.

    Needs matplotlib (``pip install -e ".[plot]"``); the caller checks it is importable first.
    Written with a fixed SVG hash salt and no date, so the same rows give the same file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "rtsegc"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, and smaller
    sizes = sorted({(r["input"][2], r["input"][3]) for r in rows})
    several_sizes = len(sizes) > 1
    labels = [r["model"] + (f" @{r['input'][2]}x{r['input'][3]}" if several_sizes else "") for r in rows]
    at = "" if several_sizes else f" at {sizes[0][0]}x{sizes[0][1]}"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(4.5, 0.38 * len(rows) + 1.5)),
                                   gridspec_kw={"width_ratios": [1, 1.2]})
    xs = [r["params"] / 1e6 for r in rows]
    ys = [r["total"] / 1e9 for r in rows]
    ax1.scatter(xs, ys, color="#d95f02", zorder=3)
    ax1.set_xlabel("parameters (M)")
    ax1.set_ylabel(_UNIT[convention])
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.set_title(f"{_UNIT[convention]} vs parameters{at}")
    # Widen the data limits so that labels placed beside the outermost points stay inside.
    ax1.margins(x=0.25, y=0.15)

    # Shares, not absolute MACs: models differ 100-fold in cost, and the question is where each
    # spends its compute; the total is written at the end of each bar.
    strides = sorted({Fraction(s) for r in rows for s in r["macs_by_stride"]})
    cmap = plt.get_cmap("viridis")
    lefts = [0.0] * len(rows)
    for i, s in enumerate(strides):
        key = stride_text(s)
        widths = [100.0 * r["macs_by_stride"].get(key, 0) / r["macs"] if r["macs"] else 0.0 for r in rows]
        ax2.barh(range(len(rows)), widths, left=lefts, color=cmap(i / max(1, len(strides) - 1)),
                 label=f"stride {key}", edgecolor="white", linewidth=0.5)
        lefts = [a + b for a, b in zip(lefts, widths)]
    for y, r in enumerate(rows):
        ax2.text(101, y, f"{r['macs'] / 1e9:.2f} GMACs", va="center", fontsize=7)
    ax2.set_xlim(0, 118)
    ax2.set_xticks([0, 20, 40, 60, 80, 100])
    ax2.set_yticks(range(len(rows)))
    ax2.set_yticklabels(labels, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("share of the model's MACs (%)")
    ax2.set_title(f"MACs by stride level (stride of the layer's output){at}")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.45, -0.12), ncol=len(strides),
               frameon=False)
    fig.tight_layout()
    place_labels(ax1, xs, ys, labels)  # last: it measures the labels where the layout put the axes
    fig.savefig(out, metadata={"Date": None} if out.suffix.lower() == ".svg" else None)
    plt.close(fig)
