"""The study folder as data: its runs, their seeds, state and results.

Read by the runner (what is finished), the report and Grad-CAM. This module imports nothing
of the runner, training or the report, so the report can read a study without them.

Layout: STUDY/plan.yaml (the plan as run), STUDY/study.json (what the study did to each
(run, seed)), STUDY/runs/<name>/seed-<s>/ (one trained model: see resnorm.train.run), and
STUDY/summary.json (the statistics, written with the report). A study written before seeds
existed has the run's files in runs/<name>/ itself; it reads as one trial of its config's seed.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from resnorm.fileio import atomic_write_text, read_json, read_yaml
from resnorm.rundir import RunDir
from resnorm.studydir import StudyDir

__all__ = ["PLAN_FILE", "STATE_FILE", "SUMMARY_FILE", "OK_STATUSES", "Trial", "RunRecord",
           "trial_dir", "trial_label", "read_state", "write_state", "collect_runs", "best_run"]

PLAN_FILE = StudyDir.PLAN        # the study's copy of its plan
STATE_FILE = StudyDir.STATE      # per-(run, seed) outcome as the study saw it (failures, lr)
SUMMARY_FILE = StudyDir.SUMMARY  # the statistics of the study (resnorm.report.summary)
OK_STATUSES = ("completed", "early_stopped")
_SEED_DIR = re.compile(r"^seed-(-?\d+)$")


def trial_dir(study: Path, name: str, seed: int) -> Path:
    """Where (run `name`, `seed`) trains: STUDY/runs/<name>/seed-<seed>/."""
    return StudyDir(study).trial(name, seed)


def trial_label(name: str, seed: int) -> str:
    """How a (run, seed) is named in study.json and the study's output lines."""
    return f"{name}/seed-{seed}"


@dataclass
class Trial:
    """One trained model of a run: one seed, one folder (whatever state it is in)."""

    seed: int | None
    dir: Path
    status: str  # completed | early_stopped | diverged | failed | interrupted | not started
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


def read_state(study: Path) -> dict:
    return read_json(study / STATE_FILE) or {"runs": {}}


def write_state(study: Path, state: dict) -> None:
    atomic_write_text(study / STATE_FILE, json.dumps(state, indent=2) + "\n")


def collect_runs(study: str | os.PathLike) -> list[RunRecord]:
    """Every run of a study: the plan's runs in plan order, then any other run folders."""
    study = Path(study)
    plan_raw = read_yaml(study / PLAN_FILE)
    planned = [str(r["name"]) for r in plan_raw.get("runs", [])
               if isinstance(r, dict) and "name" in r]
    found = sorted(p.name for p in (study / "runs").glob("*") if p.is_dir())
    state = read_state(study).get("runs", {})
    records = []
    for name in planned + [n for n in found if n not in planned]:
        run_dir = study / "runs" / name
        seeds = sorted((int(m.group(1)), p) for p in run_dir.glob("seed-*")
                       if p.is_dir() and (m := _SEED_DIR.match(p.name)))
        if seeds:
            trials = [_read_trial(d, seed, state.get(trial_label(name, seed), {}))
                      for seed, d in seeds]
        elif RunDir(run_dir).started:  # a study from before seeds: the run's files are here
            trials = [_read_trial(run_dir, None, state.get(name, {}))]
        else:
            trials = [_not_started(run_dir, seed, state.get(trial_label(name, seed), {}))
                      for seed in _planned_seeds(state, name)]
        records.append(RunRecord(name, trials, name in planned, run_dir))
    return records


def _planned_seeds(state: dict, name: str) -> list[int]:
    """The seeds study.json names for a run that has no folder yet (e.g. it failed early)."""
    prefix = f"{name}/seed-"
    return sorted(int(k[len(prefix):]) for k in state
                  if k.startswith(prefix) and k[len(prefix):].lstrip("-").isdigit())


def _not_started(run_dir: Path, seed: int, entry: dict) -> Trial:
    status = "failed" if entry.get("status") == "failed" else "not started"
    return Trial(seed, run_dir / f"seed-{seed}", status, {}, None, [],
                 entry.get("error") if status == "failed" else None)


def _read_trial(run_dir: Path, seed: int | None, entry: dict) -> Trial:
    run = RunDir(run_dir)
    final, rows, config = run.final(), run.metrics(), run.config()
    if final is not None:
        status = final.get("status", "completed")
    elif entry.get("status") == "failed":
        status = "failed"
    elif run.resumable:
        status = "interrupted"
    else:
        status = "not started"
    if seed is None:
        seed = config.get("seed")
    return Trial(seed, run_dir, status, config, final, rows,
                 entry.get("error") if status == "failed" else None)


def best_run(records: list[RunRecord]) -> RunRecord | None:
    """The finished run with the highest mean val accuracy over its seeds (first on ties)."""
    scored = [r for r in records if r.ok and r.score("val", "acc") is not None]
    return max(scored, key=lambda r: r.score("val", "acc"), default=None)
