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
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Diagnostics, Location, did_you_mean
from ..ir import INPUT, ChannelsOf, Expr, Graph, Lazy, Literal, Node, Scope, Skip, Tap, frozen_map
from ..ops import REGISTRY
from ..spec.expr import ExprError, names_in
from ..spec.load import LocatedList, LocatedMap, location_of
from ..spec.schema import BLOCK_USE_KEYS, LAYER_KEYS, validate_layer_fields
from .env import Env, StaticOnly, _lookup_with_scope, evaluate_value

__all__ = ["expand_encoder", "expand_model", "expand_meta_alone", "Part", "MAX_LAYERS"]

#: A ResNet-101 has about 350 layers; 20,000 catches runaway repeats long before memory does.
MAX_LAYERS = 20_000
#: Blocks may use blocks; deeper than this is almost surely a block using itself.
MAX_BLOCK_DEPTH = 16

_PLACEHOLDER = "\x00ref"
#: A value that could not be computed (the reason is already reported).
_FAILED = object()
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


@dataclass
class _Body:
    """One list of layers being expanded: a document's top level, or one use of a block."""

    prefix: str
    scope: Scope
    input_ref: str | None
    origin: tuple[str, ...]
    top_level: bool
    in_block: bool
    names: dict[str, str] = field(default_factory=dict)
    name_locs: dict[str, Location] = field(default_factory=dict)
    reserved: set[str] = field(default_factory=set)
    pending: list[tuple[str, str, Location | None]] = field(default_factory=list)
    #: The blocks being expanded around this body, outermost first, to catch a block using itself.
    chain: tuple[str, ...] = ()
    #: A block's named inputs (``inputs: [x, skip]``) -> the references bound at the use.
    input_names: dict[str, str] = field(default_factory=dict)


