"""The pre-training data check: full decoding (runtime/datasets.py) against the verify-only check it replaced.

Three checks of one split, in alternating rounds (each round runs them in a rotated order, so load
drifts on the shared machine hit all three alike):

* ``verify``: what the runtime did before: ``Image.open`` + ``verify()`` on the image (PNG chunk CRCs,
  no decompression; nothing at all for JPEG) and a full read of the label;
* ``decode``: :func:`runtime.datasets.check_samples` with the cache off: every image and label decoded
  completely, in a thread pool of ``--workers`` threads;
* ``cached``: the same call with a warm cache (file size and mtime unchanged): what every run after the
  first pays.

Reported: the median seconds of each over ``--rounds``, per image, and an extrapolation to Cityscapes'
2,975 training images, scaled by pixel count (2048x1024 against the split's own mean size), since
inflating a PNG costs about linearly in its pixels.

    python benchmarks/bench_data_check.py [--data ../shared/data/camvid-mini] [--split train] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CITYSCAPES_TRAIN = 2975
CITYSCAPES_PIXELS = 2048 * 1024


def verify_only(samples) -> None:
    """The previous check's decoding work: image header + verify(), label read in full."""
    from PIL import Image

    for s in samples:
        with Image.open(s.image) as im:
            im.verify()
        with Image.open(s.label) as im:
            np.asarray(im, dtype=np.uint8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    candidates = (ROOT.parent / "shared" / "data" / "camvid-mini",
                  ROOT.parent.parent / "shared" / "data" / "camvid-mini")
    default = next((str(c) for c in candidates if c.is_dir()), None)
    p.add_argument("--data", default=default, required=default is None, help="a CamVid-layout folder")
    p.add_argument("--split", default="train")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--workers", type=int, default=None, help="threads (default: the check's own choice)")
    args = p.parse_args()

    from PIL import Image

    from runtime.datasets import check_samples, find_samples, load_dataset_spec

    spec = load_dataset_spec("camvid")
    samples = find_samples(spec, args.data, args.split)
    with Image.open(samples[0].image) as im:
        pixels = im.width * im.height
    cache = tempfile.mkdtemp(prefix="rtsegc-bench-cache-")

    def decode() -> None:
        os.environ["RTSEGC_DATA_CACHE"] = "off"
        check_samples(spec, samples, args.data, workers=args.workers)

    def cached() -> None:
        os.environ["RTSEGC_DATA_CACHE"] = cache
        check_samples(spec, samples, args.data, workers=args.workers)

    cached()  # fill the cache once
    runs = {"verify": lambda: verify_only(samples), "decode": decode, "cached": cached}
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.rounds):
        order = names[r % 3:] + names[: r % 3]
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    scale = CITYSCAPES_PIXELS / pixels
    result = {
        "data": args.data, "split": args.split, "images": len(samples), "image_pixels": pixels,
        "rounds": args.rounds, "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ms_per_image": {k: round(1000 * v / len(samples), 2) for k, v in med.items()},
        "decode_over_verify": round(med["decode"] / med["verify"], 2),
        "cityscapes_train_estimate_s": {k: round(v / len(samples) * CITYSCAPES_TRAIN * scale, 1)
                                        for k, v in med.items() if k != "cached"},
        "cityscapes_cached_estimate_s": round(med["cached"] / len(samples) * CITYSCAPES_TRAIN, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
