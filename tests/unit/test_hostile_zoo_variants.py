"""Zoo specs bent by parameters until what a name means is gone: located errors, never a traceback.

A model file's ``encoder_params`` can remove what an encoder's taps or outputs name: a block use
switched off by its ``when:``, a ``repeat:`` that makes fewer copies (``len(dims)`` with a shorter
list) or none. The cause sits in another file than the error, so the message names the tap, the
condition or repeat that removed its layer, and the parameter values that decided it. Each
variant is a text edit of a shipped spec, checked through ``rtsegc validate``, ``shapes`` and
``flops``: exit status 2 (a spec error), not 3 (an internal error).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from conftest import SPECS
from rtseg_compiler.cli import main


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"the shipped spec changed: {old!r} is gone"
    return text.replace(old, new, 1)


def _mobilenet(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = (SPECS / "encoders" / "mobilenet_v1.yaml").read_text()
    for old, new in edits:
        text = _edit(text, old, new)
    path = tmp_path / "mobilenet_v1.yaml"
    path.write_text(text)
    return path


def _model(tmp_path: Path, encoder: Path, meta: Path, encoder_params: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(f"kind: model\nname: hostile\ndoc: a zoo spec bent by its parameters\n"
                    f"encoder: {encoder}\nmeta: {meta}\nnum_classes: 20\ninput: [256, 512]\n"
                    f"encoder_params: {encoder_params}\n")
    return path


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([*argv])
    return code, err.getvalue()


def _errors(path: Path) -> list[str]:
    """The error lines of every analytic command on ``path``; each must exit 2 without a traceback."""
    lines = []
    for argv in (["validate", str(path)], ["shapes", str(path)], ["flops", str(path)]):
        code, err = _run(*argv)
        assert code == 2, f"rtsegc {argv[0]} exited {code}: {err}"
        assert "Traceback" not in err and "internal" not in err, err
        lines += [line for line in err.splitlines() if ": error: " in line]
    return lines


_DEEP = (("  act: relu\n", "  act: relu\n  deep: true\n"),
         ("{name: ds13, block: dwsep, out: 1024}", "{name: ds13, block: dwsep, out: 1024, when: deep}"))


def test_tap_inside_a_block_use_its_when_removed(tmp_path):
    encoder = _mobilenet(tmp_path, *_DEEP, ("stride32: ds13}", "stride32: ds13.pw_relu}"))
    model = _model(tmp_path, encoder, SPECS / "meta" / "skipnet.yaml", "{deep: false}")
    errors = _errors(model)
    tap_line = next(n for n, line in enumerate(encoder.read_text().splitlines(), 1) if line.startswith("taps:"))
    when_line = next(n for n, line in enumerate(encoder.read_text().splitlines(), 1) if "when: deep" in line)
    assert errors and all(line.startswith(f"{encoder}:{tap_line}:") for line in errors)
    assert ("tap 'stride32' names 'ds13.pw_relu', inside 'ds13', which is absent "
            f"(its 'when: deep' is false at {encoder}:{when_line}:") in errors[0]
    code, err = _run("validate", str(model))
    assert any(line.startswith(f"    note: deep = false, set at {model}:8:") for line in err.splitlines())


def test_tap_inside_a_repeat_made_empty(tmp_path):
    encoder = _mobilenet(tmp_path, ("  act: relu\n", "  act: relu\n  middle: 5\n"),
                         ("out: 512, repeat: 5}", "out: 512, repeat: middle}"),
                         ("stride16: ds7_11,", "stride16: ds7_11.5.pw_relu,"))
    model = _model(tmp_path, encoder, SPECS / "meta" / "skipnet.yaml", "{middle: 0}")
    errors = _errors(model)
    assert "tap 'stride16' names 'ds7_11.5.pw_relu', inside 'ds7_11', which is absent ('repeat: 0' at" in errors[0]
    assert any(line.startswith(f"    note: middle = 0, set at {model}:8:")
               for line in _run("validate", str(model))[1].splitlines())


def test_tap_naming_a_copy_repeat_did_not_make(tmp_path):
    """mit_b0 makes one stage per entry of ``dims``; three entries leave ``stage.4`` unmade."""
    model = _model(tmp_path, SPECS / "encoders" / "mit_b0.yaml", SPECS / "meta" / "segformer_head.yaml",
                   "{dims: [32, 64, 160]}")
    errors = _errors(model)
    assert errors[0].split(":")[0].endswith("mit_b0.yaml")  # shown relative to the working folder
    assert "tap 'stride32' names 'stage.4', but 'stage' has copies 1 to 3 only" in errors[0]
    notes = _run("validate", str(model))[1].splitlines()
    assert any(n.startswith("    note: 'repeat: len(dims)' at ") and n.endswith(" is 3") for n in notes)
    assert f"    note: dims = [32, 64, 160], set at {model}:8:24" in notes


@pytest.mark.parametrize("outputs, fragment", [
    ("{out: logits, aux: nothere}", "unknown layer 'nothere'"),
    ("{out: logits, aux: encoder.stride64}", "the encoder has no tap 'stride64'"),
    ("{out: logits, aux: up8.inner}", "unknown layer 'up8.inner'"),
])
def test_meta_outputs_naming_missing_nodes(tmp_path, outputs, fragment):
    meta = tmp_path / "skipnet.yaml"
    meta.write_text(_edit((SPECS / "meta" / "skipnet.yaml").read_text(), "output: logits", f"outputs: {outputs}"))
    model = _model(tmp_path, SPECS / "encoders" / "mobilenet_v1.yaml", meta, "{}")
    errors = _errors(model)
    assert errors[0].startswith(f"{meta}:") and fragment in errors[0]


def test_when_false_on_an_encoders_only_layer(tmp_path):
    encoder = tmp_path / "one.yaml"
    encoder.write_text("kind: encoder\nname: one\ndoc: one conv, switched off\ninput: [64, 64]\n"
                       "layers:\n  - {name: c1, op: conv, out: 8, kernel: 3, stride: 2, when: false}\n"
                       "taps: {stride2: c1}\n")
    code, err = _run("validate", str(encoder))
    assert code == 2 and "Traceback" not in err
    assert f"{encoder}:7:17: error: tap 'stride2' points at 'input', whose stride is 1, not 2" in err
