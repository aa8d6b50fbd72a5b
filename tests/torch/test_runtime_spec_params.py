"""``--encoder-param``/``--meta-param`` under the runtime's commands, and the checkpoint that records them.

The network is SkipNet-MobileNet whose model file says ``width: 0.25`` (222k parameters for 5 classes);
``--encoder-param width=0.5`` makes it wider, so a rebuild that forgot the override has other tensor
shapes and the strict state-dict load of ``eval``/``predict`` fails. Training runs 2 steps at 32x64
on synthetic data (about a second on one thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SPECS
from rtseg_compiler import cli, compile_model
from rtseg_runtime.build import ModelArgs
from rtseg_runtime.data import write_synthetic_folder
from rtseg_runtime.evaluate import load_checkpoint_model

SIZE = (32, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"kind: model\nname: tiny_skipnet\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                    f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: 5\n"
                    f"input: [{SIZE[0]}, {SIZE[1]}]\nencoder_params: {{width: 0.25}}\n")
    return path


def _train_argv(spec: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(spec), "--data", "synthetic", "--classes", "5", "--batch-size", "2",
            "--eval-interval", "0", "--limit-train", "2", "--limit-val", "1", "--num-workers", "0",
            "--progress", "lines", "--lr", "0.01", "--out-dir", str(out), *extra]


def test_model_args_round_trip_their_spec_params():
    args = ModelArgs("m.yaml", None, None, (32, 64), 5, None, {"width": 0.5}, {"dropout": 0.1})
    data = args.to_dict()
    assert data["encoder_params"] == {"width": 0.5} and data["meta_params"] == {"dropout": 0.1}
    assert ModelArgs.from_dict(data) == args
    old = {k: v for k, v in data.items() if k not in ("encoder_params", "meta_params")}
    assert ModelArgs.from_dict(old) == ModelArgs("m.yaml", None, None, (32, 64), 5, None, {}, None)


def test_train_records_encoder_params_and_eval_predict_resume_rebuild_them(
        tiny_spec: Path, tmp_path: Path, runtime_commands, capsys, monkeypatch):
    import rtseg_runtime.report

    # summary.md's curves import matplotlib (1.4 s on a loaded machine); they are not what this checks
    monkeypatch.setattr(rtseg_runtime.report, "_svg_curves", lambda *args: False)
    wide = compile_model(tiny_spec, encoder_params={"width": 0.5}).audit.params
    narrow = compile_model(tiny_spec).audit.params
    assert wide > narrow
    out = tmp_path / "run"
    assert cli.main(_train_argv(tiny_spec, out, "--max-iters", "2", "--encoder-param", "width=0.5")) == 0, \
        capsys.readouterr().err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["model_args"]["encoder_params"] == {"width": 0.5}
    assert ckpt["config"]["encoder_params"] == {"width": 0.5}

    compiled, _, _ = load_checkpoint_model(out / "last.pt")
    assert compiled.audit.params == wide

    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out / "last.pt"), "--data", "synthetic", "--limit", "1",
                     "--json", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["images"] == 1

    images = write_synthetic_folder(tmp_path / "synth", SIZE, 5, splits={"val": 1}, seed=3)
    image = images / "val" / "synth_0000.png"
    assert cli.main(["predict", "--checkpoint", str(out / "last.pt"), str(image),
                     "-o", str(tmp_path / "pred"), "--device", "cpu"]) == 0, capsys.readouterr().err
    assert (tmp_path / "pred" / f"{image.stem}_label.png").is_file()

    # --resume compares what it would build with what the checkpoint records, spec params included
    capsys.readouterr()
    assert cli.main(_train_argv(tiny_spec, out, "--max-iters", "3", "--resume")) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert cli.main(_train_argv(tiny_spec, out, "--max-iters", "3", "--resume",
                                "--encoder-param", "width=0.5")) == 0, capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["iter_num"] == 3


def test_eval_builds_a_spec_with_params_and_refuses_no_model(tiny_spec: Path, runtime_commands, capsys):
    assert cli.main(["eval", str(tiny_spec), "--encoder-param", "width=0.5", "--classes", "5",
                     "--data", "synthetic", "--limit", "1", "--json", "--device", "cpu"]) == 0
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", "--data", "synthetic"])
    assert info.value.code == 2
    assert "give a model spec, or both --encoder and --meta, or --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", str(tiny_spec), "--encoder-param", "width"])
    assert "invalid parameter 'width': write NAME=VALUE" in capsys.readouterr().err


def test_bench_and_train_spell_spec_params_as_the_compiler_does(tiny_spec: Path, runtime_commands, capsys):
    wide = compile_model(tiny_spec, encoder_params={"width": 0.5}).audit.params
    assert cli.main(["bench", str(tiny_spec), "--encoder-param", "width=0.5", "--iters", "1", "--warmup", "0",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == wide
    from rtseg_runtime.train import parse_config

    cfg = parse_config(["m.yaml", "--encoder-param", "width=0.5", "--meta-param", "bias=true",
                        "--encoder-param", "depth=2"])
    assert cfg.encoder_params == {"width": 0.5, "depth": 2} and cfg.meta_params == {"bias": True}
    assert cfg.model_args().encoder_params == {"width": 0.5, "depth": 2}
    with pytest.raises(SystemExit):
        parse_config(["m.yaml", "--encoder", "e.yaml", "--meta", "m.yaml"])
    assert "give either a model spec or --encoder/--meta, not both" in capsys.readouterr().err