class _Expander:
    def __init__(self, doc: LocatedMap, file: str, part: str, diags: Diagnostics,
                 taps: dict[str, str] | None = None, requires: set[str] | None = None,
                 root_scope: Scope | None = None):
        self.doc = doc
        self.root_scope = root_scope or Scope()
        self.file = file
        self.part = part
        self.diags = diags
        self.blocks: dict[str, Any] = dict(doc.get("blocks") or {})
        self.nodes: list[Node] = []
        self.node_names: set[str] = set()
        self.aliases: dict[str, str] = {}
        self.counter = itertools.count()
        #: For a meta: tap name -> qualified encoder node (None while checking a meta alone).
        self.encoder_taps = taps
        self.requires = requires or set()
        self.overflow = False
        self.real = lambda ref: ref
        #: Qualified name of each block use (``encoder.a.x``) -> its output reference, so that a
        #: dotted reference may name a block nested in a block (``a.x``), not only an op layer.
        self.block_outputs: dict[str, str] = {}
        #: Placeholder token -> (reference text, location), to report a reference that loops.
        self.token_text: dict[str, tuple[str, Location | None]] = {}
        #: (text, location) of expressions already checked: a block's body is checked at its
        #: first use only, not once per use (MobileNet v1 used to repeat one typo 13 times).
        self.checked: set[tuple[str, Location, bool]] = set()
        self.recursion_reported: set[Location | None] = set()
        #: Absent layers (repeat: 0, a block use's false 'when:'); their names read their input.
        self.skips: list[Skip] = []
        self.skip_names: set[str] = set()
        #: (layer location, op) pairs whose fields were checked after resolving a parametric op.
        self.fields_checked: set[tuple[Location | None, str]] = set()
        self.ops_reported: set[Location | None] = set()
        self.named_outputs: list[tuple[str, str]] = []

    # -- references -------------------------------------------------------
    def placeholder(self, body: _Body, text: str, loc: Location | None) -> str:
        """The qualified name for ``text`` if it is already defined, else a token resolved later."""
        known = (text == INPUT or text in body.names or text in body.input_names
                 or (text.startswith("encoder.") and self.part == "meta")
                 or ("." in text and self.qualified_known(body.prefix + text)))
        if known:
            return self.resolve(body, text, loc)
        token = f"{_PLACEHOLDER}{next(self.counter)}"
        body.pending.append((token, text, loc))
        self.token_text[token] = (text, loc)
        return token

    def qualified_known(self, qualified: str) -> bool:
        return (qualified in self.node_names or qualified in self.block_outputs
                or qualified in self.skip_names)

    def add_skip(self, skip: Skip) -> None:
        self.skips.append(skip)
        self.skip_names.add(skip.name)

    def resolve_pending(self, body: _Body) -> None:
        for token, text, loc in body.pending:
            self.aliases[token] = self.resolve(body, text, loc)

    def resolve(self, body: _Body, text: str, loc: Location | None) -> str:
        if text == INPUT:
            if body.input_ref is None:
                self.diags.error("'input' is not available here", loc,
                                 hint="a meta's layers read 'encoder.<tap>' or earlier layers")
                return INPUT
            return body.input_ref
        if text in body.names:
            return body.names[text]
        if text in body.input_names:
            return body.input_names[text]
        qualified = body.prefix + text
        if "." in text and (qualified in self.node_names or qualified in self.skip_names):
            return qualified
        if "." in text and qualified in self.block_outputs:
            return self.block_outputs[qualified]
        if text.startswith("encoder.") and self.part == "meta":
            tap = text[len("encoder."):]
            if self.encoder_taps is None:  # checking a meta alone: requires is the contract
                if tap not in self.requires and tap != "output":
                    self.diags.error(f"tap '{tap}' is used but not listed in 'requires'", loc,
                                     hint=did_you_mean(tap, self.requires | {"output"})
                                     or f"add it to requires: [{', '.join(sorted(self.requires | {tap}))}]")
                return INPUT
            if tap in self.encoder_taps:
                return self.encoder_taps[tap]
            self.diags.error(f"the encoder has no tap '{tap}'", loc,
                             hint=did_you_mean(tap, self.encoder_taps)
                             or f"taps: {', '.join(sorted(self.encoder_taps))}")
            return INPUT
        # Past MAX_LAYERS names were dropped; a collector full of errors would drop this one.
        if self.overflow or (self.diags.full and self.diags.has_errors):
            return INPUT
        candidates = list(body.names) + list(body.input_names) + ([INPUT] if body.input_ref else [])
        if self.part == "meta":
            candidates += [f"encoder.{t}" for t in (self.encoder_taps or self.requires)]
        self.diags.error(f"unknown layer '{text}'", loc,
                         hint=did_you_mean(text, candidates),
                         notes=body.origin)
        return INPUT

    # -- expressions ------------------------------------------------------
    def check_expression(self, text: str, loc: Location | None, body: _Body | None,
                         extra: set[str] = frozenset(), origin: tuple[str, ...] = (),
                         in_channels: bool = True, scope: Scope | None = None) -> None:
        if loc is not None:
            key = (text, loc, in_channels)
            if key in self.checked:
                return
            self.checked.add(key)
        origin = origin or (body.origin if body is not None else ())
        try:
            used = names_in(text)
        except ExprError as exc:
            self.diags.error(str(exc), loc, notes=origin)
            return
        if not in_channels and "in_channels" in used:
            # Evaluation would fail with no layer to take the channels from; say so now.
            self.diags.error(f"'in_channels' is not available in {text!r}: file parameters and "
                             f"block parameter defaults belong to no layer", loc,
                             hint="a block default can use 'block_in_channels'; a layer field "
                                  "can use 'in_channels'", notes=origin)
            used = used - {"in_channels"}
        known = (scope or body.scope).names() | set(extra) | ({"in_channels"} if in_channels else set())
        for name in sorted(used - known):
            self.diags.error(f"unknown name '{name}' in expression {text!r}", loc,
                             hint=did_you_mean(name, known) or f"known: {', '.join(sorted(known))}",
                             notes=origin)

    def static_value(self, value: Any, what: str, loc: Location | None, body: _Body,
                     scope: Scope | None = None) -> Any:
        """``value`` evaluated before shapes are known, or _FAILED after reporting why not."""
        try:
            return evaluate_value(value, Env(scope or body.scope, None))
        except StaticOnly:
            self.diags.error(f"'{what}' must not depend on channel counts", loc,
                             hint=f"'{what}' is fixed before shapes are known: use numbers and "
                                  f"parameters", notes=body.origin)
        except (ExprError, KeyError) as exc:
            hint = (f"'{what}' is fixed before shapes are known: use numbers and parameters"
                    if "in_channels" in str(exc) else None)
            msg = str(exc) if isinstance(exc, ExprError) else f"unknown name {exc}"
            self.diags.error(f"'{what}': {msg}", loc, hint=hint, notes=body.origin)
        return _FAILED

    def static_int(self, value: Any, what: str, loc: Location | None, body: _Body,
                   extra: dict[str, Any] | None = None, minimum: int = 1) -> int | None:
        scope = body.scope.child({k: Literal(v) for k, v in (extra or {}).items()})
        result = self.static_value(value, what, loc, body, scope)
        if result is _FAILED:
            return None
        if isinstance(result, float) and result.is_integer():
            result = int(result)
        if isinstance(result, bool) or not isinstance(result, int) or result < minimum:
            kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
                minimum, f"an integer of at least {minimum}")
            self.diags.error(f"'{what}' must be {kind}, got {result!r}", loc, notes=body.origin)
            return None
        return result

    # -- bodies -----------------------------------------------------------
    def expand_body(self, layers: Any, body: _Body, depth: int) -> str | None:
        if not isinstance(layers, list):
            return body.input_ref
        body.reserved = {item.get("name") for item in layers if isinstance(item, dict)} - {None}
        prev = body.input_ref
        last_named = None
        for idx, item in enumerate(layers):
            if self.overflow or not isinstance(item, dict):
                continue
            loc = layers.item_loc(idx) if isinstance(layers, LocatedList) else None
            name = item.get("name")
            if name == INPUT or (name == "encoder" and self.part == "meta"):
                meaning = ("the image (at the top level) or the block's input" if name == INPUT
                           else "the encoder's taps ('encoder.<tap>')")
                self.diags.error(f"'{name}' is a reserved name and cannot name a layer",
                                 location_of(item, ("name",)),
                                 hint=f"'{name}' always means {meaning}; rename this layer",
                                 notes=body.origin)
                name = None
            elif name is not None and name in body.input_names:
                self.diags.error(f"'{name}' is an input of this block and cannot name a layer",
                                 location_of(item, ("name",)),
                                 hint="rename the layer, or the block input", notes=body.origin)
                name = None
            elif name is not None and name in body.names:
                self.diags.error(f"duplicate layer name '{name}'", location_of(item, ("name",)),
                                 hint=f"first defined at {body.name_locs[name]}", notes=body.origin)
                name = None
            repeat = 1
            if "repeat" in item:
                repeat = self.static_int(item["repeat"], "repeat", location_of(item, ("repeat",)),
                                         body, minimum=0)
                if repeat is None:
                    repeat = 1
            if name is None:
                base = f"{last_named}_{item.get('op') or item.get('block')}" if last_named else str(
                    item.get("op") or item.get("block"))
                name = self.fresh_name(body, base)
            else:
                last_named = name
            explicit = self.explicit_inputs(item, body)
            if "block" in item:
                out = self.expand_use(item, loc, name, body, prev, explicit, repeat, depth)
            else:
                out = self.expand_op(item, loc, name, body, prev, explicit, repeat)
            body.names[name] = out if out is not None else INPUT
            body.name_locs[name] = loc
            prev = out
        self.resolve_pending(body)
        return prev

    def fresh_name(self, body: _Body, base: str) -> str:
        name, n = base, 2
        while name in body.names or name in body.reserved:
            name, n = f"{base}_{n}", n + 1
        body.reserved.add(name)
        return name

    def explicit_inputs(self, item: dict, body: _Body) -> list[str] | None:
        if "inputs" in item and isinstance(item["inputs"], list):
            refs = item["inputs"]
            return [self.placeholder(body, str(r), location_of(item, ("inputs", i)))
                    for i, r in enumerate(refs)]
        if "input" in item and isinstance(item["input"], str):
            return [self.placeholder(body, item["input"], location_of(item, ("input",)))]
        return None

    def add_node(self, node: Node) -> None:
        if len(self.nodes) >= MAX_LAYERS:
            if not self.overflow:
                self.diags.error(f"the spec expands to more than {MAX_LAYERS:,} layers", node.loc,
                                 hint="check 'repeat' counts", notes=node.origin)
            self.overflow = True
            return
        if node.name in self.node_names or node.name in self.skip_names:
            self.diags.error(f"layer name '{node.name}' is produced twice", node.loc,
                             notes=node.origin)
            return
        self.nodes.append(node)
        self.node_names.add(node.name)

    def skip_layer(self, qualified: str, passthrough: str | None, why: str, why_loc: Location | None,
                   loc: Location | None, body: _Body) -> str | None:
        """Record an absent layer; its name then stands for ``passthrough``."""
        if passthrough is None:
            self.diags.error(f"layer '{qualified.split('.', 1)[-1]}' has no input to pass on", loc,
                             hint="an absent layer stands for its input; name one with 'input:'",
                             notes=body.origin)
            return None
        if qualified in self.node_names or qualified in self.skip_names:
            self.diags.error(f"layer name '{qualified}' is produced twice", loc, notes=body.origin)
            return passthrough
        self.add_skip(Skip(qualified, passthrough, why, why_loc))
        return qualified

    # -- ops chosen by parameters -----------------------------------------
    def resolve_op(self, item: dict, body: _Body) -> tuple[str | None, str | None]:
        """The registered op a layer runs, and (for ``op: PARAM``) a note saying where it came from.

        ``op: act`` names a parameter (of the block, or of the file) whose value is an op name,
        e.g. ``act: hardswish`` at the block use. The value may itself name another parameter
        (a block forwarding ``act: act`` to an inner block); the chain is followed to an op.
        """
        written = item.get("op")
        if not isinstance(written, str):
            return None, None
        if written in REGISTRY:
            return written, None
        op_loc = location_of(item, ("op",))
        found = _lookup_with_scope(body.scope, written)
        if found is None:
            if op_loc not in self.ops_reported:
                self.ops_reported.add(op_loc)
                self.diags.error(f"unknown op '{written}'", op_loc,
                                 hint=did_you_mean(written, REGISTRY)
                                 or f"known ops: {', '.join(sorted(REGISTRY))}", notes=body.origin)
            return None, None
        binding, home = found
        param = written
        for _ in range(33):
            if isinstance(binding, Lazy):
                text, vloc = binding.expr.text.strip(), binding.expr.loc
                if text in REGISTRY:
                    return text, f"this layer's op '{text}' comes from parameter '{written}', set at {vloc}"
                scope = binding.scope if binding.scope is not None else home
                inner = _lookup_with_scope(scope, text) if text.isidentifier() else None
                if inner is None:
                    if vloc not in self.ops_reported:
                        self.ops_reported.add(vloc)
                        self.diags.error(
                            f"unknown op '{text}' (the value of parameter '{param}', used as "
                            f"the op of the layer at {op_loc})", vloc,
                            hint=did_you_mean(text, REGISTRY)
                            or f"known ops: {', '.join(sorted(REGISTRY))}", notes=body.origin)
                    return None, None
                binding, home = inner
                param = text
                continue
            what = (f"the channels of '{binding.ref}'" if isinstance(binding, ChannelsOf)
                    else repr(getattr(binding, "value", binding)))
            vloc = getattr(binding, "loc", None) or op_loc
            if vloc not in self.ops_reported:
                self.ops_reported.add(vloc)
                self.diags.error(f"parameter '{param}' holds {what}, not an op name (it is the op of "
                                 f"the layer at {op_loc})", vloc,
                                 hint="pass an op name, e.g. 'act: relu'", notes=body.origin)
            return None, None
        self.diags.error(f"'op: {written}': parameters name each other in a loop", op_loc,
                         notes=body.origin)
        return None, None

    def check_fields(self, item: dict, op_name: str, note: str, body: _Body) -> bool:
        """Schema-check a layer whose op came from a parameter, once per (layer, op)."""
        key = (location_of(item, ()), op_name)
        if key in self.fields_checked:
            return True
        self.fields_checked.add(key)
        problems = validate_layer_fields(item, op_name)
        for d in problems:
            self.diags.add(d.__class__(d.message, d.loc, d.severity, d.hint,
                                       d.notes + (note,) + body.origin))
        return not problems

    def when_of(self, item: dict, body: _Body) -> Any:
        """A layer's condition: None (always present), False, or an Expr for infer_shapes."""
        if "when" not in item:
            return None
        value, loc = item["when"], location_of(item, ("when",))
        if isinstance(value, bool):
            return None if value else False
        if isinstance(value, str):
            self.check_expression(value, loc, body, {"i"})
            return Expr(value, loc)
        return None  # the schema has reported it

    def expand_op(self, item: dict, loc: Location | None, name: str, body: _Body, prev: str | None,
                  explicit: list[str] | None, repeat: int) -> str | None:
        op_name, op_note = self.resolve_op(item, body)
        op = REGISTRY.get(op_name) if op_name else None
        if op is None:
            return prev  # reported by the schema pass or by resolve_op
        if op_note is not None and not self.check_fields(item, op_name, op_note, body):
            return prev
        attrs: dict[str, Any] = {}
        attr_locs: dict[str, Location] = {}
        for key, value in item.items():
            if key in LAYER_KEYS or key not in op.fields:
                continue
            vloc = location_of(item, (key,))
            attr_locs[key] = vloc
            f = op.fields[key]
            if f.kind.per_item and isinstance(value, list):
                parts = []
                for i, v in enumerate(value):
                    if isinstance(v, str):
                        self.check_expression(v, location_of(item, (key, i)), body, {"i"})
                        parts.append(Expr(v, location_of(item, (key, i))))
                    else:
                        parts.append(v)
                attrs[key] = tuple(parts)
            elif isinstance(value, str) and f.kind.expressions:
                self.check_expression(value, vloc, body, {"i"})
                attrs[key] = Expr(value, vloc)
            else:
                attrs[key] = value
        when = self.when_of(item, body)
        if repeat == 0:
            first = explicit[0] if explicit else prev
            return self.skip_layer(body.prefix + name, first, "'repeat: 0'",
                                   location_of(item, ("repeat",)), loc, body)
        out = prev
        for r in range(repeat):
            if self.overflow:  # 'repeat: 10**11' must stop at MAX_LAYERS, not loop 10^11 times
                break
            qualified = body.prefix + (name if repeat == 1 else f"{name}.{r + 1}")
            if r == 0 and explicit is not None:
                inputs = tuple(explicit)
            elif out is not None:
                inputs = (out,)
            else:
                self.diags.error(f"layer '{name}' has no input", loc,
                                 hint="name one with 'input: encoder.<tap>'", notes=body.origin)
                return None
            # Early checks accept 'i' in every field; bind it (0 outside a repeat) so that
            # evaluation agrees, unless an enclosing block use already binds its own index.
            scope = (body.scope.child({"i": Literal(r)})
                     if repeat > 1 or body.scope.lookup("i") is None else body.scope)
            self.add_node(Node(qualified, op_name, inputs, frozen_map(attrs), loc,
                               frozen_map(attr_locs), body.origin, scope, self.part, when))
            out = qualified
        return out

    def expand_use(self, item: dict, loc: Location | None, name: str, body: _Body, prev: str | None,
                   explicit: list[str] | None, repeat: int, depth: int) -> str | None:
        block_name = item.get("block")
        block = self.blocks.get(block_name)
        use_loc = location_of(item, ("block",))
        if not isinstance(block, dict):
            self.diags.error(f"unknown block '{block_name}'", use_loc,
                             hint=did_you_mean(str(block_name), self.blocks)
                             or (f"blocks: {', '.join(sorted(self.blocks))}" if self.blocks
                                 else "this file defines no blocks"), notes=body.origin)
            return prev
        if block_name in body.chain:
            if use_loc not in self.recursion_reported:
                self.recursion_reported.add(use_loc)
                cycle = " -> ".join(body.chain[body.chain.index(block_name):] + (block_name,))
                self.diags.error(f"block '{block_name}' uses itself ({cycle})", use_loc,
                                 hint="a block cannot contain itself; use 'repeat' to stack copies",
                                 notes=body.origin)
            return prev
        if depth >= MAX_BLOCK_DEPTH:
            self.diags.error(f"blocks nest deeper than {MAX_BLOCK_DEPTH} (does block "
                             f"'{block_name}' use itself?)", use_loc, notes=body.origin)
            return prev
        declared = block.get("params") or {}
        args = {k: v for k, v in item.items() if k not in BLOCK_USE_KEYS}
        op_params = _op_params(block)
        ok = True
        for key in args:
            if key not in declared:
                self.diags.error(f"block '{block_name}' has no parameter '{key}'",
                                 location_of(item, (key,), key=True),
                                 hint=did_you_mean(key, declared)
                                 or f"parameters: {', '.join(declared) or 'none'}", notes=body.origin)
                ok = False
        for key, default in declared.items():
            if default is None and key not in args:
                self.diags.error(f"block '{block_name}' needs parameter '{key}'", loc,
                                 notes=body.origin)
                ok = False
        for key, value in args.items():
            # Op names are not expressions: resolve_op checks them where they are used as ops.
            if isinstance(value, str) and key not in op_params and value.strip() not in REGISTRY:
                self.check_expression(value, location_of(item, (key,)), body, {"i"})
        input_names = [str(n) for n in block.get("inputs") or []]
        wanted = len(input_names) or 1
        given = len(explicit) if explicit is not None else None
        if given is not None and given != wanted or given is None and wanted > 1:
            names = ", ".join(input_names) if input_names else "input"
            got = f"got {given}" if given is not None else "got none"
            where = location_of(item, ("inputs",) if "inputs" in item else ("input",))
            self.diags.error(f"block '{block_name}' takes {wanted} input{'s' if wanted > 1 else ''} "
                             f"({names}), {got}", where,
                             hint=(f"write 'inputs: [{', '.join('a' + str(k + 1) for k in range(wanted))}]'"
                                   if wanted > 1 else "write 'input: NAME'"),
                             notes=(f"block '{block_name}' declares its inputs at "
                                    f"{location_of(block, ('inputs',)) or location_of(block, ())}",)
                             + body.origin)
            ok = False
        start = None
        if "start" in item:
            start = self.static_int(item["start"], "start", location_of(item, ("start",)), body,
                                    minimum=0)
            ok = ok and start is not None
        if not ok:
            return prev
        origin = (f"in block '{block_name}' used at {use_loc}",) + body.origin
        if repeat == 0:
            first = explicit[0] if explicit else prev
            return self.skip_layer(body.prefix + name, first, "'repeat: 0'",
                                   location_of(item, ("repeat",)), loc, body)
        out = prev
        qualified = body.prefix + name
        for r in range(repeat):
            if self.overflow:
                break
            if r == 0 and explicit is not None:
                block_inputs = list(explicit)
            elif out is not None:
                # Copies after the first read the previous copy's output as their first input
                # and keep the other inputs they were given.
                block_inputs = [out] + (list(explicit[1:]) if explicit else [])
            else:
                self.diags.error(f"block use '{name}' has no input", loc, notes=body.origin)
                return None
            block_input = block_inputs[0]
            suffix = "" if repeat == 1 and start is None else f".{(start if start is not None else 1) + r}"
            qualified = body.prefix + name + suffix
            caller = body.scope.child({"i": Literal(r)})
            if "when" in item and not self.use_is_present(item, caller, body):
                skipped = self.skip_layer(qualified, block_input, "its 'when:'",
                                          location_of(item, ("when",)), loc, body)
                out = skipped
                if out is not None:
                    self.block_outputs[qualified] = out
                continue
            bindings: dict[str, Any] = {"i": Literal(r), "block_in_channels": ChannelsOf(block_input)}
            for input_name, ref in zip(input_names, block_inputs):
                bindings[f"{input_name}.channels"] = ChannelsOf(ref)
            for key, default in declared.items():
                value = args.get(key, default)
                where = location_of(item, (key,)) if key in args else location_of(block, ("params", key))
                if isinstance(value, str):
                    bindings[key] = Lazy(Expr(value, where), caller if key in args else None,
                                         input_ref=block_input if key in args else None)
                else:
                    bindings[key] = Literal(value, where)
            for key, default in declared.items():
                if (key not in args and isinstance(default, str) and key not in op_params
                        and default.strip() not in REGISTRY):
                    self.check_expression(default, location_of(block, ("params", key)), None,
                                          set(declared) | {"i", "block_in_channels"}
                                          | {f"{n}.channels" for n in input_names}, origin,
                                          in_channels=False, scope=self.root_scope)
            scope = self.root_scope.child(bindings)
            prefix = qualified + "."
            inner = _Body(prefix, scope, block_input, origin, top_level=False, in_block=True,
                          chain=body.chain + (str(block_name),),
                          input_names=dict(zip(input_names, block_inputs)))
            last = self.expand_body(block.get("layers"), inner, depth + 1)
            out_ref = block.get("output")
            if isinstance(out_ref, str):
                last = self.resolve(inner, out_ref, location_of(block, ("output",)))
            out = last
            if out is not None:
                self.block_outputs[prefix[:-1]] = out
        if out is not None and qualified != body.prefix + name:
            self.block_outputs[body.prefix + name] = out
        return out

    def use_is_present(self, item: dict, caller: Scope, body: _Body) -> bool:
        """A block use's ``when:``, decided while expanding: it chooses which layers exist."""
        value, where = item["when"], location_of(item, ("when",))
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            self.check_expression(value, where, body, {"i"})  # channels: static_value says why not
        result = self.static_value(value, "when", where, body, caller)
        if result is _FAILED:
            return True
        if not isinstance(result, bool):
            self.diags.error(f"'when' must be true or false, got {result!r}", where,
                             hint="write a comparison, e.g. 'stride == 1'", notes=body.origin)
            return True
        return result

    # -- documents --------------------------------------------------------
    def finish(self) -> list[Node]:
        """Substitute resolved references for placeholders everywhere: inputs and scopes.

        A placeholder may resolve to another (a block that passes its input through, used on a
        later layer), so chains of any length are followed, each token once (memoised); a
        chain that comes back to itself is reported and read as the image, never shown raw.
        """
        done: dict[str, str] = {}

        def real(ref: str) -> str:
            if not isinstance(ref, str) or not ref.startswith(_PLACEHOLDER):
                return ref
            path: list[str] = []
            on_path: set[str] = set()
            while ref.startswith(_PLACEHOLDER) and ref not in done:
                if ref in on_path:
                    text, loc = self.token_text.get(ref, ("?", None))
                    self.diags.error(f"'{text}' refers to itself through blocks that output their "
                                     f"input", loc, hint="one of these layers needs a real input")
                    ref = INPUT
                    break
                path.append(ref)
                on_path.add(ref)
                ref = self.aliases.get(ref, INPUT)
            final = done.get(ref, ref)
            for token in path:
                done[token] = final
            return final

        self.real = real
        fixed: dict[int, Scope] = {}
        keep: list[Scope] = []  # keeps the scopes in 'fixed' alive, so their ids stay unique

        def fix_binding(binding: Any) -> Any:
            if isinstance(binding, ChannelsOf) and binding.ref.startswith(_PLACEHOLDER):
                return ChannelsOf(real(binding.ref))
            if isinstance(binding, Lazy):
                new_scope = fix_scope(binding.scope)
                new_ref = real(binding.input_ref) if binding.input_ref is not None else None
                if new_scope is not binding.scope or new_ref != binding.input_ref:
                    return Lazy(binding.expr, new_scope, new_ref)
            return binding

        def fix_scope(scope: Scope | None) -> Scope | None:
            if scope is None:
                return None
            if id(scope) in fixed:
                return fixed[id(scope)]
            parent = fix_scope(scope.parent)
            bindings = {k: fix_binding(v) for k, v in scope.bindings.items()}
            changed = parent is not scope.parent or any(
                bindings[k] is not v for k, v in scope.bindings.items())
            new = Scope(frozen_map(bindings), parent) if changed else scope
            fixed[id(scope)] = new
            keep.append(scope)
            return new

        self.skips = [Skip(s.name, real(s.passthrough), s.why, s.loc) for s in self.skips]
        out = []
        for n in self.nodes:
            new_scope = fix_scope(n.scope)
            changes: dict[str, Any] = {"inputs": tuple(real(i) for i in n.inputs)}
            if new_scope is not n.scope:
                changes["scope"] = new_scope
            out.append(n.replace(**changes))
        return out


