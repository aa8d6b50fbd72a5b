"""The op registry: what an op is, and the helpers op families share.

An op is declared once, in one file under ``ops/``, by an :class:`OpDef` that
holds everything the compiler needs to know about it:

* ``fields``: its attributes with types and defaults, from which the JSON
  Schema fragment is generated (so schema and semantics cannot drift);
* ``complete``: derived defaults and cross-field checks, e.g. conv padding
  ``d*(k-1)//2`` and "groups divides in_channels";
* ``infer``: the output :class:`~rtseg_compiler.ir.TensorType`, following
  PyTorch's arithmetic exactly;
* ``count``: parameters, MACs and TF-profiler FLOPs, analytically;
* ``build``: the torch module (or function) that computes it. Only this hook
  imports torch, and only when called;
* ``dilate``: what the op becomes when the encoder is run at a smaller output
  stride (``passes/dilate.py``): given its resolved attrs and an
  :class:`AtRate`, it returns new attrs, a :class:`Replace`, or raises
  :class:`OpError`. Ready-made declarations: :func:`unaffected` (pointwise
  ops), :func:`size_independent` (global and adaptive pooling, linear),
  :func:`not_dilatable` (ops that cannot run on a dilated map, such as
  upsampling by a scale); conv and pool declare their own rules.
  An op without one (``dilate=None``, the default) is fine wherever its output
  stride equals its input stride; a *strided* op without one is an error at
  its line, once the rewrite reaches it.

Adding an op is one ``register(OpDef(...))`` call in one file.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..diagnostics import did_you_mean
from ..ir import TensorType, stride_text

__all__ = [
    "Field",
    "FieldKind",
    "IntKind",
    "PairKind",
    "NumberKind",
    "BoolKind",
    "ChoiceKind",
    "INT",
    "PAIR",
    "NUMBER",
    "BOOL",
    "CHOICE",
    "OpDef",
    "OpError",
    "Cost",
    "FunctionCall",
    "register",
    "unregister",
    "get_op",
    "list_ops",
    "op_origin",
    "registry_generation",
    "REGISTRY",
    "AtRate",
    "Replace",
    "DilateHook",
    "unaffected",
    "size_independent",
    "not_dilatable",
    "conv_out",
    "same_spatial",
]


class OpError(ValueError):
    """A problem with one layer's attributes or inputs.

    ``field`` names the attribute to point at (its line in the spec), ``hint``
    what would be valid. ``spatial`` marks a size mismatch that depends on the
    input resolution, for which the compiler can suggest other input sizes.
    """

    def __init__(self, message: str, field: str | None = None, hint: str | None = None,
                 spatial: bool = False, dims: str = "hw"):
        super().__init__(message)
        self.field = field
        self.hint = hint
        self.spatial = spatial
        #: Which of height ("h") and width ("w") the spatial problem concerns.
        self.dims = dims


class FieldKind:
    """What one kind of op attribute holds, and everything that differs between kinds.

    A kind owns its JSON-schema fragment (:meth:`schema`, which ``spec/schema.py`` completes
    with the field's default and doc), its check of a :class:`Field` declaration
    (:meth:`problem`, run by :func:`register`) and the check and conversion of an evaluated
    value (:meth:`coerce`, run by the shape pass). So a new kind is one subclass, and
    no other file asks which kind a field is. The built-in kinds are the singletons
    :data:`INT`, :data:`PAIR`, :data:`NUMBER`, :data:`BOOL` and :data:`CHOICE`;
    ``Field("int", ...)``, the spelling before kinds were classes, still means :data:`INT`.
    """

    #: The kind's name in ``Field("name", ...)`` and in messages.
    name: str = ""
    #: A string in the spec is an expression over parameters (False: a literal, as a choice).
    expressions: bool = True
    #: A YAML list is one value whose items are each a value or an expression (a pair's [h, w]).
    per_item: bool = False

    def schema(self, f: "Field") -> dict[str, Any]:
        """The JSON-schema fragment of a value of this kind (default and doc are added by the caller)."""
        raise NotImplementedError

    def coerce(self, value: Any, f: "Field", name: str) -> Any:
        """Check an evaluated value of field ``name`` and return it in its compiled form."""
        raise NotImplementedError

    def problem(self, f: "Field") -> str | None:
        """What is wrong with a Field of this kind as declared, or None."""
        return None

    # One instance per kind is enough; copies (pickled or not) compare equal to it.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return self.name.upper() or type(self).__name__

    def __str__(self) -> str:
        return self.name


#: No real layer has more than a few tens of thousands of channels, nor a kernel or stride
#: near this: an integer field above it is a typo (docs/errors.md).
MAX_FIELD_INT = 1_000_000


def _with_minimum(schema: dict[str, Any], f: "Field") -> dict[str, Any]:
    """A number's schema fragment with the field's ``minimum``, when it declares one."""
    return schema if f.minimum is None else {**schema, "minimum": f.minimum}


class IntKind(FieldKind):
    """A non-negative integer or an expression; ``minimum`` is inclusive."""

    name = "int"

    def schema(self, f: "Field") -> dict[str, Any]:
        return _with_minimum({"type": ["integer", "string"]}, f)

    def coerce(self, value: Any, f: "Field", name: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise OpError(f"{name} must be an integer, got {value!r}", field=name,
                          hint="wrap the expression in int() or round()" if isinstance(value, float) else None)
        if f.minimum is not None and value < f.minimum:
            what = "positive" if f.minimum == 1 else f"at least {f.minimum}"
            raise OpError(f"{name} must be {what}, got {value}", field=name)
        if value > MAX_FIELD_INT:
            raise OpError(f"{name}={value:,} is beyond the limit of {MAX_FIELD_INT:,}", field=name)
        return value


class PairKind(IntKind):
    """An int for both dimensions or ``[h, w]``; compiled to an ``(h, w)`` tuple."""

    name = "pair"
    per_item = True

    def schema(self, f: "Field") -> dict[str, Any]:
        item = super().schema(f)
        return {**item, "type": ["integer", "string", "array"], "items": item, "minItems": 2, "maxItems": 2}

    def coerce(self, value: Any, f: "Field", name: str) -> tuple[int, ...]:
        items = list(value) if isinstance(value, (list, tuple)) else [value, value]
        return tuple(super(PairKind, self).coerce(v, f, name) for v in items)


class NumberKind(FieldKind):
    """A real number or an expression (``slope: 0.2``, ``p: 0.1``)."""

    name = "number"

    def schema(self, f: "Field") -> dict[str, Any]:
        return _with_minimum({"type": ["number", "string"]}, f)

    def coerce(self, value: Any, f: "Field", name: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OpError(f"{name} must be a number, got {value!r}", field=name)
        if f.minimum is not None and value < f.minimum:
            raise OpError(f"{name}={value} is below the minimum {f.minimum}", field=name)
        return value


class BoolKind(FieldKind):
    """``true``/``false`` or an expression."""

    name = "bool"

    def schema(self, f: "Field") -> dict[str, Any]:
        return {"type": ["boolean", "string"]}

    def coerce(self, value: Any, f: "Field", name: str) -> bool:
        if not isinstance(value, bool):
            raise OpError(f"{name} must be true or false, got {value!r}", field=name)
        return value


class ChoiceKind(FieldKind):
    """One of the field's ``choices``, written literally (never an expression)."""

    name = "choice"
    expressions = False

    def schema(self, f: "Field") -> dict[str, Any]:
        return {"enum": list(f.choices)}

    def coerce(self, value: Any, f: "Field", name: str) -> str:
        if value not in f.choices:
            raise OpError(f"{name}={value!r} is not one of {', '.join(f.choices)}", field=name,
                          hint=did_you_mean(str(value), f.choices))
        return value

    def problem(self, f: "Field") -> str | None:
        if not f.choices or not all(isinstance(c, str) for c in f.choices):
            return "needs 'choices', a tuple of strings"
        return None


INT, PAIR, NUMBER, BOOL, CHOICE = IntKind(), PairKind(), NumberKind(), BoolKind(), ChoiceKind()

#: The built-in kinds by name: ``Field("int", ...)`` means ``Field(INT, ...)``.
FIELD_KINDS: dict[str, FieldKind] = {k.name: k for k in (INT, PAIR, NUMBER, BOOL, CHOICE)}


@dataclass(frozen=True, slots=True)
class Field:
    """One op attribute.

    ``kind`` is a :class:`FieldKind`: :data:`INT` (non-negative integer or expression),
    :data:`PAIR` (an int or ``[h, w]``), :data:`NUMBER` (float), :data:`BOOL`, :data:`CHOICE`
    (one of ``choices``); its name as a string (``"int"``) works too.
    ``default=REQUIRED`` makes the field mandatory; ``None`` means "derived by
    the op's ``complete`` hook".
    """

    kind: FieldKind
    default: Any = None
    minimum: int | float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self) -> None:
        # An unknown name stays a string, for register() to refuse naming the op and the field.
        if isinstance(self.kind, str) and self.kind in FIELD_KINDS:
            object.__setattr__(self, "kind", FIELD_KINDS[self.kind])


