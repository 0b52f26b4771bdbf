"""The tuning phase: each tuned run trained at every lr of the plan's grid, its lr chosen on val.

`tune_phase` runs before the study's final jobs are resolved. Each trial is an ordinary job
(resnorm.study.execution.job.Job) whose folder is STUDY/tuning/<run>/lr-<lr>/seed-<s>/, so a
finished trial is skipped and an interrupted one resumes exactly as a study's runs do; the
folders are the source of truth. One Optuna study per tuned run (storage: the journal file
STUDY/tuning/journal.log, `JournalStorage(JournalFileBackend(path))`, safe for several
processes and on a shared file system) mirrors them: each finished grid value is added as
one trial, once, under a file lock, so a kill at any point and any number of re-runs leave
no duplicates. No pruning: every grid value trains its full trial epochs (early pruning
penalises slow starters such as IN and the no-norm variant).

Choosing reads each trial's val column of metrics.csv only (resnorm.study.tuning.results):
test is never read before the final runs. `apply_choices` then writes the chosen lr into each
tuned run, so the final runs are ordinary runs with an explicit lr.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

from resnorm.errors import UsageError
from resnorm.study.plan.manifest import Design
from resnorm.study.plan.parse import Plan, RunSpec, lr_rule_factor, resolve_fields, train_default
from resnorm.study.tuning.results import (
    JOURNAL_FILE, TUNING_DIR, GridPoint, TuneResult, choose, lr_text, read_point,
    trial_folder, write_choices)
from resnorm.study.plan.tune_settings import TuneSettings

__all__ = ["tuned_runs", "shared_lrs", "tune_phase", "apply_choices", "grid_of", "choice_line"]

POLL_S = 10.0  # seconds between looks at trials another process trains


def tuned_runs(plan: Plan, design: Design) -> list[RunSpec]:
    """The runs the phase tunes: `tune.runs`, else the design's variants and batch runs (a
    literal-recipe run keeps the lr it fixes as written), less those that share another's lr."""
    if plan.tune.runs is not None:
        return [s for s in plan.runs if s.name in plan.tune.runs]
    share = shared_lrs(plan, design)
    names = {*design.variants, *(m.run for members in design.batch.values() for m in members)}
    return [s for s in plan.runs if s.name in names and s.name not in share]


def shared_lrs(plan: Plan, design: Design) -> dict[str, str]:
    """Which run takes which other run's chosen lr: the sanity pair's reference its
    candidate's (the pair must differ in the norm alone), then the plan's `tune.share`."""
    share, named = {}, plan.tune.runs
    if design.sanity is not None and (named is None or (design.sanity[1] in named
                                                        and design.sanity[0] not in named)):
        share[design.sanity[0]] = design.sanity[1]
    return {**share, **plan.tune.share}


def grid_of(plan: Plan, spec: RunSpec) -> tuple[list[float], float]:
    """A run's lrs to try (the plan's base grid scaled by its lr rule, plus its untuned lr
    when `tune.default`), ascending, and its untuned lr."""
    fields, _ = resolve_fields(plan, spec)
    factor, default = lr_rule_factor(plan, fields)[1], float(fields["lr"])
    values = [g * factor for g in plan.tune.lr] + ([default] if plan.tune.default else [])
    unique = {lr_text(v): float(lr_text(v)) for v in values}
    return sorted(unique.values()), default


def _trial_jobs(plan: Plan, study: Path, spec: RunSpec, grid: list[float], make_job) -> dict:
    """{lr: [Job per seed]} of one tuned run."""
    fields, _ = resolve_fields(plan, spec)
    seeds = plan.seeds_of(spec)[:1]
    seeds = [seeds[0] + i for i in range(plan.tune.seeds)]
    epochs = plan.tune.epochs or fields.get("epochs", train_default("epochs"))
    jobs = {}
    for lr in grid:
        trial = RunSpec(f"{spec.name}@lr={lr_text(lr)}", {**spec.overrides, "lr": lr})
        note = f"tuning trial: lr {lr_text(lr)} of the grid"
        trial_fields = {**fields, "lr": lr, "epochs": epochs, "eval_test": False}
        jobs[lr] = [make_job(trial, trial_fields, seed, trial_folder(study, spec.name, lr, seed),
                             note) for seed in seeds]
    return jobs


def _train_trials(todo: list, execute: Callable, say) -> None:
    """Every trial job, waiting for those another study process trains (its lock) to end."""
    pending = todo
    while pending:
        outcomes = execute(pending, say)
        pending = [job for job, o in zip(pending, outcomes) if o.status == "busy"]
        if pending:
            say(f"tune: waiting for {len(pending)} trial(s) other processes are training")
            time.sleep(POLL_S)


