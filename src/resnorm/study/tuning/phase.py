"""The tuning phase: each tuned run trained at the points its Optuna sampler draws, its
setting chosen on val.

`tune_phase` runs before the study's final jobs. For each tuned run the engine
(resnorm.study.tuning.engine) asks the run's Optuna study for its trials (a grid, or the
same Sobol points for every run); each trial is one ordinary job per seed
(resnorm.study.execution.job.Job) trained through the study's executor into
STUDY/tuning/<run>/lr-<lr>[-wd-<wd>]/seed-<s>/, so a finished trial is skipped and an
interrupted one resumes exactly as a study's runs do: the folders are the truth of what
trained. Each finished trial is then told its score (the median of its last val epochs,
resnorm.study.tuning.results), a diverged or failed one its failure, and the choice is the
Optuna study's best trial. Test is never read before the final runs.

`apply_choices` then writes each choice into the run's resolved record, so the final runs are
ordinary runs with an explicit lr (and weight decay).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

from resnorm.errors import UsageError
from resnorm.study.plan.manifest import Design, ResolvedRun
from resnorm.study.plan.parse import Plan
from resnorm.study.tuning import engine
from resnorm.study.tuning.results import (
    TrialPoint, TuneResult, edges_of, lr_text, point_name, read_point,
    write_choices)
from resnorm.studydir import StudyDir

__all__ = ["tuned_runs", "shared_lrs", "tune_phase", "apply_choices", "choice_line",
           "search_text"]

POLL_S = 10.0  # seconds between looks at trials another process trains


class TrialRun(NamedTuple):
    """What a trial's job is named by: '<run>@lr=<lr>[,wd=<wd>]'."""

    name: str


def tuned_runs(plan: Plan, design: Design) -> list[str]:
    """The runs the phase tunes: `tune.runs`, else the design's variants and batch runs (a
    literal-recipe run keeps the lr it fixes as written), less those that share another's
    choice; in plan order."""
    if plan.tune.runs is not None:
        return [s.name for s in plan.runs if s.name in plan.tune.runs]
    share = shared_lrs(plan, design)
    names = {*design.variants, *(m.run for members in design.batch.values() for m in members)}
    return [s.name for s in plan.runs if s.name in names and s.name not in share]


def shared_lrs(plan: Plan, design: Design) -> dict[str, str]:
    """Which run takes which other run's choice: the sanity pair's reference its
    candidate's (the pair must differ in the norm alone), then the plan's `tune.share`."""
    share, named = {}, plan.tune.runs
    if design.sanity is not None and (named is None or (design.sanity[1] in named
                                                        and design.sanity[0] not in named)):
        share[design.sanity[0]] = design.sanity[1]
    return {**share, **plan.tune.share}


def untuned_params(plan: Plan, run: ResolvedRun) -> dict[str, float]:
    """A run's untuned setting in the sampler's terms (lr at the plan's base batch size)."""
    values = {"lr": run.lr / plan.rule.factor(run.batch),
              "weight_decay": float(run.config.get("weight_decay") or 0.0)}
    return {p: float(lr_text(values[p])) for p in plan.tune.params}


def _trial_jobs(plan: Plan, study: Path, run: ResolvedRun, trials: list,
                make_job: Callable) -> dict[int, tuple[TrialPoint, list]]:
    """{trial number: (its point, unread; its Job per seed)} of one tuned run."""
    settings = plan.tune
    epochs = settings.epochs or int(run.config["epochs"])
    seeds = [run.seeds[0] + i for i in range(settings.seeds)]
    out = {}
    for t in trials:
        lr = t.params["lr"] * plan.rule.factor(run.batch)
        wd = t.params.get("weight_decay")
        fields = {**run.config, "lr": lr, "epochs": epochs, "eval_test": False,
                  # a warm-up never takes a whole (shorter) trial
                  "warmup_epochs": min(float(run.config["warmup_epochs"]), epochs - 1.0)}
        if wd is not None:
            fields["weight_decay"] = wd
        name = point_name(lr, wd)
        label = TrialRun(f"{run.name}@{name.replace('-wd-', ',wd=').replace('lr-', 'lr=')}")
        note = f"tuning trial {t.number}: {name.replace('-wd-', ', wd ').replace('-', ' ')}"
        folders = [StudyDir(study).tuning_trial(run.name, name, seed) for seed in seeds]
        point = TrialPoint(lr, "not started", None, weight_decay=wd, params=dict(t.params),
                           number=t.number, untuned=bool(t.user_attrs.get(engine.UNTUNED)),
                           dir=str(folders[0].relative_to(study)))
        out[t.number] = (point, [make_job(label, fields, seed, folder, note)
                                 for seed, folder in zip(seeds, folders)])
    return out


