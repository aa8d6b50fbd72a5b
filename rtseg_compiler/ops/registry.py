"""``OpDef`` (everything about one op), ``Cost``, ``FunctionCall``, and the registry ops join.

``register`` checks an OpDef where its author made it (malformed fields, a duplicate name) and
records where it came from (built in, an entry point, ``--ops``), which ``rtsegc ops`` shows.
Everything is importable from :mod:`rtseg_compiler.ops.base` too.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..ir import TensorType
from .dilation import DilateHook
from .kinds import BOOL, FIELD_KINDS, INT, NUMBER, Field, FieldKind

__all__ = ["BUILTIN", "REGISTRY", "Cost", "FunctionCall", "OpDef", "get_op", "list_ops", "op_origin",
           "register", "registering_from", "registry_generation", "unregister"]

#: Names a layer uses for itself (``spec.schema.LAYER_KEYS``); a field of that name could never be set.
_RESERVED_FIELDS = ("name", "op", "input", "inputs", "repeat", "doc", "block")


def _check_op(op: "OpDef") -> None:
    """Refuse a malformed OpDef at register() time, where the traceback points at its author.

    Without this a user op with ``Field("integer")`` or ``minimum="1"`` would register fine
    and break schema generation at the first spec, far from the mistake.
    """
    where = f"op '{op.name}'"
    if not isinstance(op.name, str) or not op.name.isidentifier():
        raise ValueError(f"op name {op.name!r} must be an identifier (letters, digits, '_')")
    if not callable(op.infer) or not callable(op.build) or not (op.dilate is None or callable(op.dilate)):
        raise ValueError(f"{where}: 'infer', 'build' (and 'dilate', when given) must be callables")
    for key, f in op.fields.items():
        if not isinstance(f, Field):
            raise ValueError(f"{where}: field '{key}' must be a Field, not {type(f).__name__}")
        if key in _RESERVED_FIELDS or not key.isidentifier():
            raise ValueError(f"{where}: '{key}' cannot be a field name (reserved or not an identifier)")
        if not isinstance(f.kind, FieldKind):
            raise ValueError(f"{where}: field '{key}' has kind {f.kind!r}; kinds are {', '.join(FIELD_KINDS)} "
                             "or a FieldKind")
        if f.minimum is not None and (isinstance(f.minimum, bool) or not isinstance(f.minimum, (int, float))):
            raise ValueError(f"{where}: field '{key}' has a non-numeric minimum {f.minimum!r}")
        problem = f.kind.problem(f)
        if problem:
            raise ValueError(f"{where}: {f.kind} field '{key}' {problem}")
    lo, hi = op.arity
    if lo < 0 or (hi is not None and hi < lo):
        raise ValueError(f"{where}: arity {op.arity} is not (fewest, most or None)")
    _check_traits(op, where)


#: The fields each inference trait relies on, by name and kind.
_TRAIT_FIELDS = {"norm_folds_into": (("groups", INT), ("bias", BOOL)),
                 "folds_into_previous": (("affine", BOOL), ("eps", NUMBER))}


def _check_traits(op: "OpDef", where: str) -> None:
    if op.norm_folds_into not in (None, "out", "in"):
        raise ValueError(f"{where}: norm_folds_into is {op.norm_folds_into!r}; it is 'out' (the weight's "
                         "first axis is the output channel), 'in' (transposed conv) or None")
    if op.source_expression is not None and not callable(op.source_expression):
        raise ValueError(f"{where}: source_expression must be a callable (attrs, args) -> str or None")
    if op.inference_identity and op.arity != (1, 1):
        raise ValueError(f"{where}: inference_identity needs exactly one input (arity (1, 1)), "
                         f"not {op.arity}")
    for trait, needs in _TRAIT_FIELDS.items():
        if not getattr(op, trait):
            continue
        for name, kind in needs:
            f = op.fields.get(name)
            if f is None or f.kind != kind:
                raise ValueError(f"{where}: {trait} needs a field '{name}' of kind {kind}")


@dataclass(frozen=True, slots=True)
class Cost:
    """What one layer costs for a batch-1 image.

    ``macs`` are multiply-accumulates of conv, transposed conv and linear
    layers with bias excluded (transposed conv counted by input size): the
    quantity torch's FlopCounterMode reports as FLOPs / 2.
    ``tf_flops`` follow TensorFlow's profiler (``float_operation``), the
    convention of the RTSeg paper's GFLOPs: 2·MAC for conv and linear,
    ``2·Hout·Wout·k²·Cin·Cout/s²`` for transposed conv, one per element for
    bias adds and element-wise adds, ``k²`` per output element for pooling,
    zero for batch norm and activations.
    """

    params: int = 0
    macs: int = 0
    tf_flops: int = 0


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A build result that is a plain function call rather than a module (add, crop ...)."""

    fn: Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)




