"""Parameter overrides from the API and the command line (``encoder_params``, ``--encoder-param``)."""

from __future__ import annotations

import pytest

from conftest import SPECS
from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.pipeline import analyze

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
ENCODER = SPECS / "encoders" / "mobilenet_v1.yaml"


def test_api_override_thins_the_encoder_and_keeps_the_model_files_own():
    full = analyze(MODEL, (224, 224)).audit
    half = analyze(MODEL, (224, 224), encoder_params={"width": 0.5})
    conv1 = half.resolved.graph.node("encoder.conv1")
    assert conv1.attrs["out"] == 16  # make_divisible(32 * 0.5)
    assert conv1.attrs["bias"] is True  # the model file's conv_bias: true still applies
    assert half.audit.macs < full.macs / 2


def test_override_on_an_encoder_alone_and_as_an_expression():
    a = analyze(ENCODER, encoder_params={"width": "3 / 4"})
    assert a.resolved.graph.node("encoder.conv1").attrs["out"] == 24


def test_unknown_override_is_a_located_error_with_a_suggestion():
    with pytest.raises(SpecError) as err:
        analyze(MODEL, encoder_params={"widht": 0.5})
    (d,) = err.value.errors
    assert "has no parameter 'widht'" in d.message and "did you mean 'width'" in d.hint


def test_cli_encoder_param(capsys):
    assert main(["flops", str(MODEL), "--encoder-param", "width=0.5", "--input", "224x224"]) == 0
    out = capsys.readouterr().out
    expected = analyze(MODEL, (224, 224), encoder_params={"width": 0.5}).audit.macs
    assert f"MACs         {expected:,}" in out


def test_cli_rejects_a_malformed_param(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["flops", str(MODEL), "--encoder-param", "width"])
    assert exit_info.value.code == 2
    assert "write NAME=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-1", "-1"), ("0.0", "0.0"), ('"1 - 1"', "0")])
def test_a_width_of_zero_or_less_is_reported_at_the_value_written(write_spec, value, shown):
    """The error names the model file's ``width`` value, not the first encoder layer it breaks."""
    model = write_spec("model.yaml", f"""
        kind: model
        name: thin
        doc: a width multiplier that leaves no channels
        encoder: {ENCODER}
        meta: {SPECS / "meta" / "skipnet.yaml"}
        num_classes: 20
        encoder_params: {{conv_bias: true, width: {value}}}
        """)
    with pytest.raises(SpecError) as err:
        analyze(model)
    (d,) = err.value.errors
    value_col = model.read_text().splitlines()[6].index("width: ") + len("width: ") + 1
    assert (d.loc.file, d.loc.line, d.loc.col) == (str(model), 7, value_col)
    assert "channel count must be positive" in d.message
    assert any(f"'width' = {shown} gives out of conv 'conv1' at " in str(n) and "mobilenet_v1.yaml:33:" in str(n)
               for n in d.notes)


def test_a_string_width_is_reported_at_the_value_written(write_spec):
    model = write_spec("model.yaml", f"""
        kind: model
        name: thin
        doc: a width multiplier that is a word
        encoder: {ENCODER}
        meta: {SPECS / "meta" / "skipnet.yaml"}
        num_classes: 20
        encoder_params: {{width: half}}
        """)
    with pytest.raises(SpecError) as err:
        analyze(model)
    (d,) = err.value.errors
    assert (d.loc.file, d.loc.line) == (str(model), 7) and "unknown name 'half'" in d.message


def test_a_width_of_zero_from_the_command_line_points_at_no_file_line(capsys):
    """The value was typed on the command line: the model file's encoder_params line is not its place."""
    assert main(["flops", str(MODEL), "--encoder-param", "width=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("<parameter overrides>: error: out: make_divisible: the channel count must be positive")
    assert "'width' = 0 gives out of conv 'conv1'" in err


def test_a_width_of_zero_through_a_block_argument_is_blamed_on_the_width(write_spec):
    """``out: "make_divisible(64 * width)"`` passed to a block: the width, not the argument, is wrong;
    a zero written directly in a field (``pad: 0`` read elsewhere) is not blamed for it."""
    encoder = write_spec("enc.yaml", """
        kind: encoder
        name: thin
        doc: a block whose width argument comes out as zero channels
        params: {width: 0, pad: 1}
        input: [32, 32]
        blocks:
          b:
            params: {out: ~}
            layers:
              - {name: c, op: conv, out: out, kernel: 3, padding: pad}
        layers:
          - {name: u1, block: b, out: "make_divisible(64 * width)"}
        """)
    with pytest.raises(SpecError) as err:
        analyze(encoder)
    (d,) = err.value.errors
    assert (d.loc.line, d.loc.col) == (4, 17) and "channel count must be positive" in d.message
    assert any("'width' = 0 gives out of conv 'u1.c'" in str(n) for n in d.notes)


def test_a_zero_count_written_in_the_layer_stays_at_the_layer(write_spec):
    encoder = write_spec("enc.yaml", """
        kind: encoder
        name: flat
        doc: a zero written in the field itself, next to a parameter that is legitimately zero
        params: {pad: 0}
        input: [32, 32]
        layers:
          - {name: c, op: conv, out: "8 * 0", kernel: 3, padding: pad}
        """)
    with pytest.raises(SpecError) as err:
        analyze(encoder)
    (d,) = err.value.errors
    assert (d.loc.line, "out must be positive, got 0") == (7, d.message.split(" (")[0])


def test_a_boolean_width_is_reported_at_the_value_written(write_spec):
    """YAML reads ``true`` as a bool, and a bool is an int to Python: without the check,
    ``width: true`` compiled as width 1."""
    model = write_spec("model.yaml", f"""
        kind: model
        name: thin
        doc: a width multiplier that is a boolean
        encoder: {ENCODER}
        meta: {SPECS / "meta" / "skipnet.yaml"}
        num_classes: 20
        encoder_params: {{conv_bias: true, width: true}}
        """)
    with pytest.raises(SpecError) as err:
        analyze(model)
    (d,) = err.value.errors
    value_col = model.read_text().splitlines()[6].index("width: ") + len("width: ") + 1
    assert (d.loc.file, d.loc.line, d.loc.col) == (str(model), 7, value_col)
    assert "'width' is a number (default 1.0), not a boolean: got true" in d.message
    assert any("mobilenet_v1.yaml:9:" in str(n) for n in d.notes)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_for_a_number_is_an_error_from_the_api(value):
    with pytest.raises(SpecError) as err:
        analyze(MODEL, encoder_params={"width": value})
    (d,) = err.value.errors
    assert f"not a boolean: got {str(value).lower()}" in d.message


def test_a_boolean_for_a_number_is_an_error_from_the_cli(capsys):
    assert main(["flops", str(MODEL), "--encoder-param", "width=true"]) == 2
    assert "'width' is a number (default 1.0), not a boolean" in capsys.readouterr().err


def test_a_boolean_parameter_still_takes_a_boolean():
    a = analyze(MODEL, (224, 224), encoder_params={"conv_bias": False})
    assert a.resolved.graph.node("encoder.conv1").attrs["bias"] is False
