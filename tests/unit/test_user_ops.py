"""User ops without forking: register(), entry points, ``rtsegc --ops``. No torch.

A user op is an ``OpDef`` registered from the user's own module with the public
API of ``rtseg_compiler.ops``. These tests check the ways such a module gets
loaded (an installed ``rtseg_compiler.ops`` entry point, ``--ops MODULE``, a
plain ``register()`` call at any time), what happens when one is broken (one
located line, exit 2 for ``--ops``, a warning for an installed entry point),
that a spec can never name code to import, and the example package under
``examples/`` end to end: installed with pip, driven through the CLI.

Every test that registers an op removes it again (the ``user_ops`` fixture), so
the rest of the suite sees the built-in registry only.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import jsonschema
import pytest

from conftest import EXAMPLE_OPS, REPO_ROOT
from rtseg_compiler import analyze, validate_file
from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ir import TensorType
from rtseg_compiler.ops import (BOOL, CHOICE, INT, NUMBER, PAIR, REGISTRY, Cost, Field, FieldKind, OpDef,
                                OpError, op_origin, register, unregister)
from rtseg_compiler.ops import plugins
from rtseg_compiler.spec import schema as schema_module
from rtseg_compiler.spec.load import load_spec_file
from rtseg_compiler.spec.schema import schema_for, validate_document

EXAMPLE_SPECS = EXAMPLE_OPS / "specs"
EXAMPLE_MODEL = EXAMPLE_SPECS / "blurnet_subpixel.yaml"


@pytest.fixture
def user_ops() -> Iterator[None]:
    """Leave the registry, the loaded-entry-points state and sys.modules as they were."""
    before_ops, before_modules = set(REGISTRY), set(sys.modules)
    plugins._reset_for_tests()
    try:
        yield
    finally:
        for name in set(REGISTRY) - before_ops:
            unregister(name)
        for name in set(sys.modules) - before_modules:
            if name.startswith(("uo_", "rtsegc_example_ops", "fake_")):
                del sys.modules[name]
        plugins._reset_for_tests()


@pytest.fixture
def modules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for throwaway user modules."""
    directory = tmp_path / "modules"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


