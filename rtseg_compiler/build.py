"""The builder: an analysed spec in, a torch module with its weights out.

Every door to a network goes through :func:`build`: ``compile_model``, ``create_model`` (the whole
model, ``features_only`` backbones, ``in_chans``), the inference build, ``export``, the standalone
source of ``--save-code`` and the runtime's checkpoints. So the build passes run in one order, in
one place, and a module built one way equals the module built another way for the same spec
(tests/torch/test_build_routes.py holds every route to that).

The order, after the torch-free analysis (``pipeline.py``):

1. the inference pass (``passes/fold_bn.py``, with ``inference=True``): batch norm folded into the
   conv before it, dropout dropped;
2. the memory pass (``passes/inplace.py``, unless ``inplace=False``): activations and adds that may
   overwrite their input do;
3. emit (``emit/torch_module.py``), then load weights: ``weights=`` (the ordinary module's whole
   state dict, strictly) or ``pretrained=`` (an initialisation, ``docs/weights.md``).

With ``RTSEGC_CHECK=1`` the graph invariants (``passes/check.py``) are asserted after each build
pass, as ``pipeline.py`` does after each analysis pass.

Folded weights are computed from the ordinary module's (``inference.fold_state_dict``), because
training, checkpoints and weight layouts all name the batch norms: with ``inference=True`` the
ordinary module is emitted first, filled, folded and then dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .ir import INPUT, Graph, Resolved
from .passes.check import check_between_passes
from .passes.count import Audit
from .pipeline import Analysis

__all__ = ["CompiledModel", "adapt_input_conv", "build", "class_name_of", "input_convs", "standalone_source"]


@dataclass(frozen=True)
class CompiledModel:
    """A built network with the analysis it was built from.

    ``module`` is the ``torch.fx.GraphModule`` (in eval mode as :func:`build` returns it);
    ``audit`` counts the graph that was emitted (the folded one for an inference build).
    """

    module: Any  # torch.fx.GraphModule; typed loosely so importing this package needs no torch
    audit: Audit
    graph: Graph
    analysis: Analysis
    #: The inference build's InferencePlan (passes/fold_bn.py): what was folded and dropped.
    inference: Any = None
    #: Layers the memory pass switched to in place (passes/inplace.py).
    in_place: tuple[str, ...] = ()
    #: The graph the module was emitted from, after the build passes (``graph`` is its ``.graph``).
    resolved: Resolved | None = None


def class_name_of(name: str) -> str:
    """The Python class name of a model: ``skipnet_mobilenet_v1`` -> ``SkipnetMobilenetV1``."""
    parts = [p for p in "".join(c if c.isalnum() else "_" for c in name).split("_") if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) or "CompiledNet"


def build(analysis: Analysis, *, inference: bool = False, weights: Any = None, pretrained: Any = None,
          inplace: bool = True, channels_last: bool = False, class_name: str | None = None) -> CompiledModel:
    """The module for ``analysis``, in eval mode, with the build passes applied and weights loaded.

    ``weights``: a state dict or a file holding one (or a runtime checkpoint) with the ordinary
    module's keys, loaded strictly (``inference.WeightsError`` lists every bad key), or
    ``"SOURCE:NAME[@PATH]"``: a checkpoint renamed by a layout the specs declare, which must then fill
    every tensor of the module. ``pretrained``:
    ``"SOURCE:NAME[@PATH]"`` through a layout the encoder spec declares, or a file or state dict with
    the module's own keys (``weights/importer.py``). ``channels_last`` converts the weights to NHWC.
    """
    from .passes.count import count
    from .passes.fold_bn import InferencePlan, fold_for_inference

    if pretrained is not None and weights is not None:
        raise ValueError("give weights= (a whole state dict) or pretrained= (an initialisation, "
                         "e.g. 'torchvision:resnet18'), not both")
    class_name = class_name or class_name_of(analysis.graph.name)
    plan = None
    if inference:
        plan = fold_for_inference(analysis.resolved)
        check_between_passes(plan.resolved)
        # Weight files and layouts name the batch norms: fill the ordinary module, then fold it.
        from .inference import fold_state_dict

        ordinary = _emit(analysis.resolved, class_name)
        _load(CompiledModel(ordinary, analysis.audit, analysis.graph, analysis, resolved=analysis.resolved),
              weights, pretrained)
        weights = pretrained = None
        folded_state = fold_state_dict(ordinary.state_dict(), plan)
        del ordinary
        resolved, in_place = _in_place(plan.resolved, inplace)
        module = _emit(resolved, class_name)
        module.load_state_dict(folded_state, strict=True)
        plan = InferencePlan(resolved, plan.folds, plan.dropped, plan.kept)
        audit = count(resolved)
    else:
        resolved, in_place = _in_place(analysis.resolved, inplace)
        module = _emit(resolved, class_name)
        audit = analysis.audit
        if weights is not None:
            _load(CompiledModel(module, audit, resolved.graph, analysis, resolved=resolved), weights, None)
    if channels_last:
        import torch

        module = module.to(memory_format=torch.channels_last)
    compiled = CompiledModel(module, audit, resolved.graph, analysis, plan, in_place, resolved)
    if pretrained is not None:
        _load(compiled, None, pretrained)
    return compiled


def _in_place(resolved: Resolved, enabled: bool) -> tuple[Resolved, tuple[str, ...]]:
    from .passes.inplace import run_in_place

    if not enabled:
        return resolved, ()
    rewritten, switched = run_in_place(resolved)
    return check_between_passes(rewritten), switched


def _emit(resolved: Resolved, class_name: str) -> Any:
    from .emit.torch_module import emit_torch

    return emit_torch(resolved, class_name=class_name)


def _load(compiled: CompiledModel, weights: Any, pretrained: Any) -> None:
    if weights is not None and is_weight_source(weights):
        from .weights.importer import import_weights

        import_weights(compiled, weights, whole=True)
    elif weights is not None:
        from .inference import load_weights

        load_weights(compiled.module, weights)
    if pretrained is not None:
        from .weights.importer import load_pretrained_into

        load_pretrained_into(compiled, pretrained)


def is_weight_source(weights: Any) -> bool:
    """Whether ``weights=`` names a declared layout (``mylab:segformer_b0@ckpt.pt``) rather than a file
    in the module's own layout: text of the ``SOURCE:NAME[@PATH]`` form that is not an existing file
    (an existing file of that name is read as a file, as before layouts were accepted here)."""
    from .weights.mapping import is_source_text

    return (isinstance(weights, str) and is_source_text(weights, any_source=True)
            and not Path(weights).exists())


def standalone_source(compiled: CompiledModel, origin: str = "") -> str:
    """The standalone ``.py`` text of ``compiled`` (``rtsegc compile --save-code``).

    Written from the graph the module was built from, folded for an inference build, so the file's
    state-dict keys are the module's; but before the memory pass: the file runs every layer out of
    place, which computes the same values (``passes/inplace.py``) with plain ``a + b`` code.
    """
    from .emit.python_source import emit_python
    from .passes.fold_bn import fold_for_inference

    resolved = compiled.analysis.resolved
    if compiled.inference is not None:
        resolved = check_between_passes(fold_for_inference(resolved).resolved)
    return emit_python(resolved, class_name_of(compiled.audit.model), origin=origin)


# --------------------------------------------------------------------------- other input channels

def input_convs(resolved: Resolved) -> tuple[str, ...]:
    """The conv layers that read the image itself: those whose first weights ``in_chans`` changes."""
    return tuple(n.name for n in resolved.graph.nodes if n.op == "conv" and INPUT in n.inputs)


def adapt_input_conv(weight: Any, in_chans: int) -> Any:
    """A first-conv kernel trained on ``weight.shape[1]`` image channels, for ``in_chans`` channels.

    The rule timm applies to pretrained weights (``timm/models/_manipulate.py``, ``adapt_input_conv``):
    one channel gets the sum over the trained ones (a grey image carries R = G = B, so the response
    is unchanged); more channels repeat the trained kernel cyclically (R, G, B, R, ...) and scale it
    by ``trained / in_chans``, which keeps the response to an image whose channels are all equal
    for a multiple of the trained count (6 for RGB) and close to it otherwise.
    """
    import torch

    trained = weight.shape[1]
    if in_chans == trained:
        return weight
    with torch.no_grad():
        w = weight.detach().to(torch.float32)
        if in_chans == 1:
            out = w.sum(dim=1, keepdim=True)
        else:
            repeat = math.ceil(in_chans / trained)
            out = w.repeat(1, repeat, 1, 1)[:, :in_chans] * (trained / in_chans)
    return out.to(weight.dtype).contiguous()


def adapted_state(state: Mapping[str, Any], resolved: Resolved, in_chans: int) -> dict[str, Any]:
    """``state`` (of a module for the spec's image channels), its input convs adapted to ``in_chans``."""
    out = dict(state)
    for name in input_convs(resolved):
        key = f"{name}.weight"
        if key in out:
            out[key] = adapt_input_conv(out[key], in_chans)
    return out
