"""Issue 11: one CLI, dataset files, bad data, atomic checkpoints, augmentation, predictions.

Tiny everything: a width-0.25 SkipNet-MobileNet at 32x64, a seeded 6-image Cityscapes tree, 1-2 steps.
``runtime_commands`` (tests/conftest.py) makes this checkout's entry points visible to rtsegc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, SPECS
from rtseg_compiler import SpecError, cli
from rtseg_runtime.augment import apply_augment, parse_augment
from rtseg_runtime.checkpoint import PAUSE_ENV
from rtseg_runtime.datasets import load_dataset_spec, parse_dataset_text, write_tiny_cityscapes
from rtseg_runtime.metrics import category_metrics

SIZE = (32, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(tmp_path: Path, num_classes: int) -> Path:
    path = tmp_path / f"tiny{num_classes}.yaml"
    path.write_text(f"kind: model\nname: tiny_skipnet\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                    f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: {num_classes}\n"
                    f"input: [{SIZE[0]}, {SIZE[1]}]\nencoder_params: {{width: 0.25}}\n")
    return path


def _train_argv(spec: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(spec), "--data", str(data), "--out-dir", str(out), "--batch-size", "2",
            "--max-iters", "2", "--eval-interval", "0", "--num-workers", "0", "--lr", "1e-2",
            "--device", "cpu", *extra]


# --------------------------------------------------------------------------- dataset files

def test_cityscapes_file_has_the_official_table_and_categories():
    spec = load_dataset_spec("cityscapes")
    assert spec.num_classes == 19 and spec.ignore_index == 255
    assert spec.classes[0] == "road" and spec.classes[18] == "bicycle"
    lut = np.asarray(spec.lut)
    # road 7->0, sidewalk 8->1, sky 23->10, car 26->13, bicycle 33->18; parking 9 and caravan 29 not scored
    assert lut[[7, 8, 23, 26, 33]].tolist() == [0, 1, 10, 13, 18]
    assert lut[[0, 1, 9, 29, 30]].tolist() == [255] * 5
    assert lut[34] == -1 and lut[200] == -1  # not Cityscapes ids: errors, not void
    assert sorted(int(v) for v in lut if 0 <= v < 255) == list(range(19))
    assert list(spec.categories) == ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]
    assert sum(len(v) for v in spec.categories.values()) == 19
    camvid = load_dataset_spec("camvid")
    assert camvid.num_classes == 11 and camvid.lut[11] == 255 and camvid.lut[40] == -1
    assert load_dataset_spec("folder").layout == "folder"
    assert load_dataset_spec(str(REPO_ROOT / "specs" / "datasets" / "camvid.yaml")).name == "camvid"


def test_bad_dataset_files_give_located_errors(tmp_path: Path):
    text = ("kind: dataset\nname: x\nlayout: segnet\nclasses:\n  - {name: a}\n"
            "  - {name: b, colour: [1, 2, 3]}\n"
            "categories:\n  things: [a, c]\n")
    with pytest.raises(SpecError) as info:
        parse_dataset_text(text, "bad.yaml")
    assert str(info.value).startswith("bad.yaml:6:")
    assert "unknown field 'colour'" in str(info.value)
    with pytest.raises(SpecError) as info:
        parse_dataset_text(text.replace("colour", "color"), "bad.yaml")
    assert "bad.yaml:8:" in str(info.value) and "'c' is not a class" in str(info.value)
    with pytest.raises(SpecError) as info:
        parse_dataset_text("kind: dataset\nname: x\nlayout: segnet\nclasses: [{name: a}]\nlabels:\n"
                           "  - {id: 3, train_id: 4}\n", "t.yaml")
    assert "t.yaml:6:" in str(info.value) and "train_id 4 is not a class" in str(info.value)
    with pytest.raises(SpecError, match="no such dataset.*cityscapes"):
        load_dataset_spec("citiscapes")


# --------------------------------------------------------------------------- one CLI

def test_runtime_commands_come_through_entry_points(runtime_commands, capsys):
    assert {ep.name for ep in runtime_commands} == {"train", "eval", "predict", "bench", "study"}
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("train", "eval", "predict", "bench", "validate"):
        assert f"    {name}" in out
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rtsegc train") and "--max-iters" in out and "--dataset" in out


def test_the_compiler_never_imports_the_runtime():
    """The dependency runs runtime -> compiler only."""
    for path in (REPO_ROOT / "rtseg_compiler").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import runtime", "from runtime", "import rtseg_runtime",
                                            "from rtseg_runtime")), f"{path}: {stripped}"


# --------------------------------------------------------------------------- Cityscapes end to end

def test_cityscapes_train_eval_predict_from_another_directory(tmp_path: Path, runtime_commands, capsys,
                                                              monkeypatch):
    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, seed=1)
    out = tmp_path / "run"
    spec = _model(tmp_path, 19)
    argv = _train_argv(spec, data, out, "--dataset", "cityscapes",
                       "--augment", "scale=0.75-1.25,crop=24x48,hflip=0.5,jitter=0.2")
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert (out / "last.pt").is_file() and (out / "summary.md").is_file()
    summary = (out / "summary.md").read_text()
    assert "| road |" in summary and "category" in summary
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert set(ckpt["specs"]) == {"model", "encoder", "meta", "dataset"}
    # evaluate from elsewhere, with the spec files gone: everything comes from the checkpoint
    spec.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out / "last.pt"), "--data", str(data), "--json",
                     "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "cityscapes" and len(result["iou"]) == 19 and "road" in result["iou"]
    assert 0 <= result["miou"] <= 1 and 0 <= result["pixel_accuracy"] <= 1
    assert set(result["category_iou"]) == set(load_dataset_spec("cityscapes").categories)
    assert set(result["iiou"]) == {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}
    assert result["miiou"] is None or 0 <= result["miiou"] <= 1
    # predictions at each image's own size
    image = next((data / "leftImg8bit" / "val").glob("*/*.png"))
    big = tmp_path / "big.png"
    Image.open(image).resize((80, 40)).save(big)
    assert cli.main(["predict", "--checkpoint", str(out / "last.pt"), str(big), str(image.parent),
                     "-o", str(tmp_path / "pred"), "--overlay", "0.5", "--device", "cpu"]) == 0
    label = Image.open(tmp_path / "pred" / "big_label.png")
    assert label.size == (80, 40) and label.mode == "L" and np.asarray(label).max() < 19
    colours = {tuple(c) for c in np.asarray(Image.open(tmp_path / "pred" / "big_color.png")).reshape(-1, 3)}
    assert colours <= {tuple(c) for c in load_dataset_spec("cityscapes").colors}
    assert (tmp_path / "pred" / "big_overlay.png").is_file()
    assert len(list((tmp_path / "pred").glob("*_overlay.png"))) == 2  # big + the one val image of its city


def test_category_iou_merges_classes():
    spec = load_dataset_spec("cityscapes")
    cm = torch.zeros(19, 19, dtype=torch.int64)
    cm[13, 14] = 10  # car predicted as truck: wrong class, right category (vehicle)
    cm[0, 0] = 5
    cm[0, 1] = 5  # road as sidewalk: both flat
    result = category_metrics(cm, spec)
    assert result["category_iou"]["vehicle"] == 1.0 and result["category_iou"]["flat"] == 1.0
    assert result["category_iou"]["sky"] is None


def test_iiou_weights_instances_by_their_size():
    """A big person found and a small one missed: IoU favours the big one, iIoU weighs them alike."""
    from rtseg_runtime.metrics import InstanceScores, confusion_matrix

    spec = load_dataset_spec("cityscapes")
    person = spec.classes.index("person")
    ids = torch.zeros(1, 20, 20, dtype=torch.int64)
    ids[0, :10, :10] = 24 * 1000 + 0  # 100 px person, predicted right
    ids[0, 15:17, 15:17] = 24 * 1000 + 1  # 4 px person, missed (predicted road)
    pred = torch.zeros(1, 20, 20, dtype=torch.int64)  # road everywhere...
    pred[0, :10, :10] = person  # ...except the big person
    truth = torch.where(ids > 1000, torch.tensor(person), torch.tensor(0))
    scores = InstanceScores(spec)
    scores.update(pred, ids, torch.tensor([1.0]))
    cm = confusion_matrix(truth, pred, spec.num_classes)
    result = scores.compute(cm)
    assert result["iiou"]["person"] == pytest.approx(0.5)  # S / (S + 0 + S)
    assert float(cm[person, person]) / float(cm[person].sum()) == pytest.approx(100 / 104)
    assert result["iiou"]["car"] is None and result["miiou"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- bad data

def _segnet_tree(root: Path, n: int = 3, value: int = 2) -> Path:
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((*SIZE, 3), 60 * (i + 1), np.uint8)).save(root / split / f"s{i}.png")
            label = np.full(SIZE, value, np.uint8)
            label[:, :4] = 11  # Unlabelled
            Image.fromarray(label).save(root / f"{split}annot" / f"s{i}.png")
    return root


@pytest.mark.parametrize("fault,expected", [
    ("small_label", "label is 10x10 but its image s1.png is 32x64"),
    ("value_40", "label values 40 are neither classes nor ignored in dataset 'camvid' (allowed: 0..11, 255)"),
    ("no_label", "s1.png: no label file for this image"),
    ("unreadable", "s1.png: unreadable image"),
])
def test_bad_samples_are_named_and_skippable(tmp_path: Path, runtime_commands, capsys, fault, expected):
    data = _segnet_tree(tmp_path / "camvid")
    target = data / "trainannot" / "s1.png"
    if fault == "small_label":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(target)
    elif fault == "value_40":
        Image.fromarray(np.full(SIZE, 40, np.uint8)).save(target)
    elif fault == "no_label":
        target.unlink()
    else:
        (data / "train" / "s1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    spec = _model(tmp_path, 11)
    argv = _train_argv(spec, data, tmp_path / "run", "--dataset", "camvid")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli.main(argv + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped [train]:" in out and expected in out and "2 train / 3 val images" in out


def test_a_missing_folder_is_one_error(tmp_path: Path, runtime_commands, capsys):
    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, splits={"train": 2})
    argv = _train_argv(_model(tmp_path, 19), data, tmp_path / "run", "--dataset", "cityscapes")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data / 'leftImg8bit' / 'val'}: missing folder"), err


# --------------------------------------------------------------------------- checkpoints

def test_sigkill_during_a_checkpoint_write_keeps_the_last_complete_one(tmp_path: Path):
    """A real kill -9 after the temporary file is written, before the rename (RTSEG_CHECKPOINT_PAUSE)."""
    target = tmp_path / "last.pt"
    torch.save({"iter_num": 1, "w": torch.ones(3)}, target)
    code = ("import sys, torch; sys.path.insert(0, sys.argv[2]); from rtseg_runtime.checkpoint import atomic_save; "
            "atomic_save({'iter_num': 2, 'w': torch.zeros(100000)}, sys.argv[1])")
    env = {**os.environ, PAUSE_ENV: "60"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(REPO_ROOT)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()  # printed once the temporary file is complete
        assert "pausing" in line, line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    survivor = torch.load(target, weights_only=True)
    assert survivor["iter_num"] == 1 and torch.equal(survivor["w"], torch.ones(3))
    leftover, = tmp_path.glob(".last.pt.*.tmp")  # complete but never renamed; the next run removes it
    assert torch.load(leftover, weights_only=True)["iter_num"] == 2


def test_training_killed_mid_checkpoint_resumes_from_the_last_complete_one(tmp_path: Path):
    """A real training process, kill -9 while it replaces last.pt at step 2; --resume goes on from step 1."""
    import rtseg_runtime.train as train_mod

    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, splits={"train": 2, "val": 1})
    out = tmp_path / "run"
    argv = _train_argv(_model(tmp_path, 19), data, out, "--dataset", "cityscapes")[1:]
    argv[argv.index("--eval-interval") + 1] = "1"
    argv[argv.index("--max-iters") + 1] = "3"
    env = {**os.environ, PAUSE_ENV: "120", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rtseg_runtime.train", *argv, "--progress", "lines"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:  # the first write of last.pt (step 1) does not pause; step 2's does
            if "pausing" in line:
                break
        else:
            pytest.fail("the training process ended without pausing in a checkpoint write")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(out / "last.pt", weights_only=True)["iter_num"] == 1
    assert len(list(out.glob(".*.pt.*.tmp"))) == 1  # the interrupted write (best.pt goes first), never renamed
    assert train_mod.main(argv + ["--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iter_num"] == 3
    assert not list(out.glob("*.tmp")), "the resumed run removes the killed writer's temporary file"


def test_ctrl_c_writes_last_pt_and_resume_continues(tmp_path: Path, runtime_commands, capsys, monkeypatch):
    import rtseg_runtime.train as train_mod

    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, seed=2)
    out = tmp_path / "run"
    spec = _model(tmp_path, 19)
    real_get_lr = train_mod.get_lr

    def interrupt_at_step_1(it, cfg):
        if it == 1:
            raise KeyboardInterrupt
        return real_get_lr(it, cfg)

    monkeypatch.setattr(train_mod, "get_lr", interrupt_at_step_1)
    argv = ["--dataset", "cityscapes", "--max-iters", "3"]
    assert train_mod.main(_train_argv(spec, data, out)[1:] + argv) == 130
    assert "interrupted at step 1" in capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["iter_num"] == 1
    monkeypatch.setattr(train_mod, "get_lr", real_get_lr)
    assert train_mod.main(_train_argv(spec, data, out)[1:] + argv + ["--resume", "--max-iters", "3"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["iter_num"] == 3


# --------------------------------------------------------------------------- augmentation

def test_augmentation_moves_image_and_label_together():
    torch.manual_seed(0)
    label = torch.randint(0, 19, (20, 30))
    image = (label.float() / 18).expand(3, -1, -1).clone()  # every channel encodes the label
    steps = parse_augment("crop=16x24,hflip=1.0")
    x, y = apply_augment(image, label, steps, (16, 24), 255)
    assert x.shape == (3, 16, 24) and y.shape == (16, 24)
    assert torch.equal((x[0] * 18).round().long(), y)
    # a crop larger than the image pads the label with ignore and the image with NaN (-> the mean)
    x, y = apply_augment(image, label, [{"op": "random_crop", "size": [24, 40]}], (24, 40), 255)
    pad = torch.isnan(x[0])
    assert pad.sum() == 24 * 40 - 20 * 30 and bool((y[pad] == 255).all()) and bool((y[~pad] != 255).all())
    x, y = apply_augment(image, label, parse_augment("scale=0.5-0.5"), (20, 30), 255)
    assert x.shape == (3, 20, 30) and set(y.unique().tolist()) <= set(range(19))
    with pytest.raises(ValueError, match="--augment"):
        parse_augment("zoom=2")


# --------------------------------------------------------------------------- watching a run

def _log_run(folder: Path) -> dict:
    folder.mkdir()
    lines = [{"iter": i, "loss": 2.0 / i, "lr": 1e-3, "ms": 10.0} for i in range(1, 5)]
    last = {"iter": 4, "val_loss": 0.5, "miou": 0.25, "pixel_accuracy": 0.5, "mean_class_accuracy": 0.4,
            "iou": {"road": 0.5, "sky": None}, "class_accuracy": {"road": 0.6, "sky": None}}
    lines.append({"eval": last})
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return last


def test_summary_without_matplotlib_says_so(tmp_path: Path, monkeypatch):
    from rtseg_runtime.report import write_summary

    last = _log_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    text = write_summary(tmp_path / "run", "tiny", last).read_text()
    assert "| road | 50.00 | 60.00 |" in text and "| sky | - | - |" in text and "mIoU: **25.00 %**" in text
    assert "matplotlib is not installed" in text and not (tmp_path / "run" / "curves.svg").exists()


def test_summary_draws_svg_curves_with_matplotlib(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from rtseg_runtime.report import write_summary

    last = _log_run(tmp_path / "run")
    text = write_summary(tmp_path / "run", "tiny", last).read_text()
    assert "![loss and mIoU](curves.svg)" in text
    assert (tmp_path / "run" / "curves.svg").read_text().lstrip().startswith("<?xml")


def test_progress_bar_and_plain_lines(capsys):
    from rtseg_runtime.report import Progress

    lines = Progress(10, 0, "lines", log_interval=5)
    for it in range(1, 11):
        lines.step(it, 1.0 / it, 1e-3, 12.5, 80.0)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["step 1", "step 5", "step 10"]
    assert "12.5 images/s" in out[0]
    pytest.importorskip("tqdm")
    bar = Progress(10, 3, "bar", log_interval=5)
    assert bar.bar is not None and bar.bar.n == 3
    bar.step(4, 0.5, 1e-3, 10.0, 100.0)
    assert bar.bar.n == 4 and "loss=0.5000" in str(bar.bar.postfix)
    bar.close()


def test_tensorboard_needs_its_package(tmp_path: Path, runtime_commands, capsys):
    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, splits={"train": 2, "val": 1})
    argv = _train_argv(_model(tmp_path, 19), data, tmp_path / "run", "--dataset", "cityscapes",
                       "--tensorboard",
                       "--max-iters", "1")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert cli.main(argv) == 2
        assert "--tensorboard needs the tensorboard package" in capsys.readouterr().err
    else:
        assert cli.main(argv) == 0
        assert any((tmp_path / "run" / "tb").iterdir())


def test_tensorboard_events_hold_scalars_and_images(tmp_path: Path, runtime_commands):
    """A real TensorBoard run, read back: loss and lr per step, mIoU and per-class IoU and the
    side-by-side validation images at each evaluation."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, splits={"train": 2, "val": 2})
    argv = _train_argv(_model(tmp_path, 19), data, tmp_path / "run", "--dataset", "cityscapes",
                       "--tensorboard", "--log-interval", "1")
    argv[argv.index("--eval-interval") + 1] = "2"
    assert cli.main(argv) == 0
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0}).Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {"train/loss", "train/lr", "val/mIoU", "val/loss"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert {f"val_iou/{name}" for name in load_dataset_spec("cityscapes").classes} & scalars
    assert images and all(tag.startswith("val/") for tag in images)
    first = events.Images(sorted(images)[0])[0]
    assert (first.height, first.width) == (SIZE[0], 3 * SIZE[1])  # image | truth | prediction


def test_side_by_side_validation_image():
    from rtseg_runtime.report import side_by_side

    spec = load_dataset_spec("camvid")
    x = torch.zeros(3, 4, 5)  # the mean colour after normalisation
    truth = torch.full((4, 5), 3)
    truth[0, 0] = 255
    pred = torch.zeros(4, 5, dtype=torch.int64)
    out = side_by_side(x, truth, pred, spec)
    assert out.shape == (3, 4, 15) and out.dtype == torch.uint8
    assert out[:, 1, 1].tolist() == [round(255 * m) for m in spec.mean]
    assert out[:, 1, 6].tolist() == list(spec.colors[3]) and out[:, 0, 5].tolist() == [0, 0, 0]
    assert out[:, 2, 12].tolist() == list(spec.colors[0])


def test_tensorboard_images_go_through_add_image(tmp_path: Path):
    """The TensorBoard image hook, with a stand-in writer (tensorboard itself is an optional extra)."""
    from rtseg_compiler import compile_model
    from rtseg_runtime.data import DatasetFolder
    from rtseg_runtime.train import _tensorboard_images

    spec = load_dataset_spec("cityscapes")
    data = write_tiny_cityscapes(tmp_path / "cs", size=SIZE, splits={"val": 2})
    val_set = DatasetFolder(spec, data, "val", SIZE)
    model = compile_model(_model(tmp_path, 19)).module.train()
    calls = []
    add_image = lambda self, tag, img, step: calls.append((tag, img.shape, step))  # noqa: E731
    writer = type("Writer", (), {"add_image": add_image})()
    _tensorboard_images(writer, model, val_set, spec, torch.device("cpu"), 7)
    assert calls == [("val/0", (3, SIZE[0], 3 * SIZE[1]), 7), ("val/1", (3, SIZE[0], 3 * SIZE[1]), 7)]
    assert model.training
