"""Faults injected for real into the runtime: kills, signals, two runs, a full disk, broken files.

Modelled on how PyTorch Lightning (``tests/tests_pytorch/checkpointing``, its SIGTERM/requeue tests) and
mmengine (``tests/test_runner/test_checkpoint.py``) test checkpointing: real processes killed at chosen
points through hooks in the writer (``RTSEG_CHECKPOINT_PAUSE``, ``RTSEG_CHECKPOINT_PAUSE_BETWEEN``), real
signals, two processes on one folder, a file-size limit (``RLIMIT_FSIZE``: mounting a small tmpfs needs
privileges CI does not have), and files damaged byte by byte. After every kill the test checks what a
user would: ``best.pt`` holds the best mIoU ever evaluated, ``last.pt`` loads, no temporary file stays.

Each row of the fault table in docs/runtime.md names the test here that backs it. Tiny everything: a
width-0.25 SkipNet-MobileNet at 32x64 on synthetic data, a few steps, one thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rtseg_runtime.train as train_mod
from conftest import REPO_ROOT, SPECS
from rtseg_runtime.build import dataset_spec_for
from rtseg_runtime.checkpoint import PAUSE_BETWEEN_ENV, content_digest, load_checkpoint
from rtseg_runtime.data import DatasetFolder, write_synthetic_folder
from rtseg_runtime.datasets import DataError, check_samples, find_samples, load_dataset_spec, parse_dataset_text
from rtseg_runtime.errors import RunError

SIZE = (32, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_spec(path: Path) -> Path:
    path.write_text(f"kind: model\nname: tiny_skipnet\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                    f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: 5\n"
                    f"input: [{SIZE[0]}, {SIZE[1]}]\nencoder_params: {{width: 0.25}}\n")
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return _write_spec(tmp_path / "tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(spec, out-dir) of one finished 1-step run, shared by the tests that damage a copy of it."""
    root = tmp_path_factory.mktemp("trained")
    spec = _write_spec(root / "tiny.yaml")
    torch.set_num_threads(1)
    assert train_mod.main(_argv(spec, root / "run")) == 0
    return spec, root / "run"


def _argv(spec: Path, out: Path, *extra: str, iters: int = 1, every: int = 0) -> list[str]:
    return [str(spec), "--data", "synthetic", "--classes", "5", "--out-dir", str(out), "--batch-size", "2",
            "--limit-train", "4", "--limit-val", "2", "--max-iters", str(iters),
            "--eval-interval", str(every),
            "--num-workers", "0", "--lr", "1e-2", "--device", "cpu", "--progress", "lines", "--log-interval",
            "1", *extra]


def _spawn(argv: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "rtseg_runtime.train", *argv], cwd=REPO_ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _read_until(proc: subprocess.Popen, text: str) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"the process ended (status {proc.wait()}) before printing {text!r}:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and "internal" not in err and "compiler" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def _evaluated(out: Path) -> list[float]:
    return [json.loads(line)["eval"]["miou"] for line in (out / "log.jsonl").read_text().splitlines()
            if '"eval"' in line]


# --------------------------------------------------------------------------- checkpoints as a set

