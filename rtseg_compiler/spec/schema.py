"""JSON Schemas (draft 2020-12) for the three spec kinds, generated from the op registry.

The per-op part of the layer schema comes from each op's ``fields``, so the
schema an editor sees and the attributes the compiler accepts cannot drift.
The generated schemas ship as package data (``rtseg_compiler/schemas``) and
``rtsegc schema KIND`` prints them; a test checks the shipped files are current
(regenerate with ``python -m rtseg_compiler.spec.schema --write``). The shipped
files hold the built-in ops only; ``rtsegc schema`` and validation also cover
user ops (entry points, ``--ops``, ``register()``).

The schemas and validators are cached per registry state
(:func:`~rtseg_compiler.ops.base.registry_generation`), so one process builds each at most once
and an op registered after the first validation gets a fresh one. A document is first checked
by :func:`~rtseg_compiler.spec.precheck.surely_valid`, a plain-Python yes for valid documents;
only a document it does not pass imports jsonschema (0.1-0.2 s, more than the rest of a whole
``rtsegc flops``) and builds its validator (under a millisecond; validating MobileNet v1's
encoder file with it costs about 17 ms of CPU with 30 ops).

Validation turns each jsonschema error into a located diagnostic that names
the field, the offending value and what would be valid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..diagnostics import Diagnostic, did_you_mean
from ..ops import REGISTRY, Field, OpDef, op_origin, registry_generation
from ..ops.base import BUILTIN, REQUIRED
from ..ops.plugins import entry_point_problems, load_entry_points
from ..weights.mapping import SOURCE_PATTERN, weights_schema
from .load import location_of
from .precheck import surely_valid

if TYPE_CHECKING:
    import jsonschema

__all__ = ["KINDS", "explain_schema_error", "schema_for", "validate_document", "validate_layer_fields",
           "SCHEMA_DIR", "LAYER_KEYS", "BLOCK_USE_KEYS"]

KINDS = ("encoder", "meta", "model")
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
REF_PATTERN = r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(\.[A-Za-z0-9_]+)*$"
#: A layer's name: an identifier, or a number ("0"), so that a block's layers can carry
#: nn.Sequential's keys (downsample.0, downsample.1). Files, blocks and parameters keep
#: NAME_PATTERN: expressions refer to them.
LAYER_NAME_PATTERN = r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)$"

#: Keys every op layer may have besides its op's fields.
LAYER_KEYS = ("name", "op", "input", "inputs", "repeat", "when", "doc")
#: Keys of a block use besides the block's own parameters.
BLOCK_USE_KEYS = ("name", "block", "input", "inputs", "repeat", "start", "when", "doc")


def _field_schema(f: Field) -> dict[str, Any]:
    doc = {"description": f.doc} if f.doc else {}
    s = f.kind.schema(f)
    if f.default is not REQUIRED and f.default is not None:
        s["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
    return {**s, **doc}


def _ref_schema() -> dict[str, Any]:
    return {"type": "string", "pattern": REF_PATTERN}


def _layer_schema(ops: Mapping[str, OpDef] | None = None) -> dict[str, Any]:
    """The layer schema for ``ops`` (default: every registered op)."""
    ops = REGISTRY if ops is None else ops
    common = {
        "name": {"type": "string", "pattern": LAYER_NAME_PATTERN},
        "input": _ref_schema(),
        "inputs": {"type": "array", "items": _ref_schema(), "minItems": 1},
        "repeat": {"type": ["integer", "string"], "minimum": 0,
                   "description": "copies in a chain, named name.1 ... name.n; 0: the layer is absent"},
        "when": {"type": ["boolean", "string"],
                 "description": "a condition; when false the layer is absent and its readers read its "
                                "first input"},
        "doc": {"type": "string"},
    }
    per_op = [{"if": {"properties": {"op": {"const": name}}, "required": ["op"]},
               "then": _op_layer_schema(ops[name], common)} for name in sorted(ops)]
    # 'op: act' names a parameter holding an op name; its fields are checked once the
    # parameter is resolved (validate_layer_fields), so here they need only be plain values.
    parametric = {"properties": {**common, "op": {"type": "string", "pattern": NAME_PATTERN}},
                  "additionalProperties": {"type": ["number", "string", "boolean", "array"]}}
    op_layer = {
        "required": ["op"],
        "properties": {"op": {"anyOf": [
            {"enum": sorted(ops)},
            {"type": "string", "pattern": NAME_PATTERN,
             "description": "a parameter (of the block or the file) whose value is an op name"}]}},
        "not": {"required": ["input", "inputs"]},
        "allOf": per_op,
        "if": {"properties": {"op": {"enum": sorted(ops)}}},
        "else": parametric,
    }
    block_use = {
        "required": ["name", "block"],
        "properties": {
            "name": common["name"], "block": {"type": "string", "pattern": NAME_PATTERN},
            "input": common["input"], "inputs": common["inputs"], "repeat": common["repeat"],
            "start": {"type": ["integer", "string"], "minimum": 0,
                      "description": "number of the first copy's name (name.0 with 0); always numbered"},
            "when": {**common["when"], "description": "a condition on parameters (not channels); "
                     "when false the block use is absent and its readers read its first input"},
            "doc": common["doc"],
        },
        "additionalProperties": _PARAM_VALUE,
        "not": {"required": ["input", "inputs"]},
    }
    return {
        "type": "object",
        "if": {"required": ["block"]},
        "then": block_use,
        "else": op_layer,
    }


def _op_layer_schema(op: OpDef, common: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": op.summary,
        "properties": {**common, "op": {"const": op.name},
                       **{k: _field_schema(f) for k, f in op.fields.items()}},
        "required": ["op", *op.required],
        "additionalProperties": False,
    }


#: A parameter's value: a number, an expression, a bool, or a list of numbers (per-stage
#: widths, depths, heads), read in expressions as ``dims[i]`` (spec/expr.py).
_PARAM_VALUE = {"type": ["number", "string", "boolean", "array"],
                "items": {"type": "number"}, "minItems": 1, "maxItems": 1024}


def _params_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "propertyNames": {"pattern": NAME_PATTERN},
        "additionalProperties": _PARAM_VALUE,
    }


def _body_props() -> dict[str, Any]:
    return {
        "blocks": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["layers"],
                "properties": {
                    "doc": {"type": "string"},
                    "params": {
                        "type": "object",
                        "propertyNames": {"pattern": NAME_PATTERN},
                        "additionalProperties": {**_PARAM_VALUE,
                                                 "type": ["number", "string", "boolean", "null", "array"]},
                    },
                    "inputs": {"type": "array", "minItems": 1, "uniqueItems": True,
                               "items": {"type": "string", "pattern": NAME_PATTERN},
                               "description": "named inputs, bound in order by a use's 'inputs'"},
                    "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}, "minItems": 1},
                    "output": _ref_schema(),
                },
                "additionalProperties": False,
            },
        },
        "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}, "minItems": 1},
        "output": _ref_schema(),
        "outputs": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": NAME_PATTERN},
                    "additionalProperties": _ref_schema(),
                    "description": "named outputs in order; the first is the main output"},
    }


def _size_schema() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}


def schema_for(kind: str, *, builtin_only: bool = False) -> dict[str, Any]:
    """The JSON Schema of one spec kind ('encoder', 'meta' or 'model').

    It covers every op registered now; ``builtin_only`` leaves out user ops, as the
    shipped schema files do (they must not depend on what is installed where they are written).
    """
    ops = {name: op for name, op in REGISTRY.items() if not builtin_only or op_origin(name) == BUILTIN}
    head = {"$schema": DIALECT, "$id": f"https://rtseg-compiler.invalid/schemas/{kind}.json",
            "title": f"rtseg_compiler {kind} spec"}
    base = {"kind": {"const": kind}, "name": {"type": "string", "pattern": NAME_PATTERN},
            "doc": {"type": "string"}}
    if kind == "model":
        return {
            **head, "type": "object",
            "required": ["kind", "encoder", "meta", "num_classes"],
            "properties": {
                **base,
                "encoder": {"type": "string", "minLength": 1, "description": "path, relative to this file"},
                "meta": {"type": "string", "minLength": 1, "description": "path, relative to this file"},
                "num_classes": {"type": "integer", "minimum": 1},
                "input": {**_size_schema(), "description": "default input [height, width]"},
                "encoder_params": _params_schema(),
                "meta_params": _params_schema(),
                "weights": weights_schema("model"),  # whole-model checkpoint layouts: docs/weights.md
            },
            "additionalProperties": False,
        }
    props = {**base, "params": _params_schema(), **_body_props()}
    required = ["kind", "name", "layers"]
    if kind == "encoder":
        props["taps"] = {"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                         "additionalProperties": _ref_schema()}
        props["input"] = {**_size_schema(), "description": "input [height, width] for checking alone"}
        props["input_channels"] = {"type": "integer", "minimum": 1}
        props["weights"] = weights_schema("encoder")  # checkpoint layouts: docs/weights.md
    elif kind == "meta":
        props["requires"] = {"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN},
                             "uniqueItems": True}
        props["output_stride"] = {"type": "integer", "enum": [8, 16, 32],
                                  "description": "the encoder output stride this meta needs"}
        props["weights"] = weights_schema("meta")  # checkpoint layouts of the head: docs/weights.md
    else:
        raise ValueError(f"unknown spec kind {kind!r}")
    return {**head, "type": "object", "required": required, "properties": props,
            "additionalProperties": False, "$defs": {"layer": _layer_schema(ops)}}


#: (kind, registry generation) -> schema; entries of an older registry state are dropped.
_SCHEMAS: dict[tuple[str, int], dict[str, Any]] = {}
#: (kind, registry generation) -> validator, built from the cached schema when first needed.
_VALIDATORS: dict[tuple[str, int], jsonschema.Draft202012Validator] = {}


def _schema(kind: str) -> dict[str, Any]:
    key = (kind, registry_generation())
    schema = _SCHEMAS.get(key)
    if schema is None:
        for cache in (_SCHEMAS, _VALIDATORS):
            for stale in [k for k in cache if k[1] != key[1]]:
                del cache[stale]
        schema = _SCHEMAS[key] = schema_for(kind)
    return schema


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    """jsonschema's validator for ``kind``: only for a document the precheck did not pass,
    so that valid files never import jsonschema (spec/precheck.py says why)."""
    schema = _schema(kind)
    key = (kind, registry_generation())
    validator = _VALIDATORS.get(key)
    if validator is None:
        import jsonschema

        # No check_schema here: on the generated encoder or meta schema it costs ~270 ms of CPU
        # per kind with 30 ops, more than half of a cold ``rtsegc flops``. The generator's
        # output is checked against the metaschema by tests/unit/test_schema.py, and register()
        # refuses the malformed fields that could make a user op's part invalid.
        validator = _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    return validator


def unknown_op_notes() -> tuple[str, ...]:
    """Notes for an "unknown op" error: broken installed op packages, and how user ops load."""
    notes = tuple(f"an installed op package failed to load, so its ops are missing: {d.message}"
                  for d in entry_point_problems())
    return notes + ("ops from other packages load from their 'rtseg_compiler.ops' entry point once "
                    "installed, or with 'rtsegc --ops MODULE'",)


def _path_text(path: Any) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(top level)"


def validate_document(doc: Any, file: str, expected_kind: str | None = None) -> list[Diagnostic]:
    """Schema diagnostics for one loaded spec document, each located in ``file``."""
    root_loc = location_of(doc, ())
    if not isinstance(doc, dict):
        return [Diagnostic(f"a spec file must be a mapping, not {type(doc).__name__}", root_loc,
                           hint="start with 'kind: encoder', 'kind: meta' or 'kind: model'")]
    kind = doc.get("kind")
    if kind not in KINDS:
        loc = location_of(doc, ("kind",)) if "kind" in doc else root_loc
        hint = did_you_mean(str(kind), KINDS) or f"one of {', '.join(KINDS)}"
        what = "missing 'kind'" if "kind" not in doc else f"unknown kind {kind!r}"
        return [Diagnostic(what, loc, hint=hint)]
    if expected_kind and kind != expected_kind:
        article = "an" if expected_kind[0] in "aeiou" else "a"
        return [Diagnostic(f"expected {article} {expected_kind} spec, found kind '{kind}'",
                           location_of(doc, ("kind",)))]
    load_entry_points()  # once per process: installed user ops exist before the first spec is read
    out = []
    errors = [] if surely_valid(_schema(kind), doc) else sorted(
        _validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        out.extend(explain_schema_error(error, doc))
    out.extend(_check_op_names(doc))
    return out


def _check_op_names(doc: Any) -> Iterator[Diagnostic]:
    """'unknown op' for an ``op:`` that is neither an op nor a parameter in scope.

    The schema accepts any name there, since ``op: act`` may name a parameter holding an op;
    which names are parameters depends on where the layer is, so it is checked here.
    """
    file_params = set(doc.get("params") or {}) if isinstance(doc.get("params"), dict) else set()
    lists: list[tuple[tuple, set[str]]] = [(("layers",), file_params)]
    blocks = doc.get("blocks")
    if isinstance(blocks, dict):
        for block_name, block in blocks.items():
            params = block.get("params") if isinstance(block, dict) else None
            lists.append((("blocks", block_name, "layers"),
                          file_params | (set(params) if isinstance(params, dict) else set())))
    for path, params in lists:
        node = doc
        for step in path:
            node = node.get(step) if isinstance(node, dict) else None
        if not isinstance(node, list):
            continue
        for idx, item in enumerate(node):
            op = item.get("op") if isinstance(item, dict) else None
            if not isinstance(op, str) or op in REGISTRY or op in params:
                continue
            hint = (did_you_mean(op, list(REGISTRY) + sorted(params))
                    or f"known ops: {', '.join(sorted(REGISTRY))}"
                    + (f"; parameters: {', '.join(sorted(params))}" if params else ""))
            yield Diagnostic(f"unknown op {_clip(op)}", location_of(doc, (*path, idx, "op")), hint=hint,
                             notes=unknown_op_notes())


_LAYER_SCHEMAS: dict[tuple[str, int], dict[str, Any]] = {}
_LAYER_VALIDATORS: dict[tuple[str, int], jsonschema.Draft202012Validator] = {}


def validate_layer_fields(item: Any, op_name: str) -> list[Diagnostic]:
    """Schema diagnostics for one layer run as ``op_name`` (its ``op:`` named a parameter)."""
    op = REGISTRY[op_name]
    key = (op_name, id(op))
    if key not in _LAYER_SCHEMAS:
        common = _layer_schema()["else"]["else"]["properties"]
        _LAYER_SCHEMAS[key] = _op_layer_schema(op, common)
    resolved = {**item, "op": op_name}
    if surely_valid(_LAYER_SCHEMAS[key], resolved):
        return []
    if key not in _LAYER_VALIDATORS:
        import jsonschema

        _LAYER_VALIDATORS[key] = jsonschema.Draft202012Validator(_LAYER_SCHEMAS[key])
    out = []
    for error in sorted(_LAYER_VALIDATORS[key].iter_errors(resolved),
                        key=lambda e: list(map(str, e.absolute_path))):
        out.extend(explain_schema_error(error, item))
    return out


def check_against_schema(doc: Any, schema: Mapping[str, Any]) -> list[Diagnostic]:
    """Every way ``doc`` breaks ``schema``, located and explained, in document order: the check that the
    spec kinds other packages own (the runtime's dataset and study files) run on their own schemas."""
    import jsonschema  # only here and in _validator: the audit commands never import it

    validator = jsonschema.Draft202012Validator(schema)
    diags: list[Diagnostic] = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        diags.extend(explain_schema_error(error, doc))
    return diags


def explain_schema_error(error: jsonschema.ValidationError, doc: Any) -> Iterator[Diagnostic]:
    """One jsonschema error as located diagnostics worded for a spec's author.

    Public because every document kind checked against a JSON Schema words its errors this way,
    the runtime's dataset files included.
    """
    path = tuple(error.absolute_path)
    where = _path_text(path)
    loc = location_of(doc, path)
    v, value = error.validator, error.instance
    if v == "additionalProperties" and isinstance(value, dict):
        allowed = set(error.schema.get("properties", {}))
        owner = f"op '{value.get('op')}'" if "op" in value else where
        for key in value:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"allowed: {', '.join(sorted(allowed))}"
                key_loc = location_of(doc, (*path, key), key=True)
                yield Diagnostic(f"unknown field '{key}' in {owner}", key_loc, hint=hint)
        return
    if v == "required":
        missing = [k for k in error.validator_value if k not in value]
        owner = f"op '{value.get('op')}'" if isinstance(value, dict) and "op" in value else where
        for key in missing:
            yield Diagnostic(f"{owner} is missing required field '{key}'", loc)
        return
    if v == "enum":
        hint = did_you_mean(str(value), map(str, error.validator_value))
        choices = ", ".join(map(str, error.validator_value))
        if path and path[-1] == "op":
            yield Diagnostic(f"unknown op {_clip(value)}", loc, hint=hint or f"known ops: {choices}",
                             notes=unknown_op_notes())
        else:
            yield Diagnostic(f"{where}: {_clip(value)} is not one of {choices}", loc, hint=hint)
        return
    if v == "const":
        yield Diagnostic(f"{where}: expected {error.validator_value!r}, got {_clip(value)}", loc)
        return
    if v == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        wanted = wanted.replace("string", "expression string")
        yield Diagnostic(f"{where}: expected {wanted}, got {_describe(value)}", loc)
        return
    if v == "minimum":
        yield Diagnostic(f"{where}: {_clip(value)} is below the minimum {error.validator_value}", loc)
        return
    if v == "pattern" and error.validator_value == SOURCE_PATTERN:
        yield Diagnostic(f"{where}: {_clip(value)} is not a valid weight source name", loc,
                         hint="a source is a letter, then letters, digits and '_' (at most 32): "
                              "torchvision, timm, transformers, or a name of your own such as mmseg or mylab")
        return
    if v == "pattern":
        yield Diagnostic(f"{where}: {_clip(value)} is not a valid name", loc,
                         hint="names are letters, digits and '_', not starting with a digit "
                              "(a layer may also be named by a number in quotes, '\"0\"'); "
                              "references may be dotted ('encoder.stride16')")
        return
    if v in ("minItems", "maxItems"):
        pair = error.validator_value == 2 and error.schema.get("maxItems") == 2
        hint = "sizes and pairs are written [height, width]" if pair else (
            "a list of layers needs at least one layer" if path and path[-1] == "layers" else None)
        yield Diagnostic(f"{where}: {_count_problem(v, error.validator_value, value)}", loc, hint=hint)
        return
    if v == "not" and isinstance(value, dict) and "input" in value and "inputs" in value:
        yield Diagnostic("a layer takes 'input' or 'inputs', not both", loc)
        return
    if v == "propertyNames":
        yield Diagnostic(f"{where}: {error.message}", loc)
        return
    yield Diagnostic(f"{where}: {error.message}", loc)


def _count_problem(validator: str, bound: int, value: Any) -> str:
    """Our own words for a list of the wrong length: jsonschema's changed across releases
    ("[] is too short" in 4.18, "[] should be non-empty" in 4.2x), and messages are part of
    what users and the error corpus read."""
    n = len(value) if isinstance(value, (list, tuple)) else 0
    if validator == "minItems":
        if n == 0:
            return f"the list is empty; at least {bound} item{'s' if bound != 1 else ''} needed"
        return f"{_clip(value)} has {n} item{'s' if n != 1 else ''}; at least {bound} needed"
    return f"{_clip(value)} has {n} items; at most {bound} allowed"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if value is None:
        return "null (empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_clip(value)}"


def _clip(value: Any, limit: int = 60) -> str:
    """repr of an offending value, shortened: a 400 KB string must not become 400 KB of stderr."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text):,} chars)"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = directory / f"{kind}.schema.json"
        path.write_text(json.dumps(schema_for(kind, builtin_only=True), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    if "--write" in sys.argv:
        for p in write_schemas():
            print(p)
    else:
        print(json.dumps({k: schema_for(k) for k in KINDS}, indent=2))
