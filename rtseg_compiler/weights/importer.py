"""Import published weights into a compiled module through the encoder spec's declared layout.

``import_weights(compiled, "torchvision:resnet18@r18.pth")`` reads the checkpoint (or fetches it
through torchvision's or timm's weights API when no file is given: the only network access in the
project, and only when asked), renames every key by the layout declared in the encoder spec
(:mod:`.mapping`), and loads strictly: nothing is copied unless every encoder tensor is supplied
with the right shape and every source key has a place. The :class:`ImportReport` lists each
missing, unexpected and mis-shaped key, with the closest key of the other side as a did-you-mean,
and the classifier-head keys the model does not use.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..spec.load import load_spec_file, load_spec_text
from .mapping import Layout, WeightSource, WeightSourceError, is_source_text, parse_layouts, parse_source

__all__ = ["ImportReport", "WeightsError", "import_weights", "key_section", "map_state_dict", "read_state_dict_file",
           "fetch_state_dict", "layouts_for", "layout_for", "load_pretrained_into", "looks_like_source"]

ENCODER_PREFIX, HEAD_PREFIX = "encoder.", "head."
#: A BatchNorm buffer that only matters with momentum=None; checkpoints often omit it.
_COUNTER = "num_batches_tracked"



def key_section(title: str, items: Sequence[str], limit: int) -> list[str]:
    """One titled, indented list of a weight report (at most ``limit`` keys, then a count), or
    nothing for no items; shared by this report and the runtime's ``--pretrained FILE`` report."""
    if not items:
        return []
    more = [f"    ... and {len(items) - limit} more"] if len(items) > limit else []
    return [f"  {title}:", *(f"    {item}" for item in items[:limit]), *more]

@dataclass(frozen=True)
class ImportReport:
    """What an import did. ``ok`` when nothing is missing, unexpected or mis-shaped."""

    source: str
    loaded: tuple[str, ...]
    #: Compiled-module keys that nothing in the source filled, with a close source key if any.
    missing: tuple[str, ...]
    #: (source key, where the layout put it) for keys with no place in the module.
    unexpected: tuple[tuple[str, str], ...]
    #: (source key, module key, source shape, module shape).
    mismatched: tuple[tuple[str, str, tuple[int, ...], tuple[int, ...]], ...]
    #: Source keys of the classifier head that this model does not use, and why.
    unused: tuple[str, ...] = ()
    unused_reason: str = ""
    #: BatchNorm ``num_batches_tracked`` counters the source lacks (left as they are).
    counters_kept: tuple[str, ...] = ()
    reshaped: tuple[str, ...] = ()
    hints: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def render(self, limit: int = 20) -> str:
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors; missing {len(self.missing)}, "
                 f"unexpected {len(self.unexpected)}, mis-shaped {len(self.mismatched)}, "
                 f"not used by this model {len(self.unused)}"]

        def section(title: str, items: Sequence[str]) -> None:
            lines.extend(key_section(title, items, limit))

        section("missing (the module has them, the source does not fill them)",
                [k + (f"  (did you mean source key {self.hints[k]}?)" if k in self.hints else "")
                 for k in self.missing])
        section("unexpected (source key -> where the layout puts it; the module has no such key)",
                [f"{s} -> {m}" + (f"  (did you mean {self.hints[s]}?)" if s in self.hints else "")
                 for s, m in self.unexpected])
        section("mis-shaped (source key -> module key: source shape vs module shape)",
                [f"{s} -> {m}: {tuple(a)} vs {tuple(b)}" for s, m, a, b in self.mismatched])
        if self.unused:
            section(f"not used by this model ({self.unused_reason})", list(self.unused))
        if self.reshaped:
            section("reshaped as the layout declares (same elements, new shape)", list(self.reshaped))
        if self.counters_kept:
            lines.append(f"  {len(self.counters_kept)} BatchNorm num_batches_tracked counters are not in "
                         "the source and keep their values (they are unused unless momentum is None)")
        return "\n".join(lines)


class WeightsError(ValueError):
    """Weights that do not fit: a strict import failed (``report`` says why), or a source is unusable."""

    def __init__(self, message: str, report: ImportReport | None = None) -> None:
        super().__init__(message if report is None else f"{message}\n{report.render()}")
        self.report = report


