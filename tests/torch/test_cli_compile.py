"""``rtsegc compile``, ``visualize`` and ``flops --json`` on a shipped model (the happy paths).

Most cases call ``cli.main`` in-process (a subprocess costs a second of
imports each); one runs the installed ``rtsegc`` script end to end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SPECS
from rtseg_compiler import cli
from rtseg_compiler.pipeline import analyze

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
ENCODER = SPECS / "encoders" / "mobilenet_v1.yaml"
META = SPECS / "meta" / "skipnet.yaml"


def rtsegc(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- compile

def test_compile_checks_module_against_audit(capsys):
    code, out, err = rtsegc(capsys, "compile", MODEL)
    assert code == 0, err
    assert "output       1x20x512x1024 (matches inferred 1x20x512x1024)" in out
    assert "params       3,369,080 (matches audit 3,369,080)" in out
    assert "6,860,701,696" in out  # MACs at 512x1024


def test_compile_input_and_classes_flags(capsys):
    code, out, err = rtsegc(capsys, "compile", MODEL, "--input", "360x640", "--num-classes", "11")
    assert code == 0, err
    assert "input        1x3x360x640" in out
    assert "output       1x11x360x640 (matches" in out


def test_compile_encoder_meta_pair(capsys):
    code, out, err = rtsegc(capsys, "compile", "--encoder", ENCODER, "--meta", META, "--input", "256x512")
    assert code == 0, err
    assert "output       1x21x256x512 (matches" in out  # 21 classes without a model file


def test_compile_save_code(capsys, tmp_path):
    target = tmp_path / "forward.py"
    code, out, err = rtsegc(capsys, "compile", MODEL, "--save-code", target, "--no-forward")
    assert code == 0, err
    source = target.read_text()
    assert "def forward(self, x: torch.Tensor)" in source and "class SkipnetMobilenetV1(nn.Module)" in source
    assert "self.encoder.ds1.dw(" in source and "self.head.up8(" in source
    compile(source, str(target), "exec")  # valid Python


def test_installed_rtsegc_script_compiles(tmp_path):
    exe = shutil.which("rtsegc")
    argv = [exe] if exe else [sys.executable, "-m", "rtseg_compiler.cli"]
    proc = subprocess.run([*argv, "compile", str(MODEL), "--input", "64x128"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "matches inferred 1x20x64x128" in proc.stdout


# --------------------------------------------------------------------------- visualize

def test_visualize_dot(capsys, tmp_path):
    target = tmp_path / "net.dot"
    code, out, err = rtsegc(capsys, "visualize", MODEL, "-o", target)
    assert code == 0, err
    text = target.read_text()
    assert text.lstrip().startswith("digraph")
    assert "encoder.ds13.pw" in text and "head.logits" in text
    assert "20x512x1024" in text  # edges carry shapes
    assert f"wrote {target}" in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_visualize_svg(capsys, tmp_path):
    target = tmp_path / "net.svg"
    code, out, err = rtsegc(capsys, "visualize", MODEL, "--input", "360x640", "-o", target)
    assert code == 0, err
    svg = target.read_text()
    assert "<svg" in svg and "</svg>" in svg
    assert "head.logits" in svg


# --------------------------------------------------------------------------- flops --json

def test_flops_json_matches_analysis(capsys):
    code, out, err = rtsegc(capsys, "flops", MODEL, "--json")
    assert code == 0, err
    data = json.loads(out)
    audit = analyze(MODEL).audit
    assert data["model"] == "skipnet_mobilenet_v1"
    assert data["input"] == [1, 3, 512, 1024]
    assert data["macs"] == audit.macs == 6_860_701_696
    assert data["flops"] == 2 * data["macs"]
    assert data["params"] == audit.params == 3_369_080
    assert data["output_shape"] == [1, 20, 512, 1024]
    layers = data["layers"]
    assert [row["name"] for row in layers] == [row.name for row in audit.layers]
    for row in layers:
        assert {"name", "op", "output_shape", "macs", "params"} <= set(row)
    assert sum(row["macs"] for row in layers) == data["macs"]
    assert sum(row["params"] for row in layers) == data["params"]
    first = layers[0]
    assert first == {**first, "name": "encoder.conv1", "op": "conv", "output_shape": [32, 256, 512],
                     "macs": 256 * 512 * 32 * 3 * 9, "params": 864 + 32}  # + bias (conv_bias)
    up8 = next(row for row in layers if row["name"] == "head.up8")
    assert up8["macs"] == 64 * 128 * 20 * 20 * 16 * 16  # by input: 64·128·20·20·16² = 838,860,800
    assert up8["output_shape"] == [20, 512, 1024]


def test_flops_json_input_override(capsys):
    code, out, err = rtsegc(capsys, "flops", MODEL, "--json", "--input", "360x640")
    assert code == 0, err
    data = json.loads(out)
    assert data["input"] == [1, 3, 360, 640]
    assert data["output_shape"] == [1, 20, 360, 640]
    assert data["macs"] == analyze(MODEL, (360, 640)).audit.macs


def test_flops_json_is_the_only_stdout(capsys):
    """Scripts pipe ``--json`` into jq: nothing else may reach stdout, warnings go to stderr."""
    code, out, _ = rtsegc(capsys, "flops", "--encoder", ENCODER, "--meta", META, "--json")
    assert code == 0
    json.loads(out)


def test_repo_root_is_where_specs_live():
    assert (REPO_ROOT / "pyproject.toml").exists() and MODEL.exists()
