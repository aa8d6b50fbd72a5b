"""spec/precheck.py says "valid" only where jsonschema does, and does say it for the zoo.

The precheck lets valid documents skip importing jsonschema (0.1-0.2 s of every ``rtsegc``
run). Its one duty is never to pass a document jsonschema refuses; answering False when
unsure is always allowed (jsonschema then decides). So each test compares it with
jsonschema's own answer on the same schema, never with a hard-coded verdict. No torch.
"""

from __future__ import annotations

import copy
import datetime
import random
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO_ROOT, SPECS
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.spec import schema as schema_module
from rtseg_compiler.spec.load import load_spec_file
from rtseg_compiler.spec.precheck import surely_valid
from rtseg_compiler.spec.schema import KINDS, schema_for, validate_document

ZOO = sorted(p for p in SPECS.rglob("*.yaml") if p.parent.name not in ("datasets", "studies"))
ALL_YAML = sorted({*ZOO, *(REPO_ROOT / "tests").rglob("*.yaml"), *(REPO_ROOT / "examples").rglob("*.yaml")})


def _spec_documents(paths):
    for path in paths:
        try:
            doc = load_spec_file(path)
        except SpecError:
            continue
        if isinstance(doc, dict) and doc.get("kind") in KINDS:
            yield path, doc


@pytest.mark.parametrize("path", ZOO, ids=lambda p: str(p.relative_to(SPECS)))
def test_every_zoo_spec_takes_the_quick_path(path):
    """A zoo spec that jsonschema accepts must pass the precheck too, or rtsegc imports jsonschema."""
    doc = load_spec_file(path)
    schema = schema_for(doc["kind"])
    assert jsonschema.Draft202012Validator(schema).is_valid(doc)
    assert surely_valid(schema, doc)


_ODD_VALUES = [0, -1, 1, 2.5, 1.0, float("nan"), True, False, None, "", "x", "a.b", "1bad", "relu",
               [], [1], [1, 2], [1, 2, 3], ["a", "a"], {}, {"a": 1}, {"Bad-Key": 1}]
_ODD_KEYS = ["extra", "op", "kernel", "stride", "name", "Bad-Key", "repeat", "when", "inputs", "params"]


