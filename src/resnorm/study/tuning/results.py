"""The tuning phase's folder as data: trials, their scores, the choice, expected-max curves.

Layout (resnorm.studydir.StudyDir): STUDY/tuning/<run>/lr-<lr>[-wd-<wd>]/seed-<s>/ (one
trial's job per seed: an ordinary run folder, read through RunDir, named by the setting it
trains), STUDY/tuning/tuning.json (what the phase chose, `write_choices`),
STUDY/tuning/journal.log (the Optuna journal: one Optuna study per tuned run, whose sampler
drew the trials, resnorm.study.tuning.engine).

Choosing is a function of train and val alone: a trial's score is read from its
metrics.csv val column (the robust score: the median of the last epochs), never from its
final.json, which holds the test evaluation. Like records, this module imports nothing of
the runner, training or the report, so the report reads the tuning through it.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resnorm.fileio import atomic_write_text, read_json
from resnorm.rundir import OK_STATUSES, RunDir
from resnorm.studydir import StudyDir, lr_text, point_name

__all__ = ["TrialPoint", "TuneResult", "lr_text", "point_name", "robust_score", "read_point",
           "edges_of", "write_choices", "read_choices", "read_settings", "expected_max",
           "curves_cross"]


@dataclass
class TrialPoint:
    """One trial of one tuned run (a point its sampler drew): its jobs' status and their mean
    robust score."""

    lr: float              # the lr it trained (the sampled base lr x the plan's lr rule)
    status: str            # ok | diverged | failed | interrupted | not started
    score: float | None    # mean over the seeds of the robust score; None unless ok
    seeds: list[float | None] = field(default_factory=list)
    val_images: int | None = None  # scored val images (for the score's interval)
    weight_decay: float | None = None  # the weight decay it trained (None: not searched)
    params: dict[str, float] = field(default_factory=dict)  # the sampler's values (lr at the
    #                                                          plan's base batch size)
    number: int | None = None  # its Optuna trial number
    untuned: bool = False      # the run's untuned setting (tune.default), not a sampled point
    dir: str | None = None     # its first seed's folder, relative to the study


@dataclass
class TuneResult:
    """One tuned run: its trials, the choice (None: no trial finished), at which end."""

    run: str
    trials: list[TrialPoint]
    chosen_lr: float | None
    at_edge: str | None    # "low" | "high" | None: the chosen lr is an end of those tried
    default_lr: float
    score: str
    last_epochs: int
    shared_with: str | None = None  # a run that takes this choice too (tune.share)
    chosen: int | None = None       # the chosen trial's Optuna number
    chosen_wd: float | None = None  # its weight decay (None: not searched)
    default_wd: float | None = None
    edges: dict[str, str] = field(default_factory=dict)  # param -> "low" | "high"
    sampler: str = "grid"           # grid | qmc

    def point(self, number: int | None) -> TrialPoint | None:
        return next((p for p in self.trials if number is not None and p.number == number),
                    None)

    @property
    def default_point(self) -> TrialPoint | None:
        """The trial at the run's untuned setting, if one was tried."""
        return next((p for p in self.trials if p.untuned), None) or next(
            (p for p in self.trials if lr_text(p.lr) == lr_text(self.default_lr)
             and (self.default_wd is None or p.weight_decay == self.default_wd)), None)


def robust_score(rows: list[dict], column: str, last_epochs: int) -> float | None:
    """The median of `column` over the last `last_epochs` epochs with a finite value."""
    values = [float(r[column]) for r in rows
              if r.get(column) is not None and math.isfinite(float(r[column]))]
    return statistics.median(values[-last_epochs:]) if values else None


def read_point(folders: list[Path], lr: float, column: str, last_epochs: int) -> TrialPoint:
    """A trial from its seeds' folders. One diverged or failed seed makes the trial diverged
    or failed: a setting that is unstable for some seeds is never chosen."""
    statuses, scores, images = [], [], None
    for folder in folders:
        run = RunDir(folder)
        final, status = run.final(), run.status()
        status = "ok" if status in OK_STATUSES else status
        statuses.append(status)
        scores.append(robust_score(run.metrics(), column, last_epochs) if status == "ok"
                      else None)
        if final is not None:  # the count of scored val images only, not a test score
            images = ((final.get("splits") or {}).get("val") or {}).get("scored", images)
    for worst in ("failed", "diverged", "interrupted", "not started"):
        if worst in statuses:
            return TrialPoint(lr, worst, None, scores, images)
    if any(s is None for s in scores):
        return TrialPoint(lr, "failed", None, scores, images)
    return TrialPoint(lr, "ok", sum(scores) / len(scores), scores, images)


def edges_of(points: list[TrialPoint], chosen: TrialPoint) -> dict[str, str]:
    """Per searched setting, whether the chosen value is the lowest or highest tried: the best
    may lie beyond it ('widen the search')."""
    out = {}
    for param, value in (("lr", chosen.lr), ("weight_decay", chosen.weight_decay)):
        values = sorted({getattr(p, param) for p in points if getattr(p, param) is not None})
        if value is not None and len(values) > 1:
            edge = "low" if value == values[0] else "high" if value == values[-1] else None
            if edge:
                out[param] = edge
    return out


def write_choices(study: Path, results: dict[str, TuneResult], settings: dict) -> Path:
    path = StudyDir(study).tuning_choice
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"settings": settings, "runs": {name: asdict(r) for name, r in results.items()}}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_choices(study: Path) -> dict[str, TuneResult]:
    """STUDY/tuning/tuning.json as TuneResults ({} for a study without tuning; one tuned
    before the sampler chose the trials is refused by StudyDir.check_current)."""
    data = read_json(StudyDir(study).tuning_choice) or {}
    out = {}
    for name, entry in (data.get("runs") or {}).items():
        points = [TrialPoint(**p) for p in entry.get("trials", [])]
        out[name] = TuneResult(**{**entry, "trials": points})
    return out


def read_settings(study: Path) -> dict:
    """The tune: settings the phase ran with (tuning.json's `settings`; {} without tuning)."""
    return (read_json(StudyDir(study).tuning_choice) or {}).get("settings", {})


def expected_max(scores: list[float], n: int) -> float:
    """The expected best of `n` of the `scores` drawn at random without replacement
    (Dodge et al. 2019's expected validation performance, with the unbiased estimator of
    Tang et al. 2020): sum over the sorted scores v_(i), i >= n, of
    v_(i) * C(i-1, n-1) / C(N, n), the chance that v_(i) is the largest of the n drawn."""
    values, total = sorted(scores), len(scores)
    if not 1 <= n <= total:
        raise ValueError(f"n must be between 1 and {total}, got {n}")
    return sum(v * math.comb(i - 1, n - 1) for i, v in enumerate(values, 1) if i >= n) \
        / math.comb(total, n)


def curves_cross(a: list[float], b: list[float], tol: float = 1e-9) -> bool:
    """Whether one curve is strictly above the other at some budget and strictly below at
    another (their ranking depends on the number of trials)."""
    signs = {(x > y + tol) - (x < y - tol) for x, y in zip(a, b)}
    return {1, -1} <= signs
