"""Where a study's jobs train: one interface, three executors.

    in-process   one job after another in this process (--jobs 1; under torchrun every rank
                 trains each job together)                          InProcessExecutor, here
    pool         up to K jobs at once, each in a worker process (--jobs K)   resnorm.study.execution.pool
    slurm        one SLURM array task per job (--executor slurm, submitit)   resnorm.study.execution.slurm

Every executor trains a job with the same `train_locked` (skip a finished job, resume from
last.pt, the folder's lock held meanwhile), or does the job's other work (`Job.work`: the
robustness step's evaluations; `run_job` is what they call), and hands each outcome, as it
is known, to the one `OutcomeRecorder` (resnorm.study.execution.state), which writes
study.json and the job's line. `run` returns the outcomes in job order. Jobs may live
anywhere (their folder is `job.dir`): the plan's under STUDY/runs/, a tuning phase's trials
and the robustness evaluations elsewhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from resnorm.study.execution.pool import PoolExecutor
from resnorm.study.execution.slurm import SlurmExecutor, SlurmSettings
from resnorm.study.execution.state import OutcomeRecorder
from resnorm.study.execution.job import Job, Outcome, run_job

__all__ = ["Executor", "InProcessExecutor", "KINDS", "make_executor"]

KINDS = ("local", "inprocess", "pool", "slurm")


class Executor(Protocol):
    def run(self, jobs: list[Job], say) -> list[Outcome] | None:
        """Train `jobs`; each outcome recorded as it finishes; the outcomes in job order.
        None only from a SLURM executor that does not wait (--no-wait): a job after the
        array records the outcomes and finishes the study."""


class InProcessExecutor:
    """One job after another, in this process, in job order. lock=False under torchrun: the
    ranks of the group train every job together, so no rank may skip one as busy."""

    def __init__(self, recorder: OutcomeRecorder, progress: bool, lock: bool = True) -> None:
        self.recorder, self.progress, self.lock = recorder, progress, lock

    def run(self, jobs: list[Job], say) -> list[Outcome]:
        tally = self.recorder.begin(jobs, say)
        for job in jobs:
            tally.tell(job, run_job(job, self.progress, self.lock))
        return tally.outcomes()


def make_executor(kind: str, *, jobs: int = 1, threads: int | None = None,
                  progress: bool = True, recorder: OutcomeRecorder,
                  slurm_settings: SlurmSettings | None = None, folder: Path | None = None,
                  finish: Callable | None = None) -> Executor:
    """The executor `kind` names: "local" (in this process for jobs=1, else a pool of `jobs`
    worker processes), "inprocess", "pool" or "slurm".

    `threads`: torch threads per job (None: the cores shared out; SLURM: the CPUs a task asks
    for). SLURM only: `slurm_settings`, `folder` (its logs and tasks.json, e.g. STUDY/slurm)
    and `finish` (a picklable callable `finish(jobs, outcomes)`: what the job after a
    --no-wait array runs once every task has ended).
    """
    from resnorm.distributed import launched_world_size

    if kind == "local":
        kind = "inprocess" if jobs == 1 else "pool"
    if kind == "inprocess":
        return InProcessExecutor(recorder, progress, lock=launched_world_size() == 1)
    if kind == "pool":
        return PoolExecutor(recorder, jobs, threads, progress)
    if kind == "slurm":
        if folder is None:
            raise ValueError("a SLURM executor needs a folder for its logs")
        return SlurmExecutor(recorder, slurm_settings or SlurmSettings(), Path(folder),
                             threads, finish)
    raise ValueError(f"executor kind must be one of {', '.join(KINDS)}, got {kind!r}")
