"""The plan's `tune:` section: a learning-rate search per run before the final seeds train.

    tune:
      lr: [0.0025, 0.008, 0.025, 0.08, 0.25]  # base lrs at the plan's base_batch_size
      seeds: 1          # trials per grid value (seeds counted from each run's seed)
      epochs: 8         # optional: shorter trials than the final runs
      score: val_acc    # a metrics.csv column of the val split
      last_epochs: 3    # the score is the median of the last epochs' values
      runs: [bn, gn]    # optional: which runs are tuned (default: see resnorm.study.tuning.phase)
      share: {torch_bn: bn}  # optional: a run that takes another run's chosen lr
      default: true     # add each run's untuned lr to its grid (shown beside the choice)

The grid is one list of base lrs, scaled to each run's batch size by the plan's `lr_rule`
exactly as the untuned lr is: the identical search for every run. Parsed by `parse_plan`;
every problem is a one-line UsageError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from resnorm.errors import UsageError, checked_mapping

__all__ = ["TUNE_KEYS", "SCORES", "TuneSettings", "parse_tune"]

TUNE_KEYS = ("lr", "seeds", "epochs", "score", "last_epochs", "runs", "share", "default")
# metrics.csv columns a trial may be scored by: the clean val split only, never test.
SCORES = ("val_acc", "val_macro_f1", "val_micro_f1")


@dataclass
class TuneSettings:
    lr: list[float]                      # base lrs at the plan's base batch size, ascending
    seeds: int = 1
    epochs: int | None = None            # None: the run's own epochs
    score: str = "val_acc"
    last_epochs: int = 3
    runs: list[str] | None = None        # None: the runs `tuned_runs` picks
    share: dict[str, str] = field(default_factory=dict)
    default: bool = True

    def to_yaml_dict(self) -> dict:
        out = {"lr": list(self.lr), "seeds": self.seeds, "score": self.score,
               "last_epochs": self.last_epochs, "default": self.default}
        if self.epochs is not None:
            out["epochs"] = self.epochs
        if self.runs is not None:
            out["runs"] = list(self.runs)
        if self.share:
            out["share"] = dict(self.share)
        return out


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where} must be a positive integer, got {value!r}")
    return value


def _grid(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where} must be a non-empty list of learning rates")
    out = []
    for v in value:
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or v <= 0):
            raise UsageError(f"{where}: {v!r} is not a positive learning rate")
        out.append(float(v))
    return sorted(set(out))


def _run_list(value: Any, names: list[str], where: str) -> list[str]:
    if not isinstance(value, list) or not value or any(str(v) not in names for v in value):
        raise UsageError(f"{where} must be a non-empty list of runs of the plan, got {value!r}")
    return [str(v) for v in value]


def _share(value: Any, names: list[str], where: str) -> dict[str, str]:
    if not isinstance(value, dict) or any(
            str(k) not in names or str(v) not in names or k == v for k, v in value.items()):
        raise UsageError(f"{where} must map runs of the plan to another run whose chosen lr "
                         f"they take, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def parse_tune(raw: Any, names: list[str], source: str = "plan") -> TuneSettings | None:
    """`tune:` of a plan whose runs are `names`; None when the plan has none."""
    if raw is None:
        return None
    where = f"{source}: tune"
    raw = checked_mapping(raw, TUNE_KEYS, where)
    if "lr" not in raw:
        raise UsageError(f"{where} needs 'lr', the grid of base learning rates")
    out = TuneSettings(lr=_grid(raw["lr"], f"{where}.lr"))
    out.seeds = _count(raw.get("seeds", 1), f"{where}.seeds")
    if raw.get("epochs") is not None:
        out.epochs = _count(raw["epochs"], f"{where}.epochs")
    out.last_epochs = _count(raw.get("last_epochs", 3), f"{where}.last_epochs")
    out.score = str(raw.get("score", "val_acc"))
    if out.score not in SCORES:
        raise UsageError(f"{where}.score '{out.score}' is not one of {', '.join(SCORES)} "
                         "(trials are scored on val, never on test)")
    if raw.get("runs") is not None:
        out.runs = _run_list(raw["runs"], names, f"{where}.runs")
    if raw.get("share") is not None:
        out.share = _share(raw["share"], names, f"{where}.share")
        tuned_too = [k for k in out.share if out.runs and k in out.runs]
        if tuned_too:
            raise UsageError(f"{where}.share: '{tuned_too[0]}' is tuned itself (in tune.runs)")
    if not isinstance(raw.get("default", True), bool):
        raise UsageError(f"{where}.default must be true or false")
    out.default = raw.get("default", True)
    return out
