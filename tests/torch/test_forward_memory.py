"""The emitted forward's release order, and the allocator report of ``rtsegc bench``.

emit/torch_module.release_one_call_later moves fx's ``value = None`` one statement later; these
checks read the generated code (every value still released, never read after its release, one
statement after its last read) and compare outputs and gradients with fx's own order. The
memory effect itself is measured by benchmarks/bench_forward.py, not here.
"""

from __future__ import annotations

import copy
import io
import json
import re

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import cli, compile_model
from rtseg_compiler.allocator import ENV_VAR

SIZE = (32, 64)
MODELS = ("skipnet_mobilenet_v1", "skipnet_resnet18", "unet_resnet18", "bisenet_v1_resnet18")


def statements(code: str) -> list[tuple[str, set[str], list[str]]]:
    """(assigned name, names read, names released) per statement of a generated forward."""
    rows = []
    for line in code.splitlines():
        line = line.strip()
        if not line or line.startswith(("def ", "#")):
            continue
        body, _, released = line.partition(";  ")
        target, _, expr = body.partition(" = ") if not body.startswith("return") else ("", "", body)
        names = released.removesuffix(" = None").split(" = ") if released else []
        rows.append((target, set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr)), names))
    return rows


def fx_order(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The same module with fx's own release order (each value dropped right after its last read)."""
    plain = copy.deepcopy(module)
    plain.graph._codegen._body_transformer = None
    plain.recompile()
    return plain


def check_release_order(code: str) -> list[tuple[str, set[str], list[str]]]:
    """Assert that no value is read after its release and each goes one statement after its last read."""
    rows = statements(code)
    released_at = {name: i for i, (_, _, names) in enumerate(rows) for name in names}
    for i, (target, reads, _) in enumerate(rows):
        for name in reads & set(released_at):
            assert released_at[name] > i, f"{name} read in statement {i} after its release"
    last_read = {}
    for i, (_, reads, _) in enumerate(rows):
        for name in reads:
            last_read[name] = i
    for name, i in released_at.items():
        assert i == last_read[name] + 1, f"{name}: last read {last_read[name]}, released {i}"
    return rows


@pytest.mark.parametrize("model", MODELS)
def test_each_value_is_released_one_statement_after_its_last_read(model):
    module = compile_model(SPECS / "models" / f"{model}.yaml", SIZE).module
    rows = check_release_order(module.code)
    released_at = {name for _, _, names in rows for name in names}
    # Everything fx released is still released (or dies at the return, which follows directly).
    fx_released = {n for _, _, names in statements(fx_order(module).code) for n in names}
    assert fx_released - released_at <= rows[-2][1] | rows[-1][1], fx_released - released_at


@pytest.mark.parametrize("model", MODELS[:2])
def test_release_order_changes_no_number(model):
    """Outputs and parameter gradients equal to the bit with fx's own order, in eval and in training."""
    torch.manual_seed(0)
    module = compile_model(SPECS / "models" / f"{model}.yaml", SIZE).module
    plain = fx_order(module)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(module(x), plain(x))
    module.train(), plain.train()
    grads = []
    for m in (module, plain):
        m.zero_grad()
        m(x).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])


def test_release_order_survives_pickling():
    module = compile_model(SPECS / "models" / "skipnet_mobilenet_v1.yaml", SIZE).module
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    check_release_order(loaded.code)  # torch.fx re-traces the code on load (emit/torch_module.Retracer)
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"kind: model\nname: tiny_skipnet\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                    f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: 5\n"
                    f"input: [{SIZE[0]}, {SIZE[1]}]\nencoder_params: {{width: 0.25}}\n")
    return path


def test_bench_reports_page_faults_and_the_allocator(tiny_spec, capsys, runtime_commands, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "system")  # keep this test process's malloc as it is
    base = ["bench", str(tiny_spec), "--warmup", "1", "--iters", "2", "--device", "cpu", "--threads", "1"]
    assert cli.main(base + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["faults_per_call"] >= 0
    assert cli.main(base) == 0
    text = capsys.readouterr().out
    assert re.search(r"page faults +[\d,]+ minor per forward; malloc left as configured "
                     rf"\({ENV_VAR}=system\)", text), text
    assert cli.main(base + ["--inference"]) == 0
    text = capsys.readouterr().out
    assert "faults/fwd" in text and f"{ENV_VAR}=system" in text


@pytest.mark.parametrize("module", ["bench_cli", "predict", "evaluate", "train"])
def test_help_says_what_the_command_does_to_malloc(module):
    import importlib

    parser = importlib.import_module(f"rtseg_runtime.{module}").build_parser()
    text = " ".join(parser.format_help().split())
    assert "mallopt" in text and f"{ENV_VAR}=system" in text and "jemalloc" in text