@pytest.mark.slow  # a real training process: its start-up is most of the time
def test_kill_between_best_and_last_keeps_the_best_and_resume_repairs(spec: Path, tmp_path: Path, capsys):
    """SIGKILL after best.pt is replaced, before last.pt is: best.pt already holds the new best; --resume
    continues from it (the newer file), and after the run best.pt holds the best of every evaluation."""
    out = tmp_path / "run"
    argv = _argv(spec, out, iters=12, every=1)
    argv[argv.index("--lr") + 1] = "0.05"  # seeded: mIoU 10.3 % at step 1, 13.6 % at step 2 (a new best);
    # 12 steps leave room for another CPU's rounding to reach its first new best later
    proc = _spawn(argv, env={PAUSE_BETWEEN_ENV: "120"})
    try:
        line = _read_until(proc, "best.pt written at step")[-1]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(proc)
    step = int(line.split("best.pt written at step ")[1].split(",")[0])
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["iter_num"] == step > last["iter_num"]
    assert best["best_miou"] == pytest.approx(max(_evaluated(out)), abs=1e-6)
    assert train_mod.main(argv + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"is newer than last.pt (step {last['iter_num']})" in printed and f"at step {step}" in printed
    assert load_checkpoint(out / "best.pt")["best_miou"] == pytest.approx(max(_evaluated(out)), abs=1e-6)
    assert load_checkpoint(out / "last.pt")["iter_num"] == 12 and not list(out.glob("*.tmp"))


@pytest.mark.parametrize("fault", ["truncated", "empty", "flipped", "plain"])
@pytest.mark.parametrize("command", ["resume", "eval", "predict", "pretrained"])
def test_broken_checkpoints_are_named(trained, tmp_path: Path, capsys, fault: str, command: str):
    """Each broken file, given to each command that reads checkpoints: one line naming it, exit 2."""
    if fault == "plain" and command == "pretrained":
        pytest.skip("a plain state dict is what --pretrained takes")
    import shutil

    from rtseg_runtime import evaluate, predict

    spec, out = trained[0], tmp_path / "run"
    shutil.copytree(trained[1], out)
    capsys.readouterr()
    target = out / "last.pt"
    if fault == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif fault == "empty":
        target.write_bytes(b"")
    elif fault == "plain":
        torch.save(load_checkpoint(target)["model"], target)
    else:  # one byte of the largest tensor's data, located through the zip directory
        with zipfile.ZipFile(target) as zf:
            info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        raw = bytearray(target.read_bytes())
        at = info.header_offset  # local file header: 30 bytes, then the name and the extra field
        name_len = int.from_bytes(raw[at + 26:at + 28], "little")
        extra_len = int.from_bytes(raw[at + 28:at + 30], "little")
        raw[at + 30 + name_len + extra_len + info.file_size // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    if command == "resume":
        status = train_mod.main(_argv(spec, out, "--resume", iters=2))
    elif command == "eval":
        status = evaluate.main(["--checkpoint", str(target), "--data", "synthetic", "--limit", "1"])
    elif command == "predict":
        image = tmp_path / "x.png"
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(image)
        status = predict.main([str(image), "--checkpoint", str(target), "-o", str(tmp_path / "pred")])
    else:
        status = train_mod.main(_argv(spec, tmp_path / "run2", "--pretrained", str(target)))
    assert status == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(target) in line
    if command == "resume":  # the intact best.pt of the same run is offered
        assert line.endswith(f"{out / 'best.pt'} (step 1) is intact: copy it over last.pt to resume from it")
    expected = {"truncated": "truncated", "empty": "empty file", "flipped": "corrupted",
                "plain": "plain state dict"}[fault]
    assert expected in line, line


def test_the_checksum_covers_every_value(tmp_path: Path):
    state = {"model": {"w": torch.arange(6.0)}, "model_args": {"num_classes": 5}, "iter_num": 3}
    digest = content_digest(state)
    assert content_digest({**state, "iter_num": 4}) != digest
    flipped = {**state, "model": {"w": torch.arange(6.0).index_fill(0, torch.tensor([2]), 2.5)}}
    assert content_digest(flipped) != digest
    assert content_digest({**state, "checksum": {"sha256": "x"}}) == digest  # the checksum is not its input


# --------------------------------------------------------------------------- one run per out-dir

@pytest.mark.slow  # a real training process: its start-up is most of the time
def test_a_second_run_in_the_same_out_dir_is_refused_until_the_first_dies(spec: Path, tmp_path: Path, capsys):
    """Two processes, one folder: the second stops before touching anything; SIGKILL of the first
    releases the lock (the OS does), and --resume then continues from the first run's last.pt."""
    out = tmp_path / "run"
    proc = _spawn(_argv(spec, out, iters=100000, every=1))
    try:
        _read_until(proc, "step 2:")  # step 1 is evaluated and checkpointed by now
        for extra in ((), ("--resume",)):
            assert train_mod.main(_argv(spec, out, *extra, iters=3, every=1)) == 2
            line = _one_error_line(capsys.readouterr().err)
            assert line == (f"error: --out-dir {out}: another run is using this folder (process {proc.pid}); "
                            "wait for it to end, or choose another --out-dir")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert train_mod.main(_argv(spec, out, "--resume", iters=3, every=1)) == 0
    for line in (out / "log.jsonl").read_text().splitlines():
        json.loads(line)  # one writer at a time: no interleaved records


def test_a_used_out_dir_needs_resume_and_resume_on_a_finished_run_changes_nothing(spec: Path, tmp_path: Path,
                                                                                   capsys):
    out = tmp_path / "run"
    assert train_mod.main(_argv(spec, out)) == 0

    def snapshot() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
                if p.is_file() and not p.name.startswith(".")}

    before = snapshot()
    assert {"last.pt", "best.pt", "log.jsonl", "summary.md"} <= set(before)
    capsys.readouterr()
    assert train_mod.main(_argv(spec, out)) == 2
    assert "holds another run (last.pt, best.pt, log.jsonl, summary.md); add --resume" in \
        _one_error_line(capsys.readouterr().err)
    assert train_mod.main(_argv(spec, out, "--resume")) == 0
    assert "the run already finished at step 1 (--max-iters 1); nothing to do" in capsys.readouterr().out
    assert snapshot() == before


def test_an_out_dir_that_is_a_file_or_not_writable(spec: Path, tmp_path: Path, capsys):
    as_file = tmp_path / "taken"
    as_file.write_text("x")
    assert train_mod.main(_argv(spec, as_file)) == 2
    assert _one_error_line(capsys.readouterr().err) == \
        f"error: --out-dir {as_file}: is a file, not a folder; choose another --out-dir"
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses new folders even to root
        target = Path("/sys/kernel/rtsegc-test-run")
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no /sys/kernel to stand in for a read-only folder")
    else:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        target = folder / "run"
    assert train_mod.main(_argv(spec, target)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out-dir {target}: ") and \
        any(word in line for word in ("not permitted", "permission denied", "read-only file system")), line


# --------------------------------------------------------------------------- signals

@pytest.mark.slow  # a real training process: its start-up is most of the time
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138), (signal.SIGINT, 130)])
def test_a_signal_writes_last_pt_at_the_current_step(spec: Path, tmp_path: Path, sig, status):
    """What Slurm/Kubernetes (SIGTERM), Lightning's requeue (SIGUSR1) and Ctrl-C (SIGINT) send: the step
    in flight finishes, last.pt is written at it, the exit status is 128 + the signal."""
    out = tmp_path / "run"
    proc = _spawn(_argv(spec, out, iters=100000))
    try:
        _read_until(proc, "step 3:")
        os.kill(proc.pid, sig)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == status, rest
    finally:
        _stop(proc)
    name = signal.Signals(sig).name
    assert f"stopped by {name} at step" in rest and "Traceback" not in rest
    step = int(rest.split(f"stopped by {name} at step ")[1].split(":")[0])
    assert step >= 3 and load_checkpoint(out / "last.pt")["iter_num"] == step
    assert not list(out.glob("*.tmp"))
    if sig == signal.SIGTERM:  # and the run goes on from there
        assert train_mod.main(_argv(spec, out, "--resume", iters=step + 1)) == 0
        assert load_checkpoint(out / "last.pt")["iter_num"] == step + 1


