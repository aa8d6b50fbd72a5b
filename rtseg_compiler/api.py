"""``create_model``: what a PyTorch user reaches for, in timm's spelling.

``create_model("skipnet_mobilenet_v1", num_classes=19)`` gives a plain ``nn.Module`` in train mode
(as torchvision's and timm's constructors do; ``compile_model`` keeps its eval-mode
``CompiledModel`` for audits and inference), carrying what the compiler knows about it:

* ``.audit``: parameters, MACs and FLOPs per layer, computed from the spec (no forward pass);
* ``.feature_info``: the encoder's taps, each with its channels, stride and layer name;
* ``.spec``: the texts of the model, encoder and meta files it was built from.

``features_only=True`` gives the encoder alone, returning ``{tap name: map}`` for the chosen taps,
the way a detection or segmentation framework consumes a backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .diagnostics import Diagnostics
from .zoo import list_models, resolve_spec

__all__ = ["Feature", "FeatureInfo", "create_model", "list_models"]


@dataclass(frozen=True)
class Feature:
    """One tap: ``stride16`` is ``channels`` maps at 1/``stride`` of the input, made by layer ``module``."""

    name: str
    channels: int
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


def create_model(name_or_path: str | Path, *, num_classes: int | None = None,
                 input_size: tuple[int, int] | None = None, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, taps: Sequence[str] | None = None,
                 output_stride: int | None = None, pretrained: Any = None,
                 encoder_params: Mapping[str, Any] | None = None,
                 meta_params: Mapping[str, Any] | None = None, **params: Any) -> Any:
    """A trainable ``nn.Module`` from a zoo name (:func:`list_models`) or a spec file.

    ``params`` set spec parameters by name (``width=0.5``); each goes to the encoder or the meta
    that declares it (a name both declare must be given through ``encoder_params`` or
    ``meta_params``). ``input_size`` fixes the size the audit and the shape checks use (default:
    the spec's ``input``); the module itself takes any size the network's layers allow.

    ``features_only=True`` builds the encoder alone; its forward returns ``{tap: map}`` for the
    taps chosen by name (``taps=("stride8", "stride16")``) or by position in
    ``feature_info`` (``out_indices=(2, 3)``, negative from the deepest); all taps by default.
    ``num_classes`` means nothing then and is ignored, as timm does.

    Raises :class:`~rtseg_compiler.diagnostics.SpecError` for an invalid spec (``str()`` lists
    every problem with its location) and ``ValueError`` for arguments that do not fit the spec.
    """
    ref = resolve_spec(name_or_path, "model")
    encoder_params, meta_params = _route_params(ref, params, encoder_params, meta_params)
    if not features_only:
        if taps is not None or out_indices is not None:
            raise ValueError("create_model: taps= and out_indices= choose the maps of "
                             "features_only=True; without it the module returns the model's output")
        from . import compile_model

        compiled = compile_model(ref, input_size, num_classes, output_stride=output_stride,
                                 encoder_params=encoder_params, meta_params=meta_params,
                                 pretrained=pretrained)
        module, analysis, audit = compiled.module, compiled.analysis, compiled.audit
        features = _features(analysis, analysis.graph.taps)
    else:
        module, analysis, features = _encoder_module(ref, input_size, output_stride, taps, out_indices,
                                                     encoder_params, pretrained)
        audit = analysis.audit
    module.train()
    _attach(module, audit=audit, feature_info=FeatureInfo(features), spec=_spec_texts(analysis.graph.files))
    return module


def _attach(module: Any, **attributes: Any) -> None:
    """Set ``attributes`` on a GraphModule so that they survive ``copy.deepcopy`` (EMA copies, DDP
    wrappers) and pickling: ``GraphModule.__deepcopy__`` rebuilds the module and keeps only what
    ``meta["_user_preserved_attributes"]`` lists (torch.fx's own mechanism for this)."""
    from torch.fx import graph_module

    key = getattr(graph_module, "_USER_PRESERVED_ATTRIBUTES_KEY", "_user_preserved_attributes")
    module.meta.setdefault(key, {}).update(attributes)
    for name, value in attributes.items():
        setattr(module, name, value)


def _route_params(ref: Any, params: Mapping[str, Any], encoder_params: Mapping[str, Any] | None,
                  meta_params: Mapping[str, Any] | None) -> tuple[dict | None, dict | None]:
    """Send each of ``params`` to the encoder or the meta whose ``params:`` declares it."""
    enc, meta = dict(encoder_params or {}), dict(meta_params or {})
    if not params:
        return enc or None, meta or None
    declared = _declared_params(ref)
    for name, value in params.items():
        owners = [part for part, names in declared.items() if name in names]
        if len(owners) == 2:
            raise ValueError(f"create_model: both the encoder and the meta declare '{name}'; "
                             f"pass encoder_params={{'{name}': ...}} or meta_params={{'{name}': ...}}")
        if not owners:
            valid = ", ".join(sorted(set().union(*declared.values()))) or "none"
            raise ValueError(f"create_model: '{name}' is not a parameter of this model's specs "
                             f"(they declare: {valid})")
        (enc if owners[0] == "encoder" else meta)[name] = value
    return enc or None, meta or None


def _declared_params(ref: Any) -> dict[str, set[str]]:
    from .spec.load import load_spec_file

    doc = load_spec_file(ref)
    files = {"encoder": ref} if doc.get("kind") == "encoder" else {}
    if doc.get("kind") == "model":
        base = Path(ref).parent
        files = {key: base / doc[key] for key in ("encoder", "meta")}
    out: dict[str, set[str]] = {}
    for part, path in files.items():
        declared = load_spec_file(path).get("params") or {}
        out[part] = set(declared) if isinstance(declared, Mapping) else set()
    return out


def _features(analysis: Any, taps: Sequence[Any]) -> list[Feature]:
    """Each tap's channels and stride as inferred, shallowest first (a stable sort on stride)."""
    types = analysis.resolved.types
    rows = [Feature(t.name, types[t.node].channels, int(types[t.node].stride), t.node)
            for t in taps if t.node in types]
    return sorted(rows, key=lambda f: f.stride)


def _encoder_module(ref: Any, input_size: tuple[int, int] | None, output_stride: int | None,
                    taps: Sequence[str] | None, out_indices: Sequence[int] | None,
                    encoder_params: Mapping[str, Any] | None, pretrained: Any) -> tuple[Any, Any, list]:
    """The encoder of ``ref`` (a model or an encoder file) whose outputs are the chosen taps."""
    from . import CompiledModel, _class_name
    from .emit.torch_module import emit_torch
    from .pipeline import DEFAULT_ENCODER_INPUT, _analyze_graph, load_graph

    diags = Diagnostics()
    graph = load_graph(ref, encoder_params=encoder_params, diags=diags)
    if not graph.taps:
        raise ValueError(f"create_model: {ref} declares no taps, so features_only has nothing to return")
    # Analyse the whole encoder once to order its taps by stride, then keep the chosen ones.
    encoder_nodes = tuple(n for n in graph.nodes if n.part == "encoder")
    encoder = graph.replace(nodes=encoder_nodes, num_classes=None, default_input=graph.default_input)
    size = input_size or graph.default_input or DEFAULT_ENCODER_INPUT
    every = _analyze_graph(encoder.replace(outputs=tuple((t.name, t.node) for t in graph.taps),
                                           output=graph.taps[0].node),
                           size, Diagnostics(), output_stride=output_stride)
    ordered = _features(every, graph.taps)
    chosen = _choose(ordered, taps, out_indices)
    outputs = tuple((f.name, f.module) for f in chosen)
    files = {k: v for k, v in graph.files.items() if k in ("model", "encoder")}  # no head is built
    # Only the chosen taps: an encoder analysed alone keeps every layer its taps read.
    kept_taps = tuple(t for t in graph.taps if t.name in {f.name for f in chosen})
    analysis = _analyze_graph(encoder.replace(outputs=outputs, output=outputs[0][1], files=files,
                                              taps=kept_taps), size, diags, output_stride=output_stride)
    module = emit_torch(analysis.resolved, class_name=_class_name(f"{graph.name}_features"))
    if pretrained is not None:
        from .weights.importer import load_pretrained_into

        load_pretrained_into(CompiledModel(module, analysis.audit, analysis.graph, analysis), pretrained)
    built = {f.name: f for f in _features(analysis, graph.taps)}
    return module, analysis, [built[name] for name, _ in outputs]


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


def _spec_texts(files: Mapping[str, str]) -> dict[str, str]:
    """{"model"|"encoder"|"meta": text} of the files the graph came from."""
    return {kind: Path(path).read_text(encoding="utf-8") for kind, path in files.items() if path}