REQUIRED = object()

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


@dataclass(frozen=True, slots=True)
class AtRate:
    """Where one encoder layer sits when the encoder is rewritten to ``output_stride``.

    The rewrite (``passes/dilate.py``; Yu & Koltun 2016, arXiv:1511.07122, and
    DeepLab) stops downsampling at ``output_stride``: a map that had stride
    ``s > output_stride`` in the original network now has stride
    ``output_stride`` and is sampled ``rate = s / output_stride`` times more
    densely, so an op with spatial extent must look ``rate`` times further
    (dilation) to read the same pixels. Strides here are the *original*
    network's, from its resolved types.
    """

    #: The dilation rate of the op's input map: ``max(1, in_stride / output_stride)``.
    rate: int
    #: The op's output would pass the output stride (``out_stride > max(in_stride,
    #: output_stride)``): it must stop downsampling, e.g. stride s -> 1.
    passes_output_stride: bool
    output_stride: int
    #: Stride of the op's finest input (the one a broadcast op's output follows).
    in_stride: Fraction
    out_stride: Fraction
    #: The rate of each input, in input order (1 for a 1x1 map, which has no grid).
    in_rates: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Replace:
    """A ``dilate`` hook's answer that swaps the op, e.g. a 2x2/2 max pool for ``identity``."""

    op: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


