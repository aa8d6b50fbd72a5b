"""The expansion pass on parameters, blocks and references (passes/expand.py, passes/env.py). No torch.

What expansion must get right beyond the happy path, each found broken once: parameters that
refer to parameters are evaluated once each and a loop among them is reported; a block using
itself is reported at once, naming the chain; forward references work as a block's input and in
long chains, and their loops are reported without placeholder tokens in the message; dotted
references work inside blocks; reserved layer names are refused rather than silently shadowed;
``i`` is 0 outside a repeat; ``in_channels`` in parameters is refused early; an error in a
block's body is reported once, not once per use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.pipeline import analyze, validate_file

from conftest import no_hang


def _errors(path: Path) -> list:
    return [d for d in validate_file(path) if d.severity == "error"]


def _channels(path: Path) -> dict[str, int]:
    a = analyze(path)
    return {name: t.channels for name, t in a.resolved.types.items()}


def test_parameter_chain_is_evaluated_once_per_parameter(write_spec):
    """p_k sums p_{k-1} 40 times: 40^6 = 4.1e9 evaluations without memoisation (a hang).

    p6 = 40^6 = 4,096,000,000; 4,096,000,000 % 7 = 1, so the conv has 1 + 1 = 2 channels.
    """
    sums = "\n".join(f"  p{k}: \"{'+'.join([f'p{k - 1}'] * 40)}\"" for k in range(1, 7))
    path = write_spec("expo.yaml", f"""
kind: encoder
name: x
input: [8, 8]
params:
  p0: 1
{sums}
layers:
  - {{name: c, op: conv, kernel: 1, out: "p6 % 7 + 1"}}
""")
    with no_hang(20):
        assert _channels(path)["encoder.c"] == 40 ** 6 % 7 + 1 == 2


def test_parameter_loop_is_still_reported(write_spec):
    path = write_spec("loop.yaml", """
        kind: encoder
        name: x
        input: [8, 8]
        params: {a: "b + 1", b: "a + 1"}
        layers:
          - {name: c, op: conv, kernel: 1, out: a}
        """)
    with pytest.raises(SpecError, match="loop"):
        analyze(path)


def test_block_using_itself_is_reported_at_once_naming_the_chain(write_spec):
    """4 self-uses nested 16 deep were 4^16 expansions (a hang); now 1 error per use site."""
    path = write_spec("self.yaml", """
        kind: encoder
        name: s
        input: [32, 32]
        blocks:
          b:
            params: {}
            layers:
              - {name: x1, block: c}
              - {name: x2, block: c}
          c:
            params: {}
            layers:
              - {name: y1, block: b}
              - {name: y2, block: b}
        layers:
          - {name: a, block: b}
          - {name: a2, block: b}
        """)
    with no_hang(20):
        errors = _errors(path)
    rendered = [d.render() for d in errors]
    assert len(errors) == 2, rendered  # y1 and y2, each once although b is used twice
    assert all("block 'b' uses itself (b -> c -> b)" in r for r in rendered), rendered
    assert sorted(d.loc.line for d in errors) == [13, 14]


@pytest.mark.parametrize("out, expected", [("out + block_in_channels", 4 + 8),
                                           ("out", 8 * 2)])
def test_forward_reference_as_block_input(write_spec, out, expected):
    """``input: z`` with z defined later: block_in_channels / in_channels read z's 8 channels."""
    arg = "4" if "block_in_channels" in out else '"in_channels * 2"'
    path = write_spec("fwd.yaml", f"""
        kind: encoder
        name: fwd
        input: [32, 32]
        blocks:
          b:
            params: {{out: ~}}
            layers:
              - {{name: c, op: conv, kernel: 1, out: "{out}"}}
        output: a
        layers:
          - {{name: a, block: b, input: z, out: {arg}}}
          - {{name: z, op: conv, input: input, kernel: 1, out: 8}}
        """)
    assert _channels(path)["encoder.a.c"] == expected


def test_long_chain_of_forward_references_resolves(write_spec):
    """100 pass-through blocks, each reading the next: longer than the old 64-hop cap."""
    n = 100
    uses = "\n".join(f"  - {{name: a{k}, block: pt, input: a{k + 1}}}" for k in range(n))
    path = write_spec("chain.yaml", f"""
kind: encoder
name: ch
input: [8, 8]
blocks:
  pt:
    params: {{}}
    layers:
      - {{name: r, op: relu}}
    output: input
output: first
layers:
  - {{name: first, op: conv, kernel: 1, out: 5, input: a0}}
{uses}
  - {{name: a{n}, op: conv, kernel: 1, out: 7, input: input}}
""")
    a = analyze(path)
    first = next(n for n in a.resolved.graph.nodes if n.name == "encoder.first")
    assert first.inputs == (f"encoder.a{n}",)
    assert a.resolved.types["encoder.first"].channels == 5


