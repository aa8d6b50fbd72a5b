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
"""

from __future__ import annotations

import operator
from typing import Any

from torch import fx, nn

from ..ir import INPUT, Resolved
from ..ops import REGISTRY, FunctionCall

__all__ = ["emit_torch", "build_layer"]


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

    Re-tracing runs ``forward`` on proxies; ``merge.add_into_first`` (the in-place add of
    passes/inplace.py) checks dtypes and shapes before adding in place, a branch a proxy cannot
    take, so it is kept as one call, as ``emit_torch`` recorded it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from ..ops.merge import add_into_first

        kwargs.setdefault("autowrap_functions", (add_into_first,))
        super().__init__(*args, **kwargs)


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


