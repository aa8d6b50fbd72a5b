"""Pass 3: evaluate every attribute and infer every tensor type, in pure Python.

Walks the linked graph in order. For each node it evaluates the spec's
expressions (``in_channels`` is the node's first input's channel count),
type-checks them against the op's fields, applies the op's ``complete`` hook
(derived defaults, cross-field checks) and ``infer`` rule, and records a
:class:`~rtseg_compiler.ir.TensorType`. Errors are collected per node; a node
whose inputs failed is skipped rather than reported again.

When a fusion node sees inputs of different sizes, the error suggests the
nearest input sizes for which the whole graph is consistent (height and width
are searched independently, since no op mixes the two).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Mapping

from ..diagnostics import Diagnostics
from ..ir import (INPUT, AnisotropicStrideError, Expr, Graph, Node, Resolved, Skip, Tap, TensorType,
                  frozen_map, stride_text, strides_text)
from ..ops import REGISTRY, OpError
from ..ops.base import REQUIRED
from ..spec.expr import ExprError, NonPositiveCount
from .env import Env, evaluate_value

__all__ = ["infer_shapes", "suggest_input_sizes", "tap_stride", "MAX_SPATIAL"]

#: 16k x 16k is beyond any segmentation input; larger sizes are typos.
MAX_SPATIAL = 16_384
#: Layer visits suggest_input_sizes may spend looking for input sizes that work.
SUGGEST_BUDGET = 50_000
_TAP_STRIDE = re.compile(r"^stride(\d+)$")
_INPUT_REF = re.compile(r"input #(\d+)")


def tap_stride(name: str) -> int:
    """N for a tap called ``strideN`` (a stride the compiler checks), else 0."""
    match = _TAP_STRIDE.match(name)
    return int(match.group(1)) if match else 0


def _input_name(node: Node, index: int, last_under: Mapping[str, str] | None = None,
                taps_of: Mapping[str, list[str]] | None = None) -> str:
    """'up32' for input #0 of a node, as ops' messages refer to inputs by position: the name the
    spec wrote. A meta reads the encoder through its taps, so an encoder layer read by a head
    layer is named by its tap (``encoder.stride16``) when one tap points at it; a block use is
    named as used (see :func:`_written_as`)."""
    if not 0 <= index < len(node.inputs):
        return f"input #{index}"
    source = node.inputs[index]
    taps = (taps_of or {}).get(source, [])
    if source.split(".", 1)[0] != node.name.split(".", 1)[0] and len(taps) == 1:
        return f"'encoder.{taps[0]}'"
    return f"'{_short(_written_as(source, node.name, last_under or {}))}'"


def _last_under(graph: Graph) -> dict[str, str]:
    """For every block-use prefix of a node name ('head.lat32'), the last node under it."""
    last: dict[str, str] = {}
    for node in graph.nodes:
        parts = node.name.split(".")
        for k in range(2, len(parts)):  # parts[0] is the part (encoder/head)
            last[".".join(parts[:k])] = node.name
    return last


def _written_as(name: str, reader: str, last_under: Mapping[str, str]) -> str:
    """The block use a reader outside it refers to, when ``name`` is that use's last layer (its
    output): a layer reading ``lat32`` reads ``lat32.conv_relu``, and an error should say
    ``lat32``, as the spec does. Any other node keeps its own name."""
    parts = name.split(".")
    for k in range(2, len(parts)):  # the outermost use first
        prefix = ".".join(parts[:k])
        if last_under.get(prefix) == name and not reader.startswith(prefix + "."):
            return prefix
    return name


class _Skip(Exception):
    """An input of this node failed; its own error was already reported."""


def _evaluate_attrs(node: Node, env: Env) -> dict[str, Any]:
    op = REGISTRY[node.op]
    attrs: dict[str, Any] = {}
    for name, f in op.fields.items():
        raw = node.attrs.get(name, f.default)
        if raw is REQUIRED:
            raise OpError(f"op '{node.op}' needs '{name}'", field=name)
        if raw is None:
            attrs[name] = None
            continue
        if not f.kind.expressions:
            attrs[name] = f.kind.coerce(raw, f, name)
            continue
        env.forget_reads()
        try:
            if isinstance(raw, tuple):
                value = tuple(evaluate_value(v, env) for v in raw)
            else:
                value = evaluate_value(raw, env)
        except (ExprError, KeyError) as exc:
            msg = str(exc) if isinstance(exc, ExprError) else f"unknown name {exc}"
            err = OpError(f"{name}: {msg}", field=name)
            err.loc = getattr(exc, "loc", None)  # set when a parameter's own text failed (env.py)
            if isinstance(exc, NonPositiveCount) and err.loc is None:
                _blame_parameter(err, env, node, name)
            raise err from None
        try:
            attrs[name] = f.kind.coerce(value, f, name)
        except OpError as err:
            numbers = value if isinstance(value, tuple) else (value,)
            if f.minimum == 1 and any(isinstance(v, (int, float)) and v <= 0 for v in numbers):
                _blame_parameter(err, env, node, name)  # 'out: "int(64 * width)"' with width 0
            raise
    return attrs


def _blame_parameter(err: OpError, env: Env, node: Node, field: str) -> None:
    """Point ``err`` (a count of 0 or less) at the parameter value of 0 or less that the field read.

    ``width: 0`` in a model file makes every channel count of the encoder 0; the error belongs on
    that value, where the user can fix it, with a note naming the layer that used it first.
    """
    culprit = env.non_positive_parameter()
    if culprit is None:
        return
    param, value, loc = culprit
    err.loc = loc
    err.extra_notes = (f"'{param}' = {value!r} gives {field} of {node.op} '{_short(node.name)}' "
                       f"at {node.attr_loc(field)}",)


def infer_shapes(graph: Graph, input_size: tuple[int, int], diags: Diagnostics,
                 *, suggest: bool = True, spatial_dims: set[str] | None = None,
                 check_taps: bool = True, known: Mapping[str, TensorType] | None = None) -> Resolved:
    """Resolve attributes and types for an input of ``input_size`` = (height, width).

    ``known``: the types, at this input size, of nodes of ``graph`` that an earlier call
    resolved (their attrs are concrete and every input of theirs is known too, e.g. an
    encoder inferred on its own): they are taken as they are, not inferred again, so that
    ``apply_output_stride`` infers the head on top of the encoder it has already inferred.
    """
    h, w = input_size
    image = TensorType(graph.input_channels, h, w, Fraction(1))
    types: dict[str, TensorType] = {INPUT: image}
    failed: set[str] = set()
    resolved_nodes = []
    with_extra: set[str] = set()  # nodes whose module returns (value, extra): pools with indices
    spatial_errors = []
    last_under = _last_under(graph)
    taps_of: dict[str, list[str]] = {}
    for tap in graph.taps:
        taps_of.setdefault(tap.node, []).append(tap.name)
    #: Absent layers: from expand (repeat: 0, a block use's when) and from false 'when:' here.
    skipped: dict[str, Skip] = dict(graph.skipped)

    def real(ref: str) -> str:
        seen = 0
        while ref in skipped and seen <= len(skipped):
            ref, seen = skipped[ref].passthrough, seen + 1
        return ref

    def channels_of(ref: str) -> int:
        ref = real(ref)
        if ref in failed:
            raise _Skip
        if ref not in types:
            raise ExprError(f"the channels of '{ref}' are not known here")
        return types[ref].channels

    for node in graph.nodes:
        op = REGISTRY.get(node.op)
        if op is None:
            diags.error(f"unknown op '{node.op}'", node.loc, notes=node.origin)
            failed.add(node.name)
            continue
        if known is not None and node.name in known:
            types[node.name] = known[node.name]
            if op.returns_extra(node.attrs):
                with_extra.add(node.name)
            resolved_nodes.append(node)
            continue
        via: tuple[str, ...] = ()
        if any(i in skipped for i in node.inputs):
            via = tuple(_absent_note(skipped[i], node, real(i)) for i in dict.fromkeys(node.inputs)
                        if i in skipped)
            node = node.replace(inputs=tuple(real(i) for i in node.inputs))
        notes = node.origin + via
        if any(i in failed for i in node.inputs):
            failed.add(node.name)
            continue
        if any(i not in types for i in node.inputs):  # a hand-made graph; link reports these
            failed.add(node.name)
            continue
        ins = [types[i] for i in node.inputs]
        lo, hi = op.arity
        if len(ins) < lo or (hi is not None and len(ins) > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            diags.error(f"op '{node.op}' takes {want} input{'s' if want != '1' else ''}, "
                        f"got {len(ins)}", node.loc, notes=notes,
                        hint="list them with 'inputs: [a, b]'" if lo > 1 else None)
            failed.add(node.name)
            continue
        env = Env(node.scope, channels_of, lambda ins=ins: ins[0].channels,
                  in_size=lambda ins=ins: ins[0].spatial)
        if node.when is not None:
            present = _decide(node, env, diags, notes)
            if present is None:
                failed.add(node.name)
                continue
            if not present:
                loc = node.when.loc if isinstance(node.when, Expr) else node.loc
                skipped[node.name] = Skip(node.name, node.inputs[0], "skipped by its 'when:'", loc)
                continue
        try:
            attrs = _evaluate_attrs(node, env)
            attrs = op.complete(attrs, ins)
            for pos in op.extra_inputs:  # e.g. unpool reads a max-pool's indices
                if pos < len(node.inputs) and node.inputs[pos] not in with_extra:
                    raise OpError(f"input #{pos} must be a layer that also returns indices "
                                  f"(a maxpool with 'indices: true')", field="inputs",
                                  hint="add 'indices: true' to that maxpool, or name the maxpool")
            out = op.infer(attrs, ins)
            _check_output(node, out, ins)
        except _Skip:
            failed.add(node.name)
            continue
        except AnisotropicStrideError as exc:  # a user op's rule written for isotropic maps only
            diags.error(f"op '{node.op}' reads the one 'stride' of an input that has a stride per axis: "
                        f"{exc} ({node.op} '{_short(node.name)}')", node.loc, notes=notes,
                        hint="a shape rule that takes row (C x H x 1) or column (C x 1 x W) maps reads "
                             "x.stride_h and x.stride_w, or returns rtseg_compiler.ops.sampled(x, "
                             "channels, height, width, step_h, step_w) (docs/extending.md)")
            failed.add(node.name)
            continue
        except OpError as exc:
            loc = node.attr_loc(exc.field) if exc.field and exc.field != "inputs" else node.loc
            if exc.field == "inputs" and "inputs" in node.attr_locs:
                loc = node.attr_locs["inputs"]
            loc = getattr(exc, "loc", None) or loc
            notes = notes + getattr(exc, "extra_notes", ())
            def name_inputs(text: str, node: Node = node) -> str:
                return _INPUT_REF.sub(lambda m: _input_name(node, int(m.group(1)), last_under, taps_of),
                                      text)

            text = name_inputs(str(exc))
            exc.hint = name_inputs(exc.hint) if exc.hint else exc.hint
            message = f"{text} ({node.op} '{_short(node.name)}')"
            if exc.spatial:
                if spatial_dims is not None:
                    spatial_dims.update(exc.dims)
                message = f"{text} at layer '{_short(node.name)}' for input {h}x{w}"
                spatial_errors.append((notes, message, exc.hint, loc))
            else:
                diags.error(message, loc, hint=exc.hint, notes=notes)
            failed.add(node.name)
            continue
        types[node.name] = out
        if op.returns_extra(attrs):
            with_extra.add(node.name)
        resolved_nodes.append(node.replace(attrs=frozen_map(attrs)))
    if spatial_errors:
        hint_sizes = suggest_input_sizes(graph, input_size) if suggest else None
        for notes, message, hint, loc in spatial_errors:
            if hint_sizes:
                hint = f"input sizes that work nearby: {hint_sizes}"
            diags.error(message, loc, hint=hint, notes=notes)
    taps = tuple(Tap(t.name, real(t.node), t.loc) for t in graph.taps)
    if check_taps and not diags.has_errors:
        _check_taps(taps, types, diags)
    resolved = graph.replace(nodes=tuple(resolved_nodes), output=real(graph.output),
                             outputs=tuple((k, real(v)) for k, v in graph.outputs), taps=taps,
                             skipped=frozen_map(skipped),
                             encoder_output=graph.encoder_output and real(graph.encoder_output))
    return Resolved(resolved, image, frozen_map(types))


def _absent_note(skip: Skip, reader: Node, instead: str) -> str:
    where = f" at {skip.loc}" if skip.loc is not None else ""
    return (f"'{_short(skip.name)}' is absent ({skip.why}{where}), so '{_short(reader.name)}' "
            f"reads '{_short(instead)}' in its place")


def _decide(node: Node, env: Env, diags: Diagnostics, notes: tuple[object, ...]) -> bool | None:
    """A layer's ``when:``: True or False, or None after reporting why it has no value."""
    if isinstance(node.when, bool):
        return node.when
    loc = node.when.loc if isinstance(node.when, Expr) else node.loc
    env.forget_reads()
    try:
        value = evaluate_value(node.when, env)
    except _Skip:
        return None
    except (ExprError, KeyError) as exc:
        msg = str(exc) if isinstance(exc, ExprError) else f"unknown name {exc}"
        culprit = env.non_positive_parameter() if isinstance(exc, NonPositiveCount) else None
        if culprit is not None and getattr(exc, "loc", None) is None:
            param, value, loc_of_value = culprit
            notes = notes + (f"'{param}' = {value!r} gives the 'when:' of {node.op} '{_short(node.name)}' "
                             f"at {loc}",)
            loc = loc_of_value
        diags.error(f"when: {msg} ({node.op} '{_short(node.name)}')",
                    getattr(exc, "loc", None) or loc, notes=notes)
        return None
    if not isinstance(value, bool):
        diags.error(f"'when' must be true or false, got {value!r} ({node.op} '{_short(node.name)}')",
                    loc, hint="write a comparison, e.g. 'stride == 1 and in_channels == out'",
                    notes=notes)
        return None
    return value


