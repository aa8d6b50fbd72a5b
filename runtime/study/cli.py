"""Plan, train, evaluate, benchmark and report a whole study (``rtsegc study FILE``).

Usage::

    rtsegc study specs/studies/camvid_mini.yaml --dry-run          # the plan: audit and budget, no training
    rtsegc study specs/studies/camvid_mini.yaml --data ../shared/data/camvid-mini
    rtsegc study camvid_mini --resume                               # after a crash: finished trials are kept
    rtsegc study camvid_mini --executor ray --address HEAD:6379     # trials as Ray tasks on a cluster

Exit status: 0 when every trial that was planned finished, 1 when some failed (each is in the report
with its error), 2 for a bad study file or option (located messages, no training), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .executors import EXECUTORS, StudyError, run_jobs
from .plan import PlanRow, plan_study, render_plan
from .spec import Study, load_study
from .trial import TrialJob, trial_paths

__all__ = ["build_parser", "main", "run_study"]

STATUS_DONE = ("ok", "stopped")


def build_parser(prog: str = "rtsegc study") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="study file (kind: study), or a name under specs/studies")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and audit every trial, print the plan, stop")
    p.add_argument("--resume", action="store_true",
                   help="keep finished trials, continue interrupted ones from their last.pt, "
                        "rerun failed ones")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this machine (default); ray: one Ray task per trial (the [study] extra)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local executor: trials run side by side in N processes (default 1: in this process)")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="ray executor: join this cluster (HOST:PORT, or 'auto'); "
                   "default: start Ray on this machine")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the study file's dataset.data)")
    p.add_argument("--out-dir", metavar="DIR", help="study folder (default: the study file's out:)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms in every trial: the same table from every executor")
    p.add_argument("--only", metavar="PATTERN", help="run only the trials whose name matches (shell pattern)")
    p.add_argument("--verbose", action="store_true", help="print training output instead of logs/<trial>.txt")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "rtsegc study") -> int:
    from rtseg_compiler import SpecError

    args = build_parser(prog).parse_args(argv)
    if args.workers < 1:
        build_parser(prog).error("--workers must be at least 1")
    try:
        return run_study(args)
    except SpecError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return 2
    except (StudyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the study folder; continue with --resume", file=sys.stderr)
        return 130


def _base_row(row: PlanRow) -> dict[str, Any]:
    t = row.trial
    return {"name": t.name, "encoder": t.encoder_label, "meta": t.meta_label, "variant": t.variant,
            "model": t.model_label, "seed": t.seed, "encoder_params": dict(t.encoder_params),
            "meta_params": dict(t.meta_params), "output_stride": t.output_stride, "params": row.params,
            "macs": row.macs, "gflops": round(row.flops / 1e9, 4),
            "train_activation_mib": round(row.activation_bytes / 2**20, 1), "over_budget": row.over_budget}


def write_model_spec(path: Path, document: dict[str, Any]) -> str:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by rtsegc study: this trial's network as a model file\n"
                    + yaml.safe_dump(document, sort_keys=False))
    return str(path)


def make_job(study: Study, row: PlanRow, study_dir: Path, data: str, args: argparse.Namespace,
             base: dict[str, Any]) -> TrialJob:
    trial = row.trial
    paths = trial_paths(study_dir, trial.name)
    spec = write_model_spec(paths["spec"], trial.model_document(study.num_classes))
    return TrialJob(name=trial.name, study_dir=str(study_dir), model_spec=spec,
                    output_stride=trial.output_stride,
                    seed=trial.seed, recipe=dict(trial.recipe), data=data, dataset=study.dataset,
                    eval=dict(study.eval), bench=dict(study.bench), row=base, cpus=study.resources["cpus"],
                    processes=study.resources["processes"],
                    deterministic=args.deterministic, quiet=not args.verbose)


def _data_folder(study: Study, args: argparse.Namespace) -> str:
    data = args.data or study.data
    if not data:
        raise StudyError(f"{study.source}: no dataset folder: give dataset.data in the file or --data")
    if data != "synthetic" and not Path(data).is_dir():
        raise StudyError(f"dataset folder '{data}' does not exist (from "
                         f"{'--data' if args.data else study.source + ' dataset.data'}); give --data DIR")
    return str(Path(data).resolve()) if data != "synthetic" else data


def _study_dir(study: Study, args: argparse.Namespace) -> Path:
    folder = Path(args.out_dir or study.out).resolve()
    started = [folder / sub for sub in ("results", "runs")
               if (folder / sub).is_dir() and any((folder / sub).iterdir())]
    if started and not args.resume:
        raise StudyError(f"{folder} already holds a study's {started[0].name}: continue it with --resume, "
                         "or give another --out-dir")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_study(args: argparse.Namespace) -> int:
    import fnmatch

    study = load_study(args.study)
    for warning in study.warnings:
        print(warning.render(), file=sys.stderr)
    gpus, processes = study.resources["gpus"], study.resources["processes"]
    if gpus > 1 and processes != gpus:
        raise StudyError(f"{study.source}: resources: {gpus} GPUs need one training process each "
                         f"(processes: {gpus}), not {processes}")
    if args.executor == "ray":
        from .executors import ray_module

        ray_module()  # the install line now, not after the plan
    if study.search is not None and not study.trials:
        from .search import run_search

        return run_search(study, args)
    rows = plan_study(study)
    if args.only:
        rows = [r for r in rows if fnmatch.fnmatchcase(r.trial.name, args.only)]
        if not rows:
            raise StudyError(f"--only {args.only}: no trial of {study.name} matches")
    print(render_plan(study, rows), flush=True)
    if args.dry_run:
        return 0
    data = _data_folder(study, args)
    study_dir = _study_dir(study, args)
    (study_dir / "study.yaml").write_text(study.text)
    results: dict[str, dict[str, Any]] = {}
    jobs = []
    for row in rows:
        base = _base_row(row)
        if row.over_budget is not None:
            results[row.trial.name] = {**base, "status": "over_budget"}
            continue
        previous = trial_paths(study_dir, row.trial.name)["result"]
        if args.resume and previous.is_file():
            done = json.loads(previous.read_text())
            if done.get("status") in STATUS_DONE:
                results[row.trial.name] = done
                print(f"[{row.trial.name}] finished earlier: mIoU {100 * (done.get('miou') or 0):.2f} %",
                      flush=True)
                continue
        jobs.append(make_job(study, row, study_dir, data, args, base))
        results[row.trial.name] = {**base, "status": "pending"}

    def on_result(job: TrialJob, row: dict[str, Any]) -> None:
        results[job.name] = row
        if row.get("status") in STATUS_DONE:
            resumed = f", resumed at step {row['resumed_from']}" if row.get("resumed_from") else ""
            latency = f", latency {row['latency_ms']:.2f} ms" if row.get("latency_ms") is not None else ""
            print(f"[{job.name}] {row['status']}: mIoU {100 * (row.get('miou') or 0):.2f} %, "
                  f"{row.get('steps')} steps{resumed}{latency}, {row.get('wall_s')} s", flush=True)
        else:
            print(f"[{job.name}] {row.get('status')}: {row.get('error')} "
                  f"(log: {trial_paths(study_dir, job.name)['log']})", flush=True)
        # a partial report after each trial, without the plots
        _report(study, study_dir, [results[r.trial.name] for r in rows], plots=False)

    if jobs:
        print(f"running {len(jobs)} trial(s) with the {args.executor} executor"
              + (f", {args.workers} at a time" if args.executor == "local" and args.workers > 1 else ""),
              flush=True)
        run_jobs(jobs, args.executor, workers=args.workers, address=args.address,
                 gpus=study.resources.get("gpus", 0), on_result=on_result)
    final = [results[r.trial.name] for r in rows]
    paths = _report(study, study_dir, final)
    print(f"report: {paths['md']} (also {paths['csv'].name}, {paths['json'].name}"
          + "".join(f", {p.name}" for k, p in paths.items() if k.endswith(".png")) + ")")
    return 1 if any(r.get("status") == "failed" for r in final) else 0


def _report(study: Study, study_dir: Path, rows: list[dict[str, Any]], plots: bool = True):
    from .report import write_report

    return write_report(study_dir, study, rows, plots=plots)