def _op_params(block: Any) -> set[str]:
    """Names a block's layers use as ``op:`` that are not ops: parameters holding op names."""
    layers = block.get("layers") if isinstance(block, dict) else None
    return {str(item["op"]) for item in layers or [] if isinstance(item, dict)
            and isinstance(item.get("op"), str) and item["op"] not in REGISTRY}


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
        bindings[key] = _binding(value, location_of(overrides, (key,)))
    return bindings


def _binding(value: Any, loc: Location | None) -> Any:
    if isinstance(value, str):
        return Lazy(Expr(value, loc), None)
    return Literal(value, loc)


def _expand_part(doc: LocatedMap, file: str, part: str, scope: Scope, diags: Diagnostics,
                 taps: dict[str, str] | None = None, requires: set[str] | None = None,
                 input_ref: str | None = INPUT) -> tuple[_Expander, list[Node], str | None, _Body]:
    ex = _Expander(doc, file, part, diags, taps, requires, scope)
    for binding in scope.bindings.values():  # file parameters: names known, no 'in_channels'
        if isinstance(binding, Lazy) and binding.expr.text.strip() not in REGISTRY:
            ex.check_expression(binding.expr.text, binding.expr.loc, None, in_channels=False,
                                scope=scope)
    body = _Body(_PREFIX[part], scope, input_ref, (), top_level=True, in_block=False)
    last = ex.expand_body(doc.get("layers"), body, 0)
    output = last
    if isinstance(doc.get("output"), str):
        output = ex.resolve(body, doc["output"], location_of(doc, ("output",)))
    named: list[tuple[str, str]] = []
    if isinstance(doc.get("outputs"), dict):
        if "output" in doc:
            diags.error("give 'output' or 'outputs', not both", location_of(doc, ("outputs",), key=True),
                        hint="'outputs: {out: logits, aux: aux_logits}' names several; its first "
                             "entry is the main output", notes=(f"'output' is at {location_of(doc, ('output',))}",))
        for out_name, ref in doc["outputs"].items():
            if isinstance(ref, str):
                named.append((str(out_name), ex.resolve(body, ref, location_of(doc, ("outputs", out_name)))))
        if named:
            output = named[0][1]
    nodes = ex.finish()
    output = ex.real(output) if output else output
    ex.named_outputs = [(k, ex.real(v)) for k, v in named]
    return ex, nodes, output, body


