"""How long a whole ``rtsegc flops`` process takes, against counting FLOPs by running the model.

``bench_flops.py`` times the analysis inside one process. A user, though, runs a command:
either ``rtsegc flops SPEC`` or a script that imports torch, builds the module and counts a
forward pass with ``torch.utils.flop_counter.FlopCounterMode``. Each of these is mostly
start-up (interpreter, imports), so this script times both as whole processes:

* ``rtsegc``  ``rtsegc flops SPEC --input HxW --json``: the console script's code
  (``from rtseg_compiler.cli import main``) run by this interpreter, without a pyenv shim;
* ``torch``   a fresh ``python -c`` that imports torch and rtseg_compiler, builds the module
  (``compile_model``), and counts one forward on a CPU tensor under FlopCounterMode.

The two alternate, and alternate which goes first, for ``--rounds`` rounds. Reported: the
medians and minimums of wall time, the median CPU time (user + system; on a loaded machine the
wall time also counts waiting for a core), the ratio of the medians and the median of the
per-round ratios. Also reported, each median over the same rounds: a bare ``python -c pass`` (the floor no
command goes under) and the time to import ``rtseg_compiler`` in a fresh interpreter. Both
processes' counts must agree (torch's total == the audit's FLOPs), else exit 1.

Bytecode: by default the children may write ``.pyc`` files (one untimed warm-up run each
writes them), as an installed package has. ``--no-bytecode`` keeps
``PYTHONDONTWRITEBYTECODE=1``, so every run compiles the package's sources again (some CI
sandboxes, this one included, set it).

Run: ``python benchmarks/bench_startup.py [--spec PATH] [--input 512x1024] [--rounds 10]
[--threads 2] [--no-bytecode]``. Prints a table and exits 0 (1 if the counts disagree).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "specs" / "models" / "skipnet_mobilenet_v1.yaml"

RTSEGC = "import sys; from rtseg_compiler.cli import main; sys.exit(main())"

TORCH_COUNT = """
import sys
import torch
from torch.utils.flop_counter import FlopCounterMode
from rtseg_compiler import compile_model

torch.set_num_threads({threads})
compiled = compile_model({spec!r}, ({h}, {w}))
x = torch.randn(compiled.audit.input)
with torch.no_grad(), FlopCounterMode(display=False) as counter:
    compiled.module(x)
print(counter.get_total_flops())
"""

IMPORT_TIME = ("import time; start = time.perf_counter(); import rtseg_compiler; "
               "print(time.perf_counter() - start)")


def child_env(bytecode: bool, checkout: Path = ROOT) -> dict[str, str]:
    """This environment, with ``checkout`` first on the module path (as in the tests)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float, str]:
    """Wall and CPU (user + system) time of one whole process, and its stdout.

    On a loaded machine the wall time includes waiting for a core; the CPU time does not.
    A failing child stops the benchmark.
    """
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, cpu, proc.stdout


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--input", type=parse_size, default=(512, 1024), metavar="HxW")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in the torch child")
    parser.add_argument("--no-bytecode", dest="bytecode", action="store_false",
                        help="children compile every module from source (PYTHONDONTWRITEBYTECODE=1)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also time 'rtsegc flops' from another checkout (e.g. an older commit) "
                             "in the same rounds")
    args = parser.parse_args()
    h, w = args.input
    env = child_env(args.bytecode)
    py = sys.executable
    commands = {
        "rtsegc": [py, "-c", RTSEGC, "flops", str(args.spec), "--input", f"{h}x{w}", "--json"],
        "torch": [py, "-c", TORCH_COUNT.format(threads=args.threads, spec=str(args.spec), h=h, w=w)],
        "import": [py, "-c", IMPORT_TIME],
        "pass": [py, "-c", "pass"],
    }
    envs = {name: env for name in commands}
    cwds = {name: ROOT for name in commands}
    if args.baseline:
        commands["baseline"] = commands["rtsegc"]
        envs["baseline"] = child_env(args.bytecode, args.baseline.resolve())
        cwds["baseline"] = args.baseline.resolve()
    # One untimed run each: writes the .pyc files, warms the page cache; its output is checked below.
    outputs = {name: timed(argv, envs[name], cwds[name])[2] for name, argv in commands.items()}

    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    imports: list[float] = []
    ratios: list[float] = []
    for k in range(args.rounds):
        order = ["rtsegc", "torch"] if k % 2 == 0 else ["torch", "rtsegc"]
        for name in order + [n for n in commands if n not in order]:
            elapsed, used, out = timed(commands[name], envs[name], cwds[name])
            times[name].append(elapsed)
            cpu[name].append(used)
            if name == "import":
                imports.append(float(out.strip()))
        ratios.append(times["torch"][-1] / times["rtsegc"][-1])

    audit_flops = json.loads(outputs["rtsegc"])["flops"]
    torch_flops = int(outputs["torch"].strip().splitlines()[-1])
    med = {name: statistics.median(values) for name, values in times.items()}
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    spec = args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec
    print(f"model: {spec} at {h}x{w}; {args.rounds} rounds; python {sys.version.split()[0]}; "
          f"bytecode {'cached' if args.bytecode else 'off (PYTHONDONTWRITEBYTECODE=1)'}; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")
    print(f"{'process':<48} {'median':>9} {'min':>9} {'CPU median':>11}")
    labels = {"rtsegc": "rtsegc flops --json (whole process)",
              "torch": "torch + compile_model + FlopCounterMode forward",
              "import": "python -c 'import rtseg_compiler' (wall)",
              "pass": "python -c pass (interpreter start-up)",
              "baseline": f"rtsegc flops --json from {args.baseline}"}
    for name in commands:
        print(f"{labels[name]:<48} {med[name] * 1e3:>7.0f}ms {min(times[name]) * 1e3:>7.0f}ms "
              f"{statistics.median(cpu[name]) * 1e3:>9.0f}ms")
    print(f"{'import rtseg_compiler, timed inside':<48} {statistics.median(imports) * 1e3:>7.0f}ms "
          f"{min(imports) * 1e3:>7.0f}ms")
    ratio = med["torch"] / med["rtsegc"]
    cpu_ratio = statistics.median(cpu["torch"]) / statistics.median(cpu["rtsegc"])
    print(f"\ntorch / rtsegc: {ratio:.1f}x (ratio of medians), {statistics.median(ratios):.1f}x "
          f"(median of per-round ratios), {cpu_ratio:.1f}x in CPU time")
    print(f"targets: rtsegc <= 250 ms: {'met' if med['rtsegc'] <= 0.25 else 'NOT met'} "
          f"({med['rtsegc'] * 1e3:.0f} ms); >= 15x: {'met' if ratio >= 15 else 'NOT met'} ({ratio:.1f}x)")
    ok = audit_flops == torch_flops
    if args.baseline:
        print(f"baseline / this checkout: {med['baseline'] / med['rtsegc']:.2f}x")
        ok = ok and json.loads(outputs["baseline"]) == json.loads(outputs["rtsegc"])
    print(f"counts: {'equal' if ok else 'MISMATCH'} "
          f"(audit {audit_flops:,} FLOPs, FlopCounterMode {torch_flops:,})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
