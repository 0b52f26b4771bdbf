"""Train a study plan's jobs: the study's part of `resnorm study` (resnorm.pipeline runs it,
then Grad-CAM and the report).

Each run trains once per seed of the plan, into STUDY/runs/<name>/seed-<s>/; each (run, seed)
is a job of its own for skipping, resuming, --jobs and --shard. Re-running the same command
finishes an interrupted study: finished jobs are skipped, an interrupted one resumes from its
last checkpoint, and one that failed before is tried again. A job that diverges or fails is
recorded and the study goes on; a full disk stops it (exit 4).

    study_plan      the plan, with the command line's --seeds and --keep-leaked
    prepare_study   options checked, the data prepared once, every job resolved and checked
                    before any trains, plan.yaml, study.json, this process's --shard
    tune_study      the plan's lr search first (a `tune:` section), the final jobs at the
                    chosen lrs
    train_study     the jobs, through one executor (resnorm.study.execution.executors): study_executor
"""
from __future__ import annotations

import dataclasses
import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_text
from resnorm.study.execution.capacity import jobs_that_fit
from resnorm.study.execution.executors import Executor, make_executor
from resnorm.study.plan.manifest import MANIFEST_KEY, Design, Manifest, ResolvedRun
from resnorm.study.plan.options import StudyOptions
from resnorm.study.plan.parse import Plan, load_plan, parse_seeds
from resnorm.study.plan.resolve import experiment_settings, plan_design, resolve_runs
from resnorm.study.datasets import check_scored_data, make_demo_data, prepare_data
from resnorm.study.execution.make_jobs import make_job, resolved_jobs, shard_of
from resnorm.study.execution.slurm import slurm_settings
from resnorm.study.execution.state import OutcomeRecorder, StudyState
from resnorm.study.execution.job import Job, Outcome
from resnorm.studydir import StudyDir

__all__ = ["PreparedStudy", "study_plan", "prepare_study", "tune_study", "train_study",
           "study_executor", "held_elsewhere", "torch_threads"]


@dataclass
class PreparedStudy:
    """A study ready to train: every job resolved and checked, study.json open."""

    folder: Path
    plan: Plan
    options: StudyOptions  # checked; gradcam/report off where this process writes neither
    data: Path             # the dataset (or cache) the jobs train on
    state: StudyState
    jobs: list[Job]        # every (run, seed) of the plan, in plan order
    todo: list[Job]        # the jobs this process trains (its --shard of them)
    say: Callable          # this process's console (silent on ranks other than 0)
    design: Design         # which runs answer which question (in study.json's manifest)
    runs: dict[str, ResolvedRun]  # each run resolved once (after tuning: at its choice)
    caches: dict = dataclasses.field(default_factory=dict)  # the data prepared per size


def study_plan(plan_path: str | Path, options: StudyOptions) -> Plan:
    """The plan as this study runs it: --seeds over its `seeds:`, --keep-leaked over its
    defaults' keep_leaked."""
    plan = load_plan(plan_path)
    if options.seeds is not None:
        plan.seeds = parse_seeds(options.seeds, "--seeds")
    if options.keep_leaked:
        plan.defaults["keep_leaked"] = True
    return plan


