"""The doors to a network: ``create_model`` (what a PyTorch user reaches for, in timm's spelling) and
``compile_model`` (the compiler's own, for audits and inference). Both are thin layers over the
builder (``build.py``), so the same spec gives the same module through either.

``create_model("skipnet_mobilenet_v1", num_classes=19)`` returns the network itself: a
``torch.fx.GraphModule`` subclass named after the model (``SkipnetMobilenetV1``), in train mode (as
torchvision's and timm's constructors do), carrying what the compiler knows about it:

* ``.audit``: parameters, MACs and FLOPs per layer, computed from the spec (no forward pass);
* ``.feature_info``: the encoder's taps, each with its channels, stride and layer name;
* ``.spec``: the texts of the model, encoder and meta files it was built from;
* ``.encoder``: the encoder part, callable: ``net.encoder(x)`` returns ``{tap: map}`` for every tap,
  computed by the same submodules (and weights) the whole network uses.

``features_only=True`` gives the encoder alone, returning ``{tap name: map}`` for the chosen taps,
the way a detection or segmentation framework consumes a backbone.

``compile_model`` returns a :class:`~rtseg_compiler.build.CompiledModel`: the module in eval mode,
with the analysis, the audit of the graph that was emitted and what the build passes did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from .build import CompiledModel, adapted_state, build, class_name_of
from .diagnostics import Diagnostics
from .pipeline import (DEFAULT_ENCODER_INPUT, Analysis, analyze, analyze_graph, load_graph, sources_of,
                       with_outputs)
from .spec.sources import SpecReader, SpecRef, model_parts
from .zoo import list_models

__all__ = ["Feature", "FeatureInfo", "compile_model", "create_model", "list_models"]


@dataclass(frozen=True)
class Feature:
    """One tap: ``stride16`` is ``channels`` maps at 1/``stride`` of the input, made by layer ``module``."""

    name: str
    channels: int
    #: timm's ``reduction``. A tap on a row or column map (not a ``strideN`` tap, which must be
    #: isotropic) reports the stride of its axis on the image grid (``TensorType.grid_stride``).
    stride: int
    #: The spec layer (``encoder.ds11.pw_relu``), which is also the module's qualified name in
    #: the compiled GraphModule when the layer is a module (a conv, a block's activation ...).
    module: str


class FeatureInfo(Sequence[Feature]):
    """The taps a module exposes, shallowest first; also answers timm's ``channels()``/``reduction()``."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self._features = tuple(features)

    def __getitem__(self, index: Any) -> Any:
        return self._features[index]

    def __len__(self) -> int:
        return len(self._features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features)

    def __repr__(self) -> str:
        rows = ", ".join(f"{f.name}: {f.channels}ch /{f.stride}" for f in self._features)
        return f"FeatureInfo({rows})"

    def names(self) -> list[str]:
        return [f.name for f in self._features]

    def channels(self) -> list[int]:
        return [f.channels for f in self._features]

    def reduction(self) -> list[int]:
        return [f.stride for f in self._features]

    def module_name(self) -> list[str]:
        return [f.module for f in self._features]


