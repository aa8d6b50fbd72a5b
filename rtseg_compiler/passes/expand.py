"""Pass 1: expand validated spec documents into a flat list of named layers.

* Blocks are inlined; a use named ``ds3`` of a block with layers ``dw`` and
  ``pw`` yields ``ds3.dw`` and ``ds3.pw``, and ``ds3`` then means the block's
  output. ``repeat: n`` yields ``name.1`` ... ``name.n``, chained, with the
  repeat index ``i`` (0-based) visible to the arguments.
* A layer without ``input``/``inputs`` takes the previous layer's output; the
  first layer of a block takes the block's input; ``input`` names the image
  (top level) or the block input (inside a block).
* Layers without a name are named after the last named layer and their op
  (``conv1_bn``), so every node has a stable, readable name.
* Qualified names start with the part: ``encoder.conv1``, ``head.score32``.
  A meta refers to encoder feature maps only through taps: ``encoder.stride16``.
* ``op: act`` may name a parameter holding an op name (``act: hardswish`` at a
  block use); it is resolved here, and the layer's fields are then checked
  against that op's schema. A block may name its inputs (``inputs: [x, skip]``),
  bound in order by a use's ``inputs``; ``start: 0`` numbers repeated copies
  from 0 (only the names change, ``i`` stays 0-based).
* Absent layers: ``repeat: 0`` and a block use whose ``when:`` is false are
  recorded as :class:`~rtseg_compiler.ir.Skip` (the name stands for the
  layer's first input). A *layer's* ``when:`` may depend on channel counts, so
  it travels on the node and ``infer_shapes`` decides it.

References may point forward; they are resolved when their list of layers is
complete, so ``link`` can report a cycle rather than "unknown name".
Expressions are checked for syntax and unknown names here, and evaluated
later by ``infer_shapes``, when channel counts are known.

This file holds the entry points and puts documents together (parameters,
taps, outputs, the model's graph). The walk over layer lists is in
``expand_layers.py``, the meaning of names in ``expand_refs.py``, and the
checks of values before shapes are known in ``expand_exprs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Diagnostics, Location, did_you_mean
from ..ir import INPUT, ChannelsOf, Expr, Graph, Lazy, Literal, Node, Scope, Skip, Tap, frozen_map
from ..ops import REGISTRY
from ..spec.load import LocatedMap, location_of
from .expand_exprs import ExpressionChecks
from .expand_layers import LayerExpander
from .expand_refs import Body, References

__all__ = ["expand_encoder", "expand_model", "expand_meta_alone", "encoder_graph", "Part",
           "MAX_LAYERS"]

#: A ResNet-101 has about 350 layers; 20,000 catches runaway repeats long before memory does.
MAX_LAYERS = 20_000
#: Qualified-name prefix per part. A meta's layers live under "head" ("meta" would
#: collide with torch.fx.GraphModule.meta in the emitted module).
_PREFIX = {"encoder": "encoder.", "meta": "head."}


@dataclass
class Part:
    """The result of expanding one encoder or meta document."""

    nodes: list[Node]
    output: str | None
    taps: list[Tap] = field(default_factory=list)
    scope: Scope = field(default_factory=Scope)
    #: Named outputs (name, node) in order when the document declares ``outputs:``.
    outputs: list[tuple[str, str]] = field(default_factory=list)
    #: Layers made absent by ``repeat: 0`` or a block use's false ``when:``.
    skips: list[Skip] = field(default_factory=list)


def _param_bindings(doc: LocatedMap, overrides: dict | None, file: str, diags: Diagnostics,
                    what: str, override_loc: Location | None) -> dict[str, Any]:
    declared = doc.get("params") or {}
    bindings: dict[str, Any] = {}
    for key, value in declared.items():
        bindings[key] = _binding(value, location_of(doc, ("params", key)))
    for key, value in (overrides or {}).items():
        if key not in declared:
            diags.error(f"{what} has no parameter '{key}'",
                        location_of(overrides, (key,), key=True) if isinstance(overrides, LocatedMap)
                        else override_loc,
                        hint=did_you_mean(key, declared) or f"parameters: {', '.join(declared) or 'none'}")
            continue
        default = declared[key]
        if isinstance(value, bool) and isinstance(default, (int, float)) and not isinstance(default, bool):
            # YAML reads `true` as a bool and Python's bool is an int, so `width: true` would
            # otherwise compute as width 1 without a word.
            diags.error(f"{what}'s parameter '{key}' is a number (default {default}), not a boolean: "
                        f"got {str(value).lower()}",
                        location_of(overrides, (key,)) if isinstance(overrides, LocatedMap) else override_loc,
                        hint=f"give a number, as in '{key}: {default}'",
                        notes=(f"'{key}' is declared at {location_of(doc, ('params', key))}",))
            continue
        bindings[key] = _binding(value, location_of(overrides, (key,)))
    return bindings


def _binding(value: Any, loc: Location | None) -> Any:
    if isinstance(value, str):
        return Lazy(Expr(value, loc), None)
    if isinstance(value, list):  # a list parameter, read as dims[i]; frozen like every binding
        return Literal(tuple(value), loc)
    return Literal(value, loc)


def _expand_part(doc: LocatedMap, part: str, scope: Scope, diags: Diagnostics,
                 taps: dict[str, str] | None = None,
                 requires: set[str] | None = None) -> tuple[Part, References, Body]:
    """One document's layers and outputs (no taps), with its names and its top-level list."""
    refs = References(part, diags, taps, requires)
    exprs = ExpressionChecks(diags)
    for binding in scope.bindings.values():  # file parameters: names known, no 'in_channels'
        if isinstance(binding, Lazy) and binding.expr.text.strip() not in REGISTRY:
            exprs.check_expression(binding.expr.text, binding.expr.loc, None, in_channels=False,
                                   scope=scope)
    layers = LayerExpander(doc, part, diags, refs, exprs, scope, MAX_LAYERS)
    body = Body(_PREFIX[part], scope, INPUT, ())
    output = layers.expand_body(doc.get("layers"), body, 0)
    if isinstance(doc.get("output"), str):
        output = refs.resolve(body, doc["output"], location_of(doc, ("output",)), "'output'")
    named: list[tuple[str, str]] = []
    if isinstance(doc.get("outputs"), dict):
        if "output" in doc:
            diags.error("give 'output' or 'outputs', not both", location_of(doc, ("outputs",), key=True),
                        hint="'outputs: {out: logits, aux: aux_logits}' names several; its first "
                             "entry is the main output", notes=(f"'output' is at {location_of(doc, ('output',))}",))
        for out_name, ref in doc["outputs"].items():
            if isinstance(ref, str):
                named.append((str(out_name), refs.resolve(body, ref, location_of(doc, ("outputs", out_name)),
                                                          f"output '{out_name}'")))
        if named:
            output = named[0][1]
    nodes = refs.finish(layers.nodes)
    output = refs.real(output) if output else output
    outputs = [(k, refs.real(v)) for k, v in named]
    return Part(nodes, output, [], scope, outputs, refs.skips), refs, body


