"""Pass 1, references: what a name written in a layer list means, for ``expand``.

A layer may read a layer written after it (``link`` then reports a cycle, not
"unknown name"), so a name that is not yet defined becomes a placeholder token;
each list of layers resolves its tokens when it is complete
(:meth:`References.resolve_pending`), and :meth:`References.finish` substitutes
the final names into every node's inputs and scopes. A name means, in order:
``input`` (the image, or a block's input), a layer of the same list, a block
input (``inputs: [x, skip]``), a dotted name into a block use (``ds3.pw``), and
in a meta ``encoder.<tap>``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Diagnostics, Location, did_you_mean
from ..ir import INPUT, BlockUse, ChannelsOf, Lazy, Node, Scope, Skip, frozen_map

__all__ = ["Body", "References", "PLACEHOLDER"]

#: Prefix of the tokens that stand for references not resolved yet.
PLACEHOLDER = "\x00ref"


@dataclass
class Body:
    """One list of layers being expanded: a document's top level, or one use of a block."""

    prefix: str
    scope: Scope
    input_ref: str | None
    #: The block uses this list sits in, innermost first (empty at a document's top level).
    origin: tuple[BlockUse, ...]
    names: dict[str, str] = field(default_factory=dict)
    name_locs: dict[str, Location] = field(default_factory=dict)
    reserved: set[str] = field(default_factory=set)
    pending: list[tuple[str, str, Location | None]] = field(default_factory=list)
    #: The blocks being expanded around this body, outermost first, to catch a block using itself.
    chain: tuple[str, ...] = ()
    #: A block's named inputs (``inputs: [x, skip]``) -> the references bound at the use.
    input_names: dict[str, str] = field(default_factory=dict)