def compile_model(path: SpecRef | None = None, input_size: tuple[int, int] | None = None,
                  num_classes: int | None = None, *, encoder: SpecRef | None = None,
                  meta: SpecRef | None = None, output_stride: int | None = None,
                  budget: Any = None, encoder_params: dict[str, Any] | None = None,
                  meta_params: dict[str, Any] | None = None, outputs: str = "all",
                  inference: bool = False, weights: Any = None, channels_last: bool = False,
                  inplace: bool = True, pretrained: Any = None,
                  documents: Mapping[str, str] | None = None) -> CompiledModel:
    """Analyse a spec and build its torch module; raises SpecError for an invalid spec.

    A thin layer over the builder (``build.py``), kept for the compiler's own uses: the module
    comes back in **eval mode**, ready for checks, export and inference, inside a
    :class:`~rtseg_compiler.build.CompiledModel` together with the analysis it was built from.
    :func:`create_model` builds the same module (train mode, audit and taps attached).

    The analysis and its resource ``budget`` (a ``passes.budget.Budget``; default 2e9
    parameters, 32 GiB of activations) run first, so an oversized spec fails before torch
    allocates anything.

    ``path``, ``encoder`` and ``meta`` are files, zoo names or ``SpecSource`` texts; ``documents``
    holds files by name (see :func:`~rtseg_compiler.pipeline.analyze`).

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
    analysis = analyze(path, input_size, num_classes, encoder=encoder, meta=meta,
                       output_stride=output_stride, budget=budget, encoder_params=encoder_params,
                       meta_params=meta_params, outputs=outputs, documents=documents)
    return build(analysis, inference=inference, weights=weights, pretrained=pretrained, inplace=inplace,
                 channels_last=channels_last)


def create_model(name_or_path: SpecRef | None = None, *, num_classes: int | None = None,
                 input_size: tuple[int, int] | None = None, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, taps: Sequence[str] | None = None,
                 output_stride: int | None = None, pretrained: Any = None,
                 encoder_params: Mapping[str, Any] | None = None,
                 meta_params: Mapping[str, Any] | None = None, outputs: str = "all",
                 in_chans: int | None = None, inference: bool = False, weights: Any = None,
                 channels_last: bool = False, inplace: bool = True, budget: Any = None,
                 encoder: SpecRef | None = None, meta: SpecRef | None = None,
                 documents: Mapping[str, str] | None = None, **params: Any) -> Any:
    """A trainable network from a zoo name (:func:`list_models`), a spec file or a spec text.

    Returns a ``torch.fx.GraphModule`` subclass in train mode (eval mode with ``inference=True``)
    with ``.audit``, ``.feature_info``, ``.spec`` and a callable ``.encoder`` (see the module
    docstring). Its forward returns the model's output: one tensor, or a dict in declared order
    (main first) for a meta that declares ``outputs:``. That dict is returned in train and eval
    mode alike, as torchvision's segmentation models return ``{"out", "aux"}``: a traced or
    exported module has one output structure. ``outputs="main"`` leaves the auxiliary heads out
    of the network and its audit, so it returns the main tensor. A classifier (a model whose main
    output is a ``linear`` layer) returns ``(N, classes)`` logits, as torchvision's do; the
    audit still reads its output as a ``classes x 1 x 1`` map.

    ``params`` set spec parameters by name (``width=0.5``); each goes to the encoder or the meta
    that declares it (a name both declare must be given through ``encoder_params`` or
    ``meta_params``). ``input_size`` fixes the size the audit and the shape checks use (default:
    the spec's ``input``); the module itself takes any size the network's layers allow.

    ``in_chans`` sets the number of image channels (RGB-D: 4). With ``pretrained``, the weights
    are loaded for the spec's own channels first, then each conv reading the image has its kernel
    adapted as timm does (:func:`~rtseg_compiler.build.adapt_input_conv`).

    ``features_only=True`` builds the encoder alone; its forward returns ``{tap: map}`` for the
    taps chosen by name (``taps=("stride8", "stride16")``) or by position in
    ``feature_info`` (``out_indices=(2, 3)``, negative from the deepest); all taps by default.
    ``num_classes`` means nothing then and is ignored, as timm does.

    ``inference``, ``weights``, ``channels_last``, ``inplace``, ``budget``, ``encoder``/``meta``
    (a pair instead of a model file) and ``documents`` mean what they mean for
    :func:`compile_model`.

    Raises :class:`~rtseg_compiler.diagnostics.SpecError` for an invalid spec (``str()`` lists
    every problem with its location) and ``ValueError`` for arguments that do not fit the spec.
    """
    if in_chans is not None and (not isinstance(in_chans, int) or in_chans < 1):
        raise ValueError(f"create_model: in_chans must be a positive int, not {in_chans!r}")
    if name_or_path is None and not (encoder is not None and meta is not None):
        raise ValueError("create_model: give a model (zoo name, file or SpecSource), or encoder= and meta=")
    reader = SpecReader(documents)
    encoder_params, meta_params = _route_params(reader, name_or_path, encoder, meta, params,
                                                encoder_params, meta_params)
    if features_only and name_or_path is None:
        raise ValueError("create_model: features_only=True builds the encoder of a model or encoder "
                         "file; pass it as the first argument")
    if features_only and inference:
        raise ValueError("create_model: features_only=True gives a trainable backbone; "
                         "inference=True is for whole models")
    if not features_only and (taps is not None or out_indices is not None):
        raise ValueError("create_model: taps= and out_indices= choose the maps of "
                         "features_only=True; without it the module returns the model's output")

    def analyse(channels: int | None) -> tuple[Analysis, list[Feature] | None]:
        if features_only:
            return _encoder_analysis(reader, name_or_path, input_size, output_stride, taps, out_indices,
                                     encoder_params, channels, budget)
        diags = Diagnostics()
        graph = load_graph(name_or_path, encoder=encoder, meta=meta, num_classes=num_classes, diags=diags,
                           encoder_params=encoder_params, meta_params=meta_params, reader=reader)
        if channels is not None:
            graph = graph.replace(input_channels=channels)
        return analyze_graph(graph, input_size, diags, output_stride=output_stride, budget=budget,
                             outputs=outputs, sources=sources_of(graph, reader)), None

    analysis, chosen = analyse(in_chans)
    class_name = class_name_of(f"{analysis.graph.name}_features" if features_only else analysis.graph.name)
    if in_chans is not None and pretrained is not None:
        original = analyse(None)[0]
        if original.resolved.input.channels != in_chans:
            weights, pretrained = _adapted_pretrained(original, analysis, pretrained, class_name), None
    compiled = build(analysis, inference=inference, weights=weights, pretrained=pretrained, inplace=inplace,
                     channels_last=channels_last, class_name=class_name)
    return _finish_module(compiled, features_only=features_only, chosen=chosen)


def _finish_module(compiled: CompiledModel, *, features_only: bool = False,
                  chosen: Sequence[Feature] | None = None) -> Any:
    """``compiled.module`` as :func:`create_model` returns it: the mode, the attributes, the encoder."""
    module, analysis = compiled.module, compiled.analysis
    features = list(chosen) if chosen is not None else _features(analysis, analysis.graph.taps)
    if not features_only and _is_classifier(compiled):
        _flatten_output(module)
    if compiled.inference is None:
        module.train()
    attributes = dict(audit=compiled.audit, feature_info=FeatureInfo(features),
                      spec={kind: source.text for kind, source in analysis.sources.items()})
    if not features_only:
        encoder = _encoder_view(module, compiled)
        if encoder is not None:
            attributes["encoder"] = encoder
    _attach(module, **attributes)
    return module


def _is_classifier(compiled: CompiledModel) -> bool:
    """A model whose main output is a ``linear`` layer's ``classes x 1 x 1`` map (the ImageNet heads)."""
    graph = compiled.graph
    return not graph.outputs and any(n.name == graph.output and n.op == "linear" for n in graph.nodes)


def _flatten_output(module: Any) -> None:
    """Return ``(N, classes)`` (torchvision's shape) instead of ``(N, classes, 1, 1)``: a view."""
    import torch

    graph = module.graph
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        flat = graph.call_function(torch.flatten, (output.args[0], 1), name="logits")
    output.args = (flat,)
    module.recompile()


def _encoder_view(module: Any, compiled: CompiledModel) -> Any:
    """A GraphModule over the network's own encoder submodules returning ``{tap: map}`` for every tap.

    It takes the place of the bare ``encoder`` container (which has no forward) at the same path and
    holds the same submodule objects, so the state dict keys and the parameters are the network's:
    training the network trains it. Every encoder layer is kept, so nothing leaves the state dict.
    """
    from torch import fx

    from .emit.torch_module import Retracer

    graph = compiled.graph
    present = {n.name for n in graph.nodes}
    taps = [t for t in graph.taps if t.node in present]
    container = module._modules.get("encoder")
    if not taps or container is None:
        return None
    view = fx.Graph(tracer_cls=Retracer)  # unpickling re-traces it, in-place adds included
    copied: dict[Any, Any] = {}
    by_layer: dict[str, Any] = {}
    for fx_node in module.graph.nodes:
        if fx_node.op == "output":
            break
        inputs = fx_node.all_input_nodes
        if fx_node.op == "call_module" and not str(fx_node.target).startswith("encoder."):
            continue
        if fx_node.op != "placeholder" and (not inputs or not all(i in copied for i in inputs)):
            continue
        new = view.node_copy(fx_node, lambda n: copied[n])
        if new.op == "call_module":
            new.target = str(new.target).removeprefix("encoder.")
        copied[fx_node] = new
        layer = fx_node.meta.get("layer")
        if layer is not None:
            by_layer[layer] = new
    if any(t.node not in by_layer for t in taps):  # a tap the fx graph does not show as an encoder layer
        return None
    view.output({t.name: by_layer[t.node] for t in taps})
    return fx.GraphModule(container, view, class_name="Encoder")


def _attach(module: Any, **attributes: Any) -> None:
    """Set ``attributes`` on a GraphModule so that they survive ``copy.deepcopy`` (EMA copies, DDP
    wrappers) and pickling: ``GraphModule.__deepcopy__`` rebuilds the module and keeps only what
    ``meta["_user_preserved_attributes"]`` lists (torch.fx's own mechanism for this)."""
    from torch.fx import graph_module

    key = getattr(graph_module, "_USER_PRESERVED_ATTRIBUTES_KEY", "_user_preserved_attributes")
    module.meta.setdefault(key, {}).update(attributes)
    for name, value in attributes.items():
        setattr(module, name, value)


def _route_params(reader: SpecReader, ref: SpecRef | None, encoder: SpecRef | None, meta: SpecRef | None,
                  params: Mapping[str, Any], encoder_params: Mapping[str, Any] | None,
                  meta_params: Mapping[str, Any] | None) -> tuple[dict | None, dict | None]:
    """Send each of ``params`` to the encoder or the meta whose ``params:`` declares it."""
    enc, meta_out = dict(encoder_params or {}), dict(meta_params or {})
    if not params:
        return enc or None, meta_out or None
    declared = _declared_params(reader, ref, encoder, meta)
    for name, value in params.items():
        owners = [part for part, names in declared.items() if name in names]
        if len(owners) == 2:
            raise ValueError(f"create_model: both the encoder and the meta declare '{name}'; "
                             f"pass encoder_params={{'{name}': ...}} or meta_params={{'{name}': ...}}")
        if not owners:
            valid = ", ".join(sorted(set().union(*declared.values()))) or "none"
            raise ValueError(f"create_model: '{name}' is not a parameter of this model's specs "
                             f"(they declare: {valid})")
        (enc if owners[0] == "encoder" else meta_out)[name] = value
    return enc or None, meta_out or None


def _declared_params(reader: SpecReader, ref: SpecRef | None, encoder: SpecRef | None,
                     meta: SpecRef | None) -> dict[str, set[str]]:
    parts: dict[str, Any] = {}
    if ref is not None:
        ref = reader.resolve(ref, "model")
        doc = reader.load(ref)
        if doc.get("kind") == "encoder":
            parts = {"encoder": ref}
        elif doc.get("kind") == "model":
            parts = model_parts(ref, doc, reader)
    else:
        parts = {"encoder": reader.resolve(encoder, "encoder"), "meta": reader.resolve(meta, "meta")}
    out: dict[str, set[str]] = {}
    for part, part_ref in parts.items():
        declared = reader.load(part_ref).get("params") or {}
        out[part] = set(declared) if isinstance(declared, Mapping) else set()
    return out


def _features(analysis: Any, taps: Sequence[Any]) -> list[Feature]:
    """Each tap's channels and stride as inferred, shallowest first (a stable sort on stride)."""
    types = analysis.resolved.types
    # A strideN tap is checked to be isotropic; another tap on a row or column map reports the
    # stride of its axis on the image grid.
    rows = [Feature(t.name, types[t.node].channels, int(types[t.node].grid_stride), t.node)
            for t in taps if t.node in types]
    return sorted(rows, key=lambda f: f.stride)


def _encoder_analysis(reader: SpecReader, ref: SpecRef, input_size: tuple[int, int] | None,
                      output_stride: int | None, taps: Sequence[str] | None,
                      out_indices: Sequence[int] | None,
                      encoder_params: Mapping[str, Any] | None, in_chans: int | None,
                      budget: Any) -> tuple[Analysis, list[Feature]]:
    """The analysis of the encoder of ``ref`` (a model or an encoder file) whose outputs are the chosen taps.

    The whole encoder is analysed once, with every tap an output, which orders the taps by stride;
    it is then narrowed to the chosen taps (``pipeline.with_outputs``), so layers after the deepest
    chosen tap are left out.
    """
    diags = Diagnostics()
    graph = load_graph(ref, encoder_params=encoder_params, diags=diags, reader=reader)
    if not graph.taps:
        raise ValueError(f"create_model: {ref} declares no taps, so features_only has nothing to return")
    encoder_nodes = tuple(n for n in graph.nodes if n.part == "encoder")
    encoder = graph.replace(nodes=encoder_nodes, num_classes=None, default_input=graph.default_input)
    if in_chans is not None:
        encoder = encoder.replace(input_channels=in_chans)
    size = input_size or graph.default_input or DEFAULT_ENCODER_INPUT
    every = analyze_graph(encoder.replace(outputs=tuple((t.name, t.node) for t in graph.taps),
                                          output=graph.taps[0].node),
                          size, diags, output_stride=output_stride, budget=budget,
                          sources=sources_of(encoder, reader))
    # The analysed taps: a tap on a layer whose 'when:' turned out false reads that layer's input.
    chosen = _choose(_features(every, every.graph.taps), taps, out_indices)
    outputs = tuple((f.name, f.module) for f in chosen)
    files = {k: v for k, v in graph.files.items() if k in ("model", "encoder")}  # no head is built
    analysis = with_outputs(every, outputs, files)
    built = {f.name: f for f in _features(analysis, every.graph.taps)}
    return analysis, [built[name] for name, _ in outputs]


def _adapted_pretrained(original: Analysis, analysis: Analysis, pretrained: Any, class_name: str) -> dict:
    """The whole state dict for ``analysis`` (other image channels): ``pretrained`` loaded into the
    network at the spec's own channels (``original``), then the kernels of the convs reading the
    image adapted."""
    channels = analysis.resolved.input.channels
    state = build(original, pretrained=pretrained, inplace=False, class_name=class_name).module.state_dict()
    state = adapted_state(state, original.resolved, channels)
    expected = build(analysis, inplace=False, class_name=class_name).module.state_dict()
    changed = sorted(k for k in expected if k in state and expected[k].shape != state[k].shape)
    if changed:
        raise ValueError(f"create_model: in_chans={channels} changes more than the convs reading the image "
                         f"({', '.join(changed[:3])}), so the pretrained weights cannot be adapted")
    return state


def _choose(ordered: list[Feature], taps: Sequence[str] | None,
            out_indices: Sequence[int] | None) -> list[Feature]:
    names = [f.name for f in ordered]
    if taps is not None and out_indices is not None:
        raise ValueError("create_model: give taps= or out_indices=, not both")
    if isinstance(taps, str):
        taps = [taps]
    if taps is not None:
        unknown = [t for t in taps if t not in names]
        if unknown:
            raise ValueError(f"create_model: no tap {', '.join(map(repr, unknown))}; "
                             f"the encoder has {', '.join(names)}")
        picked = [ordered[names.index(t)] for t in taps]
    elif out_indices is not None:
        bad = [i for i in out_indices if not -len(ordered) <= i < len(ordered)]
        if bad:
            raise ValueError(f"create_model: out_indices {bad} out of range for {len(ordered)} taps "
                             f"({', '.join(names)})")
        picked = [ordered[i] for i in out_indices]
    else:
        picked = list(ordered)
    if not picked:
        raise ValueError("create_model: features_only needs at least one tap")
    if len({f.name for f in picked}) != len(picked):
        raise ValueError(f"create_model: a tap is chosen twice: {[f.name for f in picked]}")
    return picked
