"""The ``search:`` section: Optuna samples spec parameters, the audit rejects what is over budget for free.

Each candidate is one ask of an Optuna study (TPE or random sampler, seeded). Before it costs a training
step, the candidate goes through the same analytic plan as a grid trial (:func:`.plan.plan_trial`): a
spec that cannot be built is told to Optuna as failed, one over the budget as pruned, and neither
trains. Candidates that pass train as ordinary trials; after every evaluation their validation mIoU is
reported to Optuna's pruner (the median rule, or ASHA: successive halving over evaluations), which may
stop them early. A candidate whose parameters were already tried reuses that outcome.

The report counts each kind: pruned analytically (over budget), invalid, duplicates, stopped early
and completed. ``--resume`` replays the finished candidates from their results and run logs: the seeded
sampler, told the same outcomes, asks the same next candidates.

The search runs on the local executor, one candidate at a time: Optuna's pruner needs each
candidate's curve as it trains.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from rtseg_compiler.diagnostics import SpecError

from .executors import StudyError
from .plan import plan_trial
from .spec import Study, Trial
from .trial import run_trial, trial_paths

__all__ = ["OPTUNA_INSTALL", "run_search"]

OPTUNA_INSTALL = "pip install 'rtseg-compiler[study]'  (or: pip install 'optuna>=4.0')"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise StudyError(f"a search: section needs Optuna, which is not installed: {OPTUNA_INSTALL}") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _suggest(trial: Any, name: str, dim: Mapping[str, Any]) -> Any:
    if "choices" in dim:
        return trial.suggest_categorical(name, list(dim["choices"]))
    low, high, step = dim["low"], dim["high"], dim.get("step")
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
    if integers and (step is None or float(step).is_integer()):
        return trial.suggest_int(name, low, high, step=int(step or 1), log=bool(dim.get("log")))
    return trial.suggest_float(name, float(low), float(high), step=step, log=bool(dim.get("log")))


def _pruner(optuna: Any, search: Any) -> Any:
    if search.rule == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials,
                                           n_warmup_steps=search.warmup_evals)
    if search.rule == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.min_evals,
                                                      reduction_factor=search.reduction_factor)
    return optuna.pruners.NopPruner()


def _candidate(study: Study, k: int, values: Mapping[str, Any]) -> Trial:
    search = study.search
    enc, meta, stride = dict(search.encoder_params), dict(search.meta_params), None
    for name, value in values.items():
        route = search.routes[name]
        if route == "output_stride":
            stride = value
        else:
            (enc if route == "encoder" else meta)[name] = value
    variant = ", ".join(f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}" for n, v in values.items())
    return Trial(name=f"cand{k:03d}", encoder=search.encoder, meta=search.meta, encoder_params=enc,
                 meta_params=meta, output_stride=stride, seed=study.seeds[0], recipe=dict(study.base_recipe),
                 encoder_label=search.encoder_label, meta_label=search.meta_label, variant=variant)


def _eval_curve(run_dir: Path) -> list[float]:
    """The validation mIoU of every evaluation in a run's log.jsonl, in order."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return []
    curve = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "eval" in record and record["eval"].get("miou") is not None:
            curve.append(float(record["eval"]["miou"]))
    return curve


