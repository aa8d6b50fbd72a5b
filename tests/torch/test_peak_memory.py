"""Peak activation memory (compare.peak_activation_bytes) against the storages alive in an eager run.

The compiled module's fx graph is run node by node the way its generated ``forward`` runs it: a
value is dropped after its last user, the outputs are kept. After each node the distinct storages
still referenced (``untyped_storage()``, so a crop's slice and the map it slices count once) are
summed; the largest sum must equal the analytic peak exactly. Built without in-place ops, as the
definition assumes.
"""

from __future__ import annotations

import operator

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import analyze, compile_model
from rtseg_compiler.compare import peak_activation_bytes


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _eager_peak(module: torch.fx.GraphModule, x: torch.Tensor) -> int:
    nodes = list(module.graph.nodes)
    last_use = {}
    for k, node in enumerate(nodes):
        for used in node.all_input_nodes:
            last_use[used] = k
    weights = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    env, peak = {}, 0
    with torch.no_grad():
        for k, node in enumerate(nodes):
            args = torch.fx.node.map_arg(node.args, env.__getitem__)
            kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "get_attr":
                env[node] = operator.attrgetter(node.target)(module)
            elif node.op == "call_module":
                env[node] = module.get_submodule(node.target)(*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "output":
                env[node] = args[0]
            storages = {}
            for value in env.values():
                for t in _tensors(value):
                    storage = t.untyped_storage()
                    if storage.data_ptr() not in weights:
                        storages[storage.data_ptr()] = storage.nbytes()
            peak = max(peak, sum(storages.values()))
            for used in node.all_input_nodes:
                if last_use[used] == k:
                    del env[used]
    return peak


@pytest.mark.parametrize("name", ["models/skipnet_mobilenet_v1", "models/skipnet_shufflenet_v1",
                                  *(pytest.param(n, marks=pytest.mark.slow) for n in
                                    ("models/unet_resnet18", "models/fast_scnn", "baselines/enet"))])
def test_peak_equals_the_storages_alive_in_an_eager_run(name: str) -> None:
    path = SPECS / f"{name}.yaml"
    size = (64, 96)
    compiled = compile_model(path, size, inplace=False)
    x = torch.randn(1, 3, *size)
    assert _eager_peak(compiled.module.eval(), x) == peak_activation_bytes(analyze(path, size))
