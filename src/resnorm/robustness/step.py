"""The robustness step of a study: every finished (run, seed) scored on corrupted copies of
the held-out split, as evaluation jobs through the study's own executors.

    check_plan        before any training: the library installed, every run's images >= 32 px
    robustness_step   the corrupted set once (resnorm.robustness.corrupted), one job per
                      finished (run, seed) (`Evaluation`, a `JobWork`: its folder
                      STUDY/robustness/<run>/seed-<s>/, its lock, its record), the jobs run by
                      `execute` (an executor's run: --jobs K processes, SLURM tasks), then
                      STUDY/robustness/robustness.json
    study_step        the same for a prepared study (resnorm.pipeline.finish_study calls it):
                      the study's executor, each outcome in study.json's "robustness"

An evaluation is skipped when its record is current (same checkpoint, set and settings) and
done again otherwise; a failed one is recorded (error.txt) and the others go on.
"""
from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from resnorm.errors import ResourceError, UsageError
from resnorm.robustness.corrupted import CorruptedSet, ensure_set, held_out_splits, open_set
from resnorm.robustness.corruptions import LIBRARY, MIN_SIZE, check_library
from resnorm.robustness.results import (RECORD_FILE, read_record, trial_folder, write_step)
from resnorm.rundir import BEST_FILE, RunDir
from resnorm.study.execution.job import Job, Outcome, busy
from resnorm.study.execution.records import collect_runs
from resnorm.study.plan.parse import Plan, RunSpec, train_default
from resnorm.study.plan.robustness_settings import RobustnessSettings
from resnorm.studydir import StudyDir

__all__ = ["Evaluation", "check_plan", "evaluation_jobs", "robustness_step", "study_step",
           "finishes", "RESOLUTION"]

RESOLUTION = ("the model's input size: each image of the prepared cache (already at the "
              "plan's size) is corrupted as it is, as CIFAR-10-C corrupts 32x32 images, with "
              "ImageNet-C's parameters (calibrated at 224 px)")


def check_plan(plan: Plan) -> None:
    """A plan with `robustness:` fails before any training when the step could not run:
    the library missing, or images under the library's 32 px."""
    if plan.robustness is None:
        return
    check_library()
    for spec in plan.runs:
        size = int({**plan.defaults, **spec.overrides}.get("size", train_default("size")))
        if size < MIN_SIZE:
            raise UsageError(f"{plan.source}: robustness: run '{spec.name}' trains on {size} px "
                             f"images; the corruptions need at least {MIN_SIZE} px")


@dataclass
class Evaluation:
    """The JobWork of one (run, seed): score its best checkpoint on the corrupted set."""

    run_dir: Path
    folder: Path
    set_dir: Path
    settings: RobustnessSettings
    scored: str
    adapt_split: str | None

    def key(self) -> str:
        from resnorm.robustness.evaluate import trial_key

        return trial_key(self.run_dir, open_set(self.set_dir), self.settings)

    def record(self) -> dict | None:
        return read_record(self.folder)

    def finished(self) -> bool:
        record = self.record()
        return record is not None and record.get("key") == self.key()

    def __call__(self, label: str, progress: bool, lock: bool) -> Outcome:
        if self.finished():
            return self._outcome(label, "skipped", self.record(), 0.0)
        if not lock:
            return self._evaluate(label)
        from resnorm.study.execution.locks import run_lock

        with run_lock(self.folder) as holder:
            return busy(label, holder) if holder is not None else self._evaluate(label)

    def _evaluate(self, label: str) -> Outcome:
        from resnorm.robustness.evaluate import evaluate_trial

        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / RECORD_FILE).unlink(missing_ok=True)  # stale: evaluated again
        try:
            record = evaluate_trial(self.run_dir, self.folder, open_set(self.set_dir),
                                    self.settings, self.adapt_split, self.scored)
        except ResourceError as exc:
            return Outcome(label, "failed", "evaluated", None, time.perf_counter() - started,
                           str(exc), fatal=True)
        except Exception as exc:  # noqa: BLE001 - one broken evaluation must not stop the rest
            RunDir(self.folder).write_error(traceback.format_exc())
            return Outcome(label, "failed", "evaluated", None, time.perf_counter() - started,
                           f"{type(exc).__name__}: {exc}".splitlines()[0])
        return self._outcome(label, "evaluated", record, time.perf_counter() - started)

    @staticmethod
    def _outcome(label: str, action: str, record: dict | None, seconds: float) -> Outcome:
        record = record or {}
        note = (f"clean {100 * record.get('clean_acc', float('nan')):.1f}%  corrupted "
                f"{100 * record.get('mean_acc', float('nan')):.1f}%")
        if "adapted_mean_acc" in record:
            note += f"  adapted {100 * record['adapted_mean_acc']:.1f}%"
        return Outcome(label, "completed", action, record, seconds, note=note)


