"""``rtsegc flops --json --totals``: the totals of ``--json`` without its per-layer rows.

The totals object must be exactly the full object minus ``layers`` (so a script can switch forms without
renaming a key), it must be small, and ``--totals`` in a combination that would silently mean nothing is
a usage error (status 2), not an ignored flag.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtseg_compiler.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


@pytest.mark.parametrize("convention", ["mac", "flop", "tf"])
def test_totals_are_the_full_object_without_layers(capsys, convention):
    status, full_text, err = _run(capsys, "flops", str(MODEL), "--json", "--input", "256x512",
                                  "--convention", convention)
    assert status == 0, err
    status, totals_text, err = _run(capsys, "flops", str(MODEL), "--json", "--totals", "--input", "256x512",
                                    "--convention", convention)
    assert status == 0, err
    full, totals = json.loads(full_text), json.loads(totals_text)
    assert "layers" not in totals
    assert totals == {key: value for key, value in full.items() if key != "layers"}
    assert totals["input"] == [1, 3, 256, 512] and totals["output_shape"] == [1, 20, 256, 512]
    assert totals["convention"] == convention
    assert totals["macs"] == sum(row["macs"] for row in full["layers"])
    assert totals["params"] == sum(row["params"] for row in full["layers"]) == 3_369_080
    by_convention = {"mac": totals["macs"], "flop": totals["flops"], "tf": totals["tf_flops"]}
    assert totals["total"] == by_convention[convention]
    # SkipNet has 92 layers: the rows are nearly all of the 27 kB; the totals are under 400 bytes.
    assert len(totals_text) < 1000 < 20 * len(totals_text) < len(full_text)


def test_totals_keep_per_output_costs(write_spec, specs_dir, capsys):
    """A model with auxiliary heads keeps its ``outputs`` entries: they are totals, one per output."""
    write_spec("meta.yaml", """
        kind: meta
        name: two_heads
        requires: [stride16, stride32]
        layers:
          - {name: logits, op: conv, input: encoder.stride32, out: num_classes, kernel: 1}
          - {name: aux, op: conv, input: encoder.stride16, out: num_classes, kernel: 1}
        outputs: {out: logits, aux: aux}
        """)
    path = write_spec("model.yaml", f"""
        kind: model
        name: two_heads_model
        encoder: {specs_dir / 'encoders' / 'mobilenet_v1.yaml'}
        meta: meta.yaml
        num_classes: 3
        input: [64, 64]
        """)
    status, out, err = _run(capsys, "flops", str(path), "--json", "--totals")
    assert status == 0, err
    data = json.loads(out)
    assert [o["name"] for o in data["outputs"]] == ["out", "aux"]
    assert sum(o["macs"] for o in data["outputs"]) == data["macs"]
    assert "layers" not in data


@pytest.mark.parametrize("argv, message", [
    (["--totals"], "--totals shapes the JSON object: add --json"),
    (["--totals", "--json", "--per-layer"], "--totals leaves out the per-layer rows that --per-layer"),
])
def test_totals_in_a_meaningless_combination_is_a_usage_error(capsys, argv, message):
    status, out, err = _run(capsys, "flops", str(MODEL), *argv)
    assert status == 2 and out == ""
    assert message in err


def test_help_names_totals(capsys):
    with pytest.raises(SystemExit):
        main(["flops", "--help"])
    assert "--totals" in capsys.readouterr().out
