"""Forward latency and throughput: moved to :mod:`rtseg_compiler.latency`, re-exported here.

The timing loop needs torch and a compiled module, nothing of the runtime's, and ``rtsegc compare
--bench`` (a compiler command) uses it too; living in the compiler keeps the dependency one way
(runtime -> compiler). ``runtime.bench``/``rtseg_runtime.bench`` imports keep working.
"""

from rtseg_compiler.latency import (BenchResult, bench_spec, bench_variants, benchmark,  # noqa: F401
                                    torch_compile_problem)

__all__ = ["BenchResult", "bench_spec", "bench_variants", "benchmark", "torch_compile_problem"]
