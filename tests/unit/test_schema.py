"""The JSON Schemas: shipped copies are current, valid Draft 2020-12, and accept every shipped spec.

Editors read ``rtseg_compiler/schemas/*.json`` (and ``rtsegc schema``); the
compiler validates against ``schema_for(kind)``, generated from the op
registry. If an op gains a field and nobody regenerates the files, editors
flag valid specs: the first test catches that. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import SPECS
from rtseg_compiler.spec.load import load_spec_file
from rtseg_compiler.spec.schema import KINDS, SCHEMA_DIR, schema_for, validate_document

REGENERATE = "regenerate with: python -m rtseg_compiler.spec.schema --write"

# specs/datasets/ and specs/studies/ hold the runtime's dataset and study files (kind: dataset, kind: study),
# checked by runtime/datasets.py and runtime/study/spec.py.
SPEC_FILES = sorted(p for p in SPECS.rglob("*.yaml") if p.parent.name not in ("datasets", "studies"))


def _op_schemas(schema: dict) -> dict[str, dict]:
    """op name -> its 'then' branch in the layer schema (empty for the model kind)."""
    layer = schema.get("$defs", {}).get("layer", {})
    return {branch["if"]["properties"]["op"]["const"]: branch["then"]
            for branch in layer.get("else", {}).get("allOf", [])}


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_schema_is_current(kind):
    shipped = json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())
    current = schema_for(kind, builtin_only=True)  # user ops installed here are not shipped
    if shipped != current:
        old, new = _op_schemas(shipped), _op_schemas(current)
        ops = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        pytest.fail(f"{kind}.schema.json is stale (ops that differ: {', '.join(ops) or 'none'}); "
                    f"{REGENERATE}")


def test_no_stray_schema_files():
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(f"{k}.schema.json" for k in KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind):
    schema = schema_for(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator


def test_specs_exist():
    kinds = {load_spec_file(p)["kind"] for p in SPEC_FILES}
    assert kinds == set(KINDS), "specs/ should hold at least one encoder, meta and model"


@pytest.mark.parametrize("path", SPEC_FILES, ids=[str(p.relative_to(SPECS)) for p in SPEC_FILES])
def test_spec_validates_against_its_schema(path: Path):
    doc = load_spec_file(path)
    kind = doc["kind"]
    # With jsonschema directly, as an editor would, on plain JSON data ...
    plain = json.loads(json.dumps(doc))
    errors = list(jsonschema.Draft202012Validator(schema_for(kind)).iter_errors(plain))
    assert not errors, "\n".join(e.message for e in errors)
    # ... and through the compiler's located validation.
    assert validate_document(doc, str(path)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_schema_rejects_an_unknown_top_level_key(kind):
    """The schemas are closed (additionalProperties: false), so a typo cannot pass silently."""
    doc = {"kind": kind, "name": "x", "layers": [{"op": "relu"}], "encoder": "e.yaml", "meta": "m.yaml",
           "num_classes": 2}
    valid = {k: v for k, v in doc.items()
             if k in schema_for(kind)["properties"]}
    jsonschema.validate(valid, schema_for(kind))
    with pytest.raises(jsonschema.ValidationError, match="lyaers"):
        jsonschema.validate({**valid, "lyaers": []}, schema_for(kind))


def test_layer_schema_follows_op_fields():
    """Each op's fields become that op's allowed keys: conv has 'groups', relu has not."""
    validator = jsonschema.Draft202012Validator(schema_for("encoder"))
    base = {"kind": "encoder", "name": "e"}
    assert validator.is_valid({**base, "layers": [{"op": "conv", "out": 8, "kernel": 3, "groups": 2}]})
    assert not validator.is_valid({**base, "layers": [{"op": "relu", "groups": 2}]})
    assert not validator.is_valid({**base, "layers": [{"op": "conv", "kernel": 3}]})  # 'out' required