@pytest.mark.slow  # a real training process: its start-up is most of the time
def test_ctrl_c_in_a_terminal_reaches_the_data_workers_too(spec: Path, tmp_path: Path):
    """A terminal sends SIGINT to the whole process group, DataLoader workers included: the training
    process still finishes its step, writes last.pt and exits 130 (its workers ignore the signal, which
    matters when it arrives while the loop waits for a batch; here it mostly arrives during compute)."""
    out = tmp_path / "run"
    argv = _argv(spec, out, iters=100000)
    argv[argv.index("--num-workers") + 1] = "1"
    proc = _spawn(argv, start_new_session=True)
    try:
        _read_until(proc, "step 3:")
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 130, rest
    finally:
        _stop(proc)
    assert "stopped by SIGINT at step" in rest and "Traceback" not in rest, rest
    assert load_checkpoint(out / "last.pt")["iter_num"] >= 3


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank_at_one_step(spec: Path, tmp_path: Path):
    """torchrun forwards SIGTERM to its workers; they agree on the step (one all-reduce of a flag per
    step), rank 0 writes last.pt there, and no rank hangs in a collective or prints a traceback."""
    out = tmp_path / "ddp"
    argv = _argv(spec, out, iters=100000)
    argv[argv.index("--batch-size") + 1] = "1"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", "-m", "rtseg_runtime.train", *argv], cwd=REPO_ROOT, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _read_until(proc, "step 3:")
        os.kill(proc.pid, signal.SIGTERM)
        rest = proc.communicate(timeout=120)[0]
    finally:
        _stop(proc)
    assert "stopped by SIGTERM at step" in rest and "runtime/train.py" not in rest, rest
    step = int(rest.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert load_checkpoint(out / "last.pt")["iter_num"] == step >= 3


# --------------------------------------------------------------------------- a full disk

def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return apply


@pytest.mark.slow  # a real training process: its start-up is most of the time
def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary(spec: Path, tmp_path: Path):
    out = tmp_path / "run"
    assert train_mod.main(_argv(spec, out, every=1)) == 0
    before = (out / "last.pt").read_bytes()
    proc = _spawn(_argv(spec, out, "--resume", iters=2, every=1), preexec_fn=_file_size_limit(200_000))
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, text
    line = _one_error_line(text)
    assert ".pt: file too large" in line and "is kept" in line, line
    assert (out / "last.pt").read_bytes() == before and load_checkpoint(out / "last.pt")["iter_num"] == 1
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


# --------------------------------------------------------------------------- user faults, one line each

def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(spec: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    argv = _argv(spec, out, iters=6, every=1)
    argv[argv.index("--lr") + 1] = "1e30"
    assert train_mod.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: step ") and "keep the last good evaluation" in line
    assert "the loss is nan; probable cause: the optimisation diverged; lower --lr (now 1e+30)" in line
    failed_at = int(line.split("step ")[1].split(":")[0])
    assert load_checkpoint(out / "last.pt")["iter_num"] == failed_at - 1


def test_zero_std_is_refused_where_it_is_written():
    from rtseg_compiler import SpecError

    with pytest.raises(SpecError) as info:
        parse_dataset_text("kind: dataset\nname: x\nlayout: segnet\nclasses: [{name: a}, {name: b}]\n"
                           "std: [0.2, 0, 0.2]\n", "zero.yaml")
    assert str(info.value).startswith("zero.yaml:5:12: error: std[1]: 0 is less than or equal to the minimum")


def test_batch_one_on_a_one_pixel_map_says_what_to_change(spec: Path, tmp_path: Path, capsys):
    argv = _argv(spec, tmp_path / "run", "--input", "32x32")
    argv[argv.index("--batch-size") + 1] = "1"
    assert train_mod.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "error: --batch-size 1: a BatchNorm layer sees a single value per channel in training mode (a 1x1 "
        "feature map at input 32x32); use --batch-size 2 or more, or a larger --input")


@pytest.mark.parametrize("flags,message", [
    (["--num-workers", "-1"], "--num-workers -1: must be 0 or more"),
    (["--limit-train", "-1"], "--limit-train -1: must be 0 or more"),
    (["--dataset", "camvid"], "--dataset camvid needs --data FOLDER"),
])
def test_bad_flags_are_refused_before_anything_runs(spec: Path, tmp_path: Path, capsys, flags, message):
    argv = [str(spec), "--out-dir", str(tmp_path / "run"), *flags]
    with pytest.raises(SystemExit) as info:
        train_mod.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_training_without_data_says_it_is_synthetic(spec: Path, tmp_path: Path, capsys):
    argv = _argv(spec, tmp_path / "run")
    del argv[argv.index("--data"):argv.index("--data") + 2]
    assert train_mod.main(argv) == 0
    assert "warning: no --data given: training on SYNTHETIC data" in capsys.readouterr().err


def test_a_spec_edited_before_resume_is_named(spec: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert train_mod.main(_argv(spec, out, every=1)) == 0
    spec.write_text(spec.read_text().replace("width: 0.25", "width: 0.5"))
    capsys.readouterr()
    assert train_mod.main(_argv(spec, out, "--resume", iters=2)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot resume from {out / 'last.pt'}: {spec} changed since it was written" in line


def test_the_checkpoint_embeds_the_spec_the_network_was_built_from(spec: Path, tmp_path: Path, monkeypatch):
    """A spec edited between the build and the first save (an editor saving mid-run) is not what the
    checkpoint embeds: it holds the texts the network was compiled from, so it rebuilds that network."""
    built_from = spec.read_text()
    real_build = train_mod.build_model

    def build_then_edit(*args, **kwargs):
        compiled = real_build(*args, **kwargs)
        spec.write_text(built_from.replace("width: 0.25", "width: 0.5"))
        return compiled

    monkeypatch.setattr(train_mod, "build_model", build_then_edit)
    out = tmp_path / "run"
    assert train_mod.main(_argv(spec, out)) == 0
    embedded = load_checkpoint(out / "last.pt")["specs"]
    assert embedded["model"]["text"] == built_from
    assert embedded["encoder"]["text"] == (SPECS / "encoders" / "mobilenet_v1.yaml").read_text()


def test_an_output_that_is_not_one_channel_per_class_is_a_located_error(tmp_path: Path, capsys):
    """A meta whose only layer a ``when:`` removed outputs the encoder's map: it validates, but
    training refuses it with the layer's location (exit 2), not a torch error from the loss (exit 3)."""
    meta = tmp_path / "head.yaml"
    meta.write_text("kind: meta\nname: no_scores\nrequires: [stride8]\nparams: {scores: false}\nlayers:\n"
                    "  - {name: score, op: conv, input: encoder.stride8, out: num_classes, kernel: 1, when: scores}\n"
                    "output: score\n")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"kind: model\nname: tiny_off\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                    f"meta: {meta}\nnum_classes: 5\ninput: [{SIZE[0]}, {SIZE[1]}]\n"
                    "encoder_params: {width: 0.25}\n")
    assert train_mod.main(_argv(spec, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err
    line = next(line for line in err.splitlines() if ": error: " in line)
    encoder_lines = (SPECS / "encoders" / "mobilenet_v1.yaml").read_text().splitlines()
    pw_relu = next(n for n, text in enumerate(encoder_lines, 1) if "name: pw_relu" in text)
    assert line.split(":")[0].endswith("mobilenet_v1.yaml") and line.split(":")[1] == str(pw_relu)
    assert "output 'output' is layer 'encoder.ds5.pw_relu', with 64 channels; training needs one per class (5)" in line


def test_a_fetch_without_network_is_one_line(spec: Path, tmp_path: Path, capsys, monkeypatch):
    """timm absent, unimportable or offline: one line naming the flag, whichever of them this machine has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    assert train_mod.main(_argv(spec, tmp_path / "run", "--pretrained", "timm:mobilenetv1_100")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "timm:mobilenetv1_100" in line and "fetch" in line and "@FILE" in line, line


@pytest.mark.parametrize("kind", ["wrong_type", "wrong_channels"])
def test_a_user_op_that_lies_is_named(spec: Path, tmp_path: Path, capsys, kind: str):
    from rtseg_compiler.ops import OpDef, register, unregister

    def infer(attrs, ins):
        return 7 if kind == "wrong_type" else dataclasses.replace(ins[0], channels=ins[0].channels + 3)

    register(OpDef(name="faulty_op", summary="for tests", fields={}, infer=infer,
                   build=lambda attrs, ins, out: torch.nn.Identity()))
    try:
        encoder = tmp_path / "enc.yaml"
        text = (SPECS / "encoders" / "mobilenet_v1.yaml").read_text().split("\nweights:")[0]
        encoder.write_text(text.replace("  - {name: ds13, block: dwsep, out: 1024}",
                                        "  - {name: ds13a, block: dwsep, out: 1024}\n"
                                        "  - {name: ds13, op: faulty_op}"))
        spec.write_text(spec.read_text().replace(str(SPECS / "encoders" / "mobilenet_v1.yaml"), str(encoder)))
        assert train_mod.main(_argv(spec, tmp_path / "run")) == 2
        err = capsys.readouterr().err
    finally:
        unregister("faulty_op")
    assert "Traceback" not in err and "internal" not in err
    if kind == "wrong_type":
        assert "error: the op's shape rule (infer) returned int, not a TensorType (faulty_op 'ds13')" in err
    else:
        line = encoder.read_text().splitlines().index("  - {name: ds13, op: faulty_op}") + 1
        assert f"{encoder}:{line}: op 'faulty_op'" in err
        assert "declares 259x1x2 (CxHxW) in its shape rule but its module makes 256x1x2 at layer " \
            "'encoder.ds13'" in err


def test_width_zero_or_negative_is_refused(tmp_path: Path):
    from rtseg_compiler import SpecError, analyze

    for width in (0, -1):
        path = tmp_path / f"w{width}.yaml"
        path.write_text(f"kind: model\nname: w\nencoder: {SPECS / 'encoders' / 'mobilenet_v1.yaml'}\n"
                        f"meta: {SPECS / 'meta' / 'skipnet.yaml'}\nnum_classes: 5\ninput: [32, 64]\n"
                        f"encoder_params: {{width: {width}}}\n")
        with pytest.raises(SpecError, match="make_divisible: the channel count must be positive"):
            analyze(path)


# --------------------------------------------------------------------------- predict never overwrites

def test_predict_keeps_colliding_names_apart_and_never_overwrites(spec: Path, tmp_path: Path, capsys):
    from rtseg_runtime import predict

    out = tmp_path / "run"
    assert train_mod.main(_argv(spec, out)) == 0
    for folder, suffix in (("a", ".png"), ("b", ".png"), ("a", ".jpg")):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(np.full((*SIZE, 3), 90, np.uint8)).save(tmp_path / folder / f"x{suffix}")
    Image.fromarray(np.full((*SIZE, 3), 30, np.uint8)).save(tmp_path / "a" / "y.png")
    preds = tmp_path / "preds"
    argv = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a" / "y.png"), "--checkpoint",
            str(out / "best.pt"), "-o", str(preds)]
    capsys.readouterr()
    assert predict.main(argv) == 0
    on_disk = sorted(str(p.relative_to(preds)) for p in preds.rglob("*.png"))
    assert on_disk == ["a/x_jpg_color.png", "a/x_jpg_label.png", "a/x_png_color.png", "a/x_png_label.png",
                       "b/x_png_color.png", "b/x_png_label.png", "y_color.png", "y_label.png"]
    assert f"wrote {len(on_disk)} files to {preds}" in capsys.readouterr().out
    stamp = (preds / "y_label.png").stat().st_mtime_ns
    assert predict.main(argv) == 2
    assert "exist already; pass --overwrite to replace them" in _one_error_line(capsys.readouterr().err)
    assert (preds / "y_label.png").stat().st_mtime_ns == stamp
    assert predict.main(argv + ["--overwrite"]) == 0


# --------------------------------------------------------------------------- data checked for real

def _png_with_short_pixel_data(path: Path) -> None:
    """A PNG whose chunks and CRCs are intact but whose zlib stream stops halfway: verify() passes."""
    rows = b"".join(b"\0" + bytes(range(SIZE[1])) * 3 for _ in range(SIZE[0]))
    data = zlib.compress(rows)[: len(zlib.compress(rows)) // 2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = SIZE[1].to_bytes(4, "big") + SIZE[0].to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def _folder_spec(root: Path):
    write_synthetic_folder(root, SIZE, 5, splits={"train": 3, "val": 1})
    return dataset_spec_for(5)


@pytest.mark.parametrize("damage", ["png_pixels", "jpeg_cut"])
def test_images_that_pass_verify_but_do_not_decode_are_caught(tmp_path: Path, damage: str):
    spec = _folder_spec(tmp_path / "d")
    bad = tmp_path / "d" / "train" / "synth_0001.png"
    if damage == "png_pixels":
        _png_with_short_pixel_data(bad)
    else:
        bad.unlink()
        bad = bad.with_suffix(".jpg")
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (*SIZE, 3), np.uint8)).save(bad, quality=95)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 6 // 10])
    with Image.open(bad) as im:
        im.verify()  # the older check's whole test of an image
    with pytest.raises(DataError, match=f"{bad}: unreadable image"):
        DatasetFolder(spec, tmp_path / "d", "train", SIZE)
    kept = DatasetFolder(spec, tmp_path / "d", "train", SIZE, skip_bad=True)
    assert len(kept) == 2 and str(bad) in kept.skipped[0]


def test_a_sample_that_breaks_after_the_check_is_named_or_skipped(tmp_path: Path):
    spec = _folder_spec(tmp_path / "d")
    strict = DatasetFolder(spec, tmp_path / "d", "train", SIZE)
    lenient = DatasetFolder(spec, tmp_path / "d", "train", SIZE, skip_bad=True)
    lenient.skip_log = tmp_path / "skipped.txt"
    (tmp_path / "d" / "train" / "synth_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DataError, match="synth_0001.png: unreadable image at load time"):
        strict[1]
    x, y = lenient[1]  # the next good sample stands in
    assert torch.equal(y, lenient[2][1])
    assert "synth_0001.png: unreadable image at load time" in lenient.skip_log.read_text()


def test_the_check_decodes_each_sample_once_per_change(tmp_path: Path, monkeypatch):
    import rtseg_runtime.datasets as datasets

    monkeypatch.setenv("RTSEGC_DATA_CACHE", str(tmp_path / "cache"))
    spec = _folder_spec(tmp_path / "d")
    samples = find_samples(spec, tmp_path / "d", "train")
    calls = []
    real = datasets.inspect_sample
    monkeypatch.setattr(datasets, "inspect_sample", lambda s: calls.append(s.image.name) or real(s))
    first = check_samples(spec, samples, tmp_path / "d", workers=2)
    assert sorted(calls) == ["synth_0000.png", "synth_0001.png", "synth_0002.png"]
    calls.clear()
    again = check_samples(spec, samples, tmp_path / "d", workers=2)
    assert calls == [] and all(np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    os.utime(samples[1].label, ns=(1, 1))
    check_samples(spec, samples, tmp_path / "d")
    assert calls == ["synth_0001.png"]


def test_dataset_splits_stay_inside_data(tmp_path: Path):
    _folder_spec(tmp_path / "d")
    write_synthetic_folder(tmp_path / "elsewhere", SIZE, 5, splits={"train": 1})
    base = load_dataset_spec("camvid")
    outside = dataclasses.replace(base, splits={"train": "../elsewhere/train"})
    with pytest.raises(DataError, match="split 'train' -> ../elsewhere/train leads outside --data"):
        find_samples(outside, tmp_path / "d", "train")
    absolute = dataclasses.replace(base, splits={"train": str(tmp_path / "elsewhere" / "train")})
    with pytest.raises(DataError, match="pass --external-splits to read it"):
        find_samples(absolute, tmp_path / "d", "train")
    assert len(find_samples(absolute, tmp_path / "d", "train", allow_external=True)) == 1


def test_a_runtime_bug_is_exit_3_and_never_a_compiler_error(spec: Path, tmp_path: Path, capsys, monkeypatch,
                                                            runtime_commands):
    """Through rtsegc itself: the runtime reports its own bug, so the compiler's handler never sees it."""
    from rtseg_compiler import cli

    def broken(it, cfg):
        raise ZeroDivisionError("a bug")

    import importlib

    monkeypatch.setattr(importlib.import_module("rtseg_runtime.train"), "get_lr", broken)  # what rtsegc runs
    assert cli.main(["train", *_argv(spec, tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("rtsegc train: internal error in the runtime: ZeroDivisionError: a bug\n"
                          "This is a bug in rtseg_runtime.") and "compiler" not in err
    assert issubclass(train_mod.TrainError, RunError) and RunError("x").status == 2


def test_resume_with_nothing_to_resume_says_so(spec: Path, tmp_path: Path, capsys):
    assert train_mod.main(_argv(spec, tmp_path / "run", "--resume")) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --resume: {tmp_path / 'run' / 'last.pt'} does not exist, so there is nothing to continue; "
        "drop --resume to start a new run")


def test_a_decode_failure_in_a_data_worker_is_one_line(tmp_path: Path, capsys, monkeypatch):
    """DataLoader re-raises a worker's exception with the worker's traceback in its message; the run
    prints the one line that names the file."""
    data = tmp_path / "d"
    write_synthetic_folder(data, SIZE, 5, splits={"train": 4, "val": 1})
    spec = _write_spec(tmp_path / "tiny.yaml")
    real = DatasetFolder.read

    def read(self, index):  # what a file replaced on disk after the check looks like to a worker
        if index == 1:
            raise DataError(f"{self.samples[1].image}: unreadable image at load time (OSError: truncated)")
        return real(self, index)

    monkeypatch.setattr(DatasetFolder, "read", read)
    argv = _argv(spec, tmp_path / "run", iters=4)
    argv[argv.index("--data") + 1] = str(data)
    argv[argv.index("--num-workers") + 1] = "1"
    argv.remove("--limit-train")
    argv.remove("4")
    assert train_mod.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: {data / 'train' / 'synth_0001.png'}: unreadable image at load time (OSError: truncated)")


# --------------------------------------------------------------------------- workers and the exit

_WORKERS_AT_EXIT = r"""
import multiprocessing, os, signal, sys, time
import torch
from torch.utils.data import DataLoader, TensorDataset
from rtseg_runtime.signals import WorkerSignals

guard = WorkerSignals()
loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, num_workers=1,
                    persistent_workers=True, worker_init_fn=guard)
KEEP = iter(loader)  # a persistent worker still referenced at exit, as an exception's traceback keeps it
next(KEEP)
workers = multiprocessing.active_children()
assert workers, "no worker started"
for p in workers:
    os.kill(p.pid, signal.SIGTERM)
time.sleep(0.5)
assert all(p.is_alive() for p in workers), "a worker died of SIGTERM while the loop runs"
guard.release()
print("released", flush=True)
"""


def test_training_workers_survive_sigterm_until_released_and_then_let_the_process_exit(tmp_path):
    """A worker ignoring SIGTERM for good made the process hang at exit: multiprocessing's exit
    handler terminates daemonic children with SIGTERM and joins them."""
    script = tmp_path / "workers_at_exit.py"
    script.write_text(_WORKERS_AT_EXIT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    assert "released" in done.stdout