# --------------------------------------------------------------------------- reading a source

def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.pt``/``.pth`` (a bare state dict, or a checkpoint's ``state_dict``/``model``
    entry, read with ``weights_only=True`` so no code runs) or ``.safetensors`` (needs safetensors)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"{path}: reading .safetensors needs the safetensors package "
                               "(pip install safetensors)") from None
        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's to fix
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles with code, truncated files ...
        raise WeightsError(f"{path}: cannot read it as a torch state dict ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for entry in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(entry), Mapping):
            obj = obj[entry]
            break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), or a checkpoint with a "
                           "'state_dict' or 'model' entry")
    return dict(obj)


def fetch_state_dict(source: WeightSource) -> dict[str, torch.Tensor]:  # pragma: no cover - network
    """The published weights of ``source`` through its library's own weights API (downloads, caches).

    Only called for a source written without ``@PATH``; the tests never reach it.
    """
    if source.source == "torchvision":
        try:
            from torchvision.models import get_model_weights
        except Exception as exc:  # noqa: BLE001 - missing or broken install
            raise WeightsError(f"{source}: fetching needs torchvision ({exc}); or give a file: "
                               f"{source.label}@FILE.pth") from None
        try:
            weights = get_model_weights(source.name).DEFAULT
        except (KeyError, ValueError) as exc:
            raise WeightsError(f"{source}: torchvision has no model '{source.name}' ({exc})") from None
        return dict(weights.get_state_dict(progress=True))
    if source.source == "timm":
        try:
            import timm
        except ImportError:
            raise WeightsError(f"{source}: fetching needs timm (pip install timm); or give a file: "
                               f"{source.label}@FILE.safetensors") from None
        return dict(timm.create_model(source.name, pretrained=True).state_dict())
    if source.source == "transformers":
        # A layout names a network, not a Hub repository (nvidia/segformer-b0-...), so there is
        # nothing to fetch by name: the user downloads the checkpoint file they want.
        raise WeightsError(f"{source}: transformers layouts read a checkpoint file; give one: "
                           f"{source.label}@model.safetensors (or pytorch_model.bin)")
    raise WeightsError(f"{source}: no fetcher for source '{source.source}'")


def source_state_dict(source: WeightSource | str) -> dict[str, torch.Tensor]:
    src = parse_source(source) if isinstance(source, str) else source
    return read_state_dict_file(src.path) if src.path else fetch_state_dict(src)


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

