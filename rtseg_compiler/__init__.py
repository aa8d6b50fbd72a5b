"""rtseg_compiler: YAML layer graphs in, audited PyTorch segmentation networks out.

>>> from rtseg_compiler import create_model, list_models
>>> list_models("skipnet_*")                                      # doctest: +SKIP
['skipnet_mobilenet_v1', 'skipnet_resnet18', 'skipnet_shufflenet_v1', 'skipnet_vgg16']
>>> net = create_model("skipnet_mobilenet_v1", num_classes=19)      # doctest: +SKIP
>>> net.training, net.audit.params, net.feature_info.channels()   # doctest: +SKIP

>>> from rtseg_compiler import analyze
>>> a = analyze("specs/models/skipnet_mobilenet_v1.yaml")          # doctest: +SKIP
>>> a.audit.macs                                                  # doctest: +SKIP

``analyze`` needs no torch; ``compile_model`` also builds the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .allocator import configure_allocator
from .api import Feature, FeatureInfo, create_model, list_models
from .diagnostics import Diagnostic, Location, SpecError
from .ir import Graph
from .passes.budget import Budget
from .passes.count import Audit
from .pipeline import Analysis, analyze, validate_file

__all__ = ["Analysis", "Audit", "Budget", "CompiledModel", "Diagnostic", "Feature", "FeatureInfo",
           "Location", "SpecError", "analyze", "compile_model", "configure_allocator", "create_model",
           "list_models", "validate_file", "__version__"]

__version__ = "0.1.0"


@dataclass(frozen=True)
class CompiledModel:
    """A built network with the analysis it was built from."""

    module: Any  # torch.fx.GraphModule; typed loosely so importing this package needs no torch
    audit: Audit
    graph: Graph
    analysis: Analysis
    #: The inference build's InferencePlan (passes/fold_bn.py): what was folded and dropped.
    inference: Any = None
    #: Layers the memory pass switched to in place (passes/inplace.py).
    in_place: tuple[str, ...] = ()


def compile_model(path: str | Path | None = None, input_size: tuple[int, int] | None = None,
                  num_classes: int | None = None, *, encoder: str | Path | None = None,
                  meta: str | Path | None = None, output_stride: int | None = None,
                  budget: Any = None, encoder_params: dict[str, Any] | None = None,
                  meta_params: dict[str, Any] | None = None, outputs: str = "all",
                  inference: bool = False, weights: Any = None, channels_last: bool = False,
                  inplace: bool = True, pretrained: Any = None) -> CompiledModel:
    """Analyse a spec and emit its torch module; raises SpecError for an invalid spec.

    The module comes back in **eval mode**, ready for checks, export and inference, together with
    the analysis it was built from. To train it, call ``.train()``, or use :func:`create_model`,
    which returns the module itself in train mode with its audit and taps attached.

    The analysis and its resource ``budget`` (a ``passes.budget.Budget``; default 2e9
    parameters, 32 GiB of activations) run first, so an oversized spec fails before torch
    allocates anything.

    ``pretrained`` loads weights strictly after building: ``"SOURCE:NAME[@PATH]"`` through the
    layout the encoder spec declares (``"torchvision:resnet18@r18.pth"``; without ``@PATH`` it is
    fetched), or a file or state dict with the compiled module's own keys. docs/weights.md.

    A model whose meta declares ``outputs:`` returns a dict of them (main first); with
    ``outputs="main"`` the auxiliary heads are dropped, as for inference: the module returns
    the main tensor and the audit no longer counts them.

    ``weights``: a state dict, or a ``.pt`` file holding one (or a runtime checkpoint), with the
    ordinary module's keys; loaded strictly (``inference.WeightsError`` lists every bad key).
    ``inference=True`` folds batch norm into the convs before it and drops dropout
    (``passes/fold_bn.py``); the audit is then the folded network's. ``inplace`` (default on)
    lets activations and adds overwrite maps nothing else reads (``passes/inplace.py``).
    ``channels_last`` converts the weights to NHWC, which oneDNN convs run faster.
    """
    from .emit.torch_module import emit_torch

    analysis = analyze(path, input_size, num_classes, encoder=encoder, meta=meta,
                       output_stride=output_stride, budget=budget,
                       encoder_params=encoder_params, meta_params=meta_params, outputs=outputs)
    class_name = _class_name(analysis.graph.name)
    if pretrained is not None and weights is not None:
        raise ValueError("compile_model: give weights= (a whole state dict) or pretrained= (an "
                         "initialisation, e.g. 'torchvision:resnet18'), not both")
    if pretrained is not None and inference:
        # Weight layouts name the batch norms, so the source is imported into the ordinary
        # module first and the inference build folds the result.
        from .weights.importer import load_pretrained_into

        ordinary = emit_torch(analysis.resolved, class_name=class_name)
        load_pretrained_into(CompiledModel(ordinary, analysis.audit, analysis.resolved.graph, analysis),
                             pretrained)
        weights, pretrained = ordinary.state_dict(), None
    plan = None
    if inference:
        from .inference import build_inference

        module, plan, audit = build_inference(analysis, weights=weights, inplace=inplace,
                                              class_name=class_name)
        resolved = plan.resolved
        in_place = tuple(n.name for n in resolved.graph.nodes if n.attrs.get("inplace") is True
                         and not analysis.resolved.graph.node(n.name).attrs.get("inplace"))
    else:
        from .passes.inplace import run_in_place

        resolved, in_place = run_in_place(analysis.resolved) if inplace else (analysis.resolved, ())
        module = emit_torch(resolved, class_name=class_name)
        audit = analysis.audit
        if weights is not None:
            from .inference import load_weights

            load_weights(module, weights)
    if channels_last:
        import torch

        module = module.to(memory_format=torch.channels_last)
    compiled = CompiledModel(module, audit, resolved.graph, analysis, plan, in_place)
    if pretrained is not None:
        from .weights.importer import load_pretrained_into

        load_pretrained_into(compiled, pretrained)
    return compiled


def _class_name(name: str) -> str:
    parts = [p for p in "".join(c if c.isalnum() else "_" for c in name).split("_") if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) or "CompiledNet"
