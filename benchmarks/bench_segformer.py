"""Forward time of the compiled SegFormer-B0 against transformers' SegformerForSemanticSegmentation.

Both are built for 19 classes from the B0 configuration (no download); the compiled module gets
the reference's weights through the key map of tests/torch/test_segformer.py, and the script
first checks that their eval-mode logits agree within 1e-5. Timing: eval mode, ``torch.no_grad``,
``--threads`` intra-op threads for both, 2 warm-up runs each, then ``--rounds`` rounds that run
both back to back, alternating which goes first, so that load changes hit both alike. Reported:
the ratio of the medians and the median of the per-round ratios (compiled / reference).

The reference uses transformers' default attention (SDPA) like the compiled ``attention`` op.

Run: ``python benchmarks/bench_segformer.py [--size 512x1024] [--rounds 7] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "torch"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)

    from torchvision_compat import import_torchvision
    import_torchvision()
    import transformers

    from rtseg_compiler import compile_model
    from test_segformer import MODEL, _converted

    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=19)
    reference = transformers.SegformerForSemanticSegmentation(config).eval()
    compiled = compile_model(MODEL, (h, w)).module
    compiled.load_state_dict(_converted(reference.state_dict(), compiled.state_dict()), strict=True)
    x = torch.randn(1, 3, h, w)

    runs = {"compiled": lambda: compiled(x), "reference": lambda: reference(pixel_values=x).logits}
    with torch.no_grad():
        diff = (runs["compiled"]() - runs["reference"]()).abs().max().item()
        print(f"max |compiled - reference| = {diff:.2e}")
        if diff > 1e-5:
            return 1
        for fn in runs.values():
            for _ in range(2):
                fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_round = statistics.median(c / r for c, r in zip(times["compiled"], times["reference"]))
    print(f"SegFormer-B0 {h}x{w}, batch 1, {args.threads} threads, {args.rounds} alternating rounds")
    for name, value in med.items():
        print(f"  {name:9s} median {value * 1e3:8.1f} ms")
    print(f"  ratio of medians {med['compiled'] / med['reference']:.3f}, "
          f"median per-round ratio {per_round:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
