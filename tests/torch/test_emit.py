"""The emitted torch module agrees with the analytic audit, model by model.

For every shipped spec at its default input size: the module's parameters
equal the audit's (in total and layer by layer), every layer's output shape in
a real forward equals the inferred type, and torch's FlopCounterMode counts
exactly ``audit.flops`` (= 2 x MACs, flop-conventions.md §3). Shape and FLOP
checks run on the meta device, so even VGG-16 at 512x1024 costs no compute;
one small real forward on the CPU checks the values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from conftest import SPECS
from rtseg_compiler import compile_model
from rtseg_compiler.spec.load import load_spec_file


def _compilable() -> list[Path]:
    """Model specs, plus encoders and baseline networks that compile on their own."""
    paths = sorted((SPECS / "models").glob("*.yaml")) + sorted((SPECS / "encoders").glob("*.yaml"))
    paths += [p for p in sorted((SPECS / "baselines").glob("*.yaml"))
              if load_spec_file(p).get("kind") in ("model", "encoder")]
    return paths


SPEC_PATHS = _compilable()
IDS = [str(p.relative_to(SPECS)) for p in SPEC_PATHS]
SKIPNET = SPECS / "models" / "skipnet_mobilenet_v1.yaml"


class ShapeRecorder(fx.Interpreter):
    """Runs a GraphModule node by node, keeping each layer's output shape.

    Layers are found by ``node.meta["layer"]``, which emit sets on the node holding a layer's
    value: fx node names are mangled (``a.b`` -> ``a_b``) and made unique, so two layers can
    share a mangled name (ShuffleNet's ``stage2_1`` block and ``stage2`` repeat 1).
    """

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if "layer" in n.meta:
            self.shapes[n.meta["layer"]] = tuple(out.shape)
        return out


def layer_shapes(compiled, x: torch.Tensor) -> dict[str, tuple[int, ...] | None]:
    """Output shape of every layer in the analysed graph, by qualified name (None if not found)."""
    rec = ShapeRecorder(compiled.module)
    rec.run(x)
    return {n.name: rec.shapes.get(n.name) for n in compiled.graph.nodes}


def meta_compile(path: Path, input_size=None):
    with torch.device("meta"):
        return compile_model(path, input_size)


def meta_input(compiled, batch: int = 1) -> torch.Tensor:
    _, c, h, w = compiled.audit.input
    return torch.empty(batch, c, h, w, device="meta")


def main_output(out):
    """The main output: a model with several outputs (``outputs:``) returns a dict, main first."""
    return next(iter(out.values())) if isinstance(out, dict) else out


@pytest.fixture(scope="module", params=SPEC_PATHS, ids=IDS)
def compiled(request):
    return meta_compile(request.param)


def test_params_equal_audit(compiled):
    module = compiled.module
    assert sum(p.numel() for p in module.parameters()) == compiled.audit.params
    named = dict(module.named_modules())
    for layer in compiled.audit.layers:
        sub = named.get(layer.name)
        have = sum(p.numel() for p in sub.parameters()) if sub is not None else 0
        assert have == layer.params, f"{layer.name} ({layer.op}): module {have}, audit {layer.params}"


def test_layer_shapes_equal_inferred_types(compiled):
    got = layer_shapes(compiled, meta_input(compiled))
    types = compiled.analysis.resolved.types
    wrong = {name: (shape, str(types[name])) for name, shape in got.items()
             if shape != (1, types[name].channels, types[name].height, types[name].width)}
    assert not wrong, f"torch shape vs inferred type: {wrong}"


def test_graph_passes_fx_lint(compiled):
    """Unique node names, defined before use: what fx's own passes and codegen assume."""
    compiled.module.graph.lint()
    layers = [n.meta["layer"] for n in compiled.module.graph.nodes if "layer" in n.meta]
    assert layers == [n.name for n in compiled.graph.nodes]


def test_flop_counter_equals_audit(compiled):
    with FlopCounterMode(display=False) as counter:
        out = main_output(compiled.module(meta_input(compiled)))
    assert counter.get_total_flops() == compiled.audit.flops == 2 * compiled.audit.macs
    assert tuple(out.shape) == compiled.audit.output_shape


def test_flops_scale_with_batch_and_shapes_do_not_depend_on_it(compiled):
    """The audit is per image; the module takes any batch size."""
    with FlopCounterMode(display=False) as counter:
        out = main_output(compiled.module(meta_input(compiled, batch=3)))
    assert counter.get_total_flops() == 3 * compiled.audit.flops
    assert tuple(out.shape) == (3, *compiled.audit.output_shape[1:])


# --------------------------------------------------------------------------- real forward

@pytest.fixture(scope="module")
def small_skipnet():
    torch.manual_seed(0)
    return compile_model(SKIPNET, (64, 128))


def test_real_forward_is_finite_with_right_shape(small_skipnet):
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        y = small_skipnet.module(x)
    assert y.shape == (2, 20, 64, 128)
    assert torch.isfinite(y).all()
    assert y.std() > 0  # not a constant map
    # batch elements are independent in eval mode
    with torch.no_grad():
        y0 = small_skipnet.module(x[:1])
    torch.testing.assert_close(y[:1], y0, rtol=1e-4, atol=1e-5)


def test_real_forward_layer_shapes_at_odd_size():
    """At 72x136 (not a multiple of 32) the crops do real work; shapes still match inference."""
    compiled = compile_model(SKIPNET, (72, 136))
    with torch.no_grad():
        got = layer_shapes(compiled, torch.randn(1, 3, 72, 136))
    types = compiled.analysis.resolved.types
    assert got["head.up32"] == (1, 20, 6, 10) and types["head.score16"].spatial == (5, 9)
    for name, shape in got.items():
        t = types[name]
        assert shape == (1, t.channels, t.height, t.width), name


def test_state_dict_keys_follow_qualified_names(small_skipnet):
    state = small_skipnet.module.state_dict()
    assert state["encoder.ds1.dw.weight"].shape == (32, 1, 3, 3)
    assert state["encoder.ds1.pw.weight"].shape == (64, 32, 1, 1)
    assert state["encoder.ds7_11.3.pw.weight"].shape == (512, 512, 1, 1)
    assert state["encoder.conv1_bn.running_mean"].shape == (32,)
    assert state["head.score32.weight"].shape == (20, 1024, 1, 1)
    assert state["head.up8.weight"].shape == (20, 20, 16, 16)
    owners = {key.rsplit(".", 1)[0] for key in state}
    with_state = {n.name for n in small_skipnet.graph.nodes if n.op in ("conv", "deconv", "bn")}
    assert owners == with_state


def test_generated_forward_reads_like_the_spec(small_skipnet):
    code = small_skipnet.module.code
    assert "self.encoder.ds1.dw(" in code
    assert "self.head.up8(" in code
