"""``rtsegc predict``: see what a checkpoint predicts, as colour masks, overlays and label PNGs.

Usage::

    rtsegc predict --checkpoint out/camvid/best.pt photos/ -o preds/ --overlay 0.5

For every image (a file, or the .png/.jpg/.jpeg files of a folder) it writes, under ``-o``:
``NAME_label.png`` (class ids, mode L, ignore never predicted), ``NAME_color.png`` (the dataset's
palette) and, with ``--overlay ALPHA``, ``NAME_overlay.png`` (alpha * colour + (1 - alpha) * image).
The network runs at its training input size; its logits are upsampled bilinearly to each image's own
size before the argmax, so every output has the image's size (the full-resolution protocol).

Output names never collide and never replace a file silently. ``NAME`` is the image's stem while that is
unique among the inputs; images whose stems collide (``x.png`` and ``x.jpg``, or ``a/x.png`` and
``b/x.png``) keep their suffix and their folder instead: ``a/x_png_label.png``, ``b/x_png_label.png``.
Every target is worked out before anything is written; when one exists already, the command stops and
lists it, unless ``--overwrite`` is given. The count it prints is the number of files written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from rtseg_compiler.cli.args import add_spec_param_args, spec_params

from rtseg_compiler.allocator import HELP as ALLOCATOR_HELP
from rtseg_compiler.allocator import configure_allocator

__all__ = ["build_parser", "main", "output_names", "predict_images"]

SUFFIXES = (".png", ".jpg", ".jpeg")


def build_parser(prog: str = "rtsegc predict") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=ALLOCATOR_HELP)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--checkpoint", required=True, help="a runtime checkpoint (best.pt or last.pt)")
    p.add_argument("-o", "--out-dir", required=True, help="folder for the masks, overlays and label PNGs")
    p.add_argument("--overlay", type=float, metavar="ALPHA", help="also write overlays, mask weight ALPHA")
    p.add_argument("--dataset", metavar="NAME|PATH.yaml", help="palette and normalisation (default: the "
                   "checkpoint's dataset)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist already "
                   "(default: stop before writing anything)")
    add_spec_param_args(p)  # on top of the parameters the checkpoint records
    return p


def _images(inputs: Sequence[str]) -> list[Path]:
    """The image files named or contained (one level) in ``inputs``, each once, in the given order."""
    from .datasets import DataError

    out: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{path}: no .png/.jpg/.jpeg images in this folder")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_names(images: Sequence[Path]) -> list[str]:
    """A distinct output name (relative, without ``_label.png``) per image; see the module doc.

    >>> output_names([Path("a/x.png"), Path("b/x.png"), Path("a/x.jpg"), Path("a/y.png")])
    ['a/x_png', 'b/x_png', 'a/x_jpg', 'y']
    """
    from collections import Counter

    stems = Counter(p.stem for p in images)
    names = []
    for p in images:
        if stems[p.stem] == 1:
            names.append(p.stem)
        else:
            folder = p.parent.name or p.resolve().parent.name
            names.append(f"{folder}/{p.stem}_{p.suffix.lstrip('.').lower()}")
    taken = Counter(names)  # still equal (same folder name twice): number them
    seen: Counter = Counter()
    for i, name in enumerate(names):
        if taken[name] > 1:
            seen[name] += 1
            names[i] = f"{name}_{seen[name]}"
    return names


def predict_images(checkpoint: str | Path, inputs: Sequence[str], out_dir: str | Path, *,
                   overlay: float | None = None, dataset: str | None = None,
                   device: str = "auto", encoder_params: Mapping[str, Any] | None = None,
                   meta_params: Mapping[str, Any] | None = None, overwrite: bool = False) -> list[Path]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from .build import dataset_spec_for, pick_device
    from .data import load_image
    from .datasets import DataError, load_dataset_spec
    from .evaluate import load_checkpoint_model
    from .losses import main_output

    from .errors import RunError

    images = _images(inputs)
    out = Path(out_dir)
    kinds = ("label", "color") + (("overlay",) if overlay is not None else ())
    targets = [{kind: out / f"{name}_{kind}.png" for kind in kinds} for name in output_names(images)]
    if out.exists() and not out.is_dir():
        raise RunError(f"-o {out}: is a file, not a folder; choose another output folder")
    existing = [t for row in targets for t in row.values() if t.exists()]
    if existing and not overwrite:
        raise RunError(f"{existing[0]}" + (f" and {len(existing) - 1} more output(s)" if len(existing) > 1
                                           else "") + " exist already; pass --overwrite to replace them, or "
                       "choose another -o folder (nothing was written)")
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
    written = []
    for path, target in zip(images, targets):
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
        target["label"].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label, mode="L").save(target["label"])
        Image.fromarray(color).save(target["color"])
        written += [target["label"], target["color"]]
        if overlay is not None:
            blend = overlay * color.astype(np.float32) + (1 - overlay) * original.astype(np.float32)
            Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8)).save(target["overlay"])
            written.append(target["overlay"])
    return [p for p in dict.fromkeys(written) if p.is_file()]


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc predict") -> int:
    """Exit status 0; 2 for a bad checkpoint, image or output folder (one line naming it); 3 for a bug."""
    configure_allocator()  # keep freed tensor memory for reuse (rtseg_compiler/allocator.py)
    from .errors import guarded

    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.overlay is not None and not 0.0 <= args.overlay <= 1.0:
        p.error(f"--overlay must be between 0 and 1, got {args.overlay}")

    def body() -> int:
        written = predict_images(args.checkpoint, args.inputs, args.out_dir, overlay=args.overlay,
                                 dataset=args.dataset, device=args.device,
                                 encoder_params=spec_params(args, "encoder_params"),
                                 meta_params=spec_params(args, "meta_params"), overwrite=args.overwrite)
        print(f"wrote {len(written)} files to {args.out_dir}")
        return 0

    return guarded(prog, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