class References:
    """The names defined so far in one document, and the references waiting for names."""

    def __init__(self, part: str, diags: Diagnostics, taps: dict[str, str] | None = None,
                 requires: set[str] | None = None):
        self.part = part
        self.diags = diags
        #: For a meta: tap name -> qualified encoder node (None while checking a meta alone).
        self.encoder_taps = taps
        self.requires = requires or set()
        #: Qualified names of the layers made so far.
        self.node_names: set[str] = set()
        #: Absent layers (repeat: 0, a block use's false 'when:'); their names read their input.
        self.skips: list[Skip] = []
        self.skip_names: set[str] = set()
        #: Absent layer -> notes on the parameter values that removed it ("deep = false, set at ...").
        self.skip_values: dict[str, tuple[str, ...]] = {}
        #: A layer or block use whose 'repeat:' is an expression -> notes on its value and parameters.
        self.repeat_notes: dict[str, tuple[str, ...]] = {}
        #: Qualified name of each block use (``encoder.a.x``) -> its output reference, so that a
        #: dotted reference may name a block nested in a block (``a.x``), not only an op layer.
        self.block_outputs: dict[str, str] = {}
        #: Placeholder token -> the reference it resolved to (possibly another token).
        self.aliases: dict[str, str] = {}
        #: Placeholder token -> (reference text, location), to report a reference that loops.
        self.token_text: dict[str, tuple[str, Location | None]] = {}
        self.counter = itertools.count()
        #: Set once the document expanded past MAX_LAYERS: later layers were dropped, so a name
        #: that is not found is no error of its own.
        self.overflow = False
        #: After :meth:`finish`: a reference (or token) -> the final qualified name.
        self.real = lambda ref: ref

    def placeholder(self, body: Body, text: str, loc: Location | None) -> str:
        """The qualified name for ``text`` if it is already defined, else a token resolved later."""
        known = (text == INPUT or text in body.names or text in body.input_names
                 or (text.startswith("encoder.") and self.part == "meta")
                 or ("." in text and self.qualified_known(body.prefix + text)))
        if known:
            return self.resolve(body, text, loc)
        token = f"{PLACEHOLDER}{next(self.counter)}"
        body.pending.append((token, text, loc))
        self.token_text[token] = (text, loc)
        return token

    def qualified_known(self, qualified: str) -> bool:
        return (qualified in self.node_names or qualified in self.block_outputs
                or qualified in self.skip_names)

    def add_skip(self, skip: Skip) -> None:
        self.skips.append(skip)
        self.skip_names.add(skip.name)

    def resolve_pending(self, body: Body) -> None:
        for token, text, loc in body.pending:
            self.aliases[token] = self.resolve(body, text, loc)

    def resolve(self, body: Body, text: str, loc: Location | None, what: str | None = None) -> str:
        """The qualified name ``text`` means in ``body``; ``what`` names the reader in errors ("tap 'x'")."""
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
        if "." in text and self._report_absent_part(body, text, loc, what):
            return INPUT
        candidates = list(body.names) + list(body.input_names) + ([INPUT] if body.input_ref else [])
        if self.part == "meta":
            candidates += [f"encoder.{t}" for t in (self.encoder_taps or self.requires)]
        self.diags.error(f"unknown layer '{text}'", loc,
                         hint=did_you_mean(text, candidates),
                         notes=body.origin)
        return INPUT

    def _report_absent_part(self, body: Body, text: str, loc: Location | None, what: str | None) -> bool:
        """Explain a dotted name that does not exist because parameters removed what holds it.

        ``s3.r`` when the block use ``s3`` is absent (its ``when:`` is false, or ``repeat: 0``),
        and ``stage.4`` when ``repeat: "len(dims)"`` made three copies, are spec errors whose
        cause is elsewhere (often a parameter the model file set): the error names that cause.
        """
        parts = text.split(".")
        reader = f"{what} names" if what else "reference to"
        skips = {s.name: s for s in self.skips}
        for k in range(len(parts) - 1, 0, -1):  # 's3.2' before 's3', which means the last copy
            holder = ".".join(parts[:k])
            # A repeated use's bare name means its last copy, which may be the absent one.
            skip = skips.get(body.prefix + holder) or skips.get(body.names.get(holder, "") if k == 1 else "")
            if skip is None:
                continue
            where = f" at {skip.loc}" if skip.loc is not None else ""
            self.diags.error(f"{reader} '{text}', inside '{holder}', which is absent ({skip.why}{where})",
                             loc, hint=f"name '{holder}' itself (an absent layer reads its input) or a layer "
                                       f"that is always present",
                             notes=self.skip_values.get(skip.name, ()) + body.origin)
            return True
        if len(parts) > 1 and parts[1].isdigit():  # 'stage.4': a copy that 'repeat:' did not make
            base = body.prefix + parts[0]
            copies = sorted({int(name[len(base) + 1:].split(".")[0])
                            for name in self.node_names | set(self.block_outputs) | self.skip_names
                            if name.startswith(base + ".") and name[len(base) + 1:].split(".")[0].isdigit()})
            # The bare name of a repeated layer means its last copy; anything else is not a repeat.
            if copies and body.names.get(parts[0]) in (f"{base}.{copies[-1]}", self.block_outputs.get(
                    f"{base}.{copies[-1]}")):
                self.diags.error(f"{reader} '{text}', but '{parts[0]}' has copies {copies[0]} to "
                                 f"{copies[-1]} only", loc,
                                 hint=f"its 'repeat:' made {len(copies)} copies with these parameters",
                                 notes=self.repeat_notes.get(base, ()) + body.origin)
                return True
        return False

    def finish(self, nodes: list[Node]) -> list[Node]:
        """Substitute resolved references for placeholders everywhere: inputs and scopes.

        A placeholder may resolve to another (a block that passes its input through, used on a
        later layer), so chains of any length are followed, each token once (memoised); a
        chain that comes back to itself is reported and read as the image, never shown raw.
        Sets :attr:`real` and rewrites :attr:`skips`; returns the rewritten ``nodes``.
        """
        done: dict[str, str] = {}

        def real(ref: str) -> str:
            if not isinstance(ref, str) or not ref.startswith(PLACEHOLDER):
                return ref
            path: list[str] = []
            on_path: set[str] = set()
            while ref.startswith(PLACEHOLDER) and ref not in done:
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
            if isinstance(binding, ChannelsOf) and binding.ref.startswith(PLACEHOLDER):
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
        for n in nodes:
            new_scope = fix_scope(n.scope)
            changes: dict[str, Any] = {"inputs": tuple(real(i) for i in n.inputs)}
            if new_scope is not n.scope:
                changes["scope"] = new_scope
            out.append(n.replace(**changes))
        return out