def _no_complete(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    return attrs


def _free(attrs: Mapping[str, Any], ins: Sequence[TensorType], out: TensorType) -> Cost:
    return Cost()


def _no_extra(attrs: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class OpDef:
    """Everything about one op; see the module docstring."""

    name: str
    summary: str
    fields: Mapping[str, Field]
    infer: Callable[[Mapping[str, Any], Sequence[TensorType]], TensorType]
    build: Callable[[Mapping[str, Any], Sequence[TensorType], TensorType], Any]
    count: Callable[[Mapping[str, Any], Sequence[TensorType], TensorType], Cost] = _free
    complete: Callable[[dict[str, Any], Sequence[TensorType]], dict[str, Any]] = _no_complete
    #: (fewest, most) inputs; most=None for any number.
    arity: tuple[int, int | None] = (1, 1)
    #: Field names that must be given in the spec.
    required: tuple[str, ...] = ()
    #: Given the resolved attrs: whether the built module returns ``(value, extra)``
    #: (max pooling with ``indices: true`` returns the argmax indices). The node's
    #: value is the first item; consumers read the second only through ``extra_inputs``.
    returns_extra: Callable[[Mapping[str, Any]], bool] = _no_extra
    #: Input positions that receive their producer's extra output instead of its
    #: value (unpool's indices); the producer must return one.
    extra_inputs: tuple[int, ...] = ()
    #: What the op becomes in an encoder rewritten to a smaller output stride (see
    #: :class:`AtRate`); None: not declared, an error only if the op turns out strided there.
    dilate: DilateHook | None = None
    # Memory traits, read by ``passes/inplace.py`` (which lets an op overwrite a map nothing
    # else reads) and by nothing that computes shapes or costs. See docs/deployment.md.
    #: Given the resolved attrs: whether the op can overwrite its first input instead of
    #: allocating its output, the pass then setting the op's bool ``inplace`` field. ``None``
    #: means: exactly when the op declares a bool ``inplace`` field (relu, relu6, add).
    #: Return False where torch's in-place kernel has no backward (leaky_relu with a negative
    #: slope raises in backward; see torch's derivatives.yaml).
    inplace_safe: Callable[[Mapping[str, Any]], bool] | None = None
    #: Input positions whose storage the output may share (a crop is a slice of input 0; an
    #: identity returns its input). Overwriting the output overwrites those inputs too.
    views_inputs: tuple[int, ...] = ()
    #: Whether, in an inference run, the output always is input 0 or a view of it (a slice; the
    #: input itself), so it allocates no storage and keeps input 0's alive instead. Stricter than
    #: ``views_inputs``: a channel shuffle may share storage but in fact copies (its reshape of a
    #: transposed view). Read by the peak-memory count (compare.py), nothing else.
    output_is_view: bool = False
    #: Whether the op's backward reads its own output (ReLU's gradient is computed from its
    #: result), so that overwriting the output in place would corrupt training. Unknown ops
    #: are assumed to; families that know better say False.
    saves_output: bool = True
    # Inference traits, read by ``passes/fold_bn.py`` (the inference build of docs/deployment.md).
    #: This op's weight can absorb a per-channel affine map applied to its output (a batch norm
    #: in eval mode): ``"out"`` when the weight's first axis is the output channel (conv:
    #: (out, in/groups, kh, kw)), ``"in"`` when it is the input channel (transposed conv:
    #: (in, out/groups, kh, kw)). The op needs an int ``groups`` and a bool ``bias`` field and
    #: builds a module with ``weight`` and, with ``bias: true``, ``bias``.
    norm_folds_into: str | None = None
    #: This op is a per-channel affine map in eval mode that can fold into the op before it
    #: (batch norm: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``). The op
    #: needs a bool ``affine`` and a number ``eps`` field and builds a module with
    #: ``running_mean``/``running_var`` buffers (and ``weight``/``bias`` when affine).
    folds_into_previous: bool = False
    #: The op is the identity at inference (dropout): the inference build removes it.
    inference_identity: bool = False
    # Source trait, read by ``emit/python_source.py`` (``rtsegc compile --save-code``).
    #: Given the resolved attrs and the argument expressions, the Python expression that
    #: computes the op inline (``a + b``, ``torch.cat([a, b], dim=1)``), or None to write a
    #: call of the op's own helper function. ``None`` (the default): always the helper.
    source_expression: Callable[[Mapping[str, Any], Sequence[str]], str | None] | None = None
    #: What the op table of docs/spec-language.md says beyond ``summary`` (derived defaults,
    #: input conventions). Not in the JSON schema, whose description is ``summary``.
    notes: str = ""

    def can_run_in_place(self, attrs: Mapping[str, Any]) -> bool:
        """Whether this op, with these resolved attrs, may overwrite its first input."""
        if self.inplace_safe is not None:
            return bool(self.inplace_safe(attrs)) and _has_inplace_field(self)
        return _has_inplace_field(self)


def _has_inplace_field(op: "OpDef") -> bool:
    f = op.fields.get("inplace")
    return f is not None and f.kind == BOOL


REGISTRY: dict[str, OpDef] = {}

#: Where each registered op came from, as ``rtsegc ops`` shows it: "built-in",
#: "entry point 'NAME' (DIST VERSION)", "--ops MODULE" or "register() in MODULE".
_ORIGINS: dict[str, str] = {}
#: Set while ``ops.plugins`` imports a user module, so its registrations are attributed to it.
_LOADING_FROM: list[str] = []
#: Bumped by every register/unregister: caches derived from the registry (the schema
#: validators) key on it, so an op registered after the first validation is never missed.
_GENERATION = [0]

BUILTIN = "built-in"


def _caller_origin() -> str:
    if _LOADING_FROM:
        return _LOADING_FROM[-1]
    # Two frames up is whoever called register(); anything inside rtseg_compiler is built in.
    module = sys._getframe(2).f_globals.get("__name__", "?")
    return BUILTIN if module.startswith(__name__.partition(".")[0] + ".") else f"register() in {module}"


def register(op: OpDef) -> OpDef:
    """Add an op; a second op of the same name is an error, not a silent overwrite.

    Registration may happen at any time before a spec using the op is validated:
    the schema is rebuilt for the new registry state (see :func:`registry_generation`).
    """
    if op.name in REGISTRY:
        raise ValueError(f"op '{op.name}' is already registered ({_ORIGINS.get(op.name, BUILTIN)})")
    for name in op.required:
        if name not in op.fields:
            raise ValueError(f"op '{op.name}': required field '{name}' is not declared")
    _check_op(op)
    REGISTRY[op.name] = op
    _ORIGINS[op.name] = _caller_origin()
    _GENERATION[0] += 1
    return op


def unregister(name: str) -> OpDef:
    """Remove a user op (to re-register it in a notebook, or in tests); built-in ops stay."""
    if name not in REGISTRY:
        raise KeyError(f"op '{name}' is not registered")
    if _ORIGINS.get(name) == BUILTIN:
        raise ValueError(f"op '{name}' is built in and cannot be unregistered")
    _ORIGINS.pop(name, None)
    _GENERATION[0] += 1
    return REGISTRY.pop(name)


def op_origin(name: str) -> str:
    """Where a registered op came from ("built-in", "entry point 'x' (dist 1.0)", "--ops mod" ...)."""
    return _ORIGINS.get(name, BUILTIN)


def registry_generation() -> int:
    """A number that changes whenever an op is registered or unregistered."""
    return _GENERATION[0]


@contextlib.contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Attribute every op registered inside the block to ``origin`` (used by ``ops.plugins``)."""
    _LOADING_FROM.append(origin)
    try:
        yield
    finally:
        _LOADING_FROM.pop()


def get_op(name: str) -> OpDef | None:
    return REGISTRY.get(name)


def list_ops() -> list[str]:
    return sorted(REGISTRY)
