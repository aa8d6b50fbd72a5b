"""Training augmentation: a short ordered list of steps, applied identically to image and label.

Every recipe since FCN trains road scenes with random scale and crop (torchvision's segmentation
reference: scale 0.5-2.0, crop 480/520 px, flip 0.5; mmsegmentation's Cityscapes configs: ratio 0.5-2.0,
crop 512x1024). A step is a mapping from the dataset file or ``--augment``:

- ``{op: random_scale, range: [0.5, 2.0]}``: resize by s ~ U(lo, hi), bilinear image, nearest label;
- ``{op: random_crop, size: [H, W]}`` (default: the network input): a random window; where the scaled
  image is smaller, the image is padded with the mean colour (0 after normalisation) and the label with
  the ignore index, so padding is never scored or learnt;
- ``{op: hflip, p: 0.5}``: mirror both;
- ``{op: photometric, brightness: b, contrast: c, saturation: s}``: factors ~ U(1-x, 1+x) on the image
  only (labels do not change colour).

Steps run in ``Dataset.__getitem__``, hence in DataLoader workers; randomness comes from torch's global
generator, which DataLoader seeds differently in every worker (base seed + worker id). Evaluation never
augments. The result is resized to the network input when a step changed the size, so batches collate.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["apply_augment", "parse_augment"]


def parse_augment(text: str) -> list[dict[str, Any]]:
    """``--augment "scale=0.5-2.0,crop=256x512,hflip=0.5,jitter=0.2"`` -> the list of steps."""
    steps: list[dict[str, Any]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        try:
            if key == "scale":
                lo, hi = (float(v) for v in value.split("-"))
                steps.append({"op": "random_scale", "range": [lo, hi]})
            elif key == "crop":
                h, w = (int(v) for v in value.lower().split("x"))
                steps.append({"op": "random_crop", "size": [h, w]})
            elif key == "hflip":
                steps.append({"op": "hflip", "p": float(value or 0.5)})
            elif key == "jitter":
                x = float(value or 0.2)
                steps.append({"op": "photometric", "brightness": x, "contrast": x, "saturation": x})
            elif key == "none":
                continue
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"--augment: cannot read {part!r}; write e.g. "
                             "scale=0.5-2.0,crop=256x512,hflip=0.5,jitter=0.2 (or none)") from None
    return steps


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def apply_augment(image: torch.Tensor, label: torch.Tensor, steps: Sequence[Mapping[str, Any]],
                  out_size: tuple[int, int], ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """image float (3, H, W) in [0, 1] before normalisation, label int64 (H, W) -> both augmented."""
    for step in steps:
        op = step["op"]
        if op == "random_scale":
            s = _uniform(*step["range"])
            h, w = max(1, round(image.shape[-2] * s)), max(1, round(image.shape[-1] * s))
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            label = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        elif op == "random_crop":
            ch, cw = step.get("size") or out_size
            h, w = image.shape[-2:]
            ph, pw = max(0, ch - h), max(0, cw - w)
            if ph or pw:
                image = F.pad(image, (0, pw, 0, ph), value=float("nan"))  # filled with the mean below
                label = F.pad(label, (0, pw, 0, ph), value=ignore_index)
                h, w = image.shape[-2:]
            y0 = int(torch.randint(0, h - ch + 1, ()))
            x0 = int(torch.randint(0, w - cw + 1, ()))
            image, label = image[:, y0:y0 + ch, x0:x0 + cw], label[y0:y0 + ch, x0:x0 + cw]
        elif op == "hflip":
            if float(torch.rand(())) < step.get("p", 0.5):
                image, label = image.flip(-1), label.flip(-1)
        elif op == "photometric":
            b, c, s = (step.get(k, 0.0) for k in ("brightness", "contrast", "saturation"))
            image = image * _uniform(1 - b, 1 + b)
            mean = torch.nanmean(image.mean(0))
            image = (image - mean) * _uniform(1 - c, 1 + c) + mean
            grey = image.mean(0, keepdim=True)
            image = (image - grey) * _uniform(1 - s, 1 + s) + grey
            image = image.clamp(0, 1)
        else:  # the schema admits only the ops above
            raise ValueError(f"unknown augmentation op {op!r}")
    if tuple(image.shape[-2:]) != tuple(out_size):
        pad = torch.isnan(image)
        image = F.interpolate(torch.nan_to_num(image)[None], size=out_size, mode="bilinear",
                              align_corners=False)[0]
        if pad.any():
            mask = F.interpolate(pad[None].float(), size=out_size, mode="nearest")[0] > 0
            image = image.masked_fill(mask, float("nan"))
        label = F.interpolate(label[None, None].float(), size=out_size, mode="nearest")[0, 0].long()
    return image, label