def test_forward_reference_loop_through_blocks_is_reported_without_tokens(write_spec):
    path = write_spec("cyc.yaml", """
        kind: encoder
        name: cyc
        input: [8, 8]
        blocks:
          pt:
            params: {}
            layers:
              - {name: r, op: relu}
            output: input
        layers:
          - {name: first, op: relu, input: a0}
          - {name: a0, block: pt, input: a1}
          - {name: a1, block: pt, input: a0}
        """)
    rendered = "\n".join(d.render() for d in _errors(path))
    assert "refers to itself" in rendered
    assert "\x00" not in rendered


def test_dotted_references_work_inside_blocks(write_spec):
    """``x.c`` (a layer in a nested block use) and ``o.x`` (a nested block use) resolve."""
    path = write_spec("nest.yaml", """
        kind: encoder
        name: nest
        input: [32, 32]
        blocks:
          inner:
            params: {}
            layers:
              - {name: c, op: conv, kernel: 1, out: 4}
              - {name: d, op: relu}
          outer:
            params: {}
            layers:
              - {name: y, op: add, inputs: [x.c, x]}
              - {name: x, block: inner, input: input}
        output: b
        layers:
          - {name: o, block: outer}
          - {name: b, op: add, inputs: [o.x.c, o.x, o.y]}
        """)
    a = analyze(path)
    nodes = {n.name: n for n in a.resolved.graph.nodes}
    assert nodes["encoder.o.y"].inputs == ("encoder.o.x.c", "encoder.o.x.d")
    assert nodes["encoder.b"].inputs == ("encoder.o.x.c", "encoder.o.x.d", "encoder.o.y")


@pytest.mark.parametrize("kind, name", [("encoder", "input"), ("meta", "input"), ("meta", "encoder")])
def test_reserved_layer_names(write_spec, kind, name):
    head = ("kind: encoder\nname: x\ninput: [8, 8]\n" if kind == "encoder"
            else "kind: meta\nname: m\nrequires: [stride1]\n")
    first_input = "" if kind == "encoder" else ", input: encoder.stride1"
    path = write_spec("r.yaml", head + f"layers:\n  - {{name: {name}, op: conv, kernel: 1, out: 16"
                      f"{first_input}}}\n  - {{name: b, op: conv, kernel: 1, out: 4}}\n")
    errors = _errors(path)
    assert any(f"'{name}' is a reserved name" in d.message for d in errors), errors
    hit = next(d for d in errors if "reserved" in d.message)
    assert (hit.loc.line, hit.loc.col) == (5, 12)


def test_i_is_zero_outside_a_repeat(write_spec):
    path = write_spec("i.yaml", """
        kind: encoder
        name: i
        input: [8, 8]
        layers:
          - {name: a, op: conv, kernel: 1, out: "8 + i"}
          - {name: r, op: conv, kernel: 1, out: "4 + i", repeat: 2}
        """)
    ch = _channels(path)
    assert (ch["encoder.a"], ch["encoder.r.1"], ch["encoder.r.2"]) == (8, 4, 5)


def test_in_channels_in_parameters_is_rejected_early_and_clearly(write_spec):
    path = write_spec("inch.yaml", """
        kind: encoder
        name: i
        input: [32, 32]
        params: {w: "in_channels * 2"}
        blocks:
          b:
            params: {out: "in_channels * 4"}
            layers:
              - {name: c, op: conv, kernel: 1, out: out}
        layers:
          - {name: a, op: conv, kernel: 1, out: 8}
          - {name: d, block: b}
          - {name: e, op: conv, kernel: 1, out: w}
        """)
    errors = [d for d in _errors(path) if "'in_channels' is not available" in d.message]
    assert sorted((d.loc.line, d.loc.col) for d in errors) == [(4, 13), (7, 19)]
    assert any("block_in_channels" in (d.hint or "") for d in errors)


def test_block_body_expression_error_reported_once(write_spec):
    """A typo in a block used three times is one error, not three."""
    path = write_spec("typo.yaml", """
        kind: encoder
        name: t
        input: [32, 32]
        params: {width: 1}
        blocks:
          b:
            params: {out: ~}
            layers:
              - {name: c, op: conv, kernel: 1, out: "out * widht"}
        layers:
          - {name: u1, block: b, out: 4}
          - {name: u2, block: b, out: 8}
          - {name: u3, block: b, out: 16}
        """)
    errors = [d for d in _errors(path) if "widht" in d.message]
    assert len(errors) == 1, [d.render() for d in errors]
    assert errors[0].hint and "width" in errors[0].hint
