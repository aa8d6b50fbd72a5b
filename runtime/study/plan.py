"""The study's plan: every trial audited analytically, checked against the budget, before anything trains.

The audit is the compiler's torch-free analysis (``rtseg_compiler.analyze``): shapes, parameters, MACs and
FLOPs in the study's convention, and the activation bytes a training step stores (the sum of every layer
output, float32, batch 1; ``passes/budget.py``). It takes milliseconds per network, so a study checks
every trial at each size it will use (audit, training and benchmark inputs) and refuses an invalid
combination (an output stride the meta cannot take, a parameter value the spec rejects) before the first
one trains. A trial over the budget is not an error: it is kept in the plan as "over budget" with the
number that crossed the limit, and never trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from rtseg_compiler.diagnostics import Diagnostic, SpecError

from .spec import Study, Trial

__all__ = ["PlanRow", "audit_network", "budget_problem", "plan_study", "render_plan"]


@dataclass(frozen=True)
class PlanRow:
    trial: Trial
    params: int
    macs: int
    flops: float  # in the study's convention, at the audit input
    activation_bytes: int  # at the budget input
    over_budget: str | None  # why it is not trained, or None


def audit_network(encoder: str, meta: str, encoder_params: Mapping[str, Any], meta_params: Mapping[str, Any],
                  output_stride: int | None, size: Sequence[int] | None, num_classes: int):
    """The compiler's analysis of one network at one size (raises SpecError)."""
    from rtseg_compiler import analyze

    return analyze(encoder=encoder, meta=meta, input_size=tuple(size) if size else None,
                   num_classes=num_classes, output_stride=output_stride,
                   encoder_params=dict(encoder_params) or None, meta_params=dict(meta_params) or None)


def _flops(analysis: Any, convention: str) -> float:
    return float(analysis.audit.to_json(convention)["total"])


def budget_problem(budget: Mapping[str, Any], params: int, flops_at_budget: float,
                   activation_bytes: int, size: Sequence[int] | None, convention: str) -> str | None:
    """The first budget limit a network crosses, as a sentence with both numbers; None if within."""
    at = f" at {size[0]}x{size[1]}" if size else ""
    unit = {"mac": "GMACs", "flop": "GFLOPs", "tf": "GFLOPs (tf)"}[convention]
    if "max_gflops" in budget and flops_at_budget / 1e9 > budget["max_gflops"]:
        return f"{flops_at_budget / 1e9:.2f} {unit}{at} > {budget['max_gflops']:g}"
    if "max_params" in budget and params > budget["max_params"]:
        return f"{params / 1e6:.3f} M params > {budget['max_params'] / 1e6:g} M"
    if "max_activation_mib" in budget and activation_bytes / 2**20 > budget["max_activation_mib"]:
        return (f"{activation_bytes / 2**20:.1f} MiB of training activations{at} > "
                f"{budget['max_activation_mib']:g} MiB")
    return None


def _sizes(study: Study, trial: Trial) -> list[tuple[str, Sequence[int] | None]]:
    sizes: list[tuple[str, Sequence[int] | None]] = [("training", trial.recipe.get("input"))]
    sizes += [("benchmark", tuple(s)) for s in study.bench.get("inputs", [])]
    return sizes


def plan_study(study: Study) -> list[PlanRow]:
    """Audit every trial; SpecError (one located diagnostic per bad trial) if any cannot be built."""
    from rtseg_compiler.passes.budget import activation_bytes

    rows, problems = [], []
    for trial in study.trials:
        try:
            rows.append(plan_trial(study, trial, activation_bytes))
        except SpecError as exc:
            first, *rest = exc.errors or exc.diagnostics
            origin = (f"reported at {first.loc}",) if first.loc is not None else ()
            problems.append(Diagnostic(f"trial '{trial.name}' cannot be built: {first.message}",
                                       trial.declared_at, hint=first.hint,
                                       notes=origin + tuple(d.render() for d in rest[:4])))
    if problems:
        raise SpecError(problems)
    return rows


def plan_trial(study: Study, trial: Trial, activation_bytes: Any = None) -> PlanRow:
    if activation_bytes is None:
        from rtseg_compiler.passes.budget import activation_bytes
    args = (trial.encoder, trial.meta, trial.encoder_params, trial.meta_params, trial.output_stride)
    audit = audit_network(*args, study.audit_input, study.audit_classes)
    for _, size in _sizes(study, trial):  # the sizes the trial will run at must build too
        if size is not None and tuple(size) != study.audit_input:
            audit_network(*args, size, study.num_classes)
    budget_input = study.budget_input
    at_budget = audit if budget_input == study.audit_input else audit_network(*args, budget_input,
                                                                                study.audit_classes)
    act = activation_bytes(at_budget.audit)
    problem = budget_problem(study.budget, at_budget.audit.params, _flops(at_budget, study.convention), act,
                             budget_input or at_budget.audit.input[2:], study.convention)
    return PlanRow(trial, audit.audit.params, audit.audit.macs, _flops(audit, study.convention), act, problem)


def render_plan(study: Study, rows: Sequence[PlanRow]) -> str:
    """The plan as a fixed-width table, one line per trial."""
    unit = {"mac": "GMACs", "flop": "GFLOPs", "tf": "GFLOPs(tf)"}[study.convention]
    size = f"{study.audit_input[0]}x{study.audit_input[1]}" if study.audit_input else "spec input"
    b = study.budget_input
    head = ["trial", "encoder", "meta", "variant", "params (M)", f"{unit} @{size}",
            f"train act. (MiB) @{b[0]}x{b[1]}" if b else "train act. (MiB)", "plan"]
    lines = [[r.trial.name, r.trial.encoder_label, r.trial.meta_label, r.trial.variant or "-",
              f"{r.params / 1e6:.3f}", f"{r.flops / 1e9:.2f}", f"{r.activation_bytes / 2**20:.1f}",
              "train" if r.over_budget is None else f"over budget: {r.over_budget}"] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    right = {4, 5, 6}

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(line) for line in lines]
    keep = sum(r.over_budget is None for r in rows)
    out.append(f"{len(rows)} trials: {keep} to train, {len(rows) - keep} over budget "
               f"({study.num_classes} classes; figures at {study.audit_classes} classes)")
    return "\n".join(line.rstrip() for line in out)
