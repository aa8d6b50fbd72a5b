"""The training/evaluation/benchmark runtime (``runtime/``) on tiny networks and tiny data.

The network is SkipNet-MobileNet from ``specs/`` at width 0.25 (222k parameters for 5 classes), so a
training step at 32x64 takes tens of milliseconds. Data are synthetic PNGs written to ``tmp_path``
(coloured rectangles whose colour is the class); the CamVid-mini test skips when ``../shared`` is absent.
Metric and loss tests use hand-made inputs whose expected numbers are derived in the docstrings.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rtseg_compiler.latency
import rtseg_runtime.losses
import rtseg_runtime.metrics
from conftest import REPO_ROOT, SPECS
from rtseg_compiler import cli, compile_model
from rtseg_runtime import evaluate as evaluate_mod
from rtseg_compiler.latency import benchmark
from rtseg_runtime.build import dataset_spec_for
from rtseg_runtime.data import IGNORE_INDEX, DatasetFolder, SyntheticSegmentation, load_label, write_synthetic_folder
from rtseg_runtime.datasets import DataError
from rtseg_runtime.losses import SegmentationLoss, class_pixel_counts, enet_class_weights
from rtseg_runtime.metrics import ConfusionMatrix, class_iou, confusion_matrix, mean_iou, pixel_accuracy, summarize
from rtseg_runtime.train import TrainConfig, get_lr, parse_config, train
from rtseg_runtime.train import main as train_main
from rtseg_runtime.weights import WeightsError, load_pretrained

CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid-mini"
SIZE = (32, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model_yaml(num_classes: int = 5, size: tuple[int, int] = SIZE) -> str:
    return (f"kind: model\nname: tiny_skipnet\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
            f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: {num_classes}\n"
            f"input: [{size[0]}, {size[1]}]\nencoder_params: {{width: 0.25}}\n")


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_model_yaml())
    return path


@pytest.fixture
def synth_dir(tmp_path: Path) -> Path:
    return write_synthetic_folder(tmp_path / "synth", SIZE, 5, splits={"train": 4, "val": 2}, seed=3)


# --------------------------------------------------------------------------- metrics

def test_iou_on_a_hand_made_confusion_matrix():
    """cm (rows truth) = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]:
    class 0: TP 5, FN 1, FP 2 -> 5/8; class 1: TP 3, FN 2, FP 1 -> 3/6; class 2: empty union -> NaN.
    mIoU = nanmean(0.625, 0.5) = 0.5625; pixel accuracy = 8/11."""
    cm = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    iou = class_iou(cm)
    assert iou[:2].tolist() == [0.625, 0.5] and math.isnan(iou[2])
    assert mean_iou(cm) == 0.5625
    assert pixel_accuracy(cm) == pytest.approx(8 / 11)
    m = summarize(cm)
    assert m.class_accuracy[:2] == (5 / 6, 3 / 5) and m.pixels == 11
    assert m.mean_class_accuracy == pytest.approx((5 / 6 + 3 / 5) / 2)
    assert m.to_json(["a", "b", "c"])["iou"]["c"] is None  # NaN -> null in JSON


def test_a_class_only_predicted_has_iou_zero_not_nan():
    """Class 2 never in the truth but predicted once: union 1, TP 0 -> IoU 0, and it lowers the mean."""
    cm = torch.tensor([[4, 0, 1], [0, 4, 0], [0, 0, 0]])
    assert class_iou(cm).tolist() == [0.8, 1.0, 0.0]
    assert mean_iou(cm) == pytest.approx(0.6)


def test_confusion_matrix_drops_ignored_pixels_before_counting():
    """Four pixels, one void (255) predicted as class 1: it must not become a false positive of 1."""
    target = torch.tensor([[0, 1], [IGNORE_INDEX, 1]])
    pred = torch.tensor([[0, 0], [1, 1]])
    cm = confusion_matrix(target, pred, num_classes=2)
    assert cm.tolist() == [[1, 0], [1, 1]]
    # An ignore index inside the class range (Cityscapes labelId 0 = unlabeled) is dropped as well.
    cm = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0]), num_classes=2, ignore_index=0)
    assert cm.tolist() == [[0, 0], [1, 1]]
    with pytest.raises(ValueError, match="predictions must lie"):
        confusion_matrix(torch.tensor([0]), torch.tensor([3]), num_classes=2)


def test_confusion_matrix_accumulates_logits_with_argmax():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 2, 0, 0] = 1.0  # pixel 0 -> class 2
    logits[0, 1, 0, 1] = 1.0  # pixel 1 -> class 1
    acc = ConfusionMatrix(3)
    acc.update(logits, torch.tensor([[[2, 0]]]))
    acc.update(torch.tensor([[[1, 1]]]), torch.tensor([[[1, IGNORE_INDEX]]]))
    assert acc.matrix.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]


# --------------------------------------------------------------------------- loss

def test_enet_weights_follow_one_over_ln():
    """Counts 60/30/10/0 -> p = 0.6, 0.3, 0.1, 0 -> w = 1/ln(1.02 + p); absent: 1/ln(1.02) = 50.5."""
    w = enet_class_weights(torch.tensor([60, 30, 10, 0]))
    expected = [1 / math.log(1.02 + p) for p in (0.6, 0.3, 0.1, 0.0)]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert w[3] == pytest.approx(50.4983, abs=1e-3)
    assert w.argsort().tolist() == [0, 1, 2, 3]  # rarer -> heavier


def test_pixel_counts_skip_void_and_out_of_range_values():
    labels = [torch.tensor([[0, 0, 1], [IGNORE_INDEX, 2, 7]]), torch.tensor([1, 1])]
    assert class_pixel_counts(labels, num_classes=3).tolist() == [2, 3, 1]


def test_weighted_loss_is_the_weight_normalised_mean_and_ignores_void():
    """Two counted pixels of classes 0 (w 1) and 1 (w 3), one void: loss = (1*l0 + 3*l1) / (1 + 3)."""
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [5.0, -5.0]]).T.reshape(1, 2, 1, 3)
    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    loss = SegmentationLoss(torch.tensor([1.0, 3.0]))(logits, target)
    l0 = -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[0]
    l1 = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[1]
    assert float(loss) == pytest.approx(float((l0 + 3 * l1) / 4))


def test_module_docstring_examples_run():
    for module in (rtseg_runtime.metrics, rtseg_runtime.losses, rtseg_compiler.latency):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --------------------------------------------------------------------------- data

def test_synthetic_folder_round_trips_and_void_becomes_ignore(synth_dir: Path):
    ds = DatasetFolder(dataset_spec_for(5), synth_dir, "train", None)
    assert len(ds) == 4
    x, y = ds[0]
    assert x.shape == (3, *SIZE) and x.dtype == torch.float32 and y.shape == SIZE and y.dtype == torch.int64
    raw = load_label(synth_dir / "trainannot" / ds.names[0])
    assert (raw == 5).any(), "the generator writes a void strip"
    assert set(y.unique().tolist()) <= {0, 1, 2, 3, 4, IGNORE_INDEX} and (y == IGNORE_INDEX).any()
    assert torch.equal(y == IGNORE_INDEX, torch.from_numpy(raw == 5))
    # Same pixels as the in-memory generator: PNG is lossless.
    img, lab = SyntheticSegmentation(4, SIZE, 5, seed=3 + 7919).arrays(0)
    assert np.array_equal(lab, raw)


def test_resizing_uses_nearest_for_labels(synth_dir: Path):
    ds = DatasetFolder(dataset_spec_for(5), synth_dir, "val", (16, 24))
    x, y = ds[1]
    assert x.shape == (3, 16, 24) and y.shape == (16, 24)
    raw_values = set(np.unique(load_label(synth_dir / "valannot" / ds.names[1])).tolist())
    kept = {v if v < 5 else IGNORE_INDEX for v in raw_values}
    assert set(y.unique().tolist()) <= kept  # nearest never invents a class id


def test_missing_label_folder_is_reported(tmp_path: Path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="trainannot"):
        DatasetFolder(dataset_spec_for("camvid"), tmp_path, "train", None)


# --------------------------------------------------------------------------- pretrained weights

def test_encoder_weights_load_by_key_from_another_compiled_module(tmp_path: Path, tiny_spec: Path):
    """A 5-class and a 7-class model share encoder keys and shapes; their heads differ."""
    other = tmp_path / "seven.yaml"
    other.write_text(tiny_model_yaml(num_classes=7))
    source = compile_model(other).module
    target = compile_model(tiny_spec).module
    path = tmp_path / "enc.pt"
    torch.save({"model": source.state_dict()}, path)  # a runtime-style checkpoint

    report = load_pretrained(target, path)
    assert report.ok and not report.missing and not report.unexpected
    assert len(report.loaded) == sum(1 for k in target.state_dict() if k.startswith("encoder."))
    assert all(k.startswith("head.") for k in report.unused) and report.unused
    key = "encoder.ds13.pw.weight"
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])
    assert not torch.equal(target.state_dict()["head.score32.weight"][:5],
                           source.state_dict()["head.score32.weight"][:5])

    # The whole model does not fit: strict loading names the head's shape mismatches and loads nothing.
    fresh = compile_model(tiny_spec).module
    before = fresh.state_dict()["encoder.conv1.weight"].clone()
    with pytest.raises(WeightsError, match=r"head\.score32\.weight: \(7, 256, 1, 1\) vs \(5, 256, 1, 1\)"):
        load_pretrained(fresh, source.state_dict(), prefix="")
    assert torch.equal(fresh.state_dict()["encoder.conv1.weight"], before)


def test_renamed_and_missing_keys_are_reported(tiny_spec: Path):
    model = compile_model(tiny_spec).module
    state = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    state["encoder.ds1.pw_bnn.weight"] = state.pop("encoder.ds1.pw_bn.weight")  # a typo'd key
    with pytest.raises(WeightsError) as info:
        load_pretrained(compile_model(tiny_spec).module, state)
    report = info.value.report
    assert report.missing == ("encoder.ds1.pw_bn.weight",)
    assert report.unexpected == (("encoder.ds1.pw_bnn.weight", "encoder.ds1.pw_bnn.weight"),)
    assert "did you mean encoder.ds1.pw_bn.weight?" in str(info.value)
    # rename maps a foreign prefix; non-strict loading copies what fits.
    foreign = {"backbone." + k[len("encoder."):]: v for k, v in state.items()}
    partial = load_pretrained(compile_model(tiny_spec).module, foreign, rename=[("backbone.", "encoder.")],
                              strict=False)
    assert not partial.ok and len(partial.loaded) == len(state) - 1


# --------------------------------------------------------------------------- training

def test_get_lr_schedules():
    base = dict(model="m.yaml", lr=1.0, min_lr=0.0, max_iters=110, warmup_iters=10)
    constant = TrainConfig(**base)
    assert [get_lr(i, constant) for i in (0, 9, 10, 109)] == [1 / 11, 10 / 11, 1.0, 1.0]
    poly = TrainConfig(**base, schedule="poly")
    assert get_lr(10, poly) == 1.0 and get_lr(60, poly) == pytest.approx(0.5 ** 0.9)
    assert get_lr(110, poly) == 0.0
    cosine = TrainConfig(**base, schedule="cosine")
    assert get_lr(60, cosine) == pytest.approx(0.5) and get_lr(110, cosine) == pytest.approx(0.0)


def test_config_parses_typed_options():
    cfg = parse_config(["m.yaml", "--input", "32x64", "--max-iters", "3", "--no-weighted-loss",
                        "--lr", "0.01", "--limit-val", "2"])
    assert cfg.input == (32, 64) and cfg.max_iters == 3 and cfg.weighted_loss is False
    assert cfg.lr == 0.01 and cfg.limit_val == 2 and cfg.eval_batches is None
    with pytest.raises(SystemExit):
        parse_config(["--max-iters", "3"])  # no model
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(model="m.yaml", schedule="step")


def _cfg(spec: Path, data: Path, out: Path, **kw) -> TrainConfig:
    options = dict(model=str(spec), data=str(data), classes="5", batch_size=2, max_iters=3, eval_interval=0,
                   lr=1e-2, out_dir=str(out), log_interval=1, num_workers=0)
    return TrainConfig(**{**options, **kw})


def test_train_writes_a_checkpoint_that_resumes(tiny_spec: Path, synth_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    first = train(_cfg(tiny_spec, synth_dir, out))
    assert first["iter_num"] == 3 and len(first["losses"]) == 3 and all(map(math.isfinite, first["losses"]))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    keys = {"model", "optimizer", "model_args", "config", "iter_num", "best_miou", "class_weights"}
    assert keys <= set(ckpt)
    assert ckpt["iter_num"] == 3 and ckpt["model_args"]["input_size"] == list(SIZE)
    assert 0.0 <= ckpt["metrics"]["miou"] <= 1.0 and (out / "best.pt").exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "iter" in r] == [1, 2, 3] and "eval" in log[-1]

    second = train(_cfg(tiny_spec, synth_dir, out, max_iters=5, resume=True))
    assert second["iter_num"] == 5 and len(second["losses"]) == 2
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["iter_num"] == 5
    assert not torch.equal(resumed["model"]["head.score8.weight"], ckpt["model"]["head.score8.weight"])
    assert resumed["optimizer"]["state"][0]["step"] == 5  # Adam's step count carried over


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_spec: Path, synth_dir: Path, tmp_path: Path):
    """Two images, batch 2: every step sees the same pixels, so Adam at lr 1e-2 must fit them."""
    result = train(_cfg(tiny_spec, synth_dir, tmp_path / "fit", max_iters=8, limit_train=2, limit_val=1))
    losses = result["losses"]
    assert min(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.skipif(not CAMVID.is_dir(), reason="camvid-mini not available at ../shared/data")
def test_evaluate_scores_two_camvid_images(tmp_path: Path, capsys):
    """A random network at 64x96 on 2 val images: every non-void label pixel is counted exactly once."""
    spec = tmp_path / "camvid.yaml"
    spec.write_text(tiny_model_yaml(num_classes=11, size=(64, 96)))
    csv = tmp_path / "cm.csv"
    rc = evaluate_mod.main([str(spec), "--data", str(CAMVID), "--split", "val", "--limit", "2", "--json",
                            "--batch-size", "2", "--save-confusion", str(csv)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in (CAMVID / "valannot").iterdir())[:2]
    expected = sum(int((load_label(CAMVID / "valannot" / n, (64, 96)) < 11).sum()) for n in names)
    assert out["images"] == 2 and out["pixels"] == expected
    assert 0.0 <= out["miou"] <= 1.0 and set(out["iou"]) >= {"sky", "road", "bicyclist"}
    rows = csv.read_text().splitlines()
    assert len(rows) == 12 and sum(int(v) for r in rows[1:] for v in r.split(",")[1:]) == expected


def test_command_line_errors_exit_2_without_a_traceback(tiny_spec: Path, tmp_path: Path, capsys):
    assert evaluate_mod.main([str(tiny_spec), "--classes", "5", "--data", str(tmp_path / "absent")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: model\nname: x\n")
    assert train_main([str(broken), "--data", "synthetic", "--max-iters", "1"]) == 2
    assert "broken.yaml" in capsys.readouterr().err
    # --resume with a checkpoint of another model (7 classes) is refused, naming the setting that differs.
    out = tmp_path / "run"
    train(_cfg(tiny_spec, "synthetic", out, max_iters=1, limit_train=2, limit_val=1, classes="7"))
    argv = [str(tiny_spec), "--data", "synthetic", "--classes", "5", "--out-dir", str(out), "--resume"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "num_classes: 7 in the checkpoint, 5 in this run" in err
    assert str(tiny_spec) not in err.partition("differs")[2]  # the settings that agree are left out


def _can_bind_localhost() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_bind_localhost(), reason="cannot bind a localhost port for the gloo rendezvous")
def test_ddp_two_processes_on_gloo(tiny_spec: Path, synth_dir: Path, tmp_path: Path):
    """torchrun, world size 2, 2 steps: rank 0 writes one checkpoint; the log shows both processes."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rtseg_runtime.train", str(tiny_spec), "--data", str(synth_dir), "--classes", "5",
           "--batch-size", "1", "--max-iters", "2", "--eval-interval", "0", "--device", "cpu",
           "--out-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 process(es) on cpu" in proc.stdout
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iter_num"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    void = sum(int((load_label(p) == 5).sum()) for p in (synth_dir / "valannot").iterdir())
    assert ckpt["metrics"]["pixels"] == 2 * SIZE[0] * SIZE[1] - void  # both val images, one per rank