def run_search(study: Study, args: argparse.Namespace) -> int:
    from .cli import _base_row, _data_folder, _report, _study_dir, make_job

    if args.executor != "local":
        raise StudyError("a search: section runs with the local executor (the pruner follows each candidate "
                         "as it trains); run the grid of the best candidates on Ray afterwards")
    optuna = _optuna()
    search = study.search
    sampler = (optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=min(10, search.candidates))
               if search.sampler == "tpe" else optuna.samplers.RandomSampler(seed=search.seed))
    opt = optuna.create_study(direction="maximize", sampler=sampler, pruner=_pruner(optuna, search))
    data = None if args.dry_run else _data_folder(study, args)
    study_dir = None if args.dry_run else _study_dir(study, args)
    if study_dir is not None:
        (study_dir / "study.yaml").write_text(study.text)
    b = study.budget_input
    print(f"search: {search.candidates} candidates of {search.meta_label} x {search.encoder_label} over "
          f"{', '.join(search.space)}; budget {dict(study.budget)}" + (f" at {b[0]}x{b[1]}" if b else ""),
          flush=True)
    rows: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for k in range(search.candidates):
        ot = opt.ask()
        values = {name: _suggest(ot, name, dim) for name, dim in search.space.items()}
        trial = _candidate(study, k, values)
        key = json.dumps(values, sort_keys=True)
        try:
            plan = plan_trial(study, trial)
        except SpecError as exc:
            opt.tell(ot, state=optuna.trial.TrialState.FAIL)
            rows.append({"name": trial.name, "encoder": trial.encoder_label, "meta": trial.meta_label,
                         "variant": trial.variant, "seed": trial.seed, "params": 0, "gflops": 0.0,
                         "status": "invalid", "error": exc.diagnostics[0].message})
            print(f"[{trial.name}] {trial.variant}: invalid: {exc.diagnostics[0].message}", flush=True)
            continue
        row = _base_row(plan)
        if plan.over_budget is not None:
            opt.tell(ot, state=optuna.trial.TrialState.PRUNED)
            rows.append({**row, "status": "over_budget"})
            print(f"[{trial.name}] {trial.variant}: over budget ({plan.over_budget}), not trained",
                  flush=True)
            continue
        if key in seen:
            earlier = seen[key]
            if earlier.get("status") == "ok" and earlier.get("miou") is not None:
                opt.tell(ot, earlier["miou"])
            else:
                opt.tell(ot, state=optuna.trial.TrialState.PRUNED)
            rows.append({**row, "status": "duplicate", "error": f"same parameters as {earlier['name']}"})
            print(f"[{trial.name}] {trial.variant}: same as {earlier['name']}, not trained again", flush=True)
            continue
        if args.dry_run:
            opt.tell(ot, state=optuna.trial.TrialState.PRUNED)  # keeps the sampler moving; nothing trains
            rows.append({**row, "status": "planned"})
            seen[key] = rows[-1]
            print(f"[{trial.name}] {trial.variant}: {plan.flops / 1e9:.2f} GFLOPs, would train", flush=True)
            continue
        result = _train_candidate(study, args, plan, row, study_dir, data, ot, make_job)
        rows.append(result)
        seen[key] = result
        if result["status"] == "ok":
            opt.tell(ot, result["miou"])
        elif result["status"] == "stopped":
            opt.tell(ot, state=optuna.trial.TrialState.PRUNED)
        else:
            opt.tell(ot, state=optuna.trial.TrialState.FAIL)
        miou = 100 * (result.get("miou") or 0)
        print(f"[{trial.name}] {trial.variant}: {result['status']}, mIoU {miou:.2f} %, "
              f"{result.get('steps')} steps", flush=True)
    counts = {"pruned_analytically": sum(r["status"] == "over_budget" for r in rows),
              "invalid": sum(r["status"] == "invalid" for r in rows),
              "duplicates": sum(r["status"] == "duplicate" for r in rows),
              "early_stopped": sum(r["status"] == "stopped" for r in rows),
              "completed": sum(r["status"] == "ok" for r in rows)}
    print("search: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()), flush=True)
    if args.dry_run:
        return 0
    trained = [r for r in rows if r["status"] in ("ok", "stopped")]
    notes = []
    if trained:
        best = max((r for r in trained if r["status"] == "ok"), key=lambda r: r["miou"] or 0, default=None)
        largest = max(trained, key=lambda r: r["gflops"])
        notes.append(f"largest trained candidate: {largest['name']} at {largest['gflops']:.2f} GFLOPs "
                     f"(audit input), {largest['train_activation_mib']} MiB, "
                     f"{largest['params'] / 1e6:.3f} M params")
        if best is not None:
            notes.append(f"best completed candidate: {best['name']} ({best['variant']}), "
                         f"mIoU {100 * best['miou']:.2f} %")
    paths = _report_search(study, study_dir, rows, counts, notes)
    print(f"report: {paths['md']}")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def _train_candidate(study: Study, args, plan, row, study_dir: Path, data: str, ot,
                     make_job) -> dict[str, Any]:
    paths = trial_paths(study_dir, plan.trial.name)
    evals = {"n": 0}

    def on_eval(step: int, metrics: Mapping[str, Any]) -> bool:
        evals["n"] += 1
        miou = metrics.get("miou")
        ot.report(float(miou) if miou is not None else 0.0, evals["n"])
        return study.search.rule != "none" and ot.should_prune()

    if args.resume and paths["result"].is_file():
        done = json.loads(paths["result"].read_text())
        if done.get("status") in ("ok", "stopped") and done.get("variant") == plan.trial.variant:
            for i, miou in enumerate(_eval_curve(paths["run"]), start=1):
                ot.report(miou, i)  # the pruner compares later candidates with this curve
            print(f"[{plan.trial.name}] finished earlier", flush=True)
            return done
    if (paths["run"] / "last.pt").is_file():  # interrupted: its evaluations so far count for the pruner
        for miou in _eval_curve(paths["run"]):
            evals["n"] += 1
            ot.report(miou, evals["n"])
    # one process: the pruner reads the candidate's evaluations through on_eval, in this process
    job = replace(make_job(study, plan, study_dir, data, args, row), processes=1)
    return run_trial(job, on_eval=on_eval)


def _report_search(study: Study, study_dir: Path, rows, counts, notes):
    from .report import write_report

    trained = [r for r in rows if r["status"] in ("ok", "stopped", "failed")]
    return write_report(study_dir, study, rows, extra_counts={f"search {k}": v for k, v in counts.items()},
                        notes=notes, table_rows=trained)
