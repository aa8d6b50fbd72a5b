"""Pass 1, layers: the walk over a document's layer lists that makes the nodes.

``expand`` (the entry points, in ``expand.py``) hands each document's ``layers`` to a
:class:`LayerExpander`. Per item of a list it names the layer (written, or after the
last named layer and its op: ``conv1_bn``), then either makes op nodes
(:meth:`LayerExpander.expand_op`: ``repeat: n`` chains ``name.1`` ... ``name.n``) or
inlines a block (:meth:`LayerExpander.expand_use`: its parameters bound in a new
scope, its layers expanded as a nested list under ``use.``, one
:class:`~rtseg_compiler.ir.BlockUse` added to their origin). References go through
:mod:`.expand_refs`, values through :mod:`.expand_exprs`.
"""

from __future__ import annotations

from typing import Any

from ..diagnostics import Diagnostics, Location, did_you_mean
from ..ir import INPUT, BlockUse, ChannelsOf, Expr, Lazy, Literal, Node, Scope, Skip, frozen_map
from ..ops import REGISTRY
from ..spec.load import LocatedList, location_of
from ..spec.schema import BLOCK_USE_KEYS, LAYER_KEYS
from ..spec.expr import ExprError, names_in
from .env import IN_SIZE_NAMES, Env, evaluate_value
from .expand_exprs import ExpressionChecks
from .expand_refs import Body, References

__all__ = ["LayerExpander", "MAX_BLOCK_DEPTH"]

#: Blocks may use blocks; deeper than this is almost surely a block using itself.
MAX_BLOCK_DEPTH = 16


def _op_params(block: Any) -> set[str]:
    """Names a block's layers use as ``op:`` that are not ops: parameters holding op names."""
    layers = block.get("layers") if isinstance(block, dict) else None
    return {str(item["op"]) for item in layers or [] if isinstance(item, dict)
            and isinstance(item.get("op"), str) and item["op"] not in REGISTRY}