def _module(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


SCALE_OP = '''
from rtseg_compiler.ops import OpDef, register

register(OpDef(name="{name}", summary="identity, for tests", fields={{}},
               infer=lambda attrs, ins: ins[0], build=lambda attrs, ins, out: None))
'''


def _identity_op(name: str) -> OpDef:
    """The smallest op the public API allows: stateless, no fields, no count hook."""
    return OpDef(name=name, summary="identity", fields={}, infer=lambda attrs, ins: ins[0],
                 build=lambda attrs, ins, out: None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


# --------------------------------------------------------------------------- register() at any time

def test_register_after_the_first_validation(encoder_spec, user_ops):
    """The schema validator used to be cached for good: an op registered later stayed unknown."""
    path = encoder_spec("- {name: a, op: conv, out: 8, kernel: 3}\n- {name: b, op: uo_twice}\n")
    with pytest.raises(SpecError, match="unknown op 'uo_twice'"):
        analyze(path)
    register(OpDef(name="uo_twice", summary="doubles the channels", fields={},
                   infer=lambda attrs, ins: TensorType(2 * ins[0].channels, ins[0].height, ins[0].width,
                                                       ins[0].stride),
                   build=lambda attrs, ins, out: None,
                   count=lambda attrs, ins, out: Cost(0, out.numel, out.numel)))
    result = analyze(path)
    assert result.resolved.types["encoder.b"] == TensorType(16, 24, 40)
    assert result.audit.layers[-1].macs == 16 * 24 * 40
    assert validate_file(path) == []


def test_validators_are_built_once_per_registry_state(user_ops):
    first = schema_module._validator("encoder")
    assert schema_module._validator("encoder") is first
    register(_identity_op("uo_same"))
    second = schema_module._validator("encoder")
    assert second is not first and "uo_same" in json.dumps(second.schema)
    unregister("uo_same")
    third = schema_module._validator("encoder")
    assert "uo_same" not in json.dumps(third.schema)
    assert len([k for k in schema_module._VALIDATORS if k[0] == "encoder"]) == 1, "stale validators kept"


def test_minimal_opdef_is_a_free_stateless_op(encoder_spec, user_ops):
    """OpDef(name, summary, fields={}, infer, build) keeps working: 0 params, 0 MACs, any attrs none."""
    register(_identity_op("uo_identity"))
    result = analyze(encoder_spec("- {name: a, op: conv, out: 8, kernel: 1}\n- {name: b, op: uo_identity}\n"))
    row = result.audit.layers[-1]
    assert (row.op, row.params, row.macs, row.tf_flops) == ("uo_identity", 0, 0, 0)
    assert op_origin("uo_identity") == f"register() in {__name__}"


def test_op_errors_of_a_user_op_are_located(encoder_spec, user_ops):
    def infer(attrs, ins):
        if ins[0].channels % attrs["parts"]:
            raise OpError(f"{ins[0].channels} channels do not split into {attrs['parts']}", field="parts")
        return ins[0]

    register(OpDef(name="uo_split", summary="s", fields={"parts": Field("int", 2, minimum=1)},
                   infer=infer, build=lambda attrs, ins, out: None))
    path = encoder_spec("- {name: b, op: uo_split,\n   parts: 3}\n")
    with pytest.raises(SpecError) as info:
        analyze(path)
    assert str(info.value).startswith(f"{path}:7:13: error: 32 channels do not split into 3 (uo_split 'b')")


@pytest.mark.parametrize("field, message", [
    (Field("integer", 1), "kinds are int, pair, number, bool, choice"),
    (Field("int", 1, minimum="1"), "non-numeric minimum"),
    (Field("choice", "a"), "needs 'choices'"),
    ("int", "must be a Field"),
])
def test_register_refuses_malformed_fields(field, message, user_ops):
    with pytest.raises(ValueError, match=message):
        register(OpDef(name="uo_bad", summary="s", fields={"x": field}, infer=lambda a, i: i[0],
                       build=lambda a, i, o: None))
    assert "uo_bad" not in REGISTRY


@pytest.mark.parametrize("name, message", [("uo-dash", "must be an identifier"), ("relu", "(built-in)")])
def test_register_refuses_bad_and_taken_names(name, message, user_ops):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        register(_identity_op(name))


def test_reserved_field_names_are_refused(user_ops):
    with pytest.raises(ValueError, match="'input' cannot be a field name"):
        register(OpDef(name="uo_res", summary="s", fields={"input": Field("int", 1)},
                       infer=lambda a, i: i[0], build=lambda a, i, o: None))


def test_builtin_ops_cannot_be_unregistered():
    with pytest.raises(ValueError, match="built in"):
        unregister("conv")


def test_user_op_schema_is_valid_and_not_shipped(user_ops):
    """Every field kind of a user op yields valid Draft 2020-12; the shipped files stay built-in only."""
    register(OpDef(name="uo_all_kinds", summary="s", infer=lambda a, i: i[0], build=lambda a, i, o: None,
                   fields={"n": Field("int", 1, minimum=1), "p": Field("pair", 1), "x": Field("number", 0.5),
                           "b": Field("bool", False), "c": Field("choice", "a", choices=("a", "b"))}))
    for kind in ("encoder", "meta"):
        full = schema_for(kind)
        jsonschema.Draft202012Validator.check_schema(full)
        op_names = full["$defs"]["layer"]["else"]["properties"]["op"]["anyOf"][0]["enum"]
        assert "uo_all_kinds" in op_names
        assert "uo_all_kinds" not in json.dumps(schema_for(kind, builtin_only=True))


@pytest.mark.parametrize("name, kind", [("int", INT), ("pair", PAIR), ("number", NUMBER), ("bool", BOOL),
                                        ("choice", CHOICE)], ids=str)
def test_a_kind_named_by_its_old_string_is_that_kind(name, kind):
    """``Field("int", ...)``, the spelling user ops were written with, is ``Field(INT, ...)``."""
    assert Field(name, 1, choices=("a",)) == Field(kind, 1, choices=("a",))
    assert Field(name, 1).kind is kind and str(kind) == name


class _OddKind(FieldKind):
    """A kind only a user op knows: an odd integer."""

    name = "odd"

    def schema(self, f):
        return {"type": ["integer", "string"], "description": "an odd integer"}

    def coerce(self, value, f, name):
        if not isinstance(value, int) or value % 2 == 0:
            raise OpError(f"{name} must be odd, got {value!r}", field=name)
        return value


def test_a_user_field_kind_owns_its_schema_and_its_check(encoder_spec, user_ops):
    """Nothing outside the kind asks what kind a field is: a new subclass is schema and check alike."""
    register(OpDef(name="uo_odd", summary="s", fields={"k": Field(_OddKind(), 3)},
                   infer=lambda a, i: i[0], build=lambda a, i, o: None))
    layer_schema = json.dumps(schema_for("encoder"))
    assert '"an odd integer"' in layer_schema
    assert analyze(encoder_spec("- {name: a, op: uo_odd, k: 2 * 2 + 1}\n")).resolved.types["encoder.a"]
    path = encoder_spec("- {name: a, op: uo_odd,\n   k: 4}\n")
    with pytest.raises(SpecError, match="k must be odd, got 4") as info:
        analyze(path)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "k: 4" in text)
    col = path.read_text().splitlines()[line - 1].index("4") + 1
    assert str(info.value).startswith(f"{path}:{line}:{col}: error:"), "the value's own place"


# --------------------------------------------------------------------------- spec files stay data

class _ImportRecorder(importlib.abc.MetaPathFinder):
    """Records every module name Python is asked to find."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.names.append(name)
        return None


@pytest.mark.parametrize("key", ["ops", "import", "plugins", "entry_points"])
@pytest.mark.parametrize("kind", ["encoder", "meta", "model"])
def test_a_spec_cannot_name_code_to_import(tmp_path, modules_dir, key, kind, user_ops):
    """A module named by a spec, at the top level or as an op, is refused by the schema and never imported."""
    marker = tmp_path / "imported"
    _module(modules_dir, "uo_payload", f"open({str(marker)!r}, 'w').write('imported')\n")
    body = {"encoder": "name: e\ninput_channels: 3\nlayers:\n  - {op: uo_payload}\n",
            "meta": "name: m\nlayers:\n  - {op: uo_payload, input: encoder.output}\n",
            "model": "encoder: e.yaml\nmeta: m.yaml\nnum_classes: 2\n"}[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(f"kind: {kind}\n{key}: [uo_payload, os]\n{body}")
    recorder = _ImportRecorder()
    sys.meta_path.insert(0, recorder)
    try:
        diags = validate_file(path)
    finally:
        sys.meta_path.remove(recorder)
    messages = [d.render() for d in diags]
    assert any(f"unknown field '{key}'" in m and ":2:1:" in m for m in messages), messages
    if kind != "model":
        assert any("unknown op 'uo_payload'" in m for m in messages), messages
    assert "uo_payload" not in recorder.names and "uo_payload" not in sys.modules
    assert not marker.exists()


# --------------------------------------------------------------------------- --ops

def test_ops_option_loads_a_module(modules_dir, encoder_spec, capsys, user_ops):
    _module(modules_dir, "uo_mod", SCALE_OP.format(name="uo_from_cli"))
    path = encoder_spec("- {name: b, op: uo_from_cli}\n")
    status, out, err = _run(capsys, "--ops", "uo_mod", "validate", str(path))
    assert (status, err) == (0, "") and out.strip().endswith(": ok")
    assert op_origin("uo_from_cli") == "--ops uo_mod"
    status, out, _ = _run(capsys, "--ops", "uo_mod", "ops")  # repeated: already imported, no clash
    assert status == 0
    assert "from --ops uo_mod:\nuo_from_cli" in out
    assert out.index("conv ") < out.index("from --ops uo_mod:"), "built-in ops come first"


def test_ops_option_is_repeatable(modules_dir, capsys, user_ops):
    _module(modules_dir, "uo_one", SCALE_OP.format(name="uo_first"))
    _module(modules_dir, "uo_two", SCALE_OP.format(name="uo_second"))
    status, out, _ = _run(capsys, "--ops", "uo_one", "--ops", "uo_two", "ops")
    assert status == 0 and "from --ops uo_one:\nuo_first" in out and "from --ops uo_two:\nuo_second" in out


def test_ops_missing_module(capsys, user_ops):
    status, out, err = _run(capsys, "--ops", "uo_not_installed", "flops", "x.yaml")
    assert status == 2 and out == ""
    assert err.strip() == ("rtsegc: error: --ops uo_not_installed: no module named 'uo_not_installed' "
                           "(install it, or put its directory on PYTHONPATH)")


def test_ops_module_in_the_working_directory_gets_the_pythonpath_hint(tmp_path, monkeypatch, capsys,
                                                                      user_ops):
    """The rtsegc console script does not search the current directory; say how to make it."""
    (tmp_path / "uo_here.py").write_text("VALUE = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    status, _, err = _run(capsys, "--ops", "uo_here", "ops")
    assert status == 2
    assert err.strip() == ("rtsegc: error: --ops uo_here: no module named 'uo_here' (uo_here.py is in this "
                           "directory, which is not on the module path: run with PYTHONPATH=.)")


def test_ops_module_that_raises_is_located(modules_dir, capsys, user_ops):
    path = _module(modules_dir, "uo_raises", "x = 1\ny = {}['missing']\n")
    status, _, err = _run(capsys, "--ops", "uo_raises", "ops")
    assert status == 2
    assert err.strip() == (f"{path}:2:5: error: --ops uo_raises: importing 'uo_raises' raised "
                           f"KeyError: 'missing'")


def test_ops_module_with_a_syntax_error_is_located(modules_dir, capsys, user_ops):
    path = _module(modules_dir, "uo_syntax", "def f(:\n    pass\n")
    status, _, err = _run(capsys, "--ops", "uo_syntax", "ops")
    assert status == 2 and err.startswith(f"{path}:1:") and "SyntaxError" in err
    assert len(err.strip().splitlines()) == 1


def test_ops_clash_is_an_error_and_registers_nothing(modules_dir, capsys, user_ops):
    """A module that clashes half-way is withdrawn whole: its first op is not left behind."""
    path = _module(modules_dir, "uo_clash", SCALE_OP.format(name="uo_fine") + SCALE_OP.format(name="relu"))
    status, _, err = _run(capsys, "--ops", "uo_clash", "ops")
    assert status == 2
    assert err.strip() == (f"{path}:8:1: error: --ops uo_clash: op 'relu' is already registered (built-in) "
                           "(an op name is registered once; choose another name)")
    assert "uo_fine" not in REGISTRY and "uo_clash" not in sys.modules


def test_ops_clash_between_two_modules_names_the_first(modules_dir, capsys, user_ops):
    _module(modules_dir, "uo_a", SCALE_OP.format(name="uo_shared"))
    _module(modules_dir, "uo_b", SCALE_OP.format(name="uo_shared"))
    status, _, err = _run(capsys, "--ops", "uo_a", "--ops", "uo_b", "ops")
    assert status == 2 and "--ops uo_b: op 'uo_shared' is already registered (--ops uo_a)" in err


def test_ops_module_registering_nothing_warns(modules_dir, capsys, user_ops):
    _module(modules_dir, "uo_empty", "VALUE = 1\n")
    status, _, err = _run(capsys, "--ops", "uo_empty", "ops")
    assert status == 0 and err.strip() == "rtsegc: warning: --ops uo_empty: the module registered no ops"


@pytest.mark.parametrize("name, fragment", [
    ("my_ops.py", "give a module name, not a file: for ./my_ops.py run 'PYTHONPATH=. rtsegc --ops my_ops"),
    ("./ops", "give a module name, not a file"),
    ("my-ops", "a module name is dotted identifiers"),
    ("pkg..ops", "a module name is dotted identifiers"),
    ("", "a module name is dotted identifiers"),
])
def test_ops_refuses_what_is_not_a_module_name(name, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--ops", name, "ops"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --ops: invalid module name {name!r} ({fragment}" in err and "Traceback" not in err


def test_ops_after_the_command_says_where_it_goes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["flops", "--ops", "my_ops", "model.yaml"])
    assert info.value.code == 2
    assert "--ops is a global option: give it before the command, e.g. rtsegc --ops my_ops flops" in \
        capsys.readouterr().err


# --------------------------------------------------------------------------- entry points, in process

def _fake_distribution(root: Path, entries: str) -> None:
    """An installed distribution as pip would leave it: a dist-info folder with entry points."""
    info = root / "fake_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entries).lstrip("\n"))


@pytest.fixture
def fake_plugins(modules_dir: Path, user_ops: None) -> Path:
    _module(modules_dir, "fake_good", SCALE_OP.format(name="fake_double"))
    _module(modules_dir, "fake_clash", SCALE_OP.format(name="fake_half") + SCALE_OP.format(name="conv"))
    _fake_distribution(modules_dir, """
        [console_scripts]
        unrelated = fake_good:main

        [rtseg_compiler.ops]
        good = fake_good
        missing = fake_not_there
        clash = fake_clash
        attr = fake_good:register_all
    """)
    return modules_dir


def test_entry_points_load_and_broken_ones_warn(fake_plugins, capsys):
    status, out, err = _run(capsys, "ops")
    assert status == 0
    assert "from entry point 'good' (fake-plugins 1.0):\nfake_double" in out
    info = fake_plugins / "fake_plugins-1.0.dist-info" / "entry_points.txt"
    lines = err.strip().splitlines()
    assert lines == [
        f"{info}:8:1: warning: entry point 'attr' of fake-plugins 1.0 names 'fake_good:register_all', an "
        "object; an rtseg_compiler.ops entry point names a module, whose import registers its ops "
        "(write 'attr = fake_good'; its ops are not available)",
        f"{fake_plugins / 'fake_clash.py'}:8:1: warning: entry point 'clash' of fake-plugins 1.0: op 'conv' "
        "is already registered (built-in) (an op name is registered once; choose another name; its ops "
        "are not available)",
        f"{info}:6:1: warning: entry point 'missing' of fake-plugins 1.0: no module named 'fake_not_there' "
        "(install it, or put its directory on PYTHONPATH; its ops are not available)",
    ]
    assert "fake_half" not in REGISTRY, "a plugin that failed half-way must not leave ops behind"
    assert op_origin("fake_double") == "entry point 'good' (fake-plugins 1.0)"


def test_broken_entry_point_does_not_break_commands(fake_plugins, encoder_spec, capsys):
    """Warnings once per process; specs that do not need the broken plugin work; one that does is told why."""
    good = encoder_spec("- {name: b, op: fake_double}\n", name="good.yaml")
    status, out, err = _run(capsys, "validate", str(good))
    assert status == 0 and out.strip().endswith("good.yaml: ok") and err.count("warning:") == 3
    needs_broken = encoder_spec("- {name: b, op: fake_half}\n", name="bad.yaml")
    status, _, err = _run(capsys, "validate", str(needs_broken))
    assert status == 2 and "warning" not in err, "warnings are printed once per process"
    assert "unknown op 'fake_half'" in err
    assert "note: an installed op package failed to load, so its ops are missing: entry point 'clash'" in err


def test_entry_points_load_lazily_once(fake_plugins, monkeypatch):
    """Not at import, but at the first validation; and only once however many specs follow."""
    calls = []
    real = plugins._entry_points
    monkeypatch.setattr(plugins, "_entry_points", lambda: calls.append(1) or real())
    with pytest.warns(plugins.OpPluginWarning):
        validate_document(load_spec_file(EXAMPLE_SPECS / "subpixel.yaml"), "subpixel.yaml")
    validate_document(load_spec_file(EXAMPLE_SPECS / "subpixel.yaml"), "subpixel.yaml")
    assert calls == [1] and "fake_double" in REGISTRY


def test_ops_option_clashing_with_an_entry_point_names_it(fake_plugins, capsys):
    _module(fake_plugins, "uo_dup", SCALE_OP.format(name="fake_double"))
    status, _, err = _run(capsys, "--ops", "uo_dup", "ops")
    assert status == 2
    assert "--ops uo_dup: op 'fake_double' is already registered (entry point 'good' (fake-plugins 1.0))" in err


# --------------------------------------------------------------------------- the example package

def _cli(*argv: str, pythonpath: Path | None) -> subprocess.CompletedProcess:
    """``python -m rtseg_compiler.cli`` in a fresh interpreter, from the repository root."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RTSEGC_DEBUG")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "rtseg_compiler.cli", *argv], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=env, timeout=300)


