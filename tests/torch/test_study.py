"""``rtsegc study`` end to end on tiny networks and tiny data (runtime/study/).

The networks are SkipNet-MobileNet at width 0.25 and 0.3 (about 0.2 M parameters); the data are six
synthetic 32x64 PNGs of three classes written to ``tmp_path``; each trial trains 2 steps. A whole study
of two trials takes a few seconds. The Ray test starts a local Ray and is marked slow.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from rtseg_runtime.data import write_synthetic_folder
from rtseg_runtime.study import cli as study_cli
from rtseg_runtime.study.spec import RECIPE_OPTIONS, STUDY_OWNED_OPTIONS
from rtseg_runtime.train import TrainConfig

DATASET = """\
kind: dataset
name: synth3
layout: segnet
classes: [{name: a}, {name: b}, {name: c}]
void: [3]
"""


def write_study(tmp_path: Path, body: str = "", *, iters: int = 2, widths: str = "[0.25, 0.3]") -> Path:
    data = write_synthetic_folder(tmp_path / "data", (32, 64), 3, splits={"train": 4, "val": 2})
    (tmp_path / "synth3.yaml").write_text(DATASET)
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(f"""\
        kind: study
        name: tiny
        grid: {{encoders: [mobilenet_v1], metas: [skipnet], params: {{width: {widths}}}}}
        dataset: {{spec: synth3.yaml, data: {data}}}
        train: {{input: [32, 64], max_iters: {iters}, batch_size: 2, eval_interval: 1, num_workers: 0,
                 progress: lines, log_interval: 1}}
        eval: {{split: val}}
        bench: {{inputs: [[32, 64]], warmup: 0, iters: 1, device: cpu}}
        audit: {{input: [32, 64]}}
        out: {tmp_path / "out"}
        """) + textwrap.dedent(body))
    return path


def rows(tmp_path: Path) -> dict[str, dict]:
    report = json.loads((tmp_path / "out" / "study.json").read_text())
    return {r["name"]: r for r in report["trials"]}


def test_recipe_options_and_study_owned_options_cover_train_config() -> None:
    """A training option the study file cannot set (or sets twice) fails here, not silently."""
    names = {f.name for f in fields(TrainConfig)}
    assert set(RECIPE_OPTIONS) | set(STUDY_OWNED_OPTIONS) == names
    assert not set(RECIPE_OPTIONS) & set(STUDY_OWNED_OPTIONS)


@pytest.mark.slow  # 5-15 s on the shared 2-core machine: two trials, each compiled, trained, evaluated, timed
def test_study_trains_evaluates_benchmarks_and_reports(tmp_path: Path, capsys) -> None:
    path = write_study(tmp_path)
    assert study_cli.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 trials: 2 to train" in out and "report:" in out
    found = rows(tmp_path)
    assert set(found) == {"skipnet_mobilenet_v1_width0.25", "skipnet_mobilenet_v1_width0.3"}
    for row in found.values():
        assert row["status"] == "ok" and row["steps"] == 2
        assert set(row["iou"]) == {"a", "b", "c"} and 0 <= row["miou"] <= 1
        assert row["latency_ms"] > 0 and row["images_per_s"] > 0 and row["params"] > 0
    study = tmp_path / "out"
    assert (study / "runs" / "skipnet_mobilenet_v1_width0.25" / "best.pt").is_file()
    md = (study / "study.md").read_text()
    assert "## Table 2 layout" in md and "| mobilenet_v1_" not in md  # one encoder row: mobilenet_v1
    assert "| mobilenet_v1 | width=0.25:" in md
    assert (study / "study.csv").read_text().count("\n") == 3
    # the trial's model file is an ordinary spec: rtsegc train/eval take it as it is
    from rtseg_compiler import validate_file

    assert validate_file(study / "specs" / "skipnet_mobilenet_v1_width0.25.yaml") == []


@pytest.mark.slow  # three study runs of two trials
def test_resume_skips_finished_trials_and_continues_interrupted_ones(tmp_path: Path, capsys) -> None:
    """Finished: nothing retrained (log.jsonl unchanged). Interrupted (no result, last.pt at step 1):
    continues from step 1 instead of starting again."""
    path = write_study(tmp_path, iters=1)
    assert study_cli.main([str(path)]) == 0
    study = tmp_path / "out"
    done, cut = "skipnet_mobilenet_v1_width0.25", "skipnet_mobilenet_v1_width0.3"
    log_before = (study / "runs" / done / "log.jsonl").read_text()
    # the second trial "was killed" after its step-1 checkpoint, in a study of 2 steps
    (study / "results" / f"{cut}.json").unlink()
    path.write_text(path.read_text().replace("max_iters: 1", "max_iters: 2"))
    assert study_cli.main([str(path)]) == 2  # results exist: refused without --resume
    assert "--resume" in capsys.readouterr().err
    assert study_cli.main([str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"[{done}] finished earlier" in out and f"[{cut}] ok" in out and "resumed at step 1" in out
    assert (study / "runs" / done / "log.jsonl").read_text() == log_before
    assert rows(tmp_path)[cut]["resumed_from"] == 1 and rows(tmp_path)[cut]["steps"] == 2


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, capsys) -> None:
    path = write_study(tmp_path, """\
        overrides:
          - {match: {name: "*width0.3"}, train: {pretrained: does_not_exist.pt}}
        """)
    assert study_cli.main([str(path)]) == 1
    found = rows(tmp_path)
    assert found["skipnet_mobilenet_v1_width0.25"]["status"] == "ok"
    failed = found["skipnet_mobilenet_v1_width0.3"]
    assert failed["status"] == "failed" and "does_not_exist.pt" in failed["error"]
    assert "does_not_exist.pt" in (tmp_path / "out" / "study.md").read_text()


def test_over_budget_trials_are_reported_not_trained(tmp_path: Path, capsys) -> None:
    path = write_study(tmp_path, "budget: {max_params: 150000}\n")
    study_cli.main([str(path), "--dry-run"])
    plan = capsys.readouterr().out
    assert "over budget" in plan
    assert study_cli.main([str(path)]) == 0
    statuses = sorted(r["status"] for r in rows(tmp_path).values())
    assert "over_budget" in statuses
    assert not (tmp_path / "out" / "runs" / "skipnet_mobilenet_v1_width0.3").exists()


def test_bad_study_file_exits_2_with_located_errors(tmp_path: Path, capsys) -> None:
    path = write_study(tmp_path, "seeds: [one]\n")
    assert study_cli.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "study.yaml:11:" in err and "seeds[0]" in err and "Traceback" not in err


def test_ray_executor_without_ray_names_the_install_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    path = write_study(tmp_path)
    assert study_cli.main([str(path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray" in err and "pip install 'rtseg-compiler[study]'" in err


def test_search_prunes_over_budget_candidates_before_training(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    path = write_study(tmp_path, """\
        search:
          base: {encoder: mobilenet_v1, meta: skipnet}
          space: {width: {choices: [0.25, 1.0]}}
          candidates: 4
          sampler: random
          early_stop: {rule: median}
        budget: {max_params: 300000}
        """)
    grid = "grid: {encoders: [mobilenet_v1], metas: [skipnet], params: {width: [0.25, 0.3]}}\n"
    path.write_text(path.read_text().replace(grid, ""))
    assert study_cli.main([str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "study.json").read_text())
    counts = report["counts"]
    statuses = [r["status"] for r in report["trials"]]
    assert len(statuses) == 4 and "over_budget" in statuses
    assert counts["search pruned_analytically"] == statuses.count("over_budget")
    trained = [r for r in report["trials"] if r["status"] in ("ok", "stopped")]
    assert trained and all(r["params"] <= 300000 for r in trained)
    assert "pruned analytically" in out


@pytest.mark.slow
def test_ray_executor_gives_the_local_table_with_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    path = write_study(tmp_path, widths="[0.25]")
    assert study_cli.main([str(path), "--deterministic"]) == 0
    local = rows(tmp_path)
    assert study_cli.main([str(path), "--deterministic", "--executor", "ray",
                           "--out-dir", str(tmp_path / "out_ray")]) == 0
    ray_rows = {r["name"]: r for r in json.loads((tmp_path / "out_ray" / "study.json").read_text())["trials"]}
    for name, row in local.items():
        assert ray_rows[name]["miou"] == row["miou"] and ray_rows[name]["iou"] == row["iou"]


MINIMAL = "kind: study\nname: r\ndataset: {spec: camvid}\nmodels: [skipnet_mobilenet_v1]\n"


def _fake_rows() -> list[dict]:
    base = {"encoder": "e1", "meta": "m1", "variant": "", "seed": 0, "params": 1000, "macs": 1,
            "status": "ok", "pixel_accuracy": 0.5, "images_per_s": 1.0, "steps": 2}
    return [{**base, "name": "a", "gflops": 1.0, "miou": 0.30, "latency_ms": 5.0},
            {**base, "name": "b", "meta": "m2", "gflops": 2.0, "miou": 0.40, "latency_ms": 4.0},
            {**base, "name": "c", "encoder": "e2", "gflops": 3.0, "miou": 0.35, "latency_ms": 9.0},
            {**base, "name": "d", "encoder": "e2", "meta": "m2", "gflops": 0.5, "miou": None,
             "status": "failed", "error": "boom", "latency_ms": None}]


def test_pareto_front_keeps_the_points_nothing_beats() -> None:
    from rtseg_runtime.study.report import pareto_front

    # (cost, score): (3, 0.35) is beaten by (2, 0.40); (2, 0.40) and (1, 0.30) trade off
    assert pareto_front([(1.0, 0.30), (2.0, 0.40), (3.0, 0.35)]) == [0, 1]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # ties dominate neither


def test_report_without_matplotlib_skips_the_plots(tmp_path: Path, monkeypatch) -> None:
    import builtins

    from rtseg_runtime.study.report import write_report
    from rtseg_runtime.study.spec import parse_study_text

    study = parse_study_text(MINIMAL)
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    paths = write_report(tmp_path, study, _fake_rows())
    md = paths["md"].read_text()
    assert "Plots skipped: matplotlib is not installed" in md and not list(tmp_path.glob("*.png"))
    assert "| e1 | 30.0 % / 1.00 | 40.0 % / 2.00 |" in md and "| e2 | 35.0 % / 3.00 | failed / 0.50 |" in md
    assert "- d: boom" in md


def test_report_plots_mark_the_pareto_front(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rtseg_runtime.study.report import write_report
    from rtseg_runtime.study.spec import parse_study_text

    study = parse_study_text(MINIMAL)
    paths = write_report(tmp_path, study, _fake_rows())
    assert paths["miou_vs_gflops.png"].stat().st_size > 1000 and paths["miou_vs_latency.png"].is_file()


@pytest.mark.slow
def test_parallel_local_workers_give_the_sequential_table(tmp_path: Path) -> None:
    """--workers 2 runs the trials in two spawned processes; each sets the same thread count."""
    path = write_study(tmp_path)
    assert study_cli.main([str(path), "--deterministic"]) == 0
    sequential = rows(tmp_path)
    argv = [str(path), "--deterministic", "--workers", "2", "--out-dir", str(tmp_path / "par")]
    assert study_cli.main(argv) == 0
    parallel = {r["name"]: r for r in json.loads((tmp_path / "par" / "study.json").read_text())["trials"]}
    assert {n: r["iou"] for n, r in parallel.items()} == {n: r["iou"] for n, r in sequential.items()}


def test_early_stopping_rules_map_to_optuna_pruners(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from rtseg_runtime.study.search import _pruner
    from rtseg_runtime.study.spec import parse_study_text

    def pruner(rule: str):
        study = parse_study_text("kind: study\nname: p\ndataset: {spec: camvid}\nsearch: {base: {model: "
                                 "skipnet_mobilenet_v1}, space: {width: {choices: [0.5]}}, candidates: 1, "
                                 f"early_stop: {{rule: {rule}}}}}\n")
        return _pruner(optuna, study.search)

    assert isinstance(pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(pruner("asha"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(pruner("none"), optuna.pruners.NopPruner)


def test_ray_cluster_that_cannot_be_joined_is_one_error_line(tmp_path: Path, capsys, monkeypatch) -> None:
    ray = pytest.importorskip("ray")

    def refuse(*args, **kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    path = write_study(tmp_path, widths="[0.25]")
    assert study_cli.main([str(path), "--executor", "ray", "--address", "10.0.0.1:6379"]) == 2
    err = capsys.readouterr().err
    assert "cannot join the Ray cluster at 10.0.0.1:6379: ConnectionError" in err and "Traceback" not in err


@pytest.mark.slow  # about 6 s here: the first convolutions of a process pay oneDNN's set-up
def test_train_on_eval_hook_stops_the_run_after_its_checkpoint(tmp_path: Path) -> None:
    """train(cfg, on_eval) is how the search's pruner stops a candidate: after the step-2 evaluation."""
    from rtseg_runtime.train import train

    seen = []

    def stop_at_second(step: int, metrics: dict) -> bool:
        seen.append((step, metrics["miou"] is not None))
        return step >= 2

    specs = Path(__file__).resolve().parents[2] / "specs"
    model = tmp_path / "tiny.yaml"
    model.write_text(f"kind: model\nencoder: {specs / 'encoders' / 'mobilenet_v1.yaml'}\n"
                     f"meta: {specs / 'meta' / 'skipnet.yaml'}\nnum_classes: 3\n"
                     "encoder_params: {width: 0.25}\n")
    cfg = TrainConfig(model=str(model), data="synthetic", classes="3", input=(32, 64),
                      max_iters=6, batch_size=2, eval_interval=1, limit_train=4, limit_val=2, num_workers=0,
                      progress="lines", out_dir=str(tmp_path / "run"))
    summary = train(cfg, on_eval=stop_at_second)
    assert summary["stopped_early"] and summary["iter_num"] == 2 and [s for s, _ in seen] == [1, 2]
    assert (tmp_path / "run" / "last.pt").is_file()


def test_train_argv_rebuilds_the_config() -> None:
    from rtseg_runtime.study.trial import train_argv
    from rtseg_runtime.train import parse_config

    cfg = TrainConfig(model="m.yaml", data="d", dataset="camvid", input=(32, 64), max_iters=7, lr=0.5,
                      weighted_loss=False, resume=True, out_dir="o", output_stride=16,
                      encoder_params={"width": 0.5})
    assert parse_config(train_argv(cfg)) == cfg


@pytest.mark.slow
def test_a_trial_with_two_processes_trains_with_ddp(tmp_path: Path) -> None:
    """resources: {processes: 2}: torchrun inside the trial (gloo on CPU); evaluation in the trial's
    process."""
    path = write_study(tmp_path, "resources: {processes: 2}\n", widths="[0.25]")
    assert study_cli.main([str(path)]) == 0
    (row,) = rows(tmp_path).values()
    assert row["status"] == "ok" and row["steps"] == 2
    log = (tmp_path / "out" / "logs" / "skipnet_mobilenet_v1_width0.25.txt").read_text()
    assert "--nproc_per_node=2" in log and "2 process(es)" in log