def _train_trials(todo: list, execute: Callable, say) -> None:
    """Every trial job, waiting for those another study process trains (its lock) to end."""
    pending = todo
    while pending:
        outcomes = execute(pending, say)
        pending = [job for job, o in zip(pending, outcomes) if o.status == "busy"]
        if pending:
            say(f"tune: waiting for {len(pending)} trial(s) other processes are training")
            time.sleep(POLL_S)


def _read_and_tell(plan: Plan, study: Path, name: str, jobs: dict) -> list[TrialPoint]:
    """Each trial's point read from its folders; the finished ones told to Optuna."""
    points, outcomes = [], {}
    for number, (point, seed_jobs) in jobs.items():
        read = read_point([j.dir for j in seed_jobs], point.lr, plan.tune.score,
                          plan.tune.last_epochs)
        point = dataclasses.replace(point, status=read.status, score=read.score,
                                    seeds=read.seeds, val_images=read.val_images)
        points.append(point)
        if point.status in ("ok", "diverged", "failed"):
            outcomes[number] = (point.score, {"status": point.status, "lr": point.lr,
                                              "seed_scores": point.seeds})
    engine.tell_trials(study, name, outcomes)
    return points


def tune_phase(plan: Plan, runs: dict[str, ResolvedRun], design: Design, study: Path,
               make_job: Callable, execute: Callable, say=print) -> dict[str, TuneResult]:
    """Train every tuned run's trials (`execute(jobs, say) -> [Outcome]`), tell Optuna their
    scores, take each run's best trial; write STUDY/tuning/tuning.json and say the choices.
    `make_job(run, fields, seed, folder, lr_note) -> Job`. {} without `tune:`."""
    if plan.tune is None:
        return {}
    engine.require_optuna()
    names, share = tuned_runs(plan, design), shared_lrs(plan, design)
    untuned = [v for v in share.values() if v not in names]
    if untuned:
        raise UsageError(f"plan: tune.share: '{untuned[0]}' is not a tuned run: there is no "
                         "chosen lr to share")
    jobs = {}
    for name in names:
        default = untuned_params(plan, runs[name]) if plan.tune.default else None
        trials = engine.ask_trials(study, name, plan.tune, default)
        jobs[name] = _trial_jobs(plan, study, runs[name], trials, make_job)
    todo = [job for by_n in jobs.values() for _, seed_jobs in by_n.values() for job in seed_jobs]
    say(f"tune: {len(names)} run(s), {len(todo)} trial job(s) ({search_text(plan)}; "
        f"{plan.tune.seeds} seed(s) each) of {plan.tune.epochs or 'the runs’'} epochs; each "
        f"run's choice by {plan.tune.score} on val (median of the last "
        f"{plan.tune.last_epochs} epochs)")
    _train_trials(todo, execute, say)  # (finished ones skipped: the folders are the truth)
    results = {}
    for name in names:
        results[name] = _result(plan, study, runs[name], jobs[name], share)
        say(choice_line(results[name]))
    write_choices(study, results, {**plan.tune.to_yaml_dict(), "sampler": plan.tune.sampler,
                                   "lr_rule": plan.lr_rule,
                                   "base_batch_size": plan.base_batch_size})
    return results


def _result(plan: Plan, study: Path, run: ResolvedRun, jobs: dict,
            share: dict[str, str]) -> TuneResult:
    points = _read_and_tell(plan, study, run.name, jobs)
    best = _tie_broken(points, engine.best_trial(study, run.name), run.lr)
    chosen = best.number if best else None
    edges = edges_of(points, best) if best is not None else {}
    wd = "weight_decay" in plan.tune.params
    return TuneResult(
        run.name, points, best.lr if best else None, edges.get("lr"), run.lr, plan.tune.score,
        plan.tune.last_epochs, next((k for k, v in share.items() if v == run.name), None),
        chosen if best else None, best.weight_decay if best and wd else None,
        float(run.config.get("weight_decay") or 0.0) if wd else None, edges,
        plan.tune.sampler)