def test_example_through_its_installed_entry_point(example_ops_site):
    """pip-installed, the example's ops need no flag: `rtsegc ops` and `rtsegc flops` just see them."""
    listing = _cli("ops", pythonpath=example_ops_site)
    assert listing.returncode == 0, listing.stderr
    assert "from entry point 'example' (rtsegc-example-ops 0.1.0):\nblur_pool" in listing.stdout
    assert "\npixel_shuffle " in listing.stdout and listing.stderr == ""
    flops = _cli("flops", str(EXAMPLE_MODEL), "--json", "--input", "360x640", pythonpath=example_ops_site)
    assert flops.returncode == 0, flops.stderr
    audit = json.loads(flops.stdout)
    ops = {layer["op"] for layer in audit["layers"]}
    assert {"blur_pool", "pixel_shuffle"} <= ops
    assert audit["output_shape"] == [1, 19, 360, 640]
    blur = next(layer for layer in audit["layers"] if layer["name"] == "encoder.s2.down")
    # 16 channels, 3x3 window, on a 180x320 output: C*Ho*Wo*k^2 MACs, no parameters.
    assert (blur["output_shape"], blur["macs"], blur["params"]) == ([16, 180, 320], 16 * 180 * 320 * 9, 0)


def test_example_through_ops_option(example_ops_site):
    """From its source tree (no metadata, so no entry point), --ops brings the same ops and numbers."""
    without = _cli("validate", str(EXAMPLE_MODEL), pythonpath=EXAMPLE_OPS)
    assert without.returncode == 2 and "unknown op 'blur_pool'" in without.stderr
    assert "rtsegc --ops MODULE" in without.stderr and "Traceback" not in without.stderr
    argv = ("flops", str(EXAMPLE_MODEL), "--json")
    by_option = _cli("--ops", "rtsegc_example_ops", *argv, pythonpath=EXAMPLE_OPS)
    by_entry_point = _cli(*argv, pythonpath=example_ops_site)
    assert by_option.returncode == 0 == by_entry_point.returncode, by_option.stderr + by_entry_point.stderr
    assert json.loads(by_option.stdout) == json.loads(by_entry_point.stdout)
    listing = _cli("--ops", "rtsegc_example_ops", "ops", pythonpath=EXAMPLE_OPS)
    assert "from --ops rtsegc_example_ops:\nblur_pool" in listing.stdout
    # Installed *and* named: the module is imported once, so nothing clashes.
    both = _cli("--ops", "rtsegc_example_ops", "validate", str(EXAMPLE_MODEL), pythonpath=example_ops_site)
    assert both.returncode == 0 and both.stderr == "", both.stderr


