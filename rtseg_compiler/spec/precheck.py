"""A quick yes for spec documents that are valid, so that most runs never import jsonschema.

Why: importing ``jsonschema`` (with ``referencing``, ``attrs`` and its format checkers) costs
0.10-0.19 s on the 2-core CI machine, more than the rest of a whole ``rtsegc flops`` process
together (0.08 s interpreter, 0.03 s PyYAML, 0.07 s the compiler's own modules, 0.02 s the
analysis). Most documents ``rtsegc`` reads are valid, and for those only the answer "valid"
is needed, not jsonschema's error objects.

:func:`surely_valid` answers that for the draft 2020-12 keywords ``schema.py`` generates,
following jsonschema 4's own keyword functions (``jsonschema/_keywords.py``, ``_types.py``,
``_utils.equal``) so that it accepts exactly what jsonschema accepts. Whenever it is not
certain (a keyword it does not know, a value that is not plain YAML data, a ``$ref`` outside
the document) it answers False, and the caller runs jsonschema, which then decides and
explains. So a False is never an error by itself, and every message still comes from
jsonschema; ``tests/unit/test_schema_precheck.py`` checks the agreement on the zoo, the error
cases and random mutations of them.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["surely_valid"]


class _Unsure(Exception):
    """Raised where only jsonschema can decide; :func:`surely_valid` then answers False."""


#: Keywords that never make a document invalid (annotations), as jsonschema treats them.
_ANNOTATIONS = frozenset({"$schema", "$comment", "$defs", "title", "description", "default",
                          "examples", "deprecated", "readOnly", "writeOnly"})

_SCALARS = (int, float, bool, type(None))


def surely_valid(schema: Mapping[str, Any], instance: Any) -> bool:
    """True only if ``instance`` is valid under ``schema`` (draft 2020-12, no format checks).

    False means "invalid, or not certain": ask jsonschema.
    """
    try:
        return _valid(schema, instance, schema)
    except (_Unsure, RecursionError):
        return False


def _is_type(instance: Any, name: str) -> bool:
    """jsonschema's draft 2020-12 type checker, for plain data (anything else is unsure)."""
    if not isinstance(instance, (dict, list, str)) and type(instance) not in _SCALARS:
        raise _Unsure(f"a {type(instance).__name__} value")
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if name == "boolean":
        return isinstance(instance, bool)
    if name == "null":
        return instance is None
    if name == "integer":  # a float with an integral value counts, a bool does not
        return (isinstance(instance, int) and not isinstance(instance, bool)) or (
            isinstance(instance, float) and instance.is_integer())
    if name == "number":
        return isinstance(instance, (int, float)) and not isinstance(instance, bool)
    raise _Unsure(f"type {name!r}")


def _equal(one: Any, two: Any) -> bool:
    """jsonschema's ``_utils.equal`` for scalars: True and 1 differ, 1 and 1.0 do not."""
    for value in (one, two):
        if not isinstance(value, str) and type(value) not in _SCALARS:
            raise _Unsure("equality of a container")
    if isinstance(one, str) or isinstance(two, str):
        return one == two
    if isinstance(one, bool) or isinstance(two, bool):
        return one is two
    return one == two


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    if not ref.startswith("#/"):
        raise _Unsure(f"$ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise _Unsure(f"$ref {ref!r}")
        node = node[part]
    return node


def _valid(schema: Any, instance: Any, root: Mapping[str, Any]) -> bool:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, dict):
        raise _Unsure("a schema that is not an object")
    for key, value in schema.items():
        if key in _ANNOTATIONS or key in ("then", "else"):  # then/else: under "if"
            continue
        check = _KEYWORDS.get(key)
        if check is None:
            if key == "$id" and schema is root:
                continue
            raise _Unsure(f"keyword {key!r}")
        if not check(value, instance, schema, root):
            return False
    return True


def _type(types: Any, instance: Any, schema: Any, root: Any) -> bool:
    return any(_is_type(instance, t) for t in (types if isinstance(types, list) else [types]))


def _properties(props: Any, instance: Any, schema: Any, root: Any) -> bool:
    if not _is_type(instance, "object"):
        return True
    return all(_valid(sub, instance[name], root) for name, sub in props.items() if name in instance)


def _additional(extra: Any, instance: Any, schema: Any, root: Any) -> bool:
    if not _is_type(instance, "object"):
        return True
    if "patternProperties" in schema:
        raise _Unsure("patternProperties")
    declared = schema.get("properties", {})
    extras = [key for key in instance if key not in declared]
    if isinstance(extra, dict):
        return all(_valid(extra, instance[key], root) for key in extras)
    return bool(extra) or not extras


def _property_names(names: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "object") or all(_valid(names, key, root) for key in instance)


def _required(required: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "object") or all(name in instance for name in required)


def _min_properties(n: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "object") or len(instance) >= n


def _items(items: Any, instance: Any, schema: Any, root: Any) -> bool:
    if not _is_type(instance, "array"):
        return True
    if "prefixItems" in schema:
        raise _Unsure("prefixItems")
    return all(_valid(items, item, root) for item in instance)


def _min_items(n: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "array") or len(instance) >= n


def _max_items(n: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "array") or len(instance) <= n


def _unique_items(unique: Any, instance: Any, schema: Any, root: Any) -> bool:
    if not unique or not _is_type(instance, "array"):
        return True
    if not all(isinstance(item, str) for item in instance):
        raise _Unsure("uniqueItems over non-strings")
    return len(set(instance)) == len(instance)


def _pattern(pattern: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "string") or re.search(pattern, instance) is not None


def _min_length(n: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "string") or len(instance) >= n


def _max_length(n: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "string") or len(instance) <= n


def _minimum(bound: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "number") or not instance < bound


def _maximum(bound: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _is_type(instance, "number") or not instance > bound


def _const(value: Any, instance: Any, schema: Any, root: Any) -> bool:
    return _equal(instance, value)


def _enum(values: Any, instance: Any, schema: Any, root: Any) -> bool:
    return any(_equal(each, instance) for each in values)


def _ref(ref: Any, instance: Any, schema: Any, root: Any) -> bool:
    return _valid(_resolve(ref, root), instance, root)


def _if(condition: Any, instance: Any, schema: Any, root: Any) -> bool:
    if _valid(condition, instance, root):
        return "then" not in schema or _valid(schema["then"], instance, root)
    return "else" not in schema or _valid(schema["else"], instance, root)


def _all_of(subs: Any, instance: Any, schema: Any, root: Any) -> bool:
    return all(_valid(sub, instance, root) for sub in subs)


def _any_of(subs: Any, instance: Any, schema: Any, root: Any) -> bool:
    return any(_valid(sub, instance, root) for sub in subs)


def _one_of(subs: Any, instance: Any, schema: Any, root: Any) -> bool:
    return sum(_valid(sub, instance, root) for sub in subs) == 1


def _not(sub: Any, instance: Any, schema: Any, root: Any) -> bool:
    return not _valid(sub, instance, root)


_KEYWORDS = {
    "type": _type, "properties": _properties, "additionalProperties": _additional,
    "propertyNames": _property_names, "required": _required, "minProperties": _min_properties,
    "items": _items, "minItems": _min_items, "maxItems": _max_items, "uniqueItems": _unique_items,
    "pattern": _pattern, "minLength": _min_length, "maxLength": _max_length,
    "minimum": _minimum, "maximum": _maximum, "const": _const, "enum": _enum, "$ref": _ref,
    "if": _if, "allOf": _all_of, "anyOf": _any_of, "oneOf": _one_of, "not": _not,
}
