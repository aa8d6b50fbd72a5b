"""The zoo by name (rtseg_compiler/zoo.py): ``list_models``, zoo names on the command line, and the wheel.

No torch: names resolve to the same files a path would, so every number must be the path's.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rtseg_compiler import analyze, list_models
from rtseg_compiler.cli import main
from rtseg_compiler.zoo import resolve_spec, zoo_root

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"


def test_every_model_file_of_the_zoo_is_listed_once() -> None:
    names = list_models()
    assert len(names) == len(set(names)) and names == sorted(names)
    on_disk = {p.stem for p in (SPECS / "models").glob("*.yaml")}
    assert on_disk <= set(names)
    # Other folders' models carry their folder; encoder and meta files are not models.
    assert "paper/unet_mobilenet_v1" in names and "baselines/enet" in names
    assert not any(n.endswith(("_encoder", "_decoder", "tfseg_unet")) for n in names)


def test_every_listed_name_is_a_valid_model() -> None:
    for name in list_models():
        analysis = analyze(name)  # at the model's own input size
        assert analysis.audit.params > 0 and "model" in analysis.graph.files, name


def test_pattern_filters_with_shell_rules() -> None:
    assert list_models("skipnet_*") == sorted(p.stem for p in (SPECS / "models").glob("skipnet_*.yaml"))
    assert list_models("no_such_*") == []


@pytest.mark.parametrize("name", ["skipnet_mobilenet_v1", "paper/unet_mobilenet_v1", "baselines/enet"])
def test_a_name_resolves_to_the_zoo_file(name: str) -> None:
    expected = SPECS / (f"{name}.yaml" if "/" in name else f"models/{name}.yaml")
    assert Path(resolve_spec(name)).resolve() == expected.resolve()


def test_kind_decides_the_folder_of_an_ambiguous_name() -> None:
    """'fast_scnn' is a model, an encoder and a meta: each argument finds its own kind's file."""
    assert Path(resolve_spec("fast_scnn", "model")).parent.name == "models"
    assert Path(resolve_spec("fast_scnn", "encoder")).parent.name == "encoders"
    assert Path(resolve_spec("fast_scnn", "meta")).parent.name == "meta"
    assert Path(resolve_spec("resnet18", "model")).parent.name == "encoders"  # flops ENCODER works


def test_an_existing_file_wins_over_a_zoo_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "skipnet_mobilenet_v1").write_text("kind: model\n")
    assert resolve_spec("skipnet_mobilenet_v1") == "skipnet_mobilenet_v1"
    assert resolve_spec("./unet_vgg16") == "./unet_vgg16"  # a path is never looked up


def test_a_name_computes_what_its_path_computes() -> None:
    by_name = analyze("skipnet_mobilenet_v1", (360, 480))
    by_path = analyze(SPECS / "models" / "skipnet_mobilenet_v1.yaml", (360, 480))
    assert by_name.audit.to_json() == by_path.audit.to_json()
    pair = analyze(encoder="resnet18", meta="unet", input_size=(256, 256))
    assert pair.audit.macs == analyze(encoder=SPECS / "encoders" / "resnet18.yaml",
                                      meta=SPECS / "meta" / "unet.yaml", input_size=(256, 256)).audit.macs


def test_cli_takes_names_and_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "unet_resnet18", "--input", "256x512", "--json"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["flops", str(SPECS / "models" / "unet_resnet18.yaml"), "--input", "256x512", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_name
    assert main(["models", "-q", "unet_*"]) == 0
    assert capsys.readouterr().out.split() == list_models("unet_*")
    assert main(["models", "unet_*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list_models("unet_*")
    assert main(["models", "nothing_like_it*"]) == 2
    assert "no zoo model matches" in capsys.readouterr().err


def test_compare_expands_a_zoo_pattern_the_shell_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "dilation_*", "--input", "128x256", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == list_models("dilation_*")


def test_a_near_miss_name_is_an_error_that_suggests_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "skipnet_mobilenet"]) == 2
    err = capsys.readouterr().err
    assert "skipnet_mobilenet: error: no such file" in err
    assert "did you mean skipnet_mobilenet_v1" in err and "rtsegc models" in err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools")
def test_the_wheel_carries_the_zoo_and_finds_it_installed(tmp_path: Path) -> None:
    """Build the wheel, unpack it elsewhere, and compile a zoo model by name from there."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    if build.returncode != 0 and "setuptools" in build.stderr:
        pytest.skip(f"cannot build the wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n.removeprefix("rtseg_compiler/_zoo/") for n in archive.namelist()
                   if n.startswith("rtseg_compiler/_zoo/")}
        archive.extractall(tmp_path / "site")
    in_repo = {str(p.relative_to(SPECS)) for p in SPECS.rglob("*") if p.suffix in (".yaml", ".md")}
    assert in_repo <= shipped
    code = ("import sys, rtseg_compiler as r; from rtseg_compiler.zoo import zoo_root;"
            "assert str(zoo_root()).startswith(sys.argv[1]), zoo_root();"
            "print(len(r.list_models()), r.analyze('skipnet_mobilenet_v1', (64, 128)).audit.macs)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    count, macs = run.stdout.split()
    assert int(count) == len(list_models())
    assert int(macs) == analyze(SPECS / "models" / "skipnet_mobilenet_v1.yaml", (64, 128)).audit.macs