def tune_phase(plan: Plan, design: Design, study: Path, make_job: Callable, execute: Callable,
               say=print) -> dict[str, TuneResult]:
    """Train every tuned run at every grid value (`execute(jobs, say) -> [Outcome]`), mirror
    the trials into Optuna, choose each run's lr; write STUDY/tuning/tuning.json and say the
    choices. `make_job(spec, fields, seed, folder, lr_note) -> Job`. {} without `tune:`."""
    if plan.tune is None:
        return {}
    _check_optuna()
    specs, share = tuned_runs(plan, design), shared_lrs(plan, design)
    untuned = [v for v in share.values() if v not in {s.name for s in specs}]
    if untuned:
        raise UsageError(f"plan: tune.share: '{untuned[0]}' is not a tuned run: there is no "
                         "chosen lr to share")
    grids = {s.name: grid_of(plan, s) for s in specs}
    jobs = {s.name: _trial_jobs(plan, study, s, grids[s.name][0], make_job) for s in specs}
    todo = [job for by_lr in jobs.values() for seed_jobs in by_lr.values() for job in seed_jobs]
    epochs = plan.tune.epochs or "the runs'"
    say(f"tune: {len(specs)} run(s), {len(todo)} trials ({plan.tune.seeds} seed(s) per lr) "
        f"of {epochs} epochs; each run's lr chosen by {plan.tune.score} on val (median of "
        f"the last {plan.tune.last_epochs} epochs)")
    _train_trials(todo, execute, say)  # (finished ones skipped: the folders are the truth)
    results = _mirror(study, jobs, plan.tune)
    for spec in specs:
        results[spec.name].default_lr = grids[spec.name][1]
        results[spec.name].chosen_lr, results[spec.name].at_edge = choose(
            results[spec.name].grid, grids[spec.name][1])
        results[spec.name].shared_with = next(
            (k for k, v in share.items() if v == spec.name), None)
        say(choice_line(results[spec.name]))
    write_choices(study, results, {**plan.tune.to_yaml_dict(), "lr_rule": plan.lr_rule,
                                   "base_batch_size": plan.base_batch_size})
    return results


def choice_line(r: TuneResult) -> str:
    """'tune bn: lr 0.08 (val_acc 0.512) of 0.0025 0.31 | 0.008 0.40 | ...' (+ widen)."""
    grid = " | ".join(f"{lr_text(p.lr)} " + (f"{p.score:.3f}" if p.score is not None
                                             else p.status) for p in r.grid)
    if r.chosen_lr is None:
        return (f"tune {r.run}: no trial finished ({grid}); the final runs keep the untuned "
                f"lr {lr_text(r.default_lr)}")
    line = f"tune {r.run}: lr {lr_text(r.chosen_lr)} chosen ({r.score} on val: {grid})"
    if r.at_edge:
        line += (f"; warning: the {'lowest' if r.at_edge == 'low' else 'highest'} value of "
                 "the grid: widen the grid")
    return line


def apply_choices(plan: Plan, design: Design,
                  results: dict[str, TuneResult]) -> tuple[Plan, dict[str, str]]:
    """A copy of the plan whose tuned (and sharing) runs set the chosen lr, and each such
    run's lr note. A run whose grid had no finished trial keeps its untuned lr."""
    if not results:
        return plan, {}
    tuned, notes, share = copy.deepcopy(plan), {}, shared_lrs(plan, design)
    for spec in tuned.runs:
        source = share.get(spec.name, spec.name)
        r = results.get(source)
        if r is None or r.chosen_lr is None:
            if r is not None:
                notes[spec.name] = f"untuned: no trial of the grid finished ({r.run})"
            continue
        fields, _ = resolve_fields(plan, spec)
        source_fields, _ = resolve_fields(plan, next(s for s in plan.runs if s.name == source))
        scale = lr_rule_factor(plan, fields)[1] / lr_rule_factor(plan, source_fields)[1]
        lr = r.chosen_lr * scale
        spec.overrides["lr"] = lr
        base = plan.base_batch_size
        notes[spec.name] = (
            f"tuned: {lr_text(lr)}, chosen on val ({r.score}, median of the last "
            f"{r.last_epochs} epochs) from the grid {', '.join(map(lr_text, plan.tune.lr))} "
            f"(base lrs at batch {base}, {plan.lr_rule} rule)"
            + (f"; {source}'s choice" if source != spec.name else "")
            + ("; at the grid's end: widen the grid" if r.at_edge else ""))
    return tuned, notes


def _check_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UsageError("the plan's tune: section needs Optuna: pip install "
                         "'resnorm[tune]' (or pip install optuna)") from None


def journal_storage(study: Path):
    """The Optuna storage of a study's tuning: a journal file (optuna >= 4: JournalFileBackend;
    before: JournalFileStorage)."""
    from optuna.storages import JournalStorage

    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4
        from optuna.storages import JournalFileStorage as JournalFileBackend
    path = Path(study) / TUNING_DIR / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _mirror(study: Path, jobs: dict, settings: TuneSettings) -> dict[str, TuneResult]:
    """Read every grid value from its folders; add each finished one to its run's Optuna
    study unless already there (a COMPLETE trial per lr; a FAIL only for an lr with none)."""
    import filelock
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    column, k = settings.score, settings.last_epochs
    results = {}
    with filelock.FileLock(str(Path(study) / TUNING_DIR / ".journal.lock"), timeout=600):
        storage = journal_storage(study)
        for run, by_lr in jobs.items():
            grid = [read_point([j.dir for j in seed_jobs], lr, column, k)
                    for lr, seed_jobs in by_lr.items()]
            results[run] = TuneResult(run, grid, None, None, 0.0, column, k)
            ostudy = optuna.create_study(study_name=run, storage=storage,
                                         direction="maximize", load_if_exists=True)
            _add_new(ostudy, grid)
    return results


def _add_new(ostudy, grid: list[GridPoint]) -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    seen = {(lr_text(t.params["lr"]), t.state) for t in ostudy.get_trials(deepcopy=False)
            if "lr" in t.params}
    lrs = [p.lr for p in grid]
    dist = {"lr": FloatDistribution(min(lrs), max(lrs), log=True)}
    for p in grid:
        key = lr_text(p.lr)
        if p.status == "ok" and (key, TrialState.COMPLETE) not in seen:
            state, value = TrialState.COMPLETE, p.score
        elif p.status in ("diverged", "failed") and not any(k == key for k, _ in seen):
            state, value = TrialState.FAIL, None
        else:
            continue
        ostudy.add_trial(optuna.trial.create_trial(
            params={"lr": p.lr}, distributions=dist, value=value, state=state,
            user_attrs={"status": p.status, "seed_scores": p.seeds}))
