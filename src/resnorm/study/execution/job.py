"""One (run, seed) of a study: train (or resume, or skip) it, and say how it went in one line.

`train_one` is what both the sequential runner and each --jobs process call, so the skip /
resume / failure bookkeeping is the same either way. A `Job` is one (run, seed) with its
resolved config; its folder is the config's `out` (STUDY/runs/<name>/seed-<s>/).

A job may do other work than training on the same executors (`Job.work`, a `JobWork`: the
robustness step's evaluation of a trained run): `run_job` is what every executor calls.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from resnorm.errors import DivergedError, ResourceError
from resnorm.rundir import RunDir
from resnorm.study.execution.records import trial_label

__all__ = ["Job", "JobWork", "Outcome", "busy", "run_job", "train_one", "train_locked",
           "summary_line"]


class JobWork(Protocol):
    """What a job does instead of training (picklable: it travels to worker processes and
    SLURM tasks), in a folder of its own: its lock, its log, its record."""

    folder: Path

    def __call__(self, label: str, progress: bool, lock: bool) -> "Outcome":
        """Do it (or skip it when done, or say "busy" when another process holds the folder)."""

    def finished(self) -> bool:
        """Whether its record is there and current."""

    def record(self) -> dict | None:
        """What the outcome's `final` holds: its record."""


@dataclass
class Job:
    """One (run, seed) to train: the plan's run, the seed, its resolved TrainConfig."""

    spec: Any              # resnorm.study.plan.parse.RunSpec
    seed: int
    cfg: Any               # resnorm.train.TrainConfig (cfg.out is the folder)
    lr_note: str
    work: Any = None       # None: train the run; a JobWork: that instead, in its own folder

    @property
    def label(self) -> str:
        return trial_label(self.spec.name, self.seed)

    @property
    def dir(self) -> Path:
        return Path(self.work.folder) if self.work is not None else Path(self.cfg.out)

    @property
    def finished(self) -> bool:
        return self.work.finished() if self.work is not None else self.run.finished

    def final(self) -> dict | None:
        """The finished job's record: final.json, or its work's."""
        return self.work.record() if self.work is not None else self.run.final()

    @property
    def run(self) -> RunDir:
        """The job's folder: its files (resnorm.rundir; a work's: error.txt, the log)."""
        return RunDir(self.dir)


@dataclass
class Outcome:
    """How one run went in this invocation of the study."""

    name: str
    status: str            # completed | early_stopped | diverged | failed | busy
    action: str            # trained | resumed | skipped (busy: another process trains it)
    final: dict | None
    seconds: float
    error: str | None = None
    fatal: bool = False    # the study cannot go on (a full disk): raised once recorded
    note: str | None = None  # a job that is no training: what its line says instead of scores


def busy(label: str, holder) -> Outcome:
    """The outcome of a job another process holds (its lock): skipped here; that process
    trains and records it."""
    return Outcome(label, "busy", "skipped", None, 0.0, f"being trained by {holder}")


def run_job(job: Job, progress: bool, lock: bool = True) -> Outcome:
    """What every executor does with a job: train it (`train_locked`), or its work."""
    if job.work is not None:
        return job.work(job.label, progress, lock)
    return train_locked(job.cfg, job.dir, progress, job.label, lock)


def train_locked(cfg, run_dir: Path, progress: bool, label: str, lock: bool = True) -> Outcome:
    """`train_one` holding the run folder's lock (resnorm.study.execution.locks), so that several study
    processes on one folder never train the same (run, seed) at once: when another process
    holds it, a "busy" outcome naming it. lock=False (under torchrun): no lock. A full disk
    (ResourceError) comes back as a fatal outcome: the study records it, then stops."""
    started = time.perf_counter()
    try:
        if not lock or RunDir(run_dir).finished:  # finished: nothing to lock
            return train_one(cfg, run_dir, progress, label)
        from resnorm.study.execution.locks import run_lock

        with run_lock(run_dir) as holder:
            if holder is not None:
                return busy(label, holder)
            return train_one(cfg, run_dir, progress, label)
    except ResourceError as exc:
        return Outcome(label, "failed", "trained", None, time.perf_counter() - started,
                       str(exc), fatal=True)


def train_one(cfg, run_dir: Path, progress: bool, label: str | None = None) -> Outcome:
    """Train (or resume, or skip) one run; a failure is returned, not raised, except a lack
    of resources (a full disk: ResourceError), which would fail every run after it too."""
    from resnorm.train import train

    name, run = label or cfg.name, RunDir(run_dir)
    final = run.final()
    if final is not None:
        return Outcome(name, final.get("status", "completed"), "skipped", final, 0.0)
    action = "resumed" if run.resumable else "trained"
    started = time.perf_counter()
    try:
        # Without progress (--quiet) no epoch lines either; the study has already said what
        # it leaves out of the data (one line for all its runs).
        final = train(cfg, resume="auto", progress=progress, epoch_lines=progress,
                      data_note=False)
    except DivergedError:
        # train() wrote final.json (status diverged) before raising: the run is recorded.
        final = run.final()
        return Outcome(name, "diverged", action, final, time.perf_counter() - started)
    except ResourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the study
        run.write_error(traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return Outcome(name, "failed", action, None, time.perf_counter() - started, message)
    return Outcome(name, final["status"], action, final, time.perf_counter() - started)


def summary_line(i: int, total: int, o: Outcome, name_width: int = 14) -> str:
    """One line per run, aligned across the study: '[ 3/12] bn   completed  val acc ...'."""
    head = f"[{i:>{len(str(total))}}/{total}] {o.name:<{name_width}} {o.status:<13}"
    if o.status == "busy":
        return f"{head} skipped: {o.error}"
    if o.status == "failed":
        return f"{head} {o.error}"
    when = "(already done)" if o.action == "skipped" else f"{o.action} in {o.seconds:.1f} s"
    if o.note is not None:  # not a training: its own words
        return f"{head} {o.note}  {when}"
    ev = (o.final or {}).get("eval") or {}
    val = ev.get("val") or {}
    scores = (f"val acc {val['acc']:.3f}  macro F1 {val['macro_f1']:.3f}" if "acc" in val
              else "no checkpoint to evaluate")
    at = (o.final or {}).get("diverged_at")
    if o.status == "diverged" and isinstance(at, dict):
        scores += f"  (non-finite loss at epoch {at.get('epoch')}, step {at.get('step')})"
    epochs = (o.final or {}).get("epochs_run", "?")
    return f"{head} {scores}  {epochs} epochs  {when}"
