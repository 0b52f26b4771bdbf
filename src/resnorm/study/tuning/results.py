"""The tuning phase's folder as data: trials, their scores, the choice, expected-max curves.

Layout: STUDY/tuning/<run>/lr-<lr>/seed-<s>/ (one trial: an ordinary run folder),
STUDY/tuning/tuning.json (what the phase chose, `write_choices`), STUDY/tuning/journal.log
(the Optuna journal that mirrors the trials, resnorm.study.tuning.phase).

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

__all__ = ["TUNING_DIR", "CHOICE_FILE", "JOURNAL_FILE", "GridPoint", "TuneResult",
           "lr_text", "trial_folder", "robust_score", "read_point", "choose", "write_choices",
           "read_choices", "expected_max", "curves_cross"]

TUNING_DIR = "tuning"
CHOICE_FILE = "tuning.json"
JOURNAL_FILE = "journal.log"
_OK = ("completed", "early_stopped")


def lr_text(lr: float) -> str:
    """How an lr is written in folder names and lines: 6 significant digits."""
    return f"{lr:.6g}"


def trial_folder(study: Path, run: str, lr: float, seed: int) -> Path:
    return Path(study) / TUNING_DIR / run / f"lr-{lr_text(lr)}" / f"seed-{seed}"


@dataclass
class GridPoint:
    """One grid value of one run: its trials' status and their mean robust score."""

    lr: float
    status: str            # ok | diverged | failed | interrupted | not started
    score: float | None    # mean over the seeds of the robust score; None unless ok
    seeds: list[float | None] = field(default_factory=list)
    val_images: int | None = None  # scored val images (for the score's interval)


@dataclass
class TuneResult:
    """One tuned run: its grid, the chosen lr (None: no trial finished), at which end."""

    run: str
    grid: list[GridPoint]
    chosen_lr: float | None
    at_edge: str | None    # "low" | "high" | None: the choice is an end of the grid
    default_lr: float
    score: str
    last_epochs: int
    shared_with: str | None = None  # a run that takes this lr too (tune.share)


def robust_score(rows: list[dict], column: str, last_epochs: int) -> float | None:
    """The median of `column` over the last `last_epochs` epochs with a finite value."""
    values = [float(r[column]) for r in rows
              if r.get(column) is not None and math.isfinite(float(r[column]))]
    return statistics.median(values[-last_epochs:]) if values else None


def _trial_status(folder: Path) -> tuple[str, dict | None]:
    final = read_json(folder / "final.json")
    if final is not None:
        status = final.get("status", "completed")
        return ("ok" if status in _OK else status), final
    if (folder / "error.txt").exists():
        return "failed", None
    return ("interrupted" if (folder / "last.pt").exists() else "not started"), None


def read_point(folders: list[Path], lr: float, column: str, last_epochs: int) -> GridPoint:
    """A grid value from its seeds' folders. One diverged or failed seed makes the value
    diverged or failed: an lr that is unstable for some seeds is never chosen."""
    from resnorm.metrics import read_metrics_csv

    statuses, scores, images = [], [], None
    for folder in folders:
        status, final = _trial_status(folder)
        statuses.append(status)
        rows = read_metrics_csv(folder / "metrics.csv") if status == "ok" else []
        scores.append(robust_score(rows, column, last_epochs) if status == "ok" else None)
        if final is not None:  # the count of scored val images only, not a test score
            images = ((final.get("splits") or {}).get("val") or {}).get("scored", images)
    for worst in ("failed", "diverged", "interrupted", "not started"):
        if worst in statuses:
            return GridPoint(lr, worst, None, scores, images)
    if any(s is None for s in scores):
        return GridPoint(lr, "failed", None, scores, images)
    return GridPoint(lr, "ok", sum(scores) / len(scores), scores, images)


def choose(grid: list[GridPoint], default_lr: float) -> tuple[float | None, str | None]:
    """The lr with the highest score among the finished grid values (ties: the one nearest
    the default lr), and whether it is the lowest or highest value of the grid."""
    ok = [p for p in grid if p.status == "ok" and p.score is not None]
    if not ok:
        return None, None
    best = max(ok, key=lambda p: (p.score, -abs(math.log(p.lr / default_lr))))
    lrs = sorted(p.lr for p in grid)
    edge = None
    if len(lrs) > 1:
        edge = "low" if best.lr == lrs[0] else "high" if best.lr == lrs[-1] else None
    return best.lr, edge


def write_choices(study: Path, results: dict[str, TuneResult], settings: dict) -> Path:
    path = Path(study) / TUNING_DIR / CHOICE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"settings": settings, "runs": {name: asdict(r) for name, r in results.items()}}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_choices(study: Path) -> dict[str, TuneResult]:
    """STUDY/tuning/tuning.json as TuneResults ({} for a study without tuning)."""
    data = read_json(Path(study) / TUNING_DIR / CHOICE_FILE) or {}
    out = {}
    for name, entry in (data.get("runs") or {}).items():
        grid = [GridPoint(**p) for p in entry.get("grid", [])]
        out[name] = TuneResult(**{**entry, "grid": grid})
    return out


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