def _cores() -> int:
    """The cores this process may use (the corrupted set is made before any job runs)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _scorable(trial) -> bool:
    """A seed whose best checkpoint the report scores: finished, or diverged after one."""
    return (trial.ok or trial.status == "diverged") \
        and RunDir(trial.dir).path(BEST_FILE).is_file()


def evaluation_jobs(study: Path, settings: RobustnessSettings, say
                    ) -> tuple[list[Job], dict[str, CorruptedSet]]:
    """One job per scorable (run, seed) of the study, and the corrupted set of each dataset
    they trained on (made or completed here, once)."""
    from resnorm.data import load_cache
    from resnorm.train import config_from_dict
    from resnorm.train.runtime import load_data

    trials = [(r.name, t) for r in collect_runs(study) for t in r.trials if _scorable(t)]
    if not trials:
        raise UsageError(f"robustness: {study} has no finished run to evaluate")
    sets: dict[str, CorruptedSet] = {}
    caches: dict[tuple, object] = {}  # the runs' data, loaded once per (data, size, resize)
    jobs = []
    for name, trial in trials:
        cfg = config_from_dict(trial.config)
        where = (cfg.data, cfg.cache, cfg.size, cfg.resize)
        if where not in caches:  # every row: the leaked ones too (the set leaves them out)
            caches[where] = load_cache(load_data(cfg, progress=False).path)
        data = caches[where]
        scored, adapt = held_out_splits(data, settings.adapt)
        if str(data.path) not in sets:
            splits = [scored] + ([adapt] if adapt and adapt != scored else [])
            sets[str(data.path)] = ensure_set(data, splits, settings.corruptions,
                                              settings.severities, settings.images,
                                              settings.seed, say, workers=_cores())
        work = Evaluation(Path(trial.dir), trial_folder(study, name, trial.seed),
                          sets[str(data.path)].folder, settings, scored, adapt)
        jobs.append(Job(RunSpec(name, {}), trial.seed, cfg, "", work))
    return jobs, sets


def robustness_step(study: str | Path, settings: RobustnessSettings,
                    execute: Callable[[list[Job], Callable], list[Outcome] | None],
                    say=print) -> list[Outcome]:
    """Evaluate every scorable (run, seed) of `study` (see the module notes); `execute(jobs,
    say)` runs the jobs (an executor's `run`). Writes STUDY/robustness/robustness.json."""
    study = Path(study)
    started = time.perf_counter()
    jobs, sets = evaluation_jobs(study, settings, say)
    made = time.perf_counter()
    cset = next(iter(sets.values()))
    first = jobs[0].work
    say(f"robustness: {len(jobs)} (run, seed) on {len(settings.corruptions)} corruption(s) x "
        f"{len(settings.severities)} severit{'y' if len(settings.severities) == 1 else 'ies'} "
        f"of {len(cset.labels(first.scored))} {first.scored} images"
        + (f"; BN adapted on {first.adapt_split}" if first.adapt_split else "")
        + ("; adaptation and scoring share val (no test split)"
           if first.adapt_split == first.scored else ""))
    outcomes = execute(jobs, say) or []
    write_step(study, {
        "settings": settings.to_yaml_dict(), "scored": first.scored,
        "adapted_on": first.adapt_split, "shared": first.adapt_split == first.scored,
        "images": len(cset.labels(first.scored)), "resolution": RESOLUTION, "size": cset.size,
        "library": {"name": LIBRARY, "version": cset.meta.get("version")},
        "sets": [str(s.folder) for s in sets.values()],
        "keys": {job.label: job.work.key() for job in jobs},
        "seconds": {"set": round(made - started, 3),
                    "evaluation": round(time.perf_counter() - made, 3)}})
    failed = [o.name for o in outcomes if o.status == "failed"]
    if failed:
        say(f"robustness: {len(failed)} evaluation(s) failed: {', '.join(failed)} (see "
            f"{StudyDir(study).robustness}/<run>/seed-<s>/error.txt; re-run to retry them)")
    return outcomes


def finishes(study) -> bool:
    """Whether this process does a prepared study's last steps: not one --shard of it, and
    rank 0 under torchrun."""
    from resnorm.distributed import is_main_process

    return study.options.shard is None and is_main_process()


def study_step(study, say) -> list[Outcome]:
    """The step of a prepared study (resnorm.study.runner.PreparedStudy): through the
    study's executor (a SLURM study waits for it), each outcome in study.json's
    "robustness"."""
    from resnorm.study.execution.state import OutcomeRecorder
    from resnorm.study.runner import study_executor

    waiting = dataclasses.replace(study, options=dataclasses.replace(
        study.options, slurm={**(study.options.slurm or {}), "wait": True}))
    recorder = OutcomeRecorder(study.state, "robustness")
    logs = StudyDir(study.folder).robustness_slurm

    def execute(jobs: list[Job], say_) -> list[Outcome] | None:
        return study_executor(waiting, recorder, jobs, logs=logs).run(jobs, say_)

    return robustness_step(study.folder, study.plan.robustness, execute, say)
