"""The study folder as data: its runs, their seeds, state and results.

Read by the runner (what is finished), the report and Grad-CAM. This module imports nothing
of the runner, training or the report, so the report can read a study without them.

The folder's paths are a StudyDir's (resnorm.studydir), a run folder's files a RunDir's, and
a trial's status is RunDir.status with the study's record of it. A study an older version
wrote is refused in one line (StudyDir.check_current) before anything is read.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from resnorm.fileio import atomic_write_text, read_json, read_yaml
from resnorm.rundir import OK_STATUSES, RunDir
from resnorm.studydir import StudyDir

__all__ = ["Trial", "RunRecord", "trial_label", "read_state", "write_state", "collect_runs",
           "best_run"]


def trial_label(name: str, seed: int) -> str:
    """How a (run, seed) is named in study.json and the study's output lines."""
    return f"{name}/seed-{seed}"


@dataclass
class Trial:
    """One trained model of a run: one seed, one folder (whatever state it is in)."""

    seed: int | None
    dir: Path
    status: str  # resnorm.rundir.STATUSES
    config: dict
    final: dict | None
    rows: list[dict]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES and self.final is not None

    def evaluation(self, split: str) -> dict:
        """The best checkpoint's eval pass on 'train', 'val' or 'test'."""
        return ((self.final or {}).get("eval") or {}).get(split) or {}

    def score(self, split: str, key: str) -> float | None:
        """One metric of `evaluation(split)`, or None."""
        try:
            value = float(self.evaluation(split)[key])
        except (TypeError, KeyError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def predictions(self) -> dict | None:
        """The best checkpoint's per-image predictions (RunDir.predictions), or None."""
        return RunDir(self.dir).predictions()


@dataclass
class RunRecord:
    """A run of the plan with its trials (one per seed).

    Its scores are means over the finished trials; `dir`, `config`, `final` and `rows` are
    those of its representative trial: of the finished seeds, the one whose val accuracy is
    closest to the run's mean (a typical model, not the luckiest), which is the one Grad-CAM
    explains and whose curves stand for the run.
    """

    name: str
    trials: list[Trial] = field(default_factory=list)
    in_plan: bool = True
    folder: Path | None = None  # STUDY/runs/<name>/

    @property
    def done(self) -> list[Trial]:
        """The finished trials (completed or early-stopped), in seed order."""
        return [t for t in self.trials if t.ok]

    @property
    def seeds(self) -> list[int | None]:
        return [t.seed for t in self.done]

    @property
    def ok(self) -> bool:
        return bool(self.done)

    @property
    def representative(self) -> Trial | None:
        done = [t for t in self.done if t.score("val", "acc") is not None]
        if not done:
            done = self.done or [t for t in self.trials if t.final is not None] or self.trials
            return done[0] if done else None
        mean = sum(t.score("val", "acc") for t in done) / len(done)
        return min(done, key=lambda t: abs(t.score("val", "acc") - mean))

    @property
    def dir(self) -> Path | None:
        """The representative trial's folder (the run's folder while it has none)."""
        rep = self.representative
        return rep.dir if rep is not None else self.folder

    @property
    def config(self) -> dict:
        rep = self.representative
        return rep.config if rep is not None else {}

    @property
    def final(self) -> dict | None:
        rep = self.representative
        return rep.final if rep is not None else None

    @property
    def rows(self) -> list[dict]:
        rep = self.representative
        return rep.rows if rep is not None else []

    @property
    def status(self) -> str:
        """The trials' status when they agree (else "mixed"; see `status_text`)."""
        statuses = {t.status for t in self.trials} or {"not started"}
        return statuses.pop() if len(statuses) == 1 else "mixed"

    @property
    def status_text(self) -> str:
        """'completed', or per status how many seeds: '2 completed, 1 diverged'."""
        if self.status != "mixed":
            return self.status
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def error(self) -> str | None:
        return next((t.error for t in self.trials if t.error), None)

    def evaluation(self, split: str) -> dict:
        rep = self.representative
        return rep.evaluation(split) if rep is not None else {}

    def score(self, split: str, key: str) -> float | None:
        """The mean of one metric over the finished trials, or None."""
        values = [v for v in (t.score(split, key) for t in self.done) if v is not None]
        return sum(values) / len(values) if values else None

    def curve(self, column: str) -> tuple[list[int], list[float], list[float], list[float]]:
        """A metrics.csv column over the finished trials: epochs, mean, min, max per epoch
        (an early-stopped seed counts up to its last epoch)."""
        by_epoch: dict[int, list[float]] = {}
        for t in self.done or self.trials[:1]:
            for row in t.rows:
                value = row.get(column)
                if value is not None and math.isfinite(value):
                    by_epoch.setdefault(int(row["epoch"]), []).append(float(value))
        epochs = sorted(by_epoch)
        return (epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs],
                [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs])


def read_state(study: str | os.PathLike) -> dict:
    return read_json(StudyDir(study).state) or {"runs": {}}


def write_state(study: str | os.PathLike, state: dict) -> None:
    atomic_write_text(StudyDir(study).state, json.dumps(state, indent=2) + "\n")


def collect_runs(study: str | os.PathLike) -> list[RunRecord]:
    """Every run of a study: the plan's runs in plan order, then any other run folders."""
    folder = StudyDir(study)
    folder.check_current()
    planned = [str(r["name"]) for r in read_yaml(folder.plan).get("runs", [])
               if isinstance(r, dict) and "name" in r]
    state = read_state(folder).get("runs", {})
    records = []
    for name in planned + [n for n in folder.run_names() if n not in planned]:
        seeds = [seed for seed, _ in folder.seed_folders(name)] or _planned_seeds(state, name)
        trials = [_read_trial(folder.trial(name, seed), seed,
                              state.get(trial_label(name, seed), {})) for seed in seeds]
        records.append(RunRecord(name, trials, name in planned, folder.run(name)))
    return records


def _planned_seeds(state: dict, name: str) -> list[int]:
    """The seeds study.json names for a run that has no folder yet (e.g. it failed early)."""
    prefix = f"{name}/seed-"
    return sorted(int(k[len(prefix):]) for k in state
                  if k.startswith(prefix) and k[len(prefix):].lstrip("-").isdigit())


def _read_trial(folder: Path, seed: int, entry: dict) -> Trial:
    """A (run, seed) as its folder and study.json's `entry` say (any state, even no folder)."""
    run = RunDir(folder)
    status = run.status(entry.get("status"))
    return Trial(seed, folder, status, run.config(), run.final(), run.metrics(),
                 entry.get("error") if status == "failed" else None)


def best_run(records: list[RunRecord]) -> RunRecord | None:
    """The finished run with the highest mean val accuracy over its seeds (first on ties)."""
    scored = [r for r in records if r.ok and r.score("val", "acc") is not None]
    return max(scored, key=lambda r: r.score("val", "acc"), default=None)