def _tie_broken(points: list[TrialPoint], best: int | None,
                default_lr: float) -> TrialPoint | None:
    """The Optuna study's best trial; when others score exactly as well (e.g. every trial at
    chance), the one whose lr is nearest the untuned lr (then the lowest number)."""
    top = next((p for p in points if p.number == best), None)
    if top is None:
        return None
    ties = [p for p in points if p.status == "ok" and p.score == top.score]
    return min(ties, key=lambda p: (abs(math.log(p.lr / default_lr)), p.number))


def search_text(plan: Plan) -> str:
    """The search in words: 'the grid lr 0.02, 0.2' or '6 Sobol points of lr [0.01, 1] (log)
    x weight_decay [1e-05, 0.01] (log)'."""
    t = plan.tune
    if t.sampler == "grid":
        return "the grid " + " x ".join(f"{p} {', '.join(map(lr_text, v))}"
                                        for p, v in t.grid.items())
    return f"{t.trials} Sobol points of " + " x ".join(
        f"{p} [{lr_text(lo)}, {lr_text(hi)}]{' (log)' if log else ''}"
        for p, (lo, hi, log) in t.space.items())


def point_label(p: TrialPoint) -> str:
    return f"lr {lr_text(p.lr)}" + (f" wd {lr_text(p.weight_decay)}"
                                   if p.weight_decay is not None else "")


def choice_line(r: TuneResult) -> str:
    """'tune bn: lr 0.08 chosen (val_acc on val: lr 0.0025 0.31 | lr 0.008 0.40 | ...)'."""
    tried = " | ".join(f"{point_label(p)} " + (f"{p.score:.3f}" if p.score is not None
                                               else p.status) for p in r.trials)
    best = r.point(r.chosen)
    if best is None:
        return (f"tune {r.run}: no trial finished ({tried}); the final runs keep the untuned "
                f"lr {lr_text(r.default_lr)}")
    line = f"tune {r.run}: {point_label(best)} chosen ({r.score} on val: {tried})"
    for param, edge in r.edges.items():
        line += (f"; warning: the {'lowest' if edge == 'low' else 'highest'} {param} tried: "
                 "widen the search")
    return line


def apply_choices(plan: Plan, runs: dict[str, ResolvedRun], design: Design,
                  results: dict[str, TuneResult]) -> dict[str, ResolvedRun]:
    """The runs' records with each tuned (and sharing) run at its choice: the chosen trial's
    lr scaled to the run's batch by the plan's rule (and its weight decay), `tuned` and the
    trial it came from. A run whose trials all failed keeps its untuned settings."""
    if not results:
        return runs
    share, out = shared_lrs(plan, design), dict(runs)
    for name, run in runs.items():
        source = share.get(name, name)
        r = results.get(source)
        best = r.point(r.chosen) if r is not None else None
        if r is not None and best is None:
            out[name] = dataclasses.replace(
                run, lr_note=f"untuned: no trial of the search finished ({r.run})")
        elif best is not None:
            out[name] = _tuned(plan, run, r, best, source)
    return out


def _tuned(plan: Plan, run: ResolvedRun, r: TuneResult, best: TrialPoint,
           source: str) -> ResolvedRun:
    lr = best.params["lr"] * plan.rule.factor(run.batch)
    config = {**run.config, "lr": lr}
    if best.weight_decay is not None:
        config["weight_decay"] = best.weight_decay
    note = (f"tuned: {point_label(dataclasses.replace(best, lr=lr))}, trial {best.number} "
            f"chosen on val ({r.score}, median of the last {r.last_epochs} epochs) from "
            f"{search_text(plan)} (base lrs at batch {plan.base_batch_size}, {plan.lr_rule} "
            "rule)" + (f"; {source}'s choice" if source != run.name else "")
            + ("; at the edge of the search: widen it" if r.edges else ""))
    return dataclasses.replace(run, config=config, lr=lr, lr_note=note, tuned=True,
                               trial={"run": source, "number": best.number,
                                      "params": dict(best.params), "dir": best.dir})