def expand_encoder(doc: LocatedMap, file: str, diags: Diagnostics,
                   overrides: dict | None = None, override_loc: Location | None = None) -> Part:
    """Expand an encoder document: its layers, taps and output."""
    scope = Scope(frozen_map(_param_bindings(doc, overrides, file, diags, "the encoder", override_loc)))
    enc, refs, body = _expand_part(doc, "encoder", scope, diags)
    for tap_name, ref in (doc.get("taps") or {}).items():
        if not isinstance(ref, str):
            continue
        loc = location_of(doc, ("taps", tap_name))
        target = refs.real(refs.resolve(body, ref, loc, f"tap '{tap_name}'"))
        enc.taps.append(Tap(tap_name, target, loc))
    return enc


def _meta_scope(doc: LocatedMap, file: str, diags: Diagnostics, num_classes: int | None,
                overrides: dict | None, taps: dict[str, str] | None, encoder_output: str | None,
                override_loc: Location | None) -> Scope:
    bindings = _param_bindings(doc, overrides, file, diags, "the meta-architecture", override_loc)
    bindings["num_classes"] = Literal(num_classes if num_classes is not None else 21)
    tap_names = taps if taps is not None else {t: INPUT for t in (doc.get("requires") or [])}
    for name, node in tap_names.items():
        bindings[f"encoder.{name}.channels"] = ChannelsOf(node)
    if encoder_output is not None or taps is None:
        bindings["encoder.output.channels"] = ChannelsOf(encoder_output or INPUT)
    return Scope(frozen_map(bindings))


