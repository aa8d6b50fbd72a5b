"""Watching a run: a progress bar or plain lines, TensorBoard scalars, and ``summary.md`` at the end.

- On a terminal with tqdm installed (the ``[watch]`` extra), a bar shows loss, lr, images/s and the ETA;
  off a terminal (CI logs, ``nohup``) plain ``step N: ...`` lines every ``--log-interval`` steps, which
  a log file keeps readable (a bar's carriage returns do not).
- ``--tensorboard`` writes scalars through ``torch.utils.tensorboard`` (needs the ``tensorboard``
  package); without it the run stops before training with a one-line error, not halfway.
- ``summary.md`` holds the final per-class table and, with matplotlib (the ``[plot]`` extra), the
  loss/mIoU curves as an SVG next to it; without matplotlib the summary says so.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["Progress", "metrics_markdown", "side_by_side", "tensorboard_writer", "write_summary"]


class Progress:
    def __init__(self, total: int, initial: int, mode: str, log_interval: int, enabled: bool = True) -> None:
        self.log_interval, self.enabled, self.bar = max(1, log_interval), enabled, None
        if not enabled:
            return
        # A terminal that reports zero columns (a pty opened without a window size, as some container
        # and CI tools do) gets lines in auto mode: a bar redrawn with carriage returns at width 0
        # shows nothing readable there. An explicit --progress bar is drawn 80 columns wide.
        columns = _terminal_columns()
        if mode == "bar" or (mode == "auto" and sys.stdout.isatty() and columns > 0):
            try:
                from tqdm import tqdm
            except ImportError:
                if mode == "bar":
                    print("warning: --progress bar needs tqdm (pip install tqdm); printing lines",
                          file=sys.stderr)
            else:
                width = {"dynamic_ncols": True} if columns > 0 else {"ncols": 80}
                self.bar = tqdm(total=total, initial=initial, unit="step", **width)

    def step(self, it: int, loss: float, lr: float, images_per_s: float, ms: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{images_per_s:.1f}",
                                 refresh=False)
            self.bar.update(1)
        elif it % self.log_interval == 0 or it == 1:
            print(f"step {it}: loss {loss:.4f}, lr {lr:.3g}, {ms:.0f} ms, {images_per_s:.1f} images/s",
                  flush=True)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _terminal_columns() -> int:
    """Columns of the terminal the bar is drawn on (tqdm writes to stderr); 0 if it reports none."""
    for stream in (sys.stderr, sys.stdout):
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return 0


def tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RuntimeError(f"--tensorboard needs the tensorboard package (pip install tensorboard): {exc}") \
            from None
    return SummaryWriter(str(folder))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """A Markdown table of per-class IoU/accuracy from ``SegMetrics.to_json`` output, then the means."""
    lines = ["| class | IoU % | accuracy % |", "|---|---:|---:|"]
    for name, iou in metrics.get("iou", {}).items():
        lines.append(f"| {name} | {_pct(iou)} | {_pct(metrics.get('class_accuracy', {}).get(name))} |")
    lines += ["", f"- mIoU: **{_pct(metrics.get('miou'))} %**",
              f"- pixel accuracy: {_pct(metrics.get('pixel_accuracy'))} %",
              f"- mean class accuracy: {_pct(metrics.get('mean_class_accuracy'))} %"]
    if metrics.get("category_iou"):
        lines += ["", "| category | IoU % |", "|---|---:|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in metrics["category_iou"].items()]
        lines.append(f"\n- category mIoU: {_pct(metrics.get('category_miou'))} %")
    return "\n".join(lines)


def _svg_curves(records: Sequence[Mapping[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [r["iter"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval"] for r in records if "eval" in r]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(steps, losses, lw=0.8)
    ax[0].set(xlabel="step", ylabel="training loss", title="loss")
    ax[1].plot([e["iter"] for e in evals], [100 * (e.get("miou") or 0) for e in evals], marker="o")
    ax[1].set(xlabel="step", ylabel="val mIoU %", title="mIoU")
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return True


def write_summary(out_dir: Path, title: str, last_eval: Mapping[str, Any] | None) -> Path:
    """``out_dir/summary.md`` from ``out_dir/log.jsonl`` and the last evaluation."""
    log = out_dir / "log.jsonl"
    text = log.read_text() if log.exists() else ""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    lines = [f"# {title}", ""]
    if last_eval:
        lines += [f"Final evaluation at step {last_eval.get('iter')} (validation loss "
                  f"{last_eval.get('val_loss') if last_eval.get('val_loss') is not None else '-'}):", "",
                  metrics_markdown(last_eval), ""]
    else:
        lines += ["No evaluation ran.", ""]
    if _svg_curves(records, out_dir / "curves.svg"):
        lines += ["![loss and mIoU](curves.svg)", ""]
    else:
        lines += ["(Curves not drawn: matplotlib is not installed; `pip install matplotlib`, the [plot] "
                  "extra. The numbers are in log.jsonl.)", ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def side_by_side(image, truth, pred, spec, ignore_index: int = 255):
    """uint8 (3, H, 3W) tensor: the de-normalised image, the ground truth and the prediction in the
    dataset's palette (ignored pixels black), for TensorBoard's ``add_image`` at each evaluation."""
    import torch

    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    rgb = ((image.float().cpu() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    palette = torch.from_numpy(spec.palette())  # (256, 3)
    truth = truth.cpu().clone()
    truth[truth == ignore_index] = 255
    colour = lambda labels: palette[labels.long()].permute(2, 0, 1)  # noqa: E731
    return torch.cat([rgb, colour(truth), colour(pred.cpu())], dim=2)