def _closest(word: str, pool: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return close[0] if close else None


def map_state_dict(state: Mapping[str, torch.Tensor], layout: Layout, target: Mapping[str, torch.Tensor],
                   meta: str | None) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """``state`` (in ``layout``'s source form) renamed onto ``target``'s keys, and the report.

    Keys of the head go to ``head.`` when the model's meta-architecture is ``layout.head.meta``;
    otherwise they are listed as not used. Every other source key must land on an encoder key.
    """
    head_used = layout.head is not None and meta == layout.head.meta
    wanted = {k for k in target if k.startswith(ENCODER_PREFIX) or (head_used and k.startswith(HEAD_PREFIX))}
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected, unused, reshaped, mismatched = [], [], [], []
    for key, value in state.items():
        place = layout.map_key(key)
        if place.part == "head" and not head_used:
            unused.append(key)
            continue
        new = (HEAD_PREFIX if place.part == "head" else ENCODER_PREFIX) + place.key
        if new not in wanted or new in mapped:
            unexpected.append((key, new))
            continue
        want = target[new].shape
        if value.shape != want and place.reshape and value.numel() == target[new].numel():
            value = value.reshape(want)
            reshaped.append(f"{key} -> {new}: {tuple(state[key].shape)} -> {tuple(want)}")
        if value.shape != want:
            mismatched.append((key, new, tuple(value.shape), tuple(want)))
            continue
        mapped[new], origin[new] = value, key
    counters = sorted(k for k in wanted if k not in mapped and k.endswith("." + _COUNTER)
                      and k not in {m[1] for m in mismatched})
    missing = sorted(k for k in wanted if k not in mapped and k not in counters
                     and k not in {m[1] for m in mismatched})
    hints: dict[str, str] = {}
    placed = [m for _, m in unexpected]
    for source_key, new in unexpected:
        close = _closest(new, missing)
        if close:
            hints[source_key] = close
    for key in missing:
        close = _closest(key, placed)
        if close:
            hints[key] = next(s for s, m in unexpected if m == close)
    reason = ""
    if unused:
        reason = (f"the classifier head of {layout.label}; this model's meta-architecture is "
                  f"'{meta}', not '{layout.head.meta}'" if meta else
                  f"the classifier head of {layout.label}; an encoder on its own has no head")
    report = ImportReport(layout.label, tuple(sorted(mapped)), tuple(missing), tuple(unexpected),
                          tuple(mismatched), tuple(unused), reason, tuple(counters), tuple(reshaped), hints)
    return mapped, report


def import_weights(compiled: Any, source: WeightSource | str,
                   state: Mapping[str, torch.Tensor] | None = None, *, strict: bool = True) -> ImportReport:
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
    target = module.state_dict()
    mapped, report = map_state_dict(state, layout, target, _meta_name(compiled))
    if strict and not report.ok:
        raise WeightsError(f"{src}: the weights do not fit {compiled.graph.name}", report)
    with torch.no_grad():
        for key, value in mapped.items():
            target[key].copy_(value)  # state_dict tensors share storage with the module's
    return report


def looks_like_source(text: str) -> bool:
    """``torchvison:resnet18`` (a misspelt source) rather than a file: a ':' and no such file."""
    return ":" in text and not Path(text).exists()


def load_pretrained_into(compiled: Any, pretrained: Any) -> ImportReport:
    """``compile_model(pretrained=...)``: a ``SOURCE:NAME[@PATH]`` string, or a file / state dict with
    the compiled module's own keys (what ``rtsegc weights import`` writes), loaded strictly: each of
    its keys must exist with the same shape, and it must fill every encoder tensor."""
    if isinstance(pretrained, str) and (is_source_text(pretrained) or looks_like_source(pretrained)):
        return import_weights(compiled, pretrained)
    if isinstance(pretrained, (str, Path)):
        name, state = str(pretrained), read_state_dict_file(pretrained)
    elif isinstance(pretrained, Mapping):
        name, state = "state dict", dict(pretrained)
    else:
        raise WeightsError(f"pretrained: expected SOURCE:NAME[@PATH], a file or a state dict, "
                           f"got {type(pretrained).__name__}")
    target = compiled.module.state_dict()
    head = any(k.startswith(HEAD_PREFIX) for k in state)  # a full-model file also fills the head
    wanted = {k: v for k, v in target.items()
              if k.startswith(ENCODER_PREFIX) or (head and k.startswith(HEAD_PREFIX))}
    mapped, report = _map_plain(state, wanted, name)
    if not report.ok:
        raise WeightsError(f"{name}: the weights do not fit {compiled.graph.name}", report)
    with torch.no_grad():
        for key, value in mapped.items():
            target[key].copy_(value)
    return report


def _map_plain(state: Mapping[str, torch.Tensor], wanted: Mapping[str, torch.Tensor],
               name: str) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """Keys used as they are: the report of a file written in the compiled module's own layout."""
    mapped, unexpected, mismatched = {}, [], []
    for key, value in state.items():
        if key not in wanted:
            unexpected.append((key, key))
        elif value.shape != wanted[key].shape:
            mismatched.append((key, key, tuple(value.shape), tuple(wanted[key].shape)))
        else:
            mapped[key] = value
    bad = {m[1] for m in mismatched}
    counters = sorted(k for k in wanted if k not in mapped and k not in bad and k.endswith("." + _COUNTER))
    missing = sorted(k for k in wanted if k not in mapped and k not in bad and k not in counters)
    hints = {}
    for key, _ in unexpected:
        close = _closest(key, missing)
        if close:
            hints[key] = close
    return mapped, ImportReport(name, tuple(sorted(mapped)), tuple(missing), tuple(unexpected),
                                tuple(mismatched), counters_kept=tuple(counters), hints=hints)
