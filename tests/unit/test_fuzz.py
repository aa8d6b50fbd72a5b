"""Fuzzing: mutated real specs either compile or fail with SpecError, never anything else.

Hypothesis takes a model from ``specs/`` (with its encoder and meta), mutates
one of the three files and runs the torch-free compiler on the result:
``analyze`` on the model and ``validate_file`` on the mutated file. Mutations
work on the parsed YAML (drop, rename or duplicate keys and list items; change
numbers, types, op names and references) and on the text (truncate, duplicate
or delete lines, insert stray bytes, including control characters and invalid
UTF-8). Any exception other than :class:`~rtseg_compiler.diagnostics.SpecError`
is a compiler bug, and so is a run that takes more than :data:`HANG_SECONDS`.

CI runs :data:`DEFAULT_EXAMPLES` examples per test, 300 in all and well
under a minute on two cores. For a long local run set ``RTSEG_FUZZ_EXAMPLES``::

    RTSEG_FUZZ_EXAMPLES=20000 pytest tests/unit/test_fuzz.py -q -p no:cacheprovider

Hypothesis replays any failure it finds first on the next run (its database
lives in ``.hypothesis/``), and prints the mutated files' source with
``--hypothesis-verbosity=verbose``.
"""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import no_hang
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ops import REGISTRY
from rtseg_compiler.passes import shapes
from rtseg_compiler.pipeline import analyze, validate_file