def test_example_install_is_quick(example_ops_site):
    """The fixture's pip install is meant to cost a few seconds; a slow one is worth knowing about."""
    seconds = float((example_ops_site / ".install_seconds").read_text())
    assert seconds < 120, f"pip install of the example package took {seconds:.1f} s"


def test_example_ops_in_process(monkeypatch, encoder_spec, user_ops):
    """The Python API: import the package, analyse the example model; the ops' errors are located."""
    monkeypatch.syspath_prepend(str(EXAMPLE_OPS))
    import rtsegc_example_ops  # noqa: F401

    types = analyze(EXAMPLE_MODEL, (64, 96)).resolved.types
    assert (types["head.up32"].channels, types["head.up32"].spatial) == (19, (8, 12))
    assert (types["head.up8"].channels, types["head.up8"].spatial) == (19, (64, 96))
    assert op_origin("pixel_shuffle") == "register() in rtsegc_example_ops.pixel_shuffle"
    path = encoder_spec("- {name: a, op: conv, out: 19, kernel: 1}\n- {name: up, op: pixel_shuffle,\n   factor: 4}\n")
    with pytest.raises(SpecError) as info:
        analyze(path)
    assert str(info.value).startswith(
        f"{path}:8:14: error: pixel_shuffle by 4 needs channels divisible by 4*4=16, got 19")


