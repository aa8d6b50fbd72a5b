"""List-valued parameters read by subscript (``dims[i]``, ``len(dims)``), and numeric layer names.

Per-stage settings (widths, depths, heads, reduction ratios) are lists in the params of a file, a
block or a model override; an expression reads one item with an integer index, negative from the
end as in Python. The evaluator stays closed: only a name may be subscripted, slices and
subscripts of anything else are refused, and an index out of range says how many items there are.
"""

from __future__ import annotations

import pytest

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.pipeline import analyze
from rtseg_compiler.spec.expr import ExprError, evaluate, names_in


@pytest.mark.parametrize("text,value", [
    ("dims[0]", 32), ("dims[i]", 160), ("dims[-1]", 256), ("dims[i - 1] * 2", 128),
    ("len(dims)", 4), ("dims[len(dims) - 1]", 256), ("dims[1.0]", 64), ("heads[i] * 2 + dims[0]", 42),
])
def test_subscripts_read_list_items(text, value):
    env = {"dims": (32, 64, 160, 256), "heads": (1, 2, 5, 8), "i": 2}
    assert evaluate(text, env) == value


@pytest.mark.parametrize("text,message", [
    ("dims[4]", "index 4 is out of range for 'dims', which has 4 items \\(0 to 3\\)"),
    ("dims[-5]", "out of range"),
    ("dims[0.5]", "a list index must be an integer"),
    ("dims[0:2]", "slices are not allowed"),
    ("width[0]", "'width' is not a list"),
    ("dims", "'dims' is a list; write one item"),
    ("dims * 2", "'dims' is a list"),
    ("(dims)[0][0]", "only a list parameter can be subscripted"),
    ("max(1, 2)[0]", "only a list parameter can be subscripted"),
    ("len(width)", "len: 'width' is not a list"),
    ("len(1)", "write len\\(list_parameter\\)"),
    ("nested[0]", "'nested\\[0\\]' is \\(1, 2\\), not a number"),
])
def test_subscript_errors(text, message):
    env = {"dims": (32, 64, 160, 256), "width": 1.0, "nested": ((1, 2),)}
    with pytest.raises(ExprError, match=message):
        evaluate(text, env)


def test_a_list_longer_than_the_limit_is_refused():
    with pytest.raises(ExprError, match="over the limit of 1,024"):
        evaluate("dims[0]", {"dims": tuple(range(2000))})


def test_names_in_sees_the_list_and_the_index():
    assert names_in("dims[i + j] * len(heads)") == {"dims", "i", "j", "heads"}


STAGES = """
params: {dims: [8, 16, 24], depths: [1, 2, 1]}
blocks:
  stage:
    params: {out: ~, depth: 1}
    layers:
      - {name: down, op: conv, out: out, kernel: 3, stride: 2}
      - {name: unit, op: conv, out: out, kernel: 3, repeat: depth}
"""


def test_lists_drive_repeat_over_stages(encoder_spec):
    a = analyze(encoder_spec('- {name: s, block: stage, out: "dims[i]", depth: "depths[i]", '
                             'repeat: "len(dims)", start: 0}', input_size=(32, 32), channels=3,
                             extra=STAGES))
    assert [(r.name, r.output_shape[0]) for r in a.audit.layers] == [
        ("encoder.s.0.down", 8), ("encoder.s.0.unit", 8),
        ("encoder.s.1.down", 16), ("encoder.s.1.unit.1", 16), ("encoder.s.1.unit.2", 16),
        ("encoder.s.2.down", 24), ("encoder.s.2.unit", 24)]


def test_a_bad_index_is_located_at_the_expression(encoder_spec):
    path = encoder_spec('- {name: s, block: stage, out: "dims[i + 1]", repeat: 3}', input_size=(32, 32),
                        channels=3, extra=STAGES)
    with pytest.raises(SpecError, match="index 3 is out of range for 'dims'") as err:
        analyze(path)
    assert str(err.value).startswith(f"{path}:14:34: error: out: index 3")  # the argument's text


def test_a_list_of_non_numbers_is_refused_by_the_schema(encoder_spec):
    with pytest.raises(SpecError, match="params.dims"):
        analyze(encoder_spec("- {op: conv, out: 8, kernel: 1}", extra="params: {dims: [a, b]}\n"))


def test_numeric_layer_names_give_sequential_keys(encoder_spec):
    a = analyze(encoder_spec("""
        - {name: layer1, block: stage}
        """, input_size=(32, 32), channels=3, extra="""
        blocks:
          stage:
            layers:
              - {name: "0", op: conv, out: 8, kernel: 3, stride: 2, bias: false}
              - {name: "1", op: bn}
              - {name: res, op: add, inputs: ["0", "1"]}
        """))
    assert [r.name for r in a.audit.layers] == ["encoder.layer1.0", "encoder.layer1.1", "encoder.layer1.res"]


def test_a_model_overrides_a_list_parameter():
    from conftest import SPECS
    base = analyze(SPECS / "models" / "segformer_b0.yaml", (64, 64))
    shallow = analyze(SPECS / "models" / "segformer_b0.yaml", (64, 64),
                      encoder_params={"depths": [1, 1, 1, 1]})
    assert base.audit.params == 3_719_027
    assert shallow.audit.params < base.audit.params
    assert not any(".block.1." in r.name for r in shallow.audit.layers)


def test_the_command_line_takes_list_parameters():
    import argparse

    from rtseg_compiler.cli.args import parse_param
    assert parse_param("depths=[1, 1, 2,1]") == ("depths", [1, 1, 2, 1])
    assert parse_param("ratios=[0.5,1e1]") == ("ratios", [0.5, 10.0])
    for bad in ("depths=[1,x]", "depths=[]", "depths=[1,,2]"):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid list"):
            parse_param(bad)
