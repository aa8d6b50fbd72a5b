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

``--model skipnet_resnet18`` measures a second skip decoder on another encoder:
SkipNet-ResNet18 against ResNet-18 written as torchvision writes it (one shared
in-place ReLU per block, ``out += identity``) with the same FCN-8s head.

The allocator matters more than the code at 512x1024: under glibc's default
malloc every map of 32 MB or more is an mmap'd block handed back to the OS when
freed, smaller ones come from a heap whose free top is handed back too, so each
forward pays ~80-130k page faults, about half its time. How many depends on the
order in which maps are freed (emit/torch_module.release_one_call_later). So
the script measures twice: with the allocator as configured, and re-run with
glibc told to keep freed memory (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``,
as jemalloc or tcmalloc would; PyTorch's CPU performance guide recommends
those), which isolates the cost of the code itself. ``--allocator mallopt``
instead calls :func:`rtseg_compiler.configure_allocator` in the process, as the
``rtsegc`` runtime commands do.

``--faults`` measures page faults only, with each module alone in a fresh
interpreter (the allocator's state is per process, so a module measured next to
another inherits the heap the other left): the compiled module as emitted, the
same module with torch.fx's own release order, and the hand-written one. Fault
counts move far less than times on a shared machine.

Run: ``python benchmarks/bench_forward.py [--rounds 12] [--threads 2] [--model M] [--sizes 512x1024]
[--allocator both|default|tuned|mallopt] [--faults] [--train]``. ``--train`` times training steps
(batch 4) of the module as emitted against the same module with torch.fx's release order.
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


def hand_written_copy(compiled: nn.Module, inplace: bool = True,
                      model: str = "skipnet_mobilenet_v1") -> nn.Module:
    """The hand-written ``model`` in eval mode, holding ``compiled``'s weights (every one used)."""
    if model == "skipnet_mobilenet_v1":
        hand, key_map = HandWrittenSkipNet(inplace=inplace), compiled_key
    else:
        hand, key_map = HandWrittenResNetSkipNet(), resnet_compiled_key
    source = compiled.state_dict()
    mapped = {key: source[key_map(key)] for key in hand.state_dict()}
    unused = set(source) - {key_map(k) for k in mapped}
    assert not unused, f"compiled weights not used by the hand-written model: {sorted(unused)[:5]}"
    hand.load_state_dict(mapped, strict=True)
    return hand.eval()


