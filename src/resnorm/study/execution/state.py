"""STUDY/study.json, the study's record of what it did, and the one place a job's outcome is
written down (`OutcomeRecorder`), whichever executor trained the job.

Each executor (resnorm.study.execution.executors) hands every outcome to its recorder as it is known;
the recorder writes the job's entry into study.json (status, action, seconds, error, lr,
lr_note) under the file's lock, prints the job's summary line, and stops the study on a
fatal outcome (a full disk) once it is recorded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from resnorm.errors import ResourceError
from resnorm.study.plan.parse import Plan
from resnorm.study.execution.records import read_state, write_state
from resnorm.studydir import StudyDir
from resnorm.study.execution.job import Job, Outcome, summary_line

__all__ = ["StudyState", "OutcomeRecorder", "Tally"]


class StudyState:
    """STUDY/study.json: what the study did to each run (kept across re-runs)."""

    def __init__(self, study: Path, plan: Plan, data: str, write: bool = True) -> None:
        self.folder, self.write = StudyDir(study), write  # write: False on ranks other than 0
        # what this process says about the study, over whatever the file holds
        self.header = {"data": data, "lr_rule": plan.lr_rule,
                       "base_batch_size": plan.base_batch_size,
                       "lr_rule_text": plan.lr_rule_text()}
        self.data = {**read_state(study), **self.header}
        self.data.setdefault("runs", {})

    def record(self, name: str, section: str = "runs", **entry: Any) -> None:
        """`entry` as `name`'s in the mapping `section` ("runs": the plan's jobs)."""
        self._update(lambda data: data.__setitem__(section, {**data.get(section, {}),
                                                             name: entry}))

    def set(self, key: str, value: Any) -> None:
        self._update(lambda data: data.__setitem__(key, value))

    def _update(self, change) -> None:
        # Several processes (--shard, the same study started K times, SLURM tasks) write
        # into one file: under its lock, start from what is on disk now, so that what the
        # others wrote meanwhile is kept.
        with self._lock():
            data = {**read_state(self.folder), **self.header}
            data.setdefault("runs", {})
            change(data)
            self.data = data
            self._save()

    def _lock(self):
        import filelock

        return filelock.FileLock(str(self.folder.state_lock), timeout=60)

    def _save(self) -> None:
        if self.write:
            write_state(self.folder, self.data)


class OutcomeRecorder:
    """Writes each job's outcome down: its entry in study.json, in `section` (the plan's jobs
    in "runs"), and its summary line. A busy job (another process holds it) gets its line but
    no entry: the process that trains it records it. `state=None`: lines only."""

    def __init__(self, state: StudyState | None, section: str = "runs") -> None:
        self.state, self.section = state, section

    def begin(self, jobs: list[Job], say, stop_on_fatal: bool = True) -> "Tally":
        """A tally for one executor run over `jobs`."""
        return Tally(self, jobs, say, stop_on_fatal)

    def write(self, job: Job, outcome: Outcome) -> None:
        if outcome.status == "busy" or self.state is None:
            return
        self.state.record(job.label, self.section, status=outcome.status,
                          action=outcome.action, seconds=round(outcome.seconds, 3),
                          error=outcome.error, lr=job.cfg.lr, lr_note=job.lr_note)


class Tally:
    """One executor run's outcomes: each recorded and said as it is known (lines numbered in
    the order the jobs finish: '[3/12] bn/seed-1 completed ...'), returned in job order."""

    def __init__(self, recorder: OutcomeRecorder, jobs: list[Job], say,
                 stop_on_fatal: bool) -> None:
        self.recorder, self.jobs, self.say = recorder, jobs, say
        self.stop_on_fatal = stop_on_fatal
        self.width = max((len(job.label) for job in jobs), default=0)
        self.done: dict[str, Outcome] = {}

    def tell(self, job: Job, outcome: Outcome) -> None:
        """Record `outcome` and say its line; a fatal one (a full disk) then raises
        ResourceError: the jobs after it would fail too."""
        self.done[job.label] = outcome
        self.recorder.write(job, outcome)
        self.say(summary_line(len(self.done), len(self.jobs), outcome, self.width))
        if outcome.fatal and self.stop_on_fatal:
            raise ResourceError(outcome.error)

    def outcomes(self) -> list[Outcome]:
        """Every job's outcome, in job order (each job must have been told)."""
        return [self.done[job.label] for job in self.jobs]
