"""Forward time of the compiled SkipNet-MobileNet against the same network written by hand.

The compiler emits a ``torch.fx.GraphModule`` whose ``forward`` is generated
straight-line Python, one statement per layer, so it should run as fast as
a hand-written module: the question this script answers is whether it does.

The hand-written reference is a plain MobileNet v1 (Howard et al. 2017,
arXiv:1704.04861, Table 1) feeding an FCN-8s head (Long et al. 2015) exactly as
``specs/models/skipnet_mobilenet_v1.yaml`` describes it: the same modules
(``nn.ReLU(inplace=True)``, as most PyTorch code and torchvision write it;
``--hand-relu fresh`` for ``nn.ReLU()``), the same crops, the same order of
operations. The compiled module's weights are copied into it through an explicit
state-dict key mapping, and both outputs must be bitwise equal.

Timing: eval mode, ``torch.no_grad``, 3 warm-up runs each, then ``--rounds``
rounds that run both modules back to back, alternating which goes first, so
drifts in machine load hit both alike. Reported: the ratio of the medians, and the median of
the per-round ratios (robust to load that changes between rounds).

The allocator matters more than the code at 512x1024: every map of 16 MB or
more is an mmap'd block that glibc hands back to the OS when freed, so each
forward pays ~130-170k page faults, about half its time. fx's generated code
frees each intermediate right after its last use (``x = None``), a little
earlier than nested calls in hand-written code, and the different free order
changes how many of those blocks glibc returns. So the script measures twice:
with the allocator as configured, and re-run with glibc told to keep freed
memory (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, as jemalloc or
tcmalloc would; PyTorch's CPU performance guide recommends those), which
isolates the cost of the code itself.

Run: ``python benchmarks/bench_forward.py [--rounds 12] [--threads 2] [--allocator both]``.
Prints tables and exits 0 (1 if the outputs differ).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout, not whichever rtseg_compiler is installed

from rtseg_compiler import compile_model  # noqa: E402
SPEC = ROOT / "specs" / "models" / "skipnet_mobilenet_v1.yaml"
SIZES = [(256, 512), (512, 1024)]
NUM_CLASSES = 20

# (output channels, stride) of MobileNet v1's 13 depthwise-separable blocks (Table 1).
MOBILENET_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
#: Blocks whose outputs FCN-8s reads: the last block at stride 8, 16 and 32.
TAP_STRIDE8, TAP_STRIDE16 = 4, 10


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, inplace: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv, BN, ReLU, then 1x1 pointwise conv, BN, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, inplace: bool = True):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.dw_bn = nn.BatchNorm2d(cin)
        self.dw_relu = nn.ReLU(inplace=inplace)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout)
        self.pw_relu = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_relu(self.dw_bn(self.dw(x)))
        return self.pw_relu(self.pw_bn(self.pw(x)))


class HandWrittenSkipNet(nn.Module):
    """MobileNet v1 encoder + FCN-8s skip decoder, written the way one would by hand."""

    def __init__(self, num_classes: int = NUM_CLASSES, inplace: bool = True):
        super().__init__()
        self.stem = ConvBNReLU(3, 32, 2, inplace)
        blocks, cin = [], 32
        for cout, stride in MOBILENET_BLOCKS:
            blocks.append(DepthwiseSeparable(cin, cout, stride, inplace))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        n = num_classes
        self.score32 = nn.Conv2d(1024, n, 1)
        self.up32 = nn.ConvTranspose2d(n, n, 4, 2, 1)
        self.score16 = nn.Conv2d(512, n, 1)
        self.up16 = nn.ConvTranspose2d(n, n, 4, 2, 1)
        self.score8 = nn.Conv2d(256, n, 1)
        self.up8 = nn.ConvTranspose2d(n, n, 16, 8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == TAP_STRIDE8:
                stride8 = x
            elif i == TAP_STRIDE16:
                stride16 = x
        up32 = self.up32(self.score32(x))
        score16 = self.score16(stride16)
        fuse16 = up32[:, :, :score16.shape[-2], :score16.shape[-1]] + score16
        up16 = self.up16(fuse16)
        score8 = self.score8(stride8)
        fuse8 = up16[:, :, :score8.shape[-2], :score8.shape[-1]] + score8
        return self.up8(fuse8)[:, :, :image.shape[-2], :image.shape[-1]]


def _block_name(i: int) -> str:
    """Spec name of MobileNet block i (0-based): ds1..ds6, ds7_11.1..5, ds12, ds13."""
    if 6 <= i <= 10:
        return f"ds7_11.{i - 5}"
    return f"ds{i + 1}"


def compiled_key(hand_key: str) -> str:
    """The compiled module's state-dict key for one of the hand-written module's keys."""
    part, rest = hand_key.split(".", 1)
    if part == "stem":
        layer, leaf = rest.split(".", 1)
        return f"encoder.{ {'conv': 'conv1', 'bn': 'conv1_bn'}[layer]}.{leaf}"
    if part == "blocks":
        index, leaf = rest.split(".", 1)
        return f"encoder.{_block_name(int(index))}.{leaf}"
    return f"head.{hand_key}"


def hand_written_copy(compiled: nn.Module, inplace: bool = True) -> HandWrittenSkipNet:
    hand = HandWrittenSkipNet(inplace=inplace)
    source = compiled.state_dict()
    mapped = {key: source[compiled_key(key)] for key in hand.state_dict()}
    unused = set(source) - {compiled_key(k) for k in mapped}
    assert not unused, f"compiled weights not used by the hand-written model: {sorted(unused)[:5]}"
    hand.load_state_dict(mapped, strict=True)
    return hand.eval()


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_pair(a: nn.Module, b: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Interleaved wall times (s) and page faults of ``a(x)`` and ``b(x)``; the first alternates."""
    out: dict[str, list[float]] = {"a": [], "b": [], "a_faults": [], "b_faults": []}
    with torch.no_grad():
        for _ in range(3):
            a(x), b(x)
        for r in range(rounds):
            order = (("a", a), ("b", b)) if r % 2 == 0 else (("b", b), ("a", a))
            for key, module in order:
                faults, start = minor_faults(), time.perf_counter()
                module(x)
                out[key].append(time.perf_counter() - start)
                out[f"{key}_faults"].append(minor_faults() - faults)
    return out