class BasicBlock(nn.Module):
    """ResNet's basic block as torchvision writes it: one shared in-place ReLU, ``out += identity``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class FCN8sHead(nn.Module):
    """The FCN-8s decoder of ``specs/meta/skipnet.yaml``: class scores at strides 32, 16, 8, summed."""

    def __init__(self, channels: tuple[int, int, int], n: int = NUM_CLASSES):
        super().__init__()
        c8, c16, c32 = channels
        self.score32 = nn.Conv2d(c32, n, 1)
        self.up32 = nn.ConvTranspose2d(n, n, 4, 2, 1)
        self.score16 = nn.Conv2d(c16, n, 1)
        self.up16 = nn.ConvTranspose2d(n, n, 4, 2, 1)
        self.score8 = nn.Conv2d(c8, n, 1)
        self.up8 = nn.ConvTranspose2d(n, n, 16, 8, 4)

    def forward(self, image: torch.Tensor, stride8: torch.Tensor, stride16: torch.Tensor,
                stride32: torch.Tensor) -> torch.Tensor:
        up32 = self.up32(self.score32(stride32))
        score16 = self.score16(stride16)
        fuse16 = up32[:, :, :score16.shape[-2], :score16.shape[-1]] + score16
        up16 = self.up16(fuse16)
        score8 = self.score8(stride8)
        fuse8 = up16[:, :, :score8.shape[-2], :score8.shape[-1]] + score8
        return self.up8(fuse8)[:, :, :image.shape[-2], :image.shape[-1]]


class HandWrittenResNetSkipNet(nn.Module):
    """ResNet-18 (torchvision's layout, He et al. 2015 Table 1) + the FCN-8s head: SkipNet-ResNet18."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512, 1))
        self.head = FCN8sHead((128, 256, 512), num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        x = self.layer1(x)
        stride8 = self.layer2(x)
        stride16 = self.layer3(stride8)
        stride32 = self.layer4(stride16)
        return self.head(image, stride8, stride16, stride32)


def resnet_compiled_key(hand_key: str) -> str:
    """The compiled SkipNet-ResNet18's key for a key of :class:`HandWrittenResNetSkipNet`.

    The spec numbers stage 1 as a repeat (``layer1.1``) and stages 2-4 block by block
    (``layer2_1``), from 1; torchvision numbers blocks from 0 (specs/encoders/resnet18.yaml)."""
    if hand_key.startswith("head."):
        return hand_key
    parts = hand_key.split(".")
    if parts[0].startswith("layer"):
        stage, block = parts[0], int(parts[1]) + 1
        rest = ".".join(parts[2:]).replace("downsample.0.", "downsample.").replace("downsample.1.",
                                                                                      "downsample_bn.")
        prefix = f"{stage}.{block}" if stage == "layer1" else f"{stage}_{block}"
        return f"encoder.{prefix}.{rest}"
    return f"encoder.{hand_key}"


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


#: The networks measured: spec file and the encoder parameters that make it match the hand-written one.
MODELS = {
    # The model file keeps the original RTSeg conv biases; the hand-written network has none.
    "skipnet_mobilenet_v1": (SPEC, {"conv_bias": False}),
    "skipnet_resnet18": (ROOT / "specs" / "models" / "skipnet_resnet18.yaml", {}),
}


def build_pair(model: str, size: tuple[int, int], inplace: bool = True,
               hand_inplace: bool = True) -> tuple[nn.Module, nn.Module]:
    """(compiled, hand-written) ``model`` at ``size`` with the same weights, both in eval mode."""
    torch.manual_seed(0)
    spec, encoder_params = MODELS[model]
    compiled = compile_model(spec, size, encoder_params=encoder_params, inplace=inplace).module.eval()
    # Non-trivial batch-norm statistics, so the equality check covers them too.
    for m in compiled.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return compiled, hand_written_copy(compiled, hand_inplace, model)


def measure(rounds: int, hand_inplace: bool = True, inplace: bool = True,
            model: str = "skipnet_mobilenet_v1",
            sizes: list[tuple[int, int]] = SIZES) -> tuple[list[tuple], bool]:
    rows, ok = [], True
    for h, w in sizes:
        compiled, hand = build_pair(model, (h, w), inplace, hand_inplace)
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


#: What ``--faults`` runs, each alone in a fresh process: the compiled module as emitted, the same
#: module with torch.fx's own release order (each value dropped right after its last read), the
#: hand-written module.
FAULT_VARIANTS = ("compiled", "fx order", "hand")


def faults_child(model: str, size: tuple[int, int], variant: str, rounds: int) -> list[int]:
    """Minor page faults of each of ``rounds`` forwards of one variant, after 2 warm-up calls."""
    compiled, hand = build_pair(model, size)
    if variant == "fx order":
        compiled.graph._codegen._body_transformer = None  # undo emit_torch's release_one_call_later
        compiled.recompile()
    module = hand if variant == "hand" else compiled
    x = torch.randn(1, 3, *size)
    counts = []
    with torch.no_grad():
        for _ in range(2):
            module(x)
        for _ in range(rounds):
            before = minor_faults()
            module(x)
            counts.append(minor_faults() - before)
    return counts


def faults_table(model: str, sizes: list[tuple[int, int]], rounds: int, threads: int) -> None:
    """Each variant in its own interpreter, so one module's frees do not shape the other's heap."""
    print(f"{model}: minor page faults per forward, each variant alone in a fresh process, {rounds} forwards "
          f"after 2 warm-up, {threads} threads, malloc as configured")
    print(f"{'input':>12}  " + "  ".join(f"{v:>22}" for v in FAULT_VARIANTS)
          + "  compiled/hand  fx order/hand")
    for h, w in sizes:
        medians = {}
        for variant in FAULT_VARIANTS:
            argv = [sys.executable, __file__, "--faults-child", variant, "--model", model,
                    "--sizes", f"{h}x{w}", "--rounds", str(rounds), "--threads", str(threads)]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            counts = [int(v) for v in out.split()[-rounds:]]
            medians[variant] = (statistics.median(counts), min(counts), max(counts))
        cells = [f"{m:,.0f} [{lo:,}-{hi:,}]" for m, lo, hi in medians.values()]
        hand = medians["hand"][0]
        print(f"{h}x{w:<7}  " + "  ".join(f"{c:>22}" for c in cells)
              + f"  {medians['compiled'][0] / hand:13.3f}  {medians['fx order'][0] / hand:12.3f}")
    print()


def train_table(model: str, size: tuple[int, int], rounds: int, batch: int = 4) -> None:
    """Training steps (forward, cross-entropy, backward, SGD) of the compiled module as emitted and with
    torch.fx's own release order, alternating in one process: the release order must not slow training."""
    import copy

    emitted, _ = build_pair(model, size)
    fx_order = copy.deepcopy(emitted)
    fx_order.graph._codegen._body_transformer = None
    fx_order.recompile()
    modules = {"emitted": emitted.train(), "fx order": fx_order.train()}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in modules.items()}
    x = torch.randn(batch, 3, *size)
    target = torch.randint(0, NUM_CLASSES, (batch, *size))

    def step(key: str) -> None:
        optimizers[key].zero_grad()
        nn.functional.cross_entropy(modules[key](x), target).backward()
        optimizers[key].step()

    for key in modules:
        step(key), step(key)
    times: dict[str, list[float]] = {k: [] for k in modules}
    for r in range(rounds):
        for key in (list(modules) if r % 2 == 0 else list(modules)[::-1]):
            start = time.perf_counter()
            step(key)
            times[key].append(time.perf_counter() - start)
    ratio = statistics.median(f / e for f, e in zip(times["fx order"], times["emitted"]))
    print(f"{model} training step, batch {batch}x3x{size[0]}x{size[1]}, {rounds} alternating rounds: "
          f"emitted {statistics.median(times['emitted']) * 1e3:.0f} ms, fx order "
          f"{statistics.median(times['fx order']) * 1e3:.0f} ms (medians); throughput emitted / fx order "
          f"(paired median) {ratio:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 on the CI machine)")
    parser.add_argument("--model", choices=sorted(MODELS), default="skipnet_mobilenet_v1")
    parser.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES),
                        help="comma-separated HxW (default 256x512,512x1024)")
    parser.add_argument("--hand-relu", choices=("inplace", "fresh"), default="inplace",
                        help="the hand-written reference's ReLU: nn.ReLU(inplace=True) (default) or nn.ReLU()")
    parser.add_argument("--no-inplace", action="store_true",
                        help="compile without the in-place memory pass (passes/inplace.py)")
    parser.add_argument("--allocator", choices=("default", "tuned", "mallopt", "both"), default="both",
                        help="glibc malloc as configured; with TUNED_MALLOC (a re-run in a subprocess, since "
                             "glibc reads it at start-up); after rtseg_compiler.configure_allocator() "
                             "(mallopt, in this process); or default and tuned")
    parser.add_argument("--faults", action="store_true",
                        help="instead of timing: page faults per forward, each variant alone in a process")
    parser.add_argument("--train", action="store_true",
                        help="instead: training steps, emitted release order vs fx's own")
    parser.add_argument("--faults-child", choices=FAULT_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    if args.faults_child:
        print(*faults_child(args.model, sizes[0], args.faults_child, args.rounds))
        return 0
    if args.faults:
        faults_table(args.model, sizes, args.rounds, args.threads)
        return 0
    if args.train:
        for size in sizes:
            train_table(args.model, size, args.rounds)
        return 0
    tuned_env = all(os.environ.get(k) == v for k, v in TUNED_MALLOC.items())
    argv = sys.argv[1:]
    if "--allocator" in argv:
        del argv[argv.index("--allocator"):argv.index("--allocator") + 2]
    rerun = [sys.executable, __file__, *argv, "--allocator", "tuned"]
    if args.allocator == "tuned" and not tuned_env:
        return subprocess.run(rerun, env={**os.environ, **TUNED_MALLOC}).returncode
    if args.allocator == "mallopt":
        from rtseg_compiler import configure_allocator

        label = configure_allocator().detail
    elif tuned_env:
        label = "glibc with " + ", ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items())
    else:
        label = "as configured (glibc defaults unless MALLOC_* is set)"
    if args.allocator not in ("tuned", "mallopt"):
        print(f"{args.model} forward, CPU, torch {torch.__version__}, {args.threads} threads, "
              f"eval + no_grad, {args.rounds} interleaved rounds; times in ms")
        print("(ratio med: median compiled / median hand-written; ratio paired: median over rounds of "
              "compiled / hand-written in the same round;\n faults c/h: median minor page faults per "
              "forward, compiled / hand-written)\n")
    print(f"hand-written ReLU: {args.hand_relu}; compiled: "
          f"{'no in-place pass' if args.no_inplace else 'in-place memory pass'}")
    rows, ok = measure(args.rounds, args.hand_relu == "inplace", not args.no_inplace, args.model, sizes)
    report(rows, label)
    sys.stdout.flush()
    if args.allocator == "both":
        ok &= subprocess.run(rerun, env={**os.environ, **TUNED_MALLOC}).returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
