"""Each run of a plan resolved once: its complete training config, its lr and the rule that
produced it, its global batch (a `ResolvedRun`, resnorm.study.plan.manifest).

`resolve_runs(plan)` is the one place the plan's defaults, a run's overrides, the recipe and
the plan's lr rule meet; `resnorm study` calls it when the study starts and writes the records
into the manifest. Everything after (the design, the tuning phase, the jobs, capacity, the
executors, the report, the export) reads those records. The lr rule itself is
resnorm.train.lr_rule, the same rule the default recipe follows.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from resnorm.errors import UsageError
from resnorm.study.plan.manifest import Design, ResolvedRun
from resnorm.study.plan.parse import Plan, RunSpec, train_default

__all__ = ["resolve_runs", "plan_design", "experiment_settings"]


def resolve_runs(plan: Plan) -> dict[str, ResolvedRun]:
    """Every run of the plan resolved, in plan order; a bad setting is a one-line UsageError
    naming the run."""
    return {spec.name: _resolve(plan, spec) for spec in plan.runs}


def _resolve(plan: Plan, spec: RunSpec) -> ResolvedRun:
    from resnorm.distributed import launched_world_size
    from resnorm.train import resolve_config

    fields, note, rule = _run_fields(plan, spec)
    try:
        cfg = resolve_config({**fields, "data": "-", "out": "-", "name": spec.name})
    except UsageError as exc:
        raise UsageError(f"plan run '{spec.name}': {exc}") from None
    config = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("seed", "out", "data")}
    return ResolvedRun(spec.name, config, plan.seeds_of(spec), float(cfg.lr), note, rule,
                       cfg.batch_size * launched_world_size())


def _run_fields(plan: Plan, spec: RunSpec) -> tuple[dict[str, Any], str, str | None]:
    """A run's TrainConfig fields (defaults + overrides + the lr rule), how lr was set, and
    the rule that set it (None: the run sets lr itself).

    Otherwise the base lr (the defaults' `lr`, else the recipe's lr at the plan's base batch
    size) is scaled by the plan's rule to the run's global batch, and written into the run's
    config explicitly, so config.yaml shows the lr used.
    """
    from resnorm.distributed import launched_world_size

    fields = {**plan.defaults, **spec.overrides}
    if "lr" in spec.overrides:
        return fields, "set by the run", None
    base_lr, source = fields.get("lr"), "plan default"
    if base_lr is None:
        recipe = fields.get("recipe", train_default("recipe"))
        base_lr = _recipe_lr(fields, plan.base_batch_size)
        source = f"{recipe} recipe at batch {plan.base_batch_size}"
    batch = int(fields.get("batch_size", train_default("batch_size"))) * launched_world_size()
    factor = plan.rule.factor(batch)
    fields["lr"] = float(base_lr) * factor
    note = f"{float(base_lr):g} ({source})"
    if factor != 1.0:
        note += f" x {factor:g} ({plan.lr_rule} rule, batch {batch})"
    return fields, note, plan.lr_rule


def _recipe_lr(fields: dict[str, Any], base_batch_size: int) -> float:
    """The lr the run's recipe gives at the plan's base batch size (the base of the lr rule)."""
    from resnorm.train import resolve_config

    probe = {**fields, "batch_size": base_batch_size, "lr": None, "data": "-", "out": "-"}
    try:
        return float(resolve_config(probe, world_size=1).lr)
    except UsageError as exc:
        raise UsageError(f"run settings {fields}: {exc}") from None


def experiment_settings(runs: dict[str, ResolvedRun]) -> dict[str, dict[str, Any]]:
    """Each run's experiment settings (resnorm.study.plan.design.experiment_fields)."""
    from resnorm.study.plan.design import experiment_fields

    return {name: experiment_fields(r.config) for name, r in runs.items()}


def plan_design(plan: Plan, runs: dict[str, ResolvedRun], source: str | None = None) -> Design:
    """The plan's design (resnorm.study.plan.design): as declared under `design:`, completed
    with the assignment's where it is silent, and checked against the runs' resolved
    settings."""
    from resnorm.norms import split_kind
    from resnorm.study.plan.design import resolve_design

    fields = experiment_settings(runs)
    kinds = {name: split_kind(str(f.get("norm")))[0] for name, f in fields.items()}
    return resolve_design(plan.design, fields, kinds, plan.comparisons, source or plan.source)