#: glibc malloc settings that keep freed memory in the process instead of returning it to the OS.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}


def measure(rounds: int, hand_inplace: bool = True, inplace: bool = True) -> tuple[list[tuple], bool]:
    torch.manual_seed(0)
    rows, ok = [], True
    for h, w in SIZES:
        # The model file keeps the original RTSeg conv biases; the hand-written network has none.
        compiled = compile_model(SPEC, (h, w), encoder_params={"conv_bias": False},
                                 inplace=inplace).module.eval()
        # Non-trivial batch-norm statistics, so the equality check covers them too.
        for m in compiled.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        hand = hand_written_copy(compiled, hand_inplace)
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            same = torch.equal(compiled(x), hand(x))
        ok &= same
        t = time_pair(compiled, hand, x, rounds)
        tc, th = t["a"], t["b"]
        mc, mh = statistics.median(tc), statistics.median(th)
        paired = statistics.median(c / h_ for c, h_ in zip(tc, th))
        faults = (statistics.median(t["a_faults"]), statistics.median(t["b_faults"]))
        rows.append((f"1x3x{h}x{w}", mc, mh, min(tc), min(th), mc / mh, paired, faults, same))
    return rows, ok


def report(rows: list[tuple], label: str) -> None:
    head = ("input", "compiled med", "hand med", "compiled min", "hand min", "ratio med",
            "ratio paired", "faults c/h", "outputs")
    print(f"allocator: {label}")
    print("  ".join(f"{c:>12}" for c in head))
    for size, mc, mh, nc, nh, ratio, paired, faults, same in rows:
        cells = (size, f"{mc * 1e3:.1f}", f"{mh * 1e3:.1f}", f"{nc * 1e3:.1f}", f"{nh * 1e3:.1f}",
                 f"{ratio:.3f}", f"{paired:.3f}", f"{faults[0] / 1e3:.0f}k/{faults[1] / 1e3:.0f}k",
                 "equal" if same else "DIFFER")
        print("  ".join(f"{c:>12}" for c in cells))
    worst = max(r[6] for r in rows)
    print(f"compiled / hand-written, paired median: {', '.join(f'{r[6]:.3f}' for r in rows)} "
          f"(target <= 1.03: {'met' if worst <= 1.03 else 'NOT met'})\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 on the CI machine)")
    parser.add_argument("--hand-relu", choices=("inplace", "fresh"), default="inplace",
                        help="the hand-written reference's ReLU: nn.ReLU(inplace=True) (default) or nn.ReLU()")
    parser.add_argument("--no-inplace", action="store_true",
                        help="compile without the in-place memory pass (passes/inplace.py)")
    parser.add_argument("--allocator", choices=("default", "tuned", "both"), default="both",
                        help="glibc malloc as configured, with TUNED_MALLOC (a re-run in a subprocess, "
                             "since glibc reads it at start-up), or both")
    args = parser.parse_args()
    tuned_env = all(os.environ.get(k) == v for k, v in TUNED_MALLOC.items())
    if args.allocator == "tuned" and not tuned_env:
        argv = [sys.executable, __file__, "--rounds", str(args.rounds), "--threads", str(args.threads),
                "--allocator", "tuned", "--hand-relu", args.hand_relu] + ["--no-inplace"] * args.no_inplace
        return subprocess.run(argv, env={**os.environ, **TUNED_MALLOC}).returncode
    torch.set_num_threads(args.threads)
    if args.allocator != "tuned":
        print(f"SkipNet-MobileNet forward, CPU, torch {torch.__version__}, {args.threads} threads, "
              f"eval + no_grad, {args.rounds} interleaved rounds; times in ms")
        print("(ratio med: median compiled / median hand-written; ratio paired: median over rounds of "
              "compiled / hand-written in the same round;\n faults c/h: median minor page faults per "
              "forward, compiled / hand-written)\n")
    print(f"hand-written ReLU: {args.hand_relu}; compiled: "
          f"{'no in-place pass' if args.no_inplace else 'in-place memory pass'}")
    rows, ok = measure(args.rounds, args.hand_relu == "inplace", not args.no_inplace)
    label = ("glibc with " + ", ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items()) if tuned_env
             else "as configured (glibc defaults unless MALLOC_* is set)")
    report(rows, label)
    sys.stdout.flush()
    if args.allocator == "both":
        argv = [sys.executable, __file__, "--rounds", str(args.rounds), "--threads", str(args.threads),
                "--allocator", "tuned", "--hand-relu", args.hand_relu] + ["--no-inplace"] * args.no_inplace
        ok &= subprocess.run(argv, env={**os.environ, **TUNED_MALLOC}).returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
