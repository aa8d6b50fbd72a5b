"""``rtsegc predict``: see what a checkpoint predicts, as colour masks, overlays and label PNGs.

Usage::

    rtsegc predict --checkpoint out/camvid/best.pt photos/ -o preds/ --overlay 0.5

For every image (a file, or the .png/.jpg/.jpeg files of a folder) it writes, under ``-o``:
``NAME_label.png`` (class ids, mode L, ignore never predicted), ``NAME_color.png`` (the dataset's
palette) and, with ``--overlay ALPHA``, ``NAME_overlay.png`` (alpha * colour + (1 - alpha) * image).
The network runs at its training input size; its logits are upsampled bilinearly to each image's own
size before the argmax, so every output has the image's size (the full-resolution protocol).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from rtseg_compiler.cli.args import add_spec_param_args, spec_params

__all__ = ["build_parser", "main", "predict_images"]

SUFFIXES = (".png", ".jpg", ".jpeg")


def build_parser(prog: str = "rtsegc predict") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--checkpoint", required=True, help="a runtime checkpoint (best.pt or last.pt)")
    p.add_argument("-o", "--out-dir", required=True, help="folder for the masks, overlays and label PNGs")
    p.add_argument("--overlay", type=float, metavar="ALPHA", help="also write overlays, mask weight ALPHA")
    p.add_argument("--dataset", metavar="NAME|PATH.yaml", help="palette and normalisation (default: the "
                   "checkpoint's dataset)")
    p.add_argument("--device", default="auto")
    add_spec_param_args(p)  # on top of the parameters the checkpoint records
    return p


def _images(inputs: Sequence[str]) -> list[Path]:
    from .datasets import DataError

    out: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"{path}: no .png/.jpg/.jpeg images in this folder")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return out


def predict_images(checkpoint: str | Path, inputs: Sequence[str], out_dir: str | Path, *,
                   overlay: float | None = None, dataset: str | None = None,
                   device: str = "auto", encoder_params: Mapping[str, Any] | None = None,
                   meta_params: Mapping[str, Any] | None = None) -> list[Path]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from .build import dataset_spec_for, pick_device
    from .data import load_image
    from .datasets import DataError, load_dataset_spec
    from .evaluate import load_checkpoint_model
    from .losses import main_output

    images = _images(inputs)
    compiled, ckpt, spec = load_checkpoint_model(checkpoint, encoder_params=encoder_params,
                                                 meta_params=meta_params)
    if dataset:
        spec = load_dataset_spec(dataset)
    if spec is None:
        spec = dataset_spec_for(ckpt.get("config", {}).get("classes", "camvid"))
    dev = pick_device(device)
    model = compiled.module.to(dev).eval()
    _, _, h, w = compiled.audit.input
    palette = spec.palette()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        try:
            original = load_image(path)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file
            raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
        x = torch.from_numpy(load_image(path, (h, w))).permute(2, 0, 1)[None].float() / 255.0
        x = ((x - mean) / std).to(dev)
        with torch.no_grad():
            logits = main_output(model(x))
            logits = F.interpolate(logits.float(), size=original.shape[:2], mode="bilinear",
                                   align_corners=False)
        label = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        color = palette[label]
        stem = out / path.stem
        Image.fromarray(label, mode="L").save(f"{stem}_label.png")
        Image.fromarray(color).save(f"{stem}_color.png")
        written += [Path(f"{stem}_label.png"), Path(f"{stem}_color.png")]
        if overlay is not None:
            blend = overlay * color.astype(np.float32) + (1 - overlay) * original.astype(np.float32)
            Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8)).save(f"{stem}_overlay.png")
            written.append(Path(f"{stem}_overlay.png"))
    return written


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc predict") -> int:
    from rtseg_compiler import SpecError

    from .datasets import DataError

    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.overlay is not None and not 0.0 <= args.overlay <= 1.0:
        p.error(f"--overlay must be between 0 and 1, got {args.overlay}")
    try:
        written = predict_images(args.checkpoint, args.inputs, args.out_dir, overlay=args.overlay,
                                 dataset=args.dataset, device=args.device,
                                 encoder_params=spec_params(args, "encoder_params"),
                                 meta_params=spec_params(args, "meta_params"))
    except SpecError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
