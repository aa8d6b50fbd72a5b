"""Forward latency and throughput of a compiled network.

What is timed: ``module(x)`` in eval mode under ``torch.no_grad`` on a fixed random batch, after ``warmup``
untimed calls (first calls pay for allocator growth, oneDNN/cuDNN algorithm selection and lazy init).
On CUDA every timed call is bracketed by ``torch.cuda.synchronize()``, otherwise the clock would only see
the kernel launches. The reported latency is the **median** of ``iters`` calls (robust to a stray
scheduler hiccup); FPS = batch size / median latency. The argmax over classes is not included; RTSeg's
TensorFlow timing (``infer_optimize.py``, 1000 runs at 1x360x640) timed up to the ArgMax node, which
adds about one more read of the logits.

Beside the time, :func:`benchmark` counts the process's minor page faults over the timed calls
(``getrusage`` ``ru_minflt``, all threads; ``None`` where the platform has no ``resource``
module). Faults per forward show what the allocator costs: under glibc's default malloc a forward at
512x1024 maps and faults in about 100,000 fresh 4 KiB pages, under a malloc that keeps freed memory
(:func:`rtseg_compiler.allocator.configure_allocator`) almost none.

Reference points: the RTSeg maintainers reported SkipNet-MobileNet at 141 fps and SkipNet-ShuffleNet at
143 fps at 360x640 on a TITAN X (issues #20, #55), with BN folded (``optimize_for_inference``).
``bench_variants(..., inference=True)`` times the inference build (BN folded, ``rtseg_compiler/inference.py``)
next to the plain one, so compare like with like.

``torch_compile=True`` adds each build wrapped in ``torch.compile`` (TorchInductor). On the CPU
Inductor generates C++ and needs a C++ compiler; :func:`torch_compile_problem` says when there is
none, instead of a traceback at the first call. Compilation happens during the warm-up calls,
which are not timed; give at least one.

>>> import torch
>>> r = benchmark(torch.nn.Conv2d(3, 4, 3), (8, 8), warmup=1, iters=3)
>>> r.fps > 0 and r.latency_ms > 0
True
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = ["BenchResult", "bench_spec", "bench_variants", "benchmark", "torch_compile_problem"]


@dataclass(frozen=True)
class BenchResult:
    """Timing of ``iters`` forward calls; times in milliseconds per batch."""

    model: str
    device: str
    input: tuple[int, int, int, int]  # (N, C, H, W)
    channels_last: bool
    dtype: str
    threads: int
    warmup: int
    iters: int
    latency_ms: float  # median
    min_ms: float
    p90_ms: float
    #: Minor page faults per timed call, all threads of the process; None without ``resource``.
    faults_per_call: float | None = None

    @property
    def fps(self) -> float:
        """Images per second at the median latency."""
        return self.input[0] * 1000.0 / self.latency_ms

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("latency_ms", "min_ms", "p90_ms"):
            data[key] = round(data[key], 4)
        data["fps"] = round(self.fps, 3)
        if data["faults_per_call"] is not None:
            data["faults_per_call"] = round(data["faults_per_call"], 1)
        return data


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(module: nn.Module, input_size: tuple[int, int], *, batch_size: int = 1, in_channels: int = 3,
              warmup: int = 10, iters: int = 50, device: str | torch.device = "cpu",
              channels_last: bool = False, dtype: torch.dtype = torch.float32,
              name: str | None = None) -> BenchResult:
    """Time ``module`` on a (batch_size, in_channels, H, W) input; see the module docstring for the method."""
    if iters < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("need iters >= 1, warmup >= 0, batch_size >= 1")
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    was_training = module.training
    module = module.to(device=device, dtype=dtype, memory_format=fmt).eval()
    h, w = input_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, in_channels, h, w, generator=generator).to(device=device, dtype=dtype,
                                                                        memory_format=fmt)
    times = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                module(x)
            _sync(device)
            faults_before = _minor_faults()
            for _ in range(iters):
                start = time.perf_counter()
                module(x)
                _sync(device)
                times.append((time.perf_counter() - start) * 1000.0)
            faults = None if faults_before is None else (_minor_faults() - faults_before) / iters
    finally:
        module.train(was_training)
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return BenchResult(model=name or type(module).__name__, device=str(device),
                       input=(batch_size, in_channels, h, w), channels_last=channels_last,
                       dtype=str(dtype).removeprefix("torch."), threads=torch.get_num_threads(),
                       warmup=warmup, iters=iters, latency_ms=statistics.median(times), min_ms=ordered[0],
                       p90_ms=p90, faults_per_call=faults)


def _minor_faults() -> int | None:
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bench_spec(path: str | Path | None, input_size: tuple[int, int] | None = None,
               num_classes: int | None = None, *, encoder: str | Path | None = None,
               meta: str | Path | None = None, output_stride: int | None = None,
               encoder_params: dict | None = None, meta_params: dict | None = None,
               **kwargs) -> tuple[BenchResult, object]:
    """Compile a spec and :func:`benchmark` it; returns (result, CompiledModel), the latter for its audit."""
    from rtseg_compiler import compile_model

    compiled = compile_model(path, input_size, num_classes, encoder=encoder, meta=meta,
                             output_stride=output_stride, encoder_params=encoder_params,
                             meta_params=meta_params)
    n, c, h, w = compiled.audit.input
    result = benchmark(compiled.module, (h, w), in_channels=c, name=compiled.audit.model, **kwargs)
    return result, compiled


def torch_compile_problem(device: str | torch.device = "cpu") -> str | None:
    """Why ``torch.compile`` cannot run here, or None. Inductor's CPU backend compiles C++ with
    ``$CXX`` or the first of g++, c++, clang++ it finds on PATH."""
    import os
    import shutil

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (needs torch >= 2.0)"
    if torch.device(device).type == "cpu":
        candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(c) for c in candidates):
            return ("torch.compile on the CPU needs a C++ compiler, and none of "
                    f"{', '.join(candidates)} is on PATH (Debian: apt-get install g++; or set CXX)")
    return None


def bench_variants(path: str | Path | None, input_size: tuple[int, int] | None = None,
                   num_classes: int | None = None, *, inference: bool = False, weights=None,
                   torch_compile: bool = False, inplace: bool = True, channels_last: bool = False,
                   compile_kwargs: dict | None = None, **kwargs) -> tuple[list[tuple[str, BenchResult]], object]:
    """Time the plain build, the inference build (``inference``) and each under ``torch.compile``.

    Returns ([(label, result), ...], the CompiledModel of the last build, for its audit).
    ``compile_kwargs`` go to :func:`rtseg_compiler.compile_model` (encoder, meta, params ...).
    """
    from rtseg_compiler import compile_model

    builds = [("plain", False)] + ([("inference", True)] if inference else [])
    rows: list[tuple[str, BenchResult]] = []
    compiled = None
    for label, fold in builds:
        compiled = compile_model(path, input_size, num_classes, inference=fold, weights=weights,
                                 inplace=inplace, **(compile_kwargs or {}))
        n, c, h, w = compiled.audit.input
        module = compiled.module
        rows.append((label, benchmark(module, (h, w), in_channels=c, name=compiled.audit.model,
                                      channels_last=channels_last, **kwargs)))
        if torch_compile:
            fast = torch.compile(module)
            rows.append((f"{label} + torch.compile",
                         benchmark(fast, (h, w), in_channels=c, name=compiled.audit.model,
                                   channels_last=channels_last, **kwargs)))
    return rows, compiled