def test_examples_are_not_packaged_with_the_compiler(repo_root):
    """examples/ holds separate distributions: excluded from the wheel's packages and pruned from the sdist."""
    import tomllib

    import re

    # setup.py lists the packages (pyproject.toml cannot map runtime/ to rtseg_runtime): only include
    # patterns for rtseg_compiler and runtime, none that could match examples/.
    assert "find" not in tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"].get(
        "packages", {})
    includes = re.findall(r'include=\[([^\]]*)\]', (repo_root / "setup.py").read_text())
    patterns = {p.strip().strip('"') for group in includes for p in group.split(",")}
    assert patterns == {"rtseg_compiler*", "runtime*"}
    assert "prune examples" in (repo_root / "MANIFEST.in").read_text().splitlines()


def test_a_user_op_that_crashes_is_blamed_at_its_line(modules_dir, encoder_spec, capsys, user_ops):
    """Not "internal compiler error ... a bug in rtsegc": the op's own line, exit 2."""
    path = _module(modules_dir, "uo_buggy", """
        from rtseg_compiler.ops import OpDef, register

        def infer(attrs, ins):
            return ins[0].channels / 0

        register(OpDef(name="uo_buggy_op", summary="s", fields={}, infer=infer,
                       build=lambda attrs, ins, out: None))
    """)
    spec = encoder_spec("- {name: b, op: uo_buggy_op}\n")
    status, _, err = _run(capsys, "--ops", "uo_buggy", "shapes", str(spec))
    assert status == 2
    assert err.strip() == (f"{path}:4:1: error: op 'uo_buggy_op' (--ops uo_buggy) failed: ZeroDivisionError: "
                           "division by zero (a bug in the op's own code, not in rtsegc or the spec; "
                           "RTSEGC_DEBUG=1 shows the traceback)")