def _short(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else name


def _check_output(node: Node, out: TensorType, ins: list[TensorType]) -> None:
    if not isinstance(out, TensorType):  # a user op's infer hook that returns something else
        raise OpError(f"the op's shape rule (infer) returned {type(out).__name__}, not a TensorType",
                      hint="return the input type with its fields replaced, e.g. "
                           "dataclasses.replace(ins[0], channels=...)")
    if out.height < 1 or out.width < 1:
        src = ins[0]
        raise OpError(f"output would be {out.height}x{out.width}: the {src.height}x{src.width} "
                      f"input is too small for this layer", spatial=True,
                      dims=("h" if out.height < 1 else "") + ("w" if out.width < 1 else ""),
                      hint="use a larger input, or less stride/padding")
    if out.stride_h.numerator <= 0 or out.stride_w.numerator <= 0:  # a user op's arithmetic
        raise OpError(f"the op's shape rule (infer) returned strides {strides_text(out)}; a stride is "
                      f"positive", hint="multiply the input's stride by the op's stride, divide it when "
                                        "upsampling")
    if out.height > MAX_SPATIAL or out.width > MAX_SPATIAL:
        raise OpError(f"output {out.height}x{out.width} is beyond {MAX_SPATIAL} pixels a side",
                      spatial=False)


def _check_taps(taps: tuple[Tap, ...], types: Mapping[str, TensorType], diags: Diagnostics) -> None:
    """A tap named strideN must sit on a map of stride N; the contract metas rely on."""
    for tap in taps:
        want = tap_stride(tap.name)
        if not want or tap.node not in types:
            continue
        t = types[tap.node]
        if not t.isotropic:
            diags.error(f"tap '{tap.name}' points at '{_short(tap.node)}', a {t} map whose stride is "
                        f"{stride_text(t.stride_h)} along the height and {stride_text(t.stride_w)} along "
                        f"the width, not {want} along both", tap.loc,
                        hint="a strideN tap must be a map on the image grid along both axes; a row or "
                             "column map (reduce over width or height) is one bin along the reduced axis")
            continue
        have = t.stride
        if have != want:
            diags.error(f"tap '{tap.name}' points at '{_short(tap.node)}', whose stride is "
                        f"{stride_text(have)}, not {want}", tap.loc,
                        hint=f"tap a layer at stride {want}, or rename the tap 'stride{stride_text(have)}'")


def suggest_input_sizes(graph: Graph, input_size: tuple[int, int], radius: int = 256) -> str | None:
    """The nearest smaller and larger input sizes for which the graph's shapes are consistent.

    No op mixes height and width, so each is searched on its own, and only the
    dimension that has a problem is changed: a height is good when no size
    error concerns the height dimension.
    """
    h, w = input_size
    # Each candidate re-runs inference over the whole graph (about 20 us a layer). Cap the
    # layer visits so that a 20,000-layer spec, or a layer no input size can satisfy, costs
    # about a second; once spent, candidates count as bad and the search ends.
    runs_left = [max(1, SUGGEST_BUDGET // max(1, len(graph.nodes)))]

    def bad_dims(size: tuple[int, int]) -> set[str]:
        if runs_left[0] <= 0:
            return {"h", "w"}
        runs_left[0] -= 1
        found: set[str] = set()
        infer_shapes(graph, size, Diagnostics(), suggest=False, spatial_dims=found)
        return found

    broken = bad_dims(input_size)

    def around(dim: str, current: int, make) -> list[int]:
        if dim not in broken:
            return [current]
        below = next((c for c in range(current - 1, max(current - radius, 0), -1)
                      if dim not in bad_dims(make(c))), None)
        above = next((c for c in range(current + 1, current + radius + 1)
                      if dim not in bad_dims(make(c))), None)
        return [c for c in (below, above) if c is not None]

    heights = around("h", h, lambda c: (c, w))
    widths = around("w", w, lambda c: (h, c))
    if not heights or not widths or (heights == [h] and widths == [w]):
        return None
    return ", ".join(dict.fromkeys(f"{a}x{b}" for a in heights for b in widths))
