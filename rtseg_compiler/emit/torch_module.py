"""Emit a ``torch.fx.GraphModule`` from a resolved graph.

Torch is imported at module level here and in the other torch-side modules (``emit/python_source``,
``inference``, ``export``, ``latency``, ``weights.files``/``load``/``importer``); the analysis
passes, the spec loader and the op declarations run without it (``tests/unit/test_no_torch.py``),
each op importing torch only inside its ``build`` hook.

A model that declares ``outputs:`` returns a dict of its outputs in declared order (the
first is the main output); a model with one ``output`` returns the tensor itself.

Each layer becomes a submodule at its qualified path (``encoder.ds3.pw`` is
``model.encoder.ds3.pw``, so state dict keys read like the spec), or a plain
function call for stateless fusion ops. torch.fx generates straight-line
Python for ``forward``: no interpreter loop and no per-layer dictionary
lookups, so the compiled network runs as fast as the same network written by
hand (``benchmarks/bench_forward.py`` measures the ratio).

One change to fx's code: each map is released one statement after its last
read instead of right after it (:func:`release_one_call_later`). Under
glibc's default malloc that keeps the heap from handing memory back to the OS
between layers; the forward computes the same numbers either way.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable

from torch import fx, nn

from ..ir import INPUT, Resolved
from ..ops import REGISTRY, FunctionCall

__all__ = ["emit_torch", "build_layer", "release_one_call_later"]

#: The statement tail fx's code generator writes to drop values after their last use.
_RELEASE = re.compile(r";  (?P<names>\w+(?: = \w+)*) = None\n$")


def build_layer(resolved: Resolved, name: str) -> Any:
    """The torch module or :class:`FunctionCall` for one node."""
    node = resolved.graph.node(name)
    ins = [resolved.types[i] for i in node.inputs]
    return REGISTRY[node.op].build(node.attrs, ins, resolved.types[node.name])


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        child = getattr(parent, part, None) if part in parent._modules else None
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(parts[-1], module)


class Retracer(fx.Tracer):
    """The tracer torch.fx uses to rebuild a compiled module from its code when it is unpickled
    (``torch.save(module)``, a DataLoader or multiprocessing handing it to another process).

    The rebuilt graph releases values as :func:`emit_torch` made it (:func:`release_one_call_later`).
    Re-tracing runs ``forward`` on proxies; ``merge.add_into_first`` (the in-place add of
    passes/inplace.py) checks dtypes and shapes before adding in place, a branch a proxy cannot
    take, so it is kept as one call, as ``emit_torch`` recorded it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from ..ops.merge import add_into_first

        kwargs.setdefault("autowrap_functions", (add_into_first,))
        super().__init__(*args, **kwargs)

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        """The traced graph, generating code with the release order of :func:`emit_torch`."""
        graph = super().trace(root, concrete_args)
        graph.on_generate_code(release_one_call_later)
        return graph


def release_one_call_later(previous: Callable | None) -> Callable[[list[str]], list[str]]:
    """A ``Graph.on_generate_code`` transformer: drop each value one statement after its last read.

    fx ends the statement that reads a value for the last time with ``;  value = None``, so the
    map goes back to malloc right after the call that consumed it, one call earlier than nested
    eager code frees it (``relu(bn(conv(x)))`` holds ``x`` in the caller until the block returns).
    Under glibc's default malloc that early free is what costs: maps below the mmap threshold
    (which glibc raises to 32 MiB as large blocks are freed) come from the heap, and freeing the
    input right after the output was allocated above it leaves free space at the top of the heap
    beyond ``M_TRIM_THRESHOLD``, which glibc gives back to the OS and the next layer faults in
    again. Holding the input one call longer keeps that space below a live map.

    Measured with benchmarks/bench_forward.py ``--faults`` (each module alone in a process, loaded
    2-core machine; docs/deployment.md has the table), minor page faults per forward, compiled /
    hand-written, two runs: SkipNet-MobileNet 0.92-1.03 at 512x1024 and 1.00-1.03 at 1024x2048
    (1.17-1.42 and 1.16-1.18 with fx's own order), SkipNet-ResNet18 1.03-1.04 and 1.01-1.02
    (0.86-1.00 and 1.07). Peak memory rises by at most
    the one map held; the values computed are the same, only the point where a reference is
    dropped moves. A malloc that keeps freed memory (rtseg_compiler/allocator.py) removes nearly
    all of these faults whatever the order.
    """

    def transform(body: list[str]) -> list[str]:
        if previous is not None:
            body = previous(body)
        out: list[str] = []
        held = ""  # names whose release is due after the statement being written
        for chunk in body:
            match = _RELEASE.search(chunk) if chunk.endswith("\n") else None
            if match is not None:
                out.append(f";  {held} = None\n" if held else "\n")
                held = match["names"]
            elif chunk == "\n" and held and out and not out[-1].startswith("return "):
                out.append(f";  {held} = None\n")
                held = ""
            else:
                out.append(chunk)
        return out

    return transform


def emit_torch(resolved: Resolved, class_name: str = "CompiledNet") -> fx.GraphModule:
    """A GraphModule computing ``resolved.graph`` for inputs of any batch size."""
    root = nn.Module()
    graph = fx.Graph(tracer_cls=Retracer)
    values: dict[str, fx.Node] = {INPUT: graph.placeholder("x")}
    #: Second results of ops that return (value, extra), e.g. max-pool indices for unpool.
    extras: dict[str, fx.Node] = {}
    for node in resolved.graph.nodes:
        built = build_layer(resolved, node.name)
        op = REGISTRY[node.op]
        args = tuple(_extra_of(extras, src, node.name) if pos in op.extra_inputs else values[src]
                     for pos, src in enumerate(node.inputs))
        # Names go through create_node so fx keeps them unique: 'stage2_1.conv' and 'stage2.1.conv'
        # both read stage2_1_conv, and assigning Node.name directly would make the graph fail lint().
        base = node.name.replace(".", "_")
        extra = op.returns_extra(node.attrs)
        call = f"{base}_pair" if extra else base
        if isinstance(built, nn.Module):
            _attach(root, node.name, built)
            values[node.name] = graph.create_node("call_module", node.name, args, {}, name=call)
        elif isinstance(built, FunctionCall):
            values[node.name] = graph.create_node("call_function", built.fn, args, dict(built.kwargs),
                                                  name=call)
        else:  # pragma: no cover - an op's build hook returned something else
            raise TypeError(f"op {node.op} built {type(built).__name__}, not a module or call")
        if extra:
            pair = values[node.name]
            values[node.name] = graph.create_node("call_function", operator.getitem, (pair, 0), name=base)
            extras[node.name] = graph.create_node("call_function", operator.getitem, (pair, 1),
                                                  name=f"{base}_extra")
        values[node.name].meta["layer"] = node.name  # the spec layer, for tools and tests
    if resolved.graph.outputs:  # several outputs: a dict in declared order, the main one first
        graph.output({name: values[node] for name, node in resolved.graph.outputs})
    else:
        graph.output(values[resolved.graph.output])
    graph.on_generate_code(release_one_call_later)
    module = fx.GraphModule(root, graph, class_name=class_name)
    module.eval()
    return module


def _extra_of(extras: dict[str, fx.Node], src: str, consumer: str) -> fx.Node:
    if src not in extras:  # shape inference rejects this; guards hand-made graphs
        raise ValueError(f"layer '{consumer}' needs the extra output (indices) of '{src}', "
                         f"which returns none")
    return extras[src]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