SPECS = Path(__file__).resolve().parent.parent.parent / "specs"
DEFAULT_EXAMPLES = 100
EXAMPLES = int(os.environ.get("RTSEG_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
#: A real model analyses in well under a second; 30 s means a loop that does not end.
HANG_SECONDS = 30

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="RTSEG_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _model_files() -> list[Path]:
    found = []
    for path in sorted(SPECS.rglob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError:  # pragma: no cover - the shipped specs are valid YAML
            continue
        if isinstance(doc, dict) and doc.get("kind") == "model":
            found.append(path)
    return found


MODELS = _model_files()
#: The three specs the issue names come first, so a short run always covers them.
PREFERRED = [SPECS / "models/skipnet_mobilenet_v1.yaml"]


@pytest.fixture(autouse=True)
def _cheap_suggestions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Size errors search nearby input sizes (up to a second); a smaller budget keeps CI fast."""
    monkeypatch.setattr(shapes, "SUGGEST_BUDGET", 3_000)


# --------------------------------------------------------------------------- strategies

NAMES = st.sampled_from(["conv1", "ds3", "stride8", "stride16", "stride32", "encoder.stride8",
                         "encoder.stride16", "encoder.output", "input", "logits", "up32", "fuse16",
                         "width", "out", "kernel", "stride", "groups", "num_classes", "blocks",
                         "layers", "taps", "params", "requires", "name", "op", "block", "repeat"])
IDENT = st.text(string.ascii_lowercase + "_0123456789.", min_size=1, max_size=12)
EXPRESSIONS = st.sampled_from([
    "in_channels", "in_channels // 0", "2 ** 100", "make_divisible(32 * width)", "width * 0.3",
    "num_classes", "encoder.stride16.channels", "i", "2 if i == 0 else 1", "out * 2", "-1",
    "max(1)", "round(5, -10**9)", "(1).__class__", "abs(", "10**12 + 1", "block_in_channels",
])
NUMBERS = st.one_of(st.integers(-3, 40), st.integers(-(2**62), 2**62),
                    st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.sampled_from([0, 1, 2, 3, 8, 16, 32, 1_000_000, 10**13]))
LEAVES = st.one_of(NUMBERS, st.booleans(), st.none(), NAMES, EXPRESSIONS, IDENT)
VALUES = st.one_of(LEAVES, st.lists(LEAVES, max_size=3),
                   st.dictionaries(NAMES, LEAVES, max_size=2))
#: Values for numeric fields that often keep a spec valid, so that shapes, counts and the
#: budget see the mutation instead of the schema.
NEAR_NUMBERS = st.one_of(st.integers(0, 64), st.sampled_from([
    -1, 3, 7, 100, 1000, 100_000, 1_000_000, 0.5, 2.5, "in_channels", "in_channels * 2",
    "in_channels // 3", "2 if i == 0 else 1", "num_classes * 3", "max(1, in_channels // 64)"]))
NUMERIC_FIELDS = {"out", "kernel", "stride", "padding", "dilation", "groups", "repeat", "scale", "p",
                  "output_padding", "num_classes", "width", "eps"}
OPS = st.sampled_from(sorted(REGISTRY) + ["convv", "Conv", "", "relu7"])
STRAY = st.sampled_from(["\x00", "\x07", "\t", ":", "- ", "{", "]", "&a ", "*a", "!!python/object ",
                         "? ", "|", "'", '"', "#", "%", "\ufeff", "\u2028", "\ud800"])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (dict keys and list indices) below ``node``, parents before children."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    node = doc
    for step in path[:-1]:
        node = node[step]
    return node


def _layer_names(doc: Any) -> list[str]:
    names = (_parent(doc, p)["name"] for p in _paths(doc) if p[-1] == "name")
    return sorted({n for n in names if isinstance(n, str)})


@st.composite
def data_mutation(draw: st.DrawFn, doc: Any) -> Any:
    """One structural change to the parsed document (mutated in place, and returned)."""
    paths = _paths(doc)
    if not paths:
        return draw(VALUES)
    path = draw(st.sampled_from(paths))
    parent, key = _parent(doc, path), path[-1]
    action = draw(st.sampled_from(["drop", "rename", "set", "rewire", "rewire", "duplicate", "op",
                                   "truncate_list", "number", "number", "number"]))
    if action == "number":
        numeric = [q for q in paths if isinstance(_parent(doc, q)[q[-1]], (int, float))
                   or (isinstance(q[-1], str) and q[-1] in NUMERIC_FIELDS)
                   or (len(q) > 1 and q[-2] in NUMERIC_FIELDS)]
        if numeric:
            where = draw(st.sampled_from(numeric))
            _parent(doc, where)[where[-1]] = draw(NEAR_NUMBERS)
            return doc
        action = "set"
    if action == "drop":
        del parent[key]
    elif action == "rename" and isinstance(parent, dict):
        new = draw(st.one_of(NAMES, IDENT, st.just(str(key)[:-1] or "x"), st.just(str(key) + "s")))
        parent[new] = parent.pop(key)
    elif action == "rewire":
        names = _layer_names(doc) or ["input"]
        target = draw(st.one_of(st.sampled_from(names), NAMES, IDENT))
        layers = [p for p in paths if p[-1] in ("input", "output") or (len(p) > 1 and p[-2] == "inputs")
                  or (len(p) > 1 and p[-2] == "taps")]
        where = draw(st.sampled_from(layers)) if layers else path
        _parent(doc, where)[where[-1]] = target
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, parent[key])
    elif action == "op":
        ops = [p for p in paths if p[-1] == "op"]
        if ops:
            where = draw(st.sampled_from(ops))
            _parent(doc, where)["op"] = draw(OPS)
    elif action == "truncate_list" and isinstance(parent, list):
        del parent[key:]
    else:
        parent[key] = draw(VALUES)
    return doc


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> bytes:
    """One textual change: truncate, duplicate or delete a line, or insert stray characters or bytes."""
    data = text.encode("utf-8", "surrogatepass")
    lines = text.splitlines(keepends=True) or [""]
    action = draw(st.sampled_from(["truncate", "dup_line", "del_line", "insert", "bytes"]))
    if action == "truncate":  # after the leading comments, which would leave no document at all
        body = len(data) - len(data.lstrip(b"\n")) if not data.startswith(b"#") else 0
        for line in data.splitlines(keepends=True):
            if not line.startswith(b"#"):
                break
            body += len(line)
        return data[: draw(st.integers(min(body + 1, len(data)), max(1, len(data))))]
    if action in ("dup_line", "del_line"):
        i = draw(st.integers(0, len(lines) - 1))
        lines[i:i + 1] = [lines[i], lines[i]] if action == "dup_line" else []
        return "".join(lines).encode("utf-8", "surrogatepass")
    pos = draw(st.integers(0, len(data)))
    if action == "insert":
        stray = draw(STRAY).encode("utf-8", "surrogatepass")
    else:
        stray = draw(st.binary(min_size=1, max_size=4))
    return data[:pos] + stray + data[pos:]


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None)


@st.composite
def mutated_model(draw: st.DrawFn) -> tuple[dict[str, bytes], str, str]:
    """({relative path: file bytes}, model path, mutated path), all relative to a specs-like root."""
    model = draw(st.sampled_from(PREFERRED + MODELS))
    doc = yaml.safe_load(model.read_text())
    files = {model.relative_to(SPECS).as_posix(): model.read_bytes()}
    for key in ("encoder", "meta"):
        ref = (model.parent / doc[key]).resolve()
        files[ref.relative_to(SPECS.resolve()).as_posix()] = ref.read_bytes()
    target = draw(st.sampled_from(sorted(files)))
    text = files[target].decode()
    rounds = draw(st.integers(1, 3))
    if draw(st.integers(0, 2)):  # two in three: structural mutations, which reach the later passes
        parsed = yaml.safe_load(text)
        for _ in range(rounds):
            parsed = draw(data_mutation(parsed))
        files[target] = _dump(parsed).encode("utf-8", "surrogatepass")
    else:
        for _ in range(rounds):
            files[target] = draw(text_mutation(files[target].decode("utf-8", "replace")))
    return files, model.relative_to(SPECS).as_posix(), target


SIZES = st.one_of(st.none(), st.tuples(st.integers(1, 700), st.integers(1, 700)))


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _assert_located(exc: SpecError) -> None:
    """Every error names a file: a person can always tell where to look."""
    assert exc.errors, "SpecError without errors"
    for d in exc.errors:
        assert d.loc is not None and d.loc.file, f"unlocated error: {d.render()}"


# --------------------------------------------------------------------------- tests

@FUZZ
@given(case=mutated_model(), size=SIZES)
def test_mutated_model_compiles_or_raises_spec_error(case: tuple[dict[str, bytes], str, str],
                                                     size: tuple[int, int] | None) -> None:
    files, model, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), files)
        with no_hang(HANG_SECONDS):
            try:
                analyze(Path(tmp) / model, size)
            except SpecError as exc:
                _assert_located(exc)


@FUZZ
@given(case=mutated_model())
def test_mutated_file_validates_or_reports(case: tuple[dict[str, bytes], str, str]) -> None:
    """``validate_file`` on the mutated file itself (an encoder or meta alone, or the model)."""
    files, _, target = case
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), files)
        with no_hang(HANG_SECONDS):
            diags = validate_file(Path(tmp) / target)
        for d in diags:
            assert d.loc is not None and d.loc.file, f"unlocated diagnostic: {d.render()}"


@FUZZ
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=400) | st.sampled_from([
    "kind: encoder", "kind: model\nencoder: x\nmeta: y\nnum_classes: 2", "kind: meta\nname: m\nlayers: 1",
    "[", "{", "*x", "&a [*a]", "---\n---", "kind: encoder\nname: e\nlayers: [{op: conv, out: 1e400}]"]))
def test_arbitrary_text_is_refused_cleanly(text: str) -> None:
    """Random text (not derived from a spec) is loaded, rejected or compiled: never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        with no_hang(HANG_SECONDS):
            try:
                analyze(path)
            except SpecError as exc:
                _assert_located(exc)
