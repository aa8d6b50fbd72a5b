"""The diagnostics collector and how several diagnostics print (``rtseg_compiler.diagnostics``).

The collector keeps errors when warnings fill it and counts what it drops. Printed, several
diagnostics come in source order (``in_source_order``): by file, line and column, stable for equal
places, unlocated ones last, whatever order the passes found them in.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import Diagnostic, Diagnostics, Location, SpecError, in_source_order

# --------------------------------------------------------------------------- the collector


def test_errors_are_never_crowded_out_by_warnings():
    diags = Diagnostics(limit=5)
    for i in range(10):
        diags.warning(f"unused {i}")
    diags.error("the real problem")
    assert diags.has_errors and any(d.message == "the real problem" for d in diags.items)


def test_errors_past_the_limit_still_fail_and_are_counted():
    diags = Diagnostics(limit=3)
    for i in range(5):
        diags.error(f"error {i}")
    with pytest.raises(SpecError) as err:
        diags.raise_if_errors()
    assert "2 more errors not shown" in err.value.diagnostics[3].message


# --------------------------------------------------------------------------- source order

# Few files, lines and columns, so that equal places (where stability shows) are common.
LOCATIONS = st.one_of(st.none(), st.builds(Location, st.sampled_from(["a.yaml", "b/c.yaml", "<stdin>"]),
                                           st.integers(0, 3), st.integers(0, 2)))


@given(st.lists(LOCATIONS, max_size=12))
def test_in_source_order_sorts_by_place_stably_with_unlocated_last(locations):
    found = [Diagnostic(f"#{i}", loc) for i, loc in enumerate(locations)]
    ordered = in_source_order(found)
    assert sorted(ordered, key=found.index) == found, "a permutation of what was found"
    located = [d for d in ordered if d.loc is not None]
    assert ordered[:len(located)] == located, "unlocated diagnostics come last"
    assert [d for d in ordered if d.loc is None] == [d for d in found if d.loc is None]
    places = [(d.loc.file, d.loc.line, d.loc.col) for d in located]
    assert places == sorted(places)
    for before, after in zip(located, located[1:]):
        if before.loc == after.loc:
            assert found.index(before) < found.index(after), "equal places keep the order found"


def test_spec_error_prints_in_source_order_and_keeps_what_it_holds():
    late, early = Diagnostic("late", Location("m.yaml", 9, 1)), Diagnostic("early", Location("m.yaml", 2, 5))
    summary = Diagnostic("1 more error not shown")
    warning = Diagnostic("w", Location("m.yaml", 2, 5), "warning")
    err = SpecError([late, early, warning, summary])
    assert err.diagnostics == (late, early, warning, summary)
    assert str(err).splitlines() == [d.render() for d in (early, warning, late, summary)]


def test_rtsegc_prints_errors_in_source_order(write_spec, capsys):
    """The link pass reports the layer's bad input (line 6) before the tap (line 3) that reads it."""
    path = write_spec("enc.yaml", """
        kind: encoder
        name: e
        taps: {stride2: nope}
        layers:
          - {name: a, op: conv, out: 8, kernel: 3, stride: 2}
          - {name: b, op: conv, out: 8, kernel: 3, input: missing}
        """)
    lines = path.read_text().splitlines()
    places = {word: next((n, text.index(word) + 1) for n, text in enumerate(lines, 1) if word in text)
              for word in ("nope", "missing")}
    assert places["nope"] < places["missing"]
    expected = [f"{Location(str(path), *places[word])}: error: unknown layer '{word}'"
                for word in ("nope", "missing")]
    assert main(["validate", str(path)]) == 2
    printed = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert printed == expected
