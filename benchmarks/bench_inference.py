"""The inference build against the same network written by hand, on the CPU.

Question: how much faster is ``compile_model(..., inference=True)`` (batch norm folded into the
convs, dropout gone, ReLUs in place) than the ordinary hand-written eager module with the same
weights? Issue 10 sets the target at 1.3x at 512x1024.

Both sides are SkipNet-MobileNet with random weights and randomised batch-norm statistics
(a fold of identity statistics would test nothing). The hand-written module is the one of
``bench_forward.py`` (MobileNet v1 + FCN-8s, ``nn.ReLU(inplace=True)``, batch norm unfolded),
loaded from the compiled module's state dict; the inference build gets that same state dict
through ``weights=``. Its output must equal the hand-written one within 1e-5 relative, or the
script exits 1.

Four variants per input size, 1x3x512x1024 and 1x3x360x640: hand-written and inference build,
each in NCHW and in channels_last (weights and input converted). Timing: eval, no_grad, 2 warm-up
calls each, then ``--rounds`` rounds, each calling every variant once in an order rotated round
by round, so that load changes on a shared machine hit all alike. Reported: median, min and max
per variant, its median minor page faults per forward (all variants share one process and its
heap), and speed-ups as the median over rounds of (hand-written time / inference time) in the
same round. ``--mallopt`` first calls :func:`rtseg_compiler.configure_allocator`.

Run: ``python benchmarks/bench_inference.py [--rounds 9] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from bench_forward import SPEC, hand_written_copy, minor_faults  # also puts this checkout first on sys.path
from rtseg_compiler import compile_model

SIZES = [(512, 1024), (360, 640)]
VARIANTS = ("hand", "hand_cl", "infer", "infer_cl")


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


def build(size: tuple[int, int]) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    plain = compile_model(SPEC, size, encoder_params={"conv_bias": False}, inplace=False).module.eval()
    randomise_bn(plain)
    state = plain.state_dict()
    hand = hand_written_copy(plain, inplace=True)
    infer = compile_model(SPEC, size, encoder_params={"conv_bias": False}, inference=True,
                          weights=state).module
    hand_cl = hand_written_copy(plain, inplace=True).to(memory_format=torch.channels_last)
    infer_cl = compile_model(SPEC, size, encoder_params={"conv_bias": False}, inference=True,
                             weights=state, channels_last=True).module
    return {"hand": hand, "hand_cl": hand_cl, "infer": infer, "infer_cl": infer_cl}


def measure(size: tuple[int, int], rounds: int) -> tuple[dict[str, list[float]], float, dict[str, list[int]]]:
    modules = build(size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    inputs = {k: x.contiguous(memory_format=torch.channels_last) if k.endswith("_cl") else x
              for k in VARIANTS}
    with torch.no_grad():
        reference = modules["hand"](inputs["hand"])
        worst = max(((modules[k](inputs[k]) - reference).abs().max() / reference.abs().max()).item()
                    for k in VARIANTS[1:])
        for _ in range(2):
            for k in VARIANTS:
                modules[k](inputs[k])
        times: dict[str, list[float]] = {k: [] for k in VARIANTS}
        faults: dict[str, list[int]] = {k: [] for k in VARIANTS}
        for r in range(rounds):
            order = VARIANTS[r % 4:] + VARIANTS[:r % 4]
            for k in order:
                before, start = minor_faults(), time.perf_counter()
                modules[k](inputs[k])
                times[k].append(time.perf_counter() - start)
                faults[k].append(minor_faults() - before)
    return times, worst, faults


def paired(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2, as bench_forward.py)")
    parser.add_argument("--sizes", default="512x1024,360x640")
    parser.add_argument("--mallopt", action="store_true",
                        help="call rtseg_compiler.configure_allocator() first (as rtsegc's commands do)")
    args = parser.parse_args()
    if args.mallopt:
        from rtseg_compiler import configure_allocator

        print(f"allocator: {configure_allocator().detail}")
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print(f"SkipNet-MobileNet, CPU, torch {torch.__version__}, {args.threads} thread(s), batch 1, "
          f"eval + no_grad, {args.rounds} interleaved rounds; times in ms (median [min-max])")
    ok = True
    for size in sizes:
        times, worst, faults = measure(size, args.rounds)
        ok &= worst <= 1e-5
        print(f"\n1x3x{size[0]}x{size[1]}  (largest difference to the hand-written output: "
              f"{worst:.1e} relative)")
        for k in VARIANTS:
            t = times[k]
            print(f"  {k:<9} {statistics.median(t) * 1e3:8.1f}  [{min(t) * 1e3:.1f}-{max(t) * 1e3:.1f}]  "
                  f"{statistics.median(faults[k]):9,.0f} minor page faults per forward")
        for a, b, label in (("hand", "infer", "NCHW"), ("hand_cl", "infer_cl", "channels_last"),
                            ("hand", "infer_cl", "inference channels_last vs hand NCHW")):
            print(f"  speed-up {label}: {paired(times, a, b):.2f}x  (hand / inference, paired median)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