def _mutate(doc, rng: random.Random):
    """One to three random edits somewhere in ``doc``: delete, replace or add a value."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        node = doc
        for _ in range(rng.randint(0, 6)):
            children = list(node.values()) if isinstance(node, dict) else node
            deeper = [c for c in children if isinstance(c, (dict, list)) and c]
            if deeper:
                node = rng.choice(deeper)
        if not node:
            continue
        value = copy.deepcopy(rng.choice(_ODD_VALUES))
        if isinstance(node, dict):
            key = rng.choice(list(node))
            roll = rng.random()
            if roll < 0.3:
                del node[key]
            elif roll < 0.8:
                node[key] = value
            else:
                node[rng.choice(_ODD_KEYS)] = value
        else:
            index = rng.randrange(len(node))
            if rng.random() < 0.3:
                del node[index]
            else:
                node[index] = value
    return doc


def test_never_passes_what_jsonschema_refuses():
    """Every spec, error case and example in the repository, and 20 random mutations of each."""
    rng = random.Random(20261129)
    checked = passed = refused = 0
    for path, doc in _spec_documents(ALL_YAML):
        schema = schema_for(doc["kind"])
        validator = jsonschema.Draft202012Validator(schema)
        for candidate in [doc] + [_mutate(doc, rng) for _ in range(20)]:
            quick, full = surely_valid(schema, candidate), validator.is_valid(candidate)
            assert not (quick and not full), f"{path}: the precheck passed a document jsonschema refuses"
            checked += 1
            passed += quick
            refused += not full
    # The comparison means something only if both verdicts occurred often.
    assert passed > checked // 20 and refused > checked // 4


@pytest.mark.parametrize("schema, instance", [
    ({"const": 1}, True),                         # jsonschema: True is not 1
    ({"enum": [0, 1]}, False),
    ({"const": True}, 1),
    ({"type": "integer"}, 1.0),                   # an integral float is an integer
    ({"type": "integer"}, True),
    ({"type": "number"}, False),
    ({"type": "integer", "minimum": 1}, float("nan")),
    ({"minimum": 3}, "2"),                        # minimum ignores strings
    ({"type": "array", "uniqueItems": True}, ["a", "a"]),
    ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, {"ok": 1, "Not": 2}),
    ({"oneOf": [{"type": "string"}, {"pattern": "^a"}]}, "abc"),  # both match: not one
    ({"not": {"type": "string"}}, "x"),
    ({"if": {"const": "a"}, "then": {"minLength": 2}}, "a"),
    ({"if": {"const": "a"}, "else": {"minLength": 2}}, "b"),
])
def test_keywords_agree_with_jsonschema(schema, instance):
    full = jsonschema.Draft202012Validator(schema).is_valid(instance)
    assert surely_valid(schema, instance) == full


@pytest.mark.parametrize("schema, instance", [
    ({"format": "email"}, "x"),                        # a keyword it does not implement
    ({"patternProperties": {"^a": {}}, "additionalProperties": False}, {"a": 1}),
    ({"type": "string"}, datetime.date(2026, 1, 1)),   # not plain YAML data (a !!timestamp)
    ({"$ref": "https://example.invalid/s.json"}, 1),
    ({"enum": [[1, 2]]}, [1, 2]),
])
def test_unsure_means_false_and_jsonschema_decides(schema, instance):
    """Where it is not certain, the precheck answers False, valid instance or not."""
    jsonschema.Draft202012Validator.check_schema(schema)
    assert surely_valid(schema, instance) is False


def test_jsonschema_validators_are_built_once_per_process(monkeypatch, tmp_path):
    """Invalid documents need jsonschema's validator for their messages: one per kind, reused."""
    built = []
    real = jsonschema.Draft202012Validator

    def counting(schema, *args, **kwargs):
        built.append(schema.get("title"))
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema, "Draft202012Validator", counting)
    monkeypatch.setattr(schema_module, "_VALIDATORS", {})
    messages = []
    for k in range(3):
        path = tmp_path / f"bad{k}.yaml"
        layer = f"{{name: c, op: conv, out: 8, kernel: {k - 5}}}"  # a kernel below the minimum
        path.write_text(f"kind: encoder\nname: e{k}\nlayers:\n  - {layer}\n")
        messages.append(validate_document(load_spec_file(path), str(path)))
    assert all(messages), "each file should have a schema error"
    assert built == ["rtseg_compiler encoder spec"]


def test_valid_documents_build_no_jsonschema_validator(monkeypatch):
    built = []
    monkeypatch.setattr(jsonschema, "Draft202012Validator", lambda *a, **k: built.append(a))
    monkeypatch.setattr(schema_module, "_VALIDATORS", {})
    for path, doc in _spec_documents(ZOO):
        assert validate_document(doc, str(path)) == []
    assert built == []


def test_error_messages_come_from_jsonschema_unchanged(tmp_path):
    """A document the precheck refuses gets exactly jsonschema's explained errors."""
    path = tmp_path / "bad.yaml"
    path.write_text("kind: encoder\nname: e\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 0, strid: 2}\n")
    doc = load_spec_file(path)
    assert not surely_valid(schema_for("encoder"), doc)
    errors = jsonschema.Draft202012Validator(schema_for("encoder")).iter_errors(doc)
    expected = []
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        expected.extend(schema_module.explain_schema_error(error, doc))
    assert expected and validate_document(doc, str(path)) == expected


def test_a_missing_precheck_would_be_noticed(monkeypatch):
    """The quick path is taken only through surely_valid: without it every file builds a validator."""
    built = []
    real = jsonschema.Draft202012Validator
    monkeypatch.setattr(jsonschema, "Draft202012Validator",
                        lambda s, *a, **k: built.append(1) or real(s, *a, **k))
    monkeypatch.setattr(schema_module, "_VALIDATORS", {})
    monkeypatch.setattr(schema_module, "surely_valid", lambda schema, doc: False)
    path = Path(ZOO[0])
    assert validate_document(load_spec_file(path), str(path)) == []
    assert built