def expand_meta_alone(doc: LocatedMap, file: str, diags: Diagnostics) -> Part:
    """Expand a meta without an encoder, to check its names and references."""
    requires = set(doc.get("requires") or [])
    scope = _meta_scope(doc, file, diags, None, None, None, None, None)
    meta, _, _ = _expand_part(doc, "meta", scope, diags, None, requires)
    return meta


def expand_model(encoder_doc: LocatedMap, encoder_file: str, meta_doc: LocatedMap, meta_file: str,
                 diags: Diagnostics, *, name: str, num_classes: int,
                 encoder_params: dict | None = None, meta_params: dict | None = None,
                 default_input: tuple[int, int] | None = None,
                 files: dict[str, str] | None = None, model_loc: Location | None = None) -> Graph:
    """Expand an encoder and a meta into one graph; the meta reads encoder taps."""
    enc = expand_encoder(encoder_doc, encoder_file, diags, encoder_params, model_loc)
    taps = {t.name: t.node for t in enc.taps}
    meta_loc = location_of(meta_doc, ("requires",))
    for req in meta_doc.get("requires") or []:
        if req not in taps:
            diags.error(f"the meta-architecture requires tap '{req}', which the encoder "
                        f"'{encoder_doc.get('name')}' does not declare", meta_loc,
                        hint=did_you_mean(req, taps) or f"encoder taps: {', '.join(sorted(taps)) or 'none'}",
                        notes=(f"encoder taps are declared at {location_of(encoder_doc, ('taps',))}",))
    taps_with_output = dict(taps)
    if enc.output:
        taps_with_output.setdefault("output", enc.output)
    scope = _meta_scope(meta_doc, meta_file, diags, num_classes, meta_params, taps_with_output,
                        enc.output, model_loc)
    meta, _, _ = _expand_part(meta_doc, "meta", scope, diags, taps_with_output)
    output = meta.output
    outputs = list(meta.outputs)
    if enc.outputs[1:]:
        # An encoder's auxiliary outputs (deep supervision) stay outputs of the model, after the
        # meta's; its main output is what the meta reads as 'encoder.output'.
        if not outputs:
            outputs = [("out", output or enc.output or INPUT)]
        taken = {k for k, _ in outputs}
        for out_name, node in enc.outputs[1:]:
            if out_name in taken:
                diags.error(f"output '{out_name}' of the encoder has the name of an output of the "
                            f"meta-architecture", location_of(encoder_doc, ("outputs", out_name), key=True),
                            hint="rename one of them")
                continue
            outputs.append((out_name, node))
    return Graph(
        name=name,
        nodes=tuple(enc.nodes + meta.nodes),
        output=output or (enc.output or INPUT),
        taps=tuple(enc.taps),
        input_channels=int(encoder_doc.get("input_channels", 3)),
        default_input=default_input,
        num_classes=num_classes,
        files=frozen_map(files or {}),
        encoder_output=enc.output or None,
        meta_output_stride=meta_doc.get("output_stride"),
        meta_requires=tuple(meta_doc.get("requires") or ()),
        outputs=tuple(outputs),
        skipped=frozen_map({k.name: k for k in enc.skips + meta.skips}),
    )


def encoder_graph(doc: LocatedMap, file: str, diags: Diagnostics,
                  overrides: dict | None = None) -> Graph:
    """An encoder on its own, as a graph whose output is its last layer (for `validate`)."""
    enc = expand_encoder(doc, file, diags, overrides)
    size = doc.get("input")
    return Graph(
        name=str(doc.get("name", "encoder")),
        nodes=tuple(enc.nodes),
        output=enc.output or INPUT,
        taps=tuple(enc.taps),
        input_channels=int(doc.get("input_channels", 3)),
        default_input=tuple(size) if isinstance(size, list) and len(size) == 2 else None,
        files=frozen_map({"encoder": file}),
        encoder_output=enc.output or INPUT,
        outputs=tuple(enc.outputs),
        skipped=frozen_map({k.name: k for k in enc.skips}),
    )