# --------------------------------------------------------------------------- bench

def test_benchmark_reports_positive_times(tiny_spec: Path):
    module = compile_model(tiny_spec).module
    module.train()
    r = benchmark(module, SIZE, batch_size=2, warmup=1, iters=3, channels_last=True)
    assert r.latency_ms > 0 and r.min_ms <= r.latency_ms <= r.p90_ms and r.fps > 0
    assert r.input == (2, 3, *SIZE) and r.channels_last
    assert module.training, "benchmark restores the module's mode"


def test_rtsegc_bench_cli(tiny_spec: Path, capsys, runtime_commands):
    argv = ["bench", str(tiny_spec), "--warmup", "1", "--iters", "2", "--json", "--device", "cpu"]
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fps"] > 0 and data["input"] == [1, 3, *SIZE] and data["flops"] > 0
    assert cli.main(["bench", str(tiny_spec), "--iters", "1", "--warmup", "0", "--input", "64x64"]) == 0
    text = capsys.readouterr().out
    assert "1x3x64x64" in text and "images/s" in text
    assert cli.main(["bench"]) == 2  # usage error, not a traceback


def _aux_head_model(tmp_path: Path) -> Path:
    """The tiny SkipNet with a second, auxiliary output: class scores from the stride-16 tap."""
    meta = tmp_path / "aux_meta.yaml"
    meta.write_text((SPECS / "meta" / "skipnet.yaml").read_text().replace(
        "output: logits\n",
        "  - {name: aux_score, op: conv, input: encoder.stride16, out: num_classes, kernel: 1}\n"
        "  - {name: aux_logits, op: upsample, inputs: [aux_score, input], mode: bilinear}\n"
        "outputs: {out: logits, aux: aux_logits}\n"))
    model = tmp_path / "aux.yaml"
    model.write_text(tiny_model_yaml().replace(f"meta: {SPECS / 'meta' / 'skipnet.yaml'}", f"meta: {meta}"))
    return model


def test_auxiliary_heads_join_the_training_loss_and_evaluation_reads_the_main_output(
        synth_dir: Path, tmp_path: Path, capsys):
    """A model whose meta declares outputs: {out, aux} trains (loss = main + aux_weight x aux, as
    torchvision's FCN/DeepLab recipe), and evaluation scores its main output only."""
    model = _aux_head_model(tmp_path)
    runs = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        runs[weight] = train(_cfg(model, synth_dir, tmp_path / f"aux{weight}", max_iters=1, aux_weight=weight))
    assert all(math.isfinite(r["losses"][0]) for r in runs.values())
    assert runs[1.0]["losses"][0] > runs[0.0]["losses"][0]  # the same first batch, plus the aux term
    capsys.readouterr()  # training's progress lines
    rc = evaluate_mod.main([str(model), "--data", str(synth_dir), "--classes", "5", "--split", "val",
                            "--json", "--batch-size", "2", "--checkpoint", str(tmp_path / "aux1.0" / "last.pt")])
    assert rc == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["miou"] <= 1.0
