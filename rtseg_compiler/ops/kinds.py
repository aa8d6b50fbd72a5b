"""Op attributes: the field kinds (int, pair, number, bool, choice), ``Field``, and ``OpError``.

A kind owns everything that differs between attribute types: its JSON-schema fragment, the check
of a ``Field`` declaration and the conversion of an evaluated value, so no other file asks which
kind a field is. ``OpError`` lives here because it is the lowest thing every op hook raises.
Everything is importable from :mod:`rtseg_compiler.ops.base` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..diagnostics import did_you_mean

__all__ = ["BOOL", "CHOICE", "FIELD_KINDS", "INT", "MAX_FIELD_INT", "NUMBER", "PAIR", "REQUIRED", "BoolKind",
           "ChoiceKind", "Field", "FieldKind", "IntKind", "NumberKind", "OpError", "PairKind"]


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
