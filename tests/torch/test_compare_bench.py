"""``rtsegc compare --bench``: each row gets the latency and images/s of ``rtsegc bench``'s method."""

from __future__ import annotations

import json

from conftest import SPECS
from rtseg_compiler.cli import main

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"


def test_compare_bench_adds_latency_and_fps(capsys):
    code = main(["compare", str(MODEL), str(SPECS / "models" / "skipnet_shufflenet_v1.yaml"),
                 "--input", "64x128", "--bench", "--device", "cpu", "--warmup", "1", "--iters", "2",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = json.loads(out)
    assert [r["model"] for r in rows] == ["skipnet_mobilenet_v1", "skipnet_shufflenet_v1"]
    for row in rows:
        assert row["device"] == "cpu" and row["batch_size"] == 1 and row["latency_ms"] > 0
        assert abs(row["fps"] - 1000.0 / row["latency_ms"]) < 1e-2 * row["fps"]
        assert row["input"] == [1, 3, 64, 128]
    code = main(["compare", str(MODEL), "--input", "64x128", "--bench", "--device", "cpu",
                 "--warmup", "1", "--iters", "2"])
    out, _ = capsys.readouterr()
    assert code == 0 and "latency (ms)" in out and "images/s" in out and "median forward" in out
