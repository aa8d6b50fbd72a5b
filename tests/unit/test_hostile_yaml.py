"""Hostile spec files: the loader and the passes stay safe, bounded and located.

A spec is shared like code, so a file may be written to hurt: PyYAML tags that
construct Python objects, aliases that multiply ("billion laughs"), nesting
that overflows a recursive parser, endless or blocking files, repeat counts
that expand forever. Each is refused with a located error. Tests here do not
time anything; they check the mechanism instead (nothing is built before the
alias budget is checked, peak memory stays small, no side effect happens) and
guard against hangs with an alarm.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import no_hang
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.passes import expand
from rtseg_compiler.pipeline import analyze, validate_file
from rtseg_compiler.spec import listed_layers, load
from rtseg_compiler.spec.load import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_spec_file, load_spec_text


#: Every test here runs once per YAML backend this PyYAML offers: the limits are ours, so
#: their messages and locations must not depend on whether libyaml is installed, nor on which
#: libyaml a PyYAML wheel bundles (6.0.4's has a 1,000-level nesting limit of its own).
BACKENDS = ["pure-python"] + (["libyaml"] if getattr(yaml, "__with_libyaml__", False) else [])


@pytest.fixture(autouse=True, params=BACKENDS)
def yaml_backend(request, monkeypatch) -> str:
    if request.param == "pure-python":
        monkeypatch.setattr(load, "_FAST_LOADER", yaml.SafeLoader)
    return request.param


def _error(text: str, name: str = "hostile.yaml") -> Any:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, name)
    (first, *_) = err.value.errors
    return first


def _laughs(levels: int = 9, fan: int = 9) -> str:
    """The classic: each anchor is a list of ``fan`` aliases of the previous one; fan^levels leaves."""
    names = [chr(ord("a") + k) for k in range(levels)]
    lines = ["kind: encoder", "name: lol", f"{names[0]}: &{names[0]} [{', '.join(['lol'] * fan)}]"]
    for prev, cur in zip(names, names[1:]):
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * fan)}]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- tags: no code, no objects

@pytest.mark.parametrize("tagged, tag", [
    ("!!python/object/apply:os.system ['true']", "tag:yaml.org,2002:python/object/apply:os.system"),
    ("!!python/object:collections.OrderedDict {}", "tag:yaml.org,2002:python/object:collections.OrderedDict"),
    ("!!python/name:os.system ''", "tag:yaml.org,2002:python/name:os.system"),
    ("!!python/module:os ''", "tag:yaml.org,2002:python/module:os"),
    ("!!python/tuple [1, 2]", "tag:yaml.org,2002:python/tuple"),
    ("!!binary aGVsbG8=", "tag:yaml.org,2002:binary"),
    ("!!set {a}", "tag:yaml.org,2002:set"),
    ("!!omap [{a: 1}]", "tag:yaml.org,2002:omap"),
    ("!include other.yaml", "!include"),
    ("!<tag:example.com,2000:app/foo> x", "tag:example.com,2000:app/foo"),
])
def test_tags_are_refused_with_a_location(tagged, tag):
    d = _error(f"kind: encoder\nname: {tagged}\n")
    assert d.message == f"YAML tag '{tag}' is not allowed in a spec file"
    assert (d.loc.file, d.loc.line, d.loc.col) == ("hostile.yaml", 2, 7)


def test_tag_directive_cannot_smuggle_a_python_tag():
    d = _error("%TAG !p! tag:yaml.org,2002:python/\n---\nkind: encoder\nname: !p!object/apply:os.getcwd []\n")
    assert "python/object/apply:os.getcwd" in d.message and d.loc.line == 4


def test_a_python_tag_runs_nothing(tmp_path):
    """What yaml.unsafe_load would run (create a file) does not happen."""
    marker = tmp_path / "pwned"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"kind: encoder\nname: !!python/object/apply:os.mkdir ['{marker}']\n"
                    "layers: [{op: relu}]\n")
    diags = validate_file(spec)
    assert any("is not allowed in a spec file" in d.message for d in diags)
    assert not marker.exists()


def test_timestamps_and_plain_scalars_stay_plain():
    doc = load_spec_text("kind: encoder\nname: case\ndoc: 2018-03-07\nn: 0x10\nf: 1.5e+3\nb: yes\n")
    assert doc["doc"] == "2018-03-07" and doc["n"] == 16 and doc["f"] == 1500.0 and doc["b"] is True


# ------------------------------------------------------------------- aliases

def test_billion_laughs_is_refused_before_anything_is_built(monkeypatch):
    """10^9 nodes if expanded: refused by counting, with no node built and little memory."""
    built = []
    original = load._Builder.build
    monkeypatch.setattr(load._Builder, "build", lambda self, *a: built.append(1) or original(self, *a))
    tracemalloc.start()
    try:
        d = _error(_laughs())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"the YAML expands to more than {MAX_NODES:,} nodes" in d.message
    assert "billion laughs" in d.hint
    # Anchors a..i sit on lines 3..11 and expand to 10, 91, 820, 7,381, 66,430, 597,871 ...
    # nodes: 'f', on line 8, is the innermost list over 100,000, so the error points there.
    assert d.loc.line == 8
    assert built == []
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_a_wide_alias_fan_out_is_refused_too():
    """One big mapping aliased 2,000 times (1,000,000 nodes) rather than a deep chain."""
    big = ", ".join(f"k{i}: {i}" for i in range(500))
    d = _error(f"kind: encoder\nbase: &b {{{big}}}\nmany: [{', '.join(['*b'] * 2000)}]\n")
    assert "expands to more than" in d.message and d.loc.line == 3


def test_legitimate_aliases_expand():
    doc = load_spec_text("kind: encoder\nbn: &bn {op: bn, eps: 0.001}\nlayers: [*bn, *bn]\n")
    assert doc["layers"] == [{"op": "bn", "eps": 0.001}] * 2
    assert doc["layers"][1].loc.line == 2  # a copy is located where its anchor was written


def test_alias_expansion_within_the_budget_still_compiles(write_spec):
    path = write_spec("enc.yaml", """
        kind: encoder
        name: aliased
        input: [16, 16]
        layers:
          - &unit {op: conv, out: 8, kernel: 3}
          - *unit
          - *unit
        """)
    assert len(analyze(path).audit.layers) == 3


@pytest.mark.parametrize("text, line", [
    ("kind: encoder\nlayers: &l\n  - {op: relu}\n  - *l\n", 2),
    ("kind: encoder\na: &a {b: &b [1, *a]}\n", 2),
])
def test_recursive_aliases(text, line):
    d = _error(text)
    assert d.message == "an alias refers to a node that contains it (recursive YAML)"
    assert d.loc.line == line


def test_aliases_cannot_nest_past_the_depth_limit():
    """Each anchor nests 40 levels; aliasing one inside the next goes past 64 after expansion."""
    inner = "[" * 40 + "1" + "]" * 40
    text = f"kind: encoder\na: &a {inner}\nb: {'[' * 40}*a{']' * 40}\n"
    d = _error(text)
    assert f"nesting deeper than {MAX_DEPTH} levels after alias expansion" in d.message


def test_merge_keys_duplicate_keys_and_documents():
    assert "merge keys" in _error("a: &a {x: 1}\nb: {<<: *a}\n").message
    dup = _error("kind: encoder\nname: a\nname: b\n")
    assert dup.message == "duplicate key 'name'" and dup.loc.line == 3 and "2:1" in dup.hint
    assert "more than one YAML document" in _error("kind: encoder\n---\nkind: meta\n").message


# ------------------------------------------------------------------- size and depth limits

@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting_fails_without_recursion_error(opening):
    """100,000 open brackets: the event stream is checked before PyYAML's recursive composer runs.

    The message, limit and place are ours whichever parser reads the file: the document's
    mapping is level 1, so the 64th bracket opens level 65.
    """
    closing = "]" if opening == "[" else "}"
    d = _error("a: " + opening * 100_000 + closing * 100_000)
    assert str(MAX_DEPTH) in d.message and "nesting" in d.message
    assert (d.loc.line, d.loc.col) == (1, len("a: ") + 1 + (MAX_DEPTH - 1) * len(opening))


def test_deep_nesting_contract_on_the_command_line(tmp_path, capsys):
    """The user-facing contract: exit 2, the limit named, line 1, one located line, no traceback."""
    from rtseg_compiler import cli

    path = tmp_path / "deep.yaml"
    path.write_text("kind: encoder\nname: deep\nlayers: " + "[" * 5_000 + "]" * 5_000 + "\n")
    code = cli.main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert f"deep.yaml:3:{len('layers: ') + MAX_DEPTH}: error:" in err
    assert str(MAX_DEPTH) in err and "nesting" in err


def test_deep_block_nesting_is_refused_at_the_same_place():
    """Indentation nesting (block style) reaches the same limit, at the mapping of level 65."""
    lines = ["kind: encoder"] + [" " * level + f"k{level}:" for level in range(MAX_DEPTH + 5)]
    d = _error("\n".join(lines) + " 1\n")
    assert str(MAX_DEPTH) in d.message and "nesting" in d.message
    assert (d.loc.line, d.loc.col) == (MAX_DEPTH + 2, MAX_DEPTH + 1)


def test_file_size_limit(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    (d,) = err.value.errors
    assert f"over the limit of {MAX_FILE_BYTES:,}" in d.message and d.loc.file == str(path)


def test_event_limit():
    text = "kind: encoder\nx: [" + ", ".join(["1"] * (MAX_NODES + 10)) + "]\n"
    d = _error(text)
    assert f"more than {MAX_NODES:,} YAML events" in d.message and d.loc.line == 2


def test_listed_layer_limit_is_checked_before_the_schema(write_spec, monkeypatch):
    """Schema validation costs ~0.6 ms a layer; a file listing thousands is refused first."""
    monkeypatch.setattr(listed_layers, "MAX_LISTED_LAYERS", 50)
    layers = "\n".join(f"  - {{name: l{i}, op: relu, bogus: 1}}" for i in range(60))
    path = write_spec("enc.yaml", f"kind: encoder\nname: many\nlayers:\n{layers}\n")
    (d,) = [d for d in validate_file(path) if d.severity == "error"]
    assert d.message == "the file lists 60 layers, over the limit of 50 (layers has 60)"
    assert d.loc.line == 4 and "repeat" in d.hint


def test_runaway_repeat_stops_at_the_layer_limit(write_spec, monkeypatch):
    """A block of 1000 repeats used 10^9 times: stops at MAX_LAYERS instead of looping."""
    monkeypatch.setattr(expand, "MAX_LAYERS", 500)
    path = write_spec("enc.yaml", """
        kind: encoder
        name: runaway
        input: [8, 8]
        blocks:
          inner:
            layers:
              - {op: relu, repeat: 1000}
        layers:
          - {name: outer, block: inner, repeat: 1000000000}
        """)
    with no_hang():
        with pytest.raises(SpecError) as err:
            analyze(path)
    (d,) = err.value.errors
    assert d.message == "the spec expands to more than 500 layers" and d.loc.line == 7


def test_huge_channel_counts_do_not_hang_the_groups_hint(write_spec):
    """groups=7 on 10^11 input channels: the hint lists common divisors without a 10^11 loop."""
    path = write_spec("enc.yaml", """
        kind: encoder
        name: wide
        input: [8, 8]
        input_channels: 100000000000
        layers:
          - {name: c, op: conv, out: 32, kernel: 1, groups: 7}
        """)
    with no_hang(), pytest.raises(SpecError) as err:
        analyze(path)
    (d,) = err.value.errors
    assert "groups=7 does not divide in_channels=100000000000" in d.message
    assert d.hint.endswith("1, 2, 4, 8, 16, 32")


def test_size_suggestions_are_budgeted(write_spec, monkeypatch):
    """A size error no input can fix searches a bounded number of sizes, then gives no hint."""
    from rtseg_compiler.passes import shapes

    calls = []
    original = shapes.infer_shapes
    monkeypatch.setattr(shapes, "infer_shapes", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(shapes, "SUGGEST_BUDGET", 40)
    path = write_spec("enc.yaml", """
        kind: encoder
        name: never
        input: [32, 32]
        layers:
          - {name: a, op: conv, out: 8, kernel: 3}
          - {name: b, op: conv, out: 8, kernel: 3, stride: 2}
          - {name: c, op: crop, inputs: [b, a]}
        """)
    with pytest.raises(SpecError):
        analyze(path)
    assert len(calls) <= 1 + 40 // 3 + 1  # the real run, then the budget over three layers


# ------------------------------------------------------------------- bytes and files

@pytest.mark.parametrize("data, fragment, where", [
    (b"kind: encoder\nname: caf\xe9\n", "file is not valid UTF-8 (byte 0xe9 at offset 23)", (2, 10)),
    (b"\xff\xfek\x00i\x00n\x00d\x00", "file is not valid UTF-8 (byte 0xff at offset 0)", (1, 1)),
    (b"kind: encoder\nname: a\x07b\n", "character U+0007 is not allowed in YAML", (2, 8)),
    (b"kind: encoder\nname: a\x00b\n", "character U+0000 is not allowed in YAML", (2, 8)),
    (b"kind: encoder\nname: \"\\ud800\"\nlayers: [{op: relu}]\n", "is not a valid name", (2, 7)),
    (b"", "file is empty", (1, 1)),
    (b"  \n\n\t\n", "file is empty", (1, 1)),
    (b"# only a comment\n", "file holds no YAML document", (1, 1)),
    (b"just a string", "not the single value 'just a string'", (1, 1)),
    (b"kind: encoder\nn: 1" + b"0" * 5000 + b"\n", "value has 5001 digits", (2, 4)),
    (b"kind: encoder\neps: .inf\n", "non-finite number '.inf'", (2, 6)),
    (b"kind: encoder\nlayers:\n\t- {op: relu}\n", "found character '\\t' that cannot start", (3, 1)),
])
def test_bad_bytes_and_odd_documents(tmp_path, data, fragment, where):
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    diags = [d for d in validate_file(path) if d.severity == "error"]
    assert diags, "accepted"
    hit = next((d for d in diags if fragment in d.render()), None)
    assert hit is not None, [d.render() for d in diags]
    assert (hit.loc.line, hit.loc.col) == where


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffkind: encoder\nname: bom\ninput: [8, 8]\nlayers: [{op: relu}]\n".encode())
    assert [d for d in validate_file(path) if d.severity == "error"] == []


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_device_is_not_read(tmp_path):
    """encoder: /dev/zero would be read until memory runs out; it is refused before opening."""
    model = tmp_path / "model.yaml"
    meta = Path(__file__).resolve().parents[2] / "specs" / "meta" / "skipnet.yaml"
    model.write_text(f"kind: model\nname: m\nencoder: /dev/zero\nmeta: {meta}\nnum_classes: 2\n")
    with no_hang(), pytest.raises(SpecError) as err:
        analyze(model)
    (d,) = err.value.errors
    assert (d.loc.file, d.message) == ("/dev/zero", "not a regular file")
    assert d.notes == (f"referenced at {model}:3:10",)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with no_hang(10), pytest.raises(SpecError, match="not a regular file"):
        load_spec_file(fifo)


def test_paths_with_nul_bytes_and_empty_names():
    with pytest.raises(SpecError, match=r"invalid file name \(it contains a NUL character\)"):
        load_spec_file("spec\x00.yaml")
    with pytest.raises(SpecError, match="empty file name"):
        load_spec_file("")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.yaml"
    path.write_text("kind: encoder\n")

    def deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    (d,) = err.value.errors
    assert (d.message, d.loc.file) == ("permission denied", str(path))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX symlinks")
def test_symlink_loop(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(SpecError, match="cannot read file"):
        load_spec_file(loop)