def expand_encoder(doc: LocatedMap, file: str, diags: Diagnostics,
                   overrides: dict | None = None, override_loc: Location | None = None) -> Part:
    """Expand an encoder document: its layers, taps and output."""
    scope = Scope(frozen_map(_param_bindings(doc, overrides, file, diags, "the encoder", override_loc)))
    ex, nodes, output, body = _expand_part(doc, file, "encoder", scope, diags)
    taps = []
    for tap_name, ref in (doc.get("taps") or {}).items():
        if not isinstance(ref, str):
            continue
        loc = location_of(doc, ("taps", tap_name))
        target = ex.real(ex.resolve(body, ref, loc))
        taps.append(Tap(tap_name, target, loc))
    return Part(nodes, output, taps, scope, ex.named_outputs, ex.skips)


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
    ex, nodes, output, _ = _expand_part(doc, file, "meta", scope, diags, None, requires, INPUT)
    return Part(nodes, output, [], scope, ex.named_outputs, ex.skips)


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
    mex, meta_nodes, output, _ = _expand_part(meta_doc, meta_file, "meta", scope, diags,
                                              taps_with_output, None, INPUT)
    outputs = list(mex.named_outputs)
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
    info = {}
    for key in ("output_stride",):
        if key in encoder_doc:
            info[f"encoder_{key}"] = encoder_doc[key]
        if key in meta_doc:
            info[f"meta_{key}"] = meta_doc[key]
    info["meta_requires"] = tuple(meta_doc.get("requires") or ())
    if enc.output:
        info["encoder_output"] = enc.output  # where the output-stride rewrite must end
    return Graph(
        name=name,
        nodes=tuple(enc.nodes + meta_nodes),
        output=output or (enc.output or INPUT),
        taps=tuple(enc.taps),
        input_channels=int(encoder_doc.get("input_channels", 3)),
        default_input=default_input,
        num_classes=num_classes,
        files=frozen_map(files or {}),
        info=frozen_map(info),
        outputs=tuple(outputs),
        skipped=frozen_map({k.name: k for k in enc.skips + mex.skips}),
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
        outputs=tuple(enc.outputs),
        skipped=frozen_map({k.name: k for k in enc.skips}),
    )
