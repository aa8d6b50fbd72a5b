"""Import published weights into a compiled module through the encoder spec's declared layout.

``import_weights(compiled, "torchvision:resnet18@r18.pth")`` reads the checkpoint (or fetches it
through torchvision's or timm's weights API when no file is given: the only network access in the
project, and only when asked), renames every key by the layout declared in the encoder spec
(:mod:`.mapping`), and loads strictly: nothing is copied unless every encoder tensor is supplied
with the right shape and every source key has a place. The report (:class:`~.report.WeightsReport`,
also named ``ImportReport`` here) lists each missing, unexpected and mis-shaped key, with the
closest key of the other side as a did-you-mean, the classifier-head keys the model does not use,
and, where a spec parameter would make the weights fit (``conv_bias=false``), says so.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..spec.load import load_spec_file, load_spec_text
from .files import read_state_dict
from .load import copy_into, fit
from .mapping import Layout, WeightSource, WeightSourceError, is_source_text, parse_layouts, parse_source
from .report import WeightsError, WeightsReport, key_section

__all__ = ["ImportReport", "WeightsError", "import_weights", "key_section", "map_state_dict",
           "read_state_dict_file", "fetch_state_dict", "layouts_for", "layout_for", "load_pretrained_into",
           "looks_like_source"]

ENCODER_PREFIX, HEAD_PREFIX = "encoder.", "head."

#: The report of an import is the one weights report; the name stays for existing imports.
ImportReport = WeightsReport
#: The one reader; the name stays for existing imports.
read_state_dict_file = read_state_dict


def fetch_state_dict(source: WeightSource) -> dict[str, torch.Tensor]:
    """The published weights of ``source`` through its library's own weights API (downloads, caches).

    Only called for a source written without ``@PATH``. Every way a fetch fails (the library is
    missing, no network, an unknown name) is a :class:`WeightsError` that names the ``@PATH``
    alternative: download the file once, anywhere, and give its path.
    """
    alternative = (f"download the weights file yourself and give its path: "
                   f"{source.label}@FILE{'.safetensors' if source.source in ('timm', 'transformers') else '.pth'}")
    if source.source not in ("torchvision", "timm"):
        raise WeightsError(f"{source}: no fetcher for source '{source.source}'; {alternative}")
    try:
        if source.source == "torchvision":
            from torchvision.models import get_model_weights

            return dict(get_model_weights(source.name).DEFAULT.get_state_dict(progress=True))
        import timm

        return dict(timm.create_model(source.name, pretrained=True).state_dict())
    except ImportError as exc:
        raise WeightsError(f"{source}: fetching needs {source.source}, which does not import "
                           f"({_first_line(exc)}); or {alternative}") from None
    except Exception as exc:  # noqa: BLE001 - network, HTTP, cache and unknown-name errors alike
        raise WeightsError(f"{source}: fetching the published weights failed ({type(exc).__name__}: "
                           f"{_first_line(exc)}); {alternative}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def source_state_dict(source: WeightSource | str) -> dict[str, torch.Tensor]:
    src = parse_source(source) if isinstance(source, str) else source
    return read_state_dict(src.path) if src.path else fetch_state_dict(src)


# --------------------------------------------------------------------------- layouts of a compiled model

def _spec_document(compiled: Any, kind: str) -> Any:
    """The ``kind`` document ``compiled`` was built from: the text it read (a file or a SpecSource)."""
    source = getattr(getattr(compiled, "analysis", None), "sources", {}).get(kind)
    if source is not None:
        return load_spec_text(source.text, source.name)
    path = compiled.graph.files.get(kind)
    return load_spec_file(path) if path else None


def layouts_for(compiled: Any) -> dict[tuple[str, str], Layout]:
    """The layouts declared by the encoder spec of ``compiled`` (a CompiledModel)."""
    doc = _spec_document(compiled, "encoder")
    if doc is None:
        return {}
    return parse_layouts(doc, str(compiled.graph.files.get("encoder")))


def layout_for(compiled: Any, source: WeightSource) -> Layout:
    layouts = layouts_for(compiled)
    key = (source.source, source.name)
    if key not in layouts:
        known = ", ".join(sorted(f"{s}:{n}" for s, n in layouts)) or "none"
        close = difflib.get_close_matches(source.label, [f"{s}:{n}" for s, n in layouts], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise WeightsError(f"{source.label}: the encoder spec {compiled.graph.files.get('encoder')} declares "
                           f"no such weight layout ({hint}declared: {known}; see docs/weights.md)")
    return layouts[key]


def _meta_name(compiled: Any) -> str | None:
    doc = _spec_document(compiled, "meta")
    return None if doc is None else str(doc.get("name"))


# --------------------------------------------------------------------------- mapping and loading

def map_state_dict(state: Mapping[str, torch.Tensor], layout: Layout, target: Mapping[str, torch.Tensor],
                   meta: str | None) -> tuple[dict[str, torch.Tensor], WeightsReport]:
    """``state`` (in ``layout``'s source form) renamed onto ``target``'s keys, and the report.

    Keys of the head go to ``head.`` when the model's meta-architecture is ``layout.head.meta``;
    otherwise they are listed as not used. Every other source key must land on an encoder key.
    """
    head_used = layout.head is not None and meta == layout.head.meta
    wanted = {k: v for k, v in target.items()
              if k.startswith(ENCODER_PREFIX) or (head_used and k.startswith(HEAD_PREFIX))}
    placed, unused, reshaped = [], [], []
    for key, value in state.items():
        place = layout.map_key(key)
        if place.part == "head" and not head_used:
            unused.append(key)
            continue
        new = (HEAD_PREFIX if place.part == "head" else ENCODER_PREFIX) + place.key
        want = wanted.get(new)
        if want is not None and value.shape != want.shape and place.reshape and value.numel() == want.numel():
            value = value.reshape(want.shape)
            reshaped.append(f"{key} -> {new}: {tuple(state[key].shape)} -> {tuple(want.shape)}")
        placed.append((key, new, value))
    reason = ""
    if unused:
        reason = (f"the classifier head of {layout.label}; this model's meta-architecture is "
                  f"'{meta}', not '{layout.head.meta}'" if meta else
                  f"the classifier head of {layout.label}; an encoder on its own has no head")
    return fit(placed, wanted, source=layout.label, unused=unused, unused_reason=reason, reshaped=reshaped)


def import_weights(compiled: Any, source: WeightSource | str,
                   state: Mapping[str, torch.Tensor] | None = None, *, strict: bool = True) -> WeightsReport:
    """Load ``source`` into ``compiled.module`` through the encoder spec's layout; returns the report.

    ``state`` gives the source state dict directly (in the source's layout) instead of reading
    ``source``'s file or fetching it. Strict (the default): :class:`WeightsError` and nothing copied
    unless the report is ok. Non-strict: the tensors that fit are copied and the report returned.
    """
    try:
        src = parse_source(source) if isinstance(source, str) else source
    except WeightSourceError as exc:
        raise WeightsError(str(exc)) from None
    layout = layout_for(compiled, src)
    if state is None:
        state = source_state_dict(src)
    module: nn.Module = compiled.module
    mapped, report = map_state_dict(state, layout, module.state_dict(), _meta_name(compiled))
    if strict and not report.ok:
        report = with_advice(report, compiled)
        raise WeightsError(f"{src}: the weights do not fit {compiled.graph.name}", report)
    copy_into(module, mapped)
    return report


def looks_like_source(text: str) -> bool:
    """``torchvison:resnet18`` (a misspelt source) rather than a file: a ':' and no such file."""
    return ":" in text and not Path(text).exists()


def load_pretrained_into(compiled: Any, pretrained: Any) -> WeightsReport:
    """``compile_model(pretrained=...)``: a ``SOURCE:NAME[@PATH]`` string, or a file / state dict with
    the compiled module's own keys (what ``rtsegc weights import`` writes), loaded strictly: each of
    its keys must exist with the same shape, and it must fill every encoder tensor."""
    if isinstance(pretrained, str) and (is_source_text(pretrained) or looks_like_source(pretrained)):
        return import_weights(compiled, pretrained)
    if not isinstance(pretrained, (str, Path, Mapping)):
        raise WeightsError(f"pretrained: expected SOURCE:NAME[@PATH], a file or a state dict, "
                           f"got {type(pretrained).__name__}")
    name = str(pretrained) if isinstance(pretrained, (str, Path)) else "state dict"
    state = read_state_dict(pretrained)
    target = compiled.module.state_dict()
    head = any(k.startswith(HEAD_PREFIX) for k in state)  # a full-model file also fills the head
    wanted = {k: v for k, v in target.items()
              if k.startswith(ENCODER_PREFIX) or (head and k.startswith(HEAD_PREFIX))}
    mapped, report = fit(((k, k, v) for k, v in state.items()), wanted, source=name)
    if not report.ok:
        raise WeightsError(f"{name}: the weights do not fit {compiled.graph.name}",
                           with_advice(report, compiled))
    copy_into(compiled.module, mapped)
    return report


# --------------------------------------------------------------------------- which parameter would fit

def with_advice(report: WeightsReport, compiled: Any) -> WeightsReport:
    """``report`` with a sentence naming the spec parameter that would make it fit, where one does.

    The case it knows is conv biases: ImageNet checkpoints of networks with batch norm after every
    conv (torchvision's ResNets, timm's MobileNets) have no conv biases, while RTSeg's SkipNet
    gives every conv one. When every missing key (or every unexpected one) is the bias of a conv,
    and the spec wires its convs' ``bias`` field to a parameter, that parameter is the fix.
    """
    module: nn.Module = compiled.module

    def conv_of(key: str) -> nn.Module | None:
        path, _, leaf = key.rpartition(".")
        if leaf != "bias":
            return None
        try:
            layer = module.get_submodule(path)
        except AttributeError:
            return None
        return layer if isinstance(layer, nn.modules.conv._ConvNd) else None

    missing = list(report.missing)
    placed = [m for _, m in report.unexpected]
    advice = []
    if missing and all(conv_of(k) is not None for k in missing):
        advice.append(_bias_sentence(compiled, missing, "missing", False))
    elif placed and all(conv_of(k) is not None for k in placed):
        advice.append(_bias_sentence(compiled, placed, "unexpected", True))
    if not advice:
        return report
    return replace(report, advice=report.advice + tuple(advice))


def _bias_sentence(compiled: Any, keys: list[str], side: str, wanted: bool) -> str:
    value = "true" if wanted else "false"
    what = ("the source has conv biases the spec's convs lack" if wanted
            else "this layout has no conv biases")
    count = len(keys)
    parts = {"encoder" if k.startswith(ENCODER_PREFIX) else "meta" for k in keys}
    # The parameter of the spec that builds those convs: the encoder's for encoder.*, the meta's for head.*
    found = [(kind, name) for kind, name in _bias_parameters(compiled) if kind in parts]
    if not found:
        return (f"{side} {count} '*.bias' keys: {what}; build the convs with 'bias: {value}' in the spec")
    kind, name = found[0]
    flag = f"--{kind}-param {name}={value}"
    keyword = f"{kind}_params={{'{name}': {value.capitalize()}}}"
    return f"{side} {count} '*.bias' keys: {what}; pass {name}={value} ({flag}, or {keyword})"


def _bias_parameters(compiled: Any) -> list[tuple[str, str]]:
    """(spec kind, parameter) pairs where a spec sets a layer's ``bias`` to one of its parameters."""
    found = []
    for kind in ("encoder", "meta"):
        document = _spec_document(compiled, kind)
        if document is None:
            continue
        params = document.get("params") or {}
        names: list[str] = []
        _bias_references(document, params, names)
        found += [(kind, name) for name in dict.fromkeys(names)]
    return found


def _bias_references(node: Any, params: Mapping[str, Any], out: list[str]) -> None:
    if isinstance(node, Mapping):
        value = node.get("bias")
        if isinstance(value, str) and value in params:
            out.append(value)
        for child in node.values():
            _bias_references(child, params, out)
    elif isinstance(node, list):
        for child in node:
            _bias_references(child, params, out)