#: ``dilate(attrs, at) -> attrs | Replace``; raise :class:`OpError` (with ``field``) to refuse.
DilateHook = Callable[[dict[str, Any], AtRate], "dict[str, Any] | Replace"]


def unaffected(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Declaration for ops whose result does not depend on the input's sampling grid.

    Pointwise ops (activations, batch norm, add, concat) compute each output
    pixel from the same pixel of their inputs, so they are exact at any rate and
    need no change. (Ops that pool to a fixed size declare :func:`size_independent`.)
    """
    return attrs


def size_independent(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Declaration for ops whose output is a fixed grid of bins (``gap``, ``adaptive_avgpool``,
    ``linear``): unchanged at any rate, and their output, with everything computed
    only from it, is off the image grid: a conv on a 6x6 pyramid-pooling map is not dilated."""
    return attrs


def not_dilatable(attrs: dict[str, Any], at: AtRate) -> dict[str, Any]:
    """Declaration for ops that cannot run on a dilated map (transposed conv, upsampling).

    Fine before the output stride; an error once any input is at rate > 1 or
    the op would pass the output stride: an encoder that upsamples a map the
    rewrite has already kept dense would no longer have the sizes it was written for.
    """
    if at.passes_output_stride or max(at.in_rates or (at.rate,)) > 1:
        raise OpError(f"it reads a map past output stride {at.output_stride}, and this op "
                      f"has no dilated form", hint="move it to the meta-architecture, or use a "
                      "larger output stride")
    return attrs


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


# ---------------------------------------------------------------------------
# Shape helpers shared by op families


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
             ceil_mode: bool = False) -> int:
    """PyTorch's output size for conv and pooling along one dimension.

    ``floor((size + 2p - d(k-1) - 1)/s) + 1``; with ``ceil_mode`` the division
    rounds up, but a window that would start inside the right padding is
    dropped (``torch.nn.MaxPool2d`` documentation, and ATen's
    ``pooling_output_shape``).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        # ATen rounds toward -inf, so a window wider than the input still yields one output.
        out = (span + stride - 1) // stride + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return max(out, 0)
    if span < 0:
        return 0
    return span // stride + 1


def same_spatial(op: str, ins: Sequence[TensorType], names: Sequence[str] | None = None) -> None:
    """Raise a spatial OpError when inputs to a fusion op differ in height or width."""
    first = ins[0]
    for i, t in enumerate(ins[1:], start=1):
        if t.spatial != first.spatial:
            # "input #k" is replaced by the layer's name when the error is reported.
            a = names[0] if names else "input #0"
            b = names[i] if names else f"input #{i}"
            dims = ("h" if t.height != first.height else "") + ("w" if t.width != first.width else "")
            if t.stride != first.stride:
                # Maps of different strides never line up, whatever the input size: one needs resampling.
                coarse, fine = (a, b) if first.stride > t.stride else (b, a)
                ratio = max(first.stride, t.stride) / min(first.stride, t.stride)
                raise OpError(
                    f"{op} needs inputs of equal height and width, but {a} (stride "
                    f"{stride_text(first.stride)}) is {first.height}x{first.width} and {b} (stride "
                    f"{stride_text(t.stride)}) is {t.height}x{t.width}",
                    field="inputs", spatial=False,
                    hint=f"upsample {coarse} by {stride_text(ratio)} to the stride of {fine} first: an "
                         f"upsample with scale {stride_text(ratio)} or a deconv with stride "
                         f"{stride_text(ratio)}, then a crop if the sizes still differ")
            raise OpError(
                f"{op} needs inputs of equal height and width, but {a} is "
                f"{first.height}x{first.width} and {b} is {t.height}x{t.width}",
                field="inputs", spatial=True, dims=dims,
                hint="align them with a 'crop' layer, or use an input size that divides evenly")


def complete_window(attrs: dict[str, Any], ins: Sequence[TensorType]) -> dict[str, Any]:
    """Pooling windows (max/avg pool, unpool): stride defaults to the kernel, and
    padding may be at most half the kernel, as ``torch.nn.MaxPool2d`` requires."""
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    for k, p in zip(attrs["kernel"], attrs["padding"]):
        if 2 * p > k:
            raise OpError(f"padding={p} is more than half the kernel size {k}", field="padding",
                          hint=f"use padding <= {k // 2}")
    return attrs

