"""A study's report: ``study.json`` (everything, per-class IoU included), ``study.csv``, ``study.md``, plots.

``study.md`` has the trial table, the RTSeg paper's Table-2 layout (encoder rows x decoder columns; a
cell is mIoU and GFLOPs, averaged over seeds), the counts (trained, over budget, stopped early,
failed, with each failure's error) and, with matplotlib (the ``[plot]`` extra), two plots: mIoU against
GFLOPs and against measured latency, with the Pareto front (no other trial both cheaper and better)
drawn as a line. Trials stopped early by a search are drawn as crosses and left off the front, since
their mIoU comes from a shorter run. Without matplotlib the plots are skipped and the report says so.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["pareto_front", "table2", "write_report"]

_CSV_COLUMNS = ("name", "status", "encoder", "meta", "variant", "seed", "params", "macs", "gflops", "miou",
                "pixel_accuracy", "latency_ms", "images_per_s", "steps", "best_step", "wall_s", "error")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: cost (x) not higher and score (y) not lower, one of
    them strictly. Sorted by cost."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _scored(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status") in ("ok", "stopped") and r.get("miou") is not None]


def table2(rows: Sequence[Mapping[str, Any]], unit: str) -> str:
    """Encoder rows x decoder (meta) columns, as the paper's Table 2; a cell with several variants
    (parameter values, output strides) lists each."""
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    metas = list(dict.fromkeys(r["meta"] for r in rows))
    cells: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for r in rows:
        cells.setdefault((r["encoder"], r["meta"]), {}).setdefault(r.get("variant") or "", []).append(r)
    lines = ["| encoder | " + " | ".join(metas) + " |", "|---|" + "---:|" * len(metas)]
    for enc in encoders:
        out = []
        for meta in metas:
            parts = []
            variants = cells.get((enc, meta), {})
            for variant, group in variants.items():
                scores = [g["miou"] for g in _scored(group)]
                miou = sum(scores) / len(scores) if scores else None
                seeds = f" ({len(scores)} seeds)" if len(scores) > 1 else ""
                text = f"{_pct(miou)} % / {group[0]['gflops']:.2f}{seeds}"
                if not scores:
                    text = f"{group[0]['status']} / {group[0]['gflops']:.2f}"
                parts.append(f"{variant}: {text}" if variant and len(variants) > 1 else text)
            out.append("<br>".join(parts) or " ")
        lines.append(f"| {enc} | " + " | ".join(out) + " |")
    lines.append(f"\nCells: mIoU on the evaluation split / {unit} at the audit input.")
    return "\n".join(lines)


def _plot(rows: Sequence[Mapping[str, Any]], key: str, label: str, path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in _scored(rows) if r.get(key) is not None]
    if not scored:
        return False
    # Trials stopped early are drawn, but their mIoU is that of a shorter run: they are not on the front.
    full = [r for r in scored if r["status"] == "ok"]
    stopped = [r for r in scored if r["status"] != "ok"]
    points = [(float(r[key]), 100 * float(r["miou"])) for r in full]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
    if stopped:
        ax.scatter([float(r[key]) for r in stopped], [100 * float(r["miou"]) for r in stopped],
                   color="tab:gray", marker="x", zorder=3, label="stopped early")
    for r in full + stopped:
        ax.annotate(r["name"], (float(r[key]), 100 * float(r["miou"])), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    front = pareto_front(points)
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red", linestyle="--",
                marker="o", markerfacecolor="none", markersize=11, label="Pareto front", zorder=2)
    ax.set_xlabel(label)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.12)  # room for the trial names beside the outermost points
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _counts(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, int] | None) -> dict[str, int]:
    counts = {"trials": len(rows), "completed": sum(r.get("status") == "ok" for r in rows),
              "over_budget": sum(r.get("status") == "over_budget" for r in rows),
              "stopped_early": sum(r.get("status") == "stopped" for r in rows),
              "failed": sum(r.get("status") == "failed" for r in rows),
              "not_run": sum(r.get("status") in (None, "pending", "running") for r in rows)}
    counts.update(extra or {})
    return counts


def write_report(folder: str | Path, study: Any, rows: Sequence[Mapping[str, Any]], *,
                 extra_counts: Mapping[str, int] | None = None, notes: Sequence[str] = (),
                 plots: bool = True,
                 table_rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Write the report files into ``folder``; returns their paths by kind. ``plots=False`` leaves the
    plots out (the partial report written after each trial); ``table_rows`` (default: all rows) are
    the rows of the Table-2 layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unit = {"mac": "GMACs", "flop": "GFLOPs", "tf": "GFLOPs (tf)"}[study.convention]
    size = study.audit_input
    at = f" at {size[0]}x{size[1]}" if size else ""
    bench = study.bench.get("inputs") or []
    bench_at = f" at {bench[0][0]}x{bench[0][1]}" if bench else ""
    counts = _counts(rows, extra_counts)
    paths = {"json": folder / "study.json", "csv": folder / "study.csv", "md": folder / "study.md"}

    summary = {"study": study.name, "source": study.source, "convention": study.convention,
               "audit_input": size, "counts": counts, "trials": list(rows)}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else r.get(c) for c in _CSV_COLUMNS])
    paths["csv"].write_text(buffer.getvalue())

    drawn, plot_note = [], None
    try:
        if not plots:
            raise ImportError
        import matplotlib  # noqa: F401
    except ImportError:
        if plots:
            plot_note = "Plots skipped: matplotlib is not installed (pip install 'rtseg-compiler[plot]')."
    else:
        for key, label, name in (("gflops", f"{unit}{at}", "miou_vs_gflops.png"),
                                 ("latency_ms", f"latency (ms){bench_at}", "miou_vs_latency.png")):
            if _plot(rows, key, label, folder / name, f"{study.name}: mIoU vs {label}"):
                drawn.append(name)
                paths[name] = folder / name

    md = [f"# Study {study.name}", "", f"From `{study.source}`; dataset `{study.dataset}`"
          f"{', evaluation split ' + study.eval.get('split', 'val')}. {unit}{at} from the analytic audit; "
          f"latency measured{bench_at} (median, batch {study.bench.get('batch', 1)}, "
          f"{study.bench.get('dtype', 'float32')}, {study.bench.get('device', 'cpu')}).", "",
          f"| trial | status | params (M) | {unit} | mIoU (%) | pixel acc. (%) | latency (ms) | images/s "
          "| steps |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['name']} | {r.get('status')} | {r['params'] / 1e6:.3f} | {r['gflops']:.2f} | "
                  f"{_pct(r.get('miou'))} | {_pct(r.get('pixel_accuracy'))} | "
                  f"{_num(r.get('latency_ms'), '.2f')} | "
                  f"{_num(r.get('images_per_s'), '.1f')} | {r.get('steps', '-')} |")
    layout = table2(rows if table_rows is None else table_rows, unit)
    md += ["", "## Table 2 layout", "", layout, "", "## Counts", ""]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items()]
    failures = [r for r in rows if r.get("status") in ("failed", "over_budget")]
    if failures:
        md += ["", "## Not trained or failed", ""]
        md += [f"- {r['name']}: {r.get('error') or r.get('over_budget')}" for r in failures]
    if drawn or plot_note:
        md += ["", "## Plots", ""]
        md += [f"![{p}]({p})" for p in drawn] if drawn else [plot_note]
    if notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    paths["md"].write_text("\n".join(md) + "\n")
    return paths
