"""The compiler driver: spec documents (files, zoo names or texts) in, analysed graph out. Imports no torch.

``analyze`` runs load -> schema -> expand -> link -> infer_shapes (at an output
stride: ``passes.dilate.apply_output_stride``) -> count -> budget and returns an
:class:`Analysis`; every problem on the way is collected into one
:class:`~rtseg_compiler.diagnostics.SpecError`. With ``RTSEGC_CHECK=1`` the graph
invariants (``passes/check.py``) are asserted after each pass. ``validate_file``
runs the checks that make sense for one file of any kind. Where documents come from, and how a
model's ``encoder:``/``meta:`` references resolve, is ``spec/sources.py``; building a module from
an :class:`Analysis` is ``build.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .diagnostics import Diagnostic, Diagnostics, Location, SpecError
from .ir import INPUT, Graph, Resolved, frozen_map
from .passes import count, link
from .passes.budget import DEFAULT_BUDGET, Budget, check_budget
from .passes.check import check_between_passes
from .passes.count import Audit
from .passes.dilate import apply_output_stride
from .passes.expand import encoder_graph, expand_meta_alone, expand_model
from .spec.listed_layers import check_listed_layers
from .spec.load import LocatedMap, load_spec_file, location_of
from .spec.schema import validate_document
from .spec.sources import SpecReader, SpecRef, SpecSource, model_parts
from .weights.mapping import check_weights
from .zoo import resolve_spec

__all__ = ["Analysis", "analyze", "analyze_graph", "load_graph", "sources_of", "validate_file",
           "with_outputs", "DEFAULT_ENCODER_INPUT"]

#: The ImageNet size, for checking an encoder on its own when it names none.
DEFAULT_ENCODER_INPUT = (224, 224)
#: Cityscapes at half resolution, the RTSeg training size.
DEFAULT_MODEL_INPUT = (512, 1024)


@dataclass(frozen=True)
class Analysis:
    """Everything the compiler knows about a model without torch."""

    graph: Graph
    resolved: Resolved
    audit: Audit
    warnings: tuple[Diagnostic, ...] = field(default=())
    #: The documents the graph was built from, by kind (``model``, ``encoder``, ``meta``), as text.
    sources: Mapping[str, SpecSource] = field(default_factory=frozen_map)

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.resolved.input.height, self.resolved.input.width)


def _load_checked(ref: SpecRef, diags: Diagnostics, reader: SpecReader, expected: str | None = None,
                  referenced_at: Location | None = None) -> LocatedMap | None:
    try:
        doc = reader.load(ref)
    except SpecError as exc:
        if referenced_at is not None:
            notes = (f"referenced at {referenced_at}",)
            diags.extend(Diagnostic(d.message, d.loc, d.severity, d.hint, d.notes + notes)
                         for d in exc.diagnostics)
        else:
            diags.extend(exc.diagnostics)
        return None
    name = str(ref)
    problems = check_listed_layers(doc, name) or validate_document(doc, name, expected)
    problems = problems or check_weights(doc, name)
    diags.extend(problems)
    return None if problems else doc


def _merged(base: Any, extra: Mapping[str, Any] | None) -> Any:
    """A model file's parameter overrides with the caller's on top (theirs keep their locations)."""
    if not extra:
        return base
    out = LocatedMap()
    out.loc = getattr(base, "loc", None) or Location("<parameter overrides>")
    out.key_locs = dict(getattr(base, "key_locs", {}))
    out.value_locs = dict(getattr(base, "value_locs", {}))
    out.update(base or {})
    for key, value in extra.items():
        out[key] = value
        out.key_locs.pop(key, None)
        # A value the caller gave (--encoder-param, create_model(width=0)) is in no file: an error
        # it causes must not point at a line of the model file that says something else.
        out.value_locs[key] = Location("<parameter overrides>")
    return out


def load_graph(path: SpecRef | None = None, *, encoder: SpecRef | None = None,
               meta: SpecRef | None = None, num_classes: int | None = None,
               diags: Diagnostics | None = None, encoder_params: Mapping[str, Any] | None = None,
               meta_params: Mapping[str, Any] | None = None,
               doc: LocatedMap | None = None, reader: SpecReader | None = None) -> Graph:
    """Expand a model file, an encoder file, or an encoder + meta pair into one graph.

    Each document is a path, a zoo name or a :class:`~rtseg_compiler.spec.sources.SpecSource`;
    ``reader`` (a :class:`~rtseg_compiler.spec.sources.SpecReader`) may hold documents by name and
    records the texts read. ``encoder_params``/``meta_params`` override parameters on top of a model
    file's own (``{"width": 0.5}`` for a thinner MobileNet); values are numbers, booleans or expressions.
    """
    diags = diags if diags is not None else Diagnostics()
    reader = reader if reader is not None else SpecReader()
    path = None if path is None else reader.resolve(path, "model")
    encoder = None if encoder is None else reader.resolve(encoder, "encoder")
    meta = None if meta is None else reader.resolve(meta, "meta")
    if path is None and (encoder is None or meta is None):
        diags.error("give a model spec, or both --encoder and --meta")
        diags.raise_if_errors()
    if path is not None:
        if doc is None:  # validate_file has already loaded and schema-checked it
            doc = _load_checked(path, diags, reader)
        diags.raise_if_errors()
        kind = doc["kind"]
        if kind == "encoder":
            for what, given in (("--num-classes", num_classes), ("meta parameters", meta_params)):
                if given:
                    diags.error(f"{what}: only a model has these, but {path} is an encoder on its own",
                                location_of(doc, ("kind",)),
                                hint="pass a model file, or --encoder E.yaml --meta M.yaml")
            diags.raise_if_errors()
            graph = encoder_graph(doc, str(path), diags, _merged(None, encoder_params))
            diags.raise_if_errors()
            return check_between_passes(graph, ordered=False)
        if kind == "meta":
            diags.error("a meta-architecture has no shapes on its own", location_of(doc, ("kind",)),
                        hint="compile a model file, or pass --encoder E.yaml --meta M.yaml")
            diags.raise_if_errors()
        parts = model_parts(path, doc, reader)
        enc_doc = _load_checked(parts["encoder"], diags, reader, "encoder", location_of(doc, ("encoder",)))
        meta_doc = _load_checked(parts["meta"], diags, reader, "meta", location_of(doc, ("meta",)))
        diags.raise_if_errors()
        size = doc.get("input")
        enc_name, meta_name = str(parts["encoder"]), str(parts["meta"])
        graph = expand_model(
            enc_doc, enc_name, meta_doc, meta_name, diags,
            name=str(doc.get("name") or Path(str(path)).stem),
            num_classes=num_classes or doc["num_classes"],
            encoder_params=_merged(doc.get("encoder_params"), encoder_params),
            meta_params=_merged(doc.get("meta_params"), meta_params),
            default_input=tuple(size) if size else None,
            files={"model": str(path), "encoder": enc_name, "meta": meta_name},
            model_loc=location_of(doc, ()),
        )
    else:
        enc_doc = _load_checked(encoder, diags, reader, "encoder")
        meta_doc = _load_checked(meta, diags, reader, "meta")
        diags.raise_if_errors()
        graph = expand_model(
            enc_doc, str(encoder), meta_doc, str(meta), diags,
            name=f"{meta_doc.get('name')}_{enc_doc.get('name')}",
            num_classes=num_classes or 21, files={"encoder": str(encoder), "meta": str(meta)},
            encoder_params=_merged(None, encoder_params), meta_params=_merged(None, meta_params),
        )
    diags.raise_if_errors()
    return check_between_passes(graph, ordered=False)


def analyze(path: SpecRef | None = None, input_size: tuple[int, int] | None = None,
            num_classes: int | None = None, *, encoder: SpecRef | None = None,
            meta: SpecRef | None = None, keep_unused: bool = False,
            output_stride: int | None = None, budget: Budget | None = None,
            encoder_params: Mapping[str, Any] | None = None,
            meta_params: Mapping[str, Any] | None = None, outputs: str = "all",
            documents: Mapping[str, str] | None = None) -> Analysis:
    """Run every torch-free pass; raises SpecError listing all problems found.

    ``path``, ``encoder`` and ``meta`` are file paths, zoo names or
    :class:`~rtseg_compiler.spec.sources.SpecSource` texts; ``documents`` (name -> text) holds files
    by name, read instead of the disk wherever the compiler would open that name (a model's
    ``encoder:`` reference included). Diagnostics carry the names as given.

    ``outputs="main"`` keeps only the main output of a model that declares several
    (``outputs:`` in its meta): the auxiliary heads are left out of the graph and the audit,
    as for inference. With ``"all"`` (the default) every declared output is kept.

    ``budget`` (default :data:`~rtseg_compiler.passes.budget.DEFAULT_BUDGET`) bounds
    parameters and activations, checked on the audit before anything is allocated.

    ``output_stride`` (8, 16 or 32) rewrites encoder strides into dilations; by
    default a meta that declares ``output_stride`` gets it (see ``passes/dilate.py``).
    """
    diags = Diagnostics()
    reader = SpecReader(documents)
    graph = load_graph(path, encoder=encoder, meta=meta, num_classes=num_classes, diags=diags,
                       encoder_params=encoder_params, meta_params=meta_params, reader=reader)
    return analyze_graph(graph, input_size, diags, keep_unused=keep_unused, output_stride=output_stride,
                         budget=budget, outputs=outputs, sources=sources_of(graph, reader))


def sources_of(graph: Graph, reader: SpecReader) -> dict[str, SpecSource]:
    """The texts ``reader`` read for each of ``graph.files`` (model, encoder, meta)."""
    return {kind: reader.source(name) for kind, name in graph.files.items() if name in reader.texts}


def analyze_graph(graph: Graph, input_size: tuple[int, int] | None, diags: Diagnostics | None = None, *,
                  keep_unused: bool = False, output_stride: int | None = None,
                  budget: Budget | None = None, outputs: str = "all",
                  sources: Mapping[str, SpecSource] | None = None) -> Analysis:
    """The passes after loading: link, shapes (at an output stride: dilate), count, budget."""
    diags = diags if diags is not None else Diagnostics()
    if outputs not in ("all", "main"):
        diags.error(f"outputs must be 'all' or 'main', not {outputs!r}")
        diags.raise_if_errors()
    # An encoder on its own: what its taps read is part of it (a meta may read any tap).
    alone = "meta" not in graph.files
    linked = link(graph, diags, keep_unused=keep_unused, outputs=outputs, keep_taps=alone)
    diags.raise_if_errors()
    check_between_passes(linked)
    size = input_size or linked.default_input or (
        DEFAULT_MODEL_INPUT if "meta" in linked.files else DEFAULT_ENCODER_INPUT)
    resolved = check_between_passes(apply_output_stride(linked, output_stride, tuple(size), diags))
    if len(resolved.graph.skipped) > len(linked.skipped):
        # A false 'when:' on a layer with several inputs leaves its other inputs unread.
        # (With keep_unused they stay and are counted; the first link already warned of the rest.)
        pruned = link(resolved.graph, diags, keep_unused=keep_unused, warn_unused=not keep_unused,
                      why_unused=("a layer that read it is absent (its 'when:' is false)",),
                      keep_taps=alone)
        diags.raise_if_errors()
        resolved = check_between_passes(Resolved(pruned, resolved.input, resolved.types))
    audit = count(resolved)
    check_budget(resolved, audit, budget or DEFAULT_BUDGET, diags)
    diags.raise_if_errors()
    return Analysis(resolved.graph, resolved, audit, diags.warnings, frozen_map(sources))


def with_outputs(analysis: Analysis, outputs: tuple[tuple[str, str], ...],
                 files: Mapping[str, str] | None = None) -> Analysis:
    """``analysis`` narrowed to ``outputs`` (``(name, layer)`` pairs, main first) and the layers they need.

    Shapes are not inferred again: a layer's type depends only on the layers before it, so the kept
    layers keep theirs. ``link`` prunes what no output needs (taps included), absent layers that stood
    for a pruned one go with it, and ``count`` counts the rest. ``files`` replaces the graph's files
    (an encoder taken out of a model has no meta).
    """
    diags = Diagnostics()
    graph = analysis.graph.replace(outputs=tuple(outputs), output=outputs[0][1],
                                   files=frozen_map(files if files is not None else analysis.graph.files))
    pruned = link(graph, diags, warn_unused=False)
    diags.raise_if_errors()
    kept = {n.name for n in pruned.nodes} | {INPUT}
    skipped = dict(pruned.skipped)
    changed = True
    while changed:  # an absent layer stays while what it stands for is still there
        alive = {name: skip for name, skip in skipped.items() if skip.passthrough in kept | set(skipped)}
        changed, skipped = len(alive) != len(skipped), alive
    pruned = pruned.replace(skipped=frozen_map(skipped))
    gone = {n.name for n in graph.nodes} - kept
    types = frozen_map({k: v for k, v in analysis.resolved.types.items() if k not in gone})
    resolved = check_between_passes(Resolved(check_between_passes(pruned), analysis.resolved.input, types))
    sources = {kind: source for kind, source in analysis.sources.items() if kind in pruned.files}
    return Analysis(pruned, resolved, count(resolved), analysis.warnings, frozen_map(sources))


def validate_file(path: str | Path, input_size: tuple[int, int] | None = None, *,
                  budget: Budget | None = None) -> list[Diagnostic]:
    """All diagnostics (errors and warnings) for one spec file of any kind."""
    diags = Diagnostics()
    path = resolve_spec(path, "model")
    checker = _other_kind_checker(path)
    if checker is not None:  # a dataset file: its owner (the runtime) checks it (spec/kinds.py)
        return checker(str(path))
    reader = SpecReader()
    doc = _load_checked(path, diags, reader)
    if doc is None:
        return diags.items
    if doc["kind"] == "meta":
        part = expand_meta_alone(doc, str(path), diags)
        if not diags.has_errors:
            g = Graph(str(doc.get("name")), tuple(part.nodes), part.output or "input",
                      outputs=tuple(part.outputs),
                      skipped=frozen_map({s.name: s for s in part.skips}))
            link(g, diags)
        return diags.items
    try:
        graph = load_graph(path, diags=diags, doc=doc, reader=reader)
        return list(analyze_graph(graph, input_size, diags, budget=budget).warnings)
    except SpecError as exc:
        return list(exc.diagnostics)


def _other_kind_checker(path: str | Path) -> Any:
    """The installed checker of a file whose ``kind:`` is not the compiler's, if there is one."""
    from .spec.kinds import kind_checker

    try:
        doc = load_spec_file(path)
    except SpecError:
        return None  # _load_checked reports it
    return kind_checker(doc.get("kind") if isinstance(doc, Mapping) else None, str(path))