class LayerExpander:
    """Expands the layer lists of one document (an encoder or a meta) into nodes."""

    def __init__(self, doc: Any, part: str, diags: Diagnostics, refs: References,
                 exprs: ExpressionChecks, root_scope: Scope, max_layers: int):
        self.part = part
        self.diags = diags
        self.refs = refs
        self.exprs = exprs
        #: The document's file parameters: the scope every block's own scope extends.
        self.root_scope = root_scope
        #: Past this many nodes the expansion stops (``expand.MAX_LAYERS``).
        self.max_layers = max_layers
        self.blocks: dict[str, Any] = dict(doc.get("blocks") or {})
        self.nodes: list[Node] = []
        self.recursion_reported: set[Location | None] = set()

    def expand_body(self, layers: Any, body: Body, depth: int) -> str | None:
        if not isinstance(layers, list):
            return body.input_ref
        body.reserved = {item.get("name") for item in layers if isinstance(item, dict)} - {None}
        prev = body.input_ref
        last_named = None
        for idx, item in enumerate(layers):
            if self.refs.overflow or not isinstance(item, dict):
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
                repeat = self.exprs.static_int(item["repeat"], "repeat", location_of(item, ("repeat",)),
                                         body, minimum=0)
                if repeat is None:
                    repeat = 1
                elif name is not None and isinstance(item["repeat"], str):
                    self.refs.repeat_notes[body.prefix + name] = (
                        (f"'repeat: {item['repeat']}' at {location_of(item, ('repeat',))} is {repeat}",)
                        + _values_of(item["repeat"], body.scope))
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
        self.refs.resolve_pending(body)
        return prev

    def fresh_name(self, body: Body, base: str) -> str:
        name, n = base, 2
        while name in body.names or name in body.reserved:
            name, n = f"{base}_{n}", n + 1
        body.reserved.add(name)
        return name

    def explicit_inputs(self, item: dict, body: Body) -> list[str] | None:
        if "inputs" in item and isinstance(item["inputs"], list):
            refs = item["inputs"]
            return [self.refs.placeholder(body, str(r), location_of(item, ("inputs", i)))
                    for i, r in enumerate(refs)]
        if "input" in item and isinstance(item["input"], str):
            return [self.refs.placeholder(body, item["input"], location_of(item, ("input",)))]
        return None

    def add_node(self, node: Node) -> None:
        if len(self.nodes) >= self.max_layers:
            if not self.refs.overflow:
                self.diags.error(f"the spec expands to more than {self.max_layers:,} layers", node.loc,
                                 hint="check 'repeat' counts", notes=node.origin)
            self.refs.overflow = True
            return
        if node.name in self.refs.node_names or node.name in self.refs.skip_names:
            self.diags.error(f"layer name '{node.name}' is produced twice", node.loc,
                             notes=node.origin)
            return
        self.nodes.append(node)
        self.refs.node_names.add(node.name)

    def skip_layer(self, qualified: str, passthrough: str | None, why: str, why_loc: Location | None,
                   loc: Location | None, body: Body, values: tuple[str, ...] = ()) -> str | None:
        """Record an absent layer; its name then stands for ``passthrough``.

        ``values``: notes on the parameter values that decided it, for errors about its inner names.
        """
        if passthrough is None:
            self.diags.error(f"layer '{qualified.split('.', 1)[-1]}' has no input to pass on", loc,
                             hint="an absent layer stands for its input; name one with 'input:'",
                             notes=body.origin)
            return None
        if qualified in self.refs.node_names or qualified in self.refs.skip_names:
            self.diags.error(f"layer name '{qualified}' is produced twice", loc, notes=body.origin)
            return passthrough
        self.refs.add_skip(Skip(qualified, passthrough, why, why_loc))
        self.refs.skip_values[qualified] = values
        return qualified

    def expand_op(self, item: dict, loc: Location | None, name: str, body: Body, prev: str | None,
                  explicit: list[str] | None, repeat: int) -> str | None:
        op_name, op_note = self.exprs.resolve_op(item, body)
        op = REGISTRY.get(op_name) if op_name else None
        if op is None:
            return prev  # reported by the schema pass or by resolve_op
        if op_note is not None and not self.exprs.check_fields(item, op_name, op_note, body):
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
                        self.exprs.check_expression(v, location_of(item, (key, i)), body,
                                                    {"i", *IN_SIZE_NAMES})
                        parts.append(Expr(v, location_of(item, (key, i))))
                    else:
                        parts.append(v)
                attrs[key] = tuple(parts)
            elif isinstance(value, str) and f.kind.expressions:
                self.exprs.check_expression(value, vloc, body, {"i", *IN_SIZE_NAMES})
                attrs[key] = Expr(value, vloc)
            else:
                attrs[key] = value
        when = self.exprs.when_of(item, body)
        if repeat == 0:
            first = explicit[0] if explicit else prev
            return self.skip_layer(body.prefix + name, first, "'repeat: 0'",
                                   location_of(item, ("repeat",)), loc, body, _values_of(item.get("repeat"), body.scope))
        out = prev
        for r in range(repeat):
            if self.refs.overflow:  # 'repeat: 10**11' must stop at max_layers, not loop 10^11 times
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

    def expand_use(self, item: dict, loc: Location | None, name: str, body: Body, prev: str | None,
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
                self.exprs.check_expression(value, location_of(item, (key,)), body, {"i"})
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
            start = self.exprs.static_int(item["start"], "start", location_of(item, ("start",)), body,
                                    minimum=0)
            ok = ok and start is not None
        if not ok:
            return prev
        numbered = repeat != 1 or start is not None   # copies are named NAME.N (see suffix below)
        origin = (BlockUse(str(block_name), use_loc, 2 if numbered else 1),) + body.origin
        if repeat == 0:
            first = explicit[0] if explicit else prev
            return self.skip_layer(body.prefix + name, first, "'repeat: 0'",
                                   location_of(item, ("repeat",)), loc, body, _values_of(item.get("repeat"), body.scope))
        out = prev
        qualified = body.prefix + name
        for r in range(repeat):
            if self.refs.overflow:
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
            if "when" in item and not self.exprs.use_is_present(item, caller, body):
                condition = item["when"]
                why = "its 'when: false'" if condition is False else f"its 'when: {condition}' is false"
                skipped = self.skip_layer(qualified, block_input, why, location_of(item, ("when",)), loc, body,
                                          _values_of(condition, caller))
                out = skipped
                if out is not None:
                    self.refs.block_outputs[qualified] = out
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
                    bindings[key] = Literal(tuple(value) if isinstance(value, list) else value, where)
            for key, default in declared.items():
                if (key not in args and isinstance(default, str) and key not in op_params
                        and default.strip() not in REGISTRY):
                    self.exprs.check_expression(default, location_of(block, ("params", key)), None,
                                          set(declared) | {"i", "block_in_channels"}
                                          | {f"{n}.channels" for n in input_names}, origin,
                                          in_channels=False, scope=self.root_scope)
            scope = self.root_scope.child(bindings)
            prefix = qualified + "."
            inner = Body(prefix, scope, block_input, origin,
                         chain=body.chain + (str(block_name),),
                          input_names=dict(zip(input_names, block_inputs)))
            last = self.expand_body(block.get("layers"), inner, depth + 1)
            out_ref = block.get("output")
            if isinstance(out_ref, str):
                last = self.refs.resolve(inner, out_ref, location_of(block, ("output",)))
            out = last
            if out is not None:
                self.refs.block_outputs[prefix[:-1]] = out
        if out is not None and qualified != body.prefix + name:
            self.refs.block_outputs[body.prefix + name] = out
        return out


def _values_of(condition: Any, scope: Scope) -> tuple[str, ...]:
    """Notes giving the value of each parameter ``condition`` reads, and where it was set.

    A parameter that removes a layer is often set far from the condition (``encoder_params`` in a
    model file, ``--encoder-param``), so an error about the removed layer says where to change it.
    """
    if not isinstance(condition, str):
        return ()
    try:
        names = sorted(names_in(condition))
    except ExprError:
        return ()
    notes = []
    for name in names:
        binding = scope.lookup(name)
        if not isinstance(binding, (Literal, Lazy)):
            continue
        try:
            value = binding.value if isinstance(binding, Literal) else evaluate_value(name, Env(scope, None))
        except Exception:  # a name the condition cannot use was reported where it was checked
            continue
        shown = (str(value).lower() if isinstance(value, bool)
                 else repr(list(value)) if isinstance(value, tuple) else repr(value))
        where = binding.loc if isinstance(binding, Literal) else binding.expr.loc
        notes.append(f"{name} = {shown}" + (f", set at {where}" if where is not None else ""))
    return tuple(notes)
