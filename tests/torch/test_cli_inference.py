"""``rtsegc compile --inference``, ``rtsegc export`` and ``rtsegc bench --inference/--compile``.

In-process through ``cli.main``; small inputs. torch.compile itself is not run here (Inductor
compiling C++ takes minutes on a 2-core machine); the missing-compiler path is.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import cli, compile_model

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"


def rtsegc(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_inference_reports_folded_params(capsys, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(compile_model(MODEL, (64, 96)).module.state_dict(), weights)
    code, out, err = rtsegc(capsys, "compile", MODEL, "--input", "64x96", "--inference",
                            "--weights", weights, "--channels-last")
    assert code == 0, err
    folded = compile_model(MODEL, (64, 96), inference=True).audit.params
    assert f"params       {folded:,} (matches audit {folded:,})" in out
    assert f"27 batch norms folded into convs, 0 kept, 0 dropout removed; params 3,369,080 -> {folded:,}" in out
    assert "in place     29 layers overwrite their input (add, relu)" in out


def test_compile_bad_weights_exit_2(capsys, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, weights)
    code, out, err = rtsegc(capsys, "compile", MODEL, "--input", "64x96", "--inference", "--weights", weights)
    assert code == 2
    assert ("mis-shaped (source shape vs module shape):\n"
            "    encoder.conv1.weight: (1,) vs (32, 3, 3, 3)") in err
    assert "Traceback" not in err
    code, _, err = rtsegc(capsys, "compile", MODEL, "--weights", tmp_path / "missing.pt")
    assert code == 2 and "no such file" in err


def test_export_exported_program_cli(capsys, tmp_path):
    out_file = tmp_path / "net.pt2"
    code, out, err = rtsegc(capsys, "export", MODEL, "--input", "64x96", "--format", "exported-program",
                            "-o", out_file, "--inference")
    assert code == 0, err
    assert out_file.stat().st_size > 0
    assert "example      1x3x64x96 (inference build)" in out


def test_export_fixed_size_layer_is_named(capsys, tmp_path, write_spec):
    spec = write_spec("enc.yaml", """
        kind: encoder
        name: flat
        input: [16, 16]
        layers:
          - {name: c, op: conv, out: 4, kernel: 3, stride: 2}
          - {name: fc, op: linear, out: 3}
    """)
    code, out, err = rtsegc(capsys, "export", spec, "--format", "exported-program", "-o",
                            tmp_path / "f.pt2", "--dynamic")
    assert code == 0, err
    assert "height       fixed at 16" in out
    assert "note         height is fixed at 16: layer 'encoder.fc': its weights are sized" in out


def test_bench_inference_rows(capsys):
    code, out, err = rtsegc(capsys, "bench", MODEL, "--input", "32x64", "--inference", "--iters", "2",
                            "--warmup", "1", "--json")
    assert code == 0, err
    rows = json.loads(out)["variants"]
    assert [r["variant"] for r in rows] == ["plain", "inference"]
    assert all(r["latency_ms"] > 0 for r in rows)


def test_bench_compile_without_a_cxx_compiler_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    code, out, err = rtsegc(capsys, "bench", MODEL, "--input", "32x64", "--compile")
    assert code == 2
    assert "needs a C++ compiler" in err and "Traceback" not in err


def test_export_to_a_missing_directory_exit_2(capsys, tmp_path):
    code, _, err = rtsegc(capsys, "export", MODEL, "--input", "64x96", "--format", "exported-program",
                          "-o", tmp_path / "no" / "net.pt2")
    assert code == 2 and "no such directory" in err and "Traceback" not in err