def prepare_study(plan: Plan, out: str | Path, options: StudyOptions, say) -> PreparedStudy:
    """Everything before training: options checked, the data prepared once per (size,
    resize), every job resolved and checked (a bad plan fails before any training),
    STUDY/plan.yaml and study.json's header. Under torchrun every process joins the group
    every job trains in; rank 0 alone writes the study's files and speaks."""
    from resnorm.distributed import DistInfo, in_turn, init_from_env, launched_world_size
    from resnorm.train import device_type

    folder, options = StudyDir(out), options.checked()
    if plan.tune is not None:  # a plan to tune without Optuna: refused before anything runs
        from resnorm.study.tuning.engine import require_optuna

        require_optuna()
    runs = resolve_runs(plan)  # each run resolved once: every later step reads these records
    design = plan_design(plan, runs)  # a bad design fails before any data is read
    info = DistInfo()
    if launched_world_size() > 1:
        info = init_from_env(device_type(str(plan.defaults.get("device", "auto"))))
    if not info.is_main:
        say = _silent
        options = dataclasses.replace(options, progress=False, gradcam=False, report=False,
                                      mlflow=None)
    data = _source_data(plan, options, info)
    cache = options.cache
    if options.executor == "slurm" and cache is None and not os.environ.get("RESNORM_CACHE"):
        cache = str(folder.cache)  # where every node can read it: beside the runs
    configs = [run.config for run in runs.values()]
    caches = in_turn(info, lambda: prepare_data(data, configs, cache, options.progress))
    # all checked before any training (a plan to be tuned: its folders once the lrs are chosen)
    jobs = resolved_jobs(runs.values(), data, caches, folder, check=plan.tune is None)
    check_scored_data(jobs, say)
    folder.runs.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        atomic_write_text(folder.plan,
                          yaml.safe_dump(plan.to_yaml_dict(), sort_keys=False))
    state = StudyState(folder, plan, str(data), write=info.is_main)
    # every job resolved, nothing trained yet: the study as declared, for whoever reads it
    state.set(MANIFEST_KEY, study_manifest(design, runs, jobs, folder).to_dict())
    seeds_text = ", ".join(map(str, plan.seeds_of(plan.runs[0])))
    say(f"study {folder}: {len(plan.runs)} runs x {len(jobs) // len(plan.runs)} seed(s) "
        f"({seeds_text}) = {len(jobs)} jobs; lr across batch sizes: {plan.lr_rule_text()}")
    todo = jobs
    if options.shard is not None:  # Grad-CAM and the report: an unsharded run's
        todo = shard_of(jobs, options.shard, say)
        options = dataclasses.replace(options, gradcam=False, report=False, mlflow=None)
    return PreparedStudy(folder.dir, plan, options, Path(data), state, jobs, todo, say, design,
                         runs, caches)


def _source_data(plan: Plan, options: StudyOptions, info) -> Path:
    """The dataset the study reads: --data, or the synthetic stand-in --synthetic writes (one
    process at a time under torchrun)."""
    from resnorm.distributed import in_turn

    if options.synthetic is not None:
        return in_turn(info, lambda: make_demo_data(options.synthetic, plan, options.progress))
    if not Path(options.data).exists():
        raise UsageError(f"data folder {options.data} does not exist")
    return Path(options.data)


def tune_study(study: PreparedStudy) -> PreparedStudy:
    """The plan's lr search first when it has `tune:` (resnorm.study.tuning.phase): its trials
    through the study's executor (each outcome in study.json's "tuning"; a SLURM study
    waits for them even with --no-wait: the final runs need their choice), then the study
    with every final job at its chosen lr and the manifest rewritten with those configs."""
    if study.plan.tune is None:
        return study
    from resnorm.study.tuning.phase import apply_choices, tune_phase

    waiting = dataclasses.replace(study, options=dataclasses.replace(
        study.options, slurm={**(study.options.slurm or {}), "wait": True}))
    recorder = OutcomeRecorder(study.state, "tuning")

    def execute(trials: list[Job], say) -> list[Outcome]:
        logs = StudyDir(study.folder).tuning_slurm
        return study_executor(waiting, recorder, trials, logs=logs).run(trials, say)

    make = functools.partial(make_job, data=study.data, caches=study.caches)
    results = tune_phase(study.plan, study.runs, study.design, study.folder, make, execute,
                         study.say)
    runs = apply_choices(study.plan, study.runs, study.design, results)
    jobs = resolved_jobs(runs.values(), study.data, study.caches, study.folder)
    design = dataclasses.replace(study.design, pairs=tuned_pairs(study.design, runs))
    study.state.set(MANIFEST_KEY, study_manifest(design, runs, jobs, study.folder).to_dict())
    todo = jobs if study.options.shard is None else shard_of(jobs, study.options.shard,
                                                              _silent)  # (said before tuning)
    return dataclasses.replace(study, runs=runs, jobs=jobs, todo=todo, design=design)


def tuned_pairs(design: Design, runs: dict[str, ResolvedRun]) -> list[dict]:
    """The design's compared pairs, each with what it differs in once the lrs are tuned (a
    tuned pair differs in its lr too: each variant at its own best)."""
    from resnorm.study.plan.design import differences

    fields = experiment_settings(runs)
    return [{**p, "differs_in": differences(fields[p["a"]], fields[p["b"]])}
            for p in design.pairs]


def study_manifest(design: Design, runs: dict[str, ResolvedRun], jobs: list[Job],
                   folder: Path) -> Manifest:
    """The study as declared before training: the design, each run's resolved record and
    roles, each (run, seed) with its complete config (STUDY/study.json `manifest`)."""
    entries = {job.label: {"run": job.spec.name, "seed": job.seed,
                           "dir": os.path.relpath(job.dir, folder),
                           "config": dataclasses.asdict(job.cfg)} for job in jobs}
    return Manifest(design, {name: {**run.to_dict(), "roles": design.roles_of(name)}
                             for name, run in runs.items()}, entries)


def train_study(study: PreparedStudy, finish: Callable | None = None) -> list[Outcome] | None:
    """This process's jobs through the executor the options name; the outcomes in plan
    order, or None from --executor slurm --no-wait, where a job after the array records them
    and calls `finish(jobs, outcomes)` (a picklable callable: the orchestrator's last steps)."""
    executor = study_executor(study, OutcomeRecorder(study.state), study.todo, finish)
    return executor.run(study.todo, study.say)


def study_executor(study: PreparedStudy, recorder: OutcomeRecorder, todo: list[Job],
                   finish: Callable | None = None, logs: Path | None = None) -> Executor:
    """The executor the study's options name (--executor, --jobs: auto or K settled for the
    jobs of `todo` still to train), recording into `recorder`: for the plan's jobs, or for
    other jobs of the study (a tuning phase's trials, recorded in a section of their own).
    `logs`: where a SLURM executor keeps its task logs (default STUDY/slurm)."""
    plan, options = study.plan, study.options
    if options.executor == "slurm":
        return make_executor("slurm", threads=plan.threads, recorder=recorder,
                             slurm_settings=slurm_settings(plan.slurm, options.slurm),
                             folder=logs or StudyDir(study.folder).slurm, finish=finish)
    jobs = jobs_that_fit(todo, options.jobs, plan.threads, study.say)
    return make_executor("local", jobs=jobs, threads=plan.threads, progress=options.progress,
                         recorder=recorder)


def held_elsewhere(todo: list[Job], say) -> bool:
    """Whether other study processes still train jobs of this plan (their locks); if so, say
    which: the last process to finish writes Grad-CAM and the report."""
    from resnorm.study.execution.locks import held_by

    busy = [(job, held_by(job.dir)) for job in todo if not job.finished]
    busy = [(job, holder) for job, holder in busy if holder is not None]
    if busy:
        say(f"study: {len(busy)} job(s) still being trained by other processes: "
            f"{', '.join(f'{job.label} by {holder}' for job, holder in busy)}; the last "
            "process to finish writes Grad-CAM and the report")
    return bool(busy)


@contextmanager
def torch_threads(threads: int | None):
    """Run with `threads` intra-op threads (the plan's `threads`), restored afterwards.

    Small models on a CPU spend more time synchronising threads than computing, and on a
    shared machine idle threads spin; the demo plan asks for one thread.
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _silent(*args, **kwargs) -> None:
    """The console of a rank other than 0: it says nothing."""
