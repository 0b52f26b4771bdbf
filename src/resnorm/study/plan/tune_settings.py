"""The plan's `tune:` section: a search per run before the final seeds train.

A grid (Optuna's GridSampler: every combination, in every tuned run):

    tune:
      lr: [0.0025, 0.008, 0.025, 0.08, 0.25]  # base lrs at the plan's base_batch_size
      weight_decay: [0.0005]                   # optional: a grid of weight decays too

or a space sampled quasi-randomly (Optuna's QMCSampler: scrambled Sobol, one fixed seed, so
every tuned run gets the identical points):

    tune:
      space: {lr: [0.01, 1.0, log], weight_decay: [1.0e-5, 1.0e-2, log]}
      trials: 6

and, either way:

      seeds: 1          # jobs per trial (seeds counted from each run's seed)
      epochs: 8         # optional: shorter trials than the final runs
      score: val_acc    # a metrics.csv column of the val split
      last_epochs: 3    # the score is the median of the last epochs' values
      runs: [bn, gn]    # optional: which runs are tuned (default: see resnorm.study.tuning.phase)
      share: {torch_bn: bn}  # optional: a run that takes another run's choice
      default: true     # also try each run's untuned setting (shown beside the choice)

`lr` values are base lrs at the plan's base batch size, scaled to each run's batch size by the
plan's `lr_rule` exactly as the untuned lr is; weight decays are taken as they are. Parsed by
`parse_plan`; every problem is a one-line UsageError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from resnorm.errors import UsageError, checked_mapping

__all__ = ["TUNE_KEYS", "TUNABLE", "SCORES", "QMC_SEED", "TuneSettings", "parse_tune"]

TUNABLE = ("lr", "weight_decay")   # the settings a search may vary
TUNE_KEYS = (*TUNABLE, "space", "trials", "seeds", "epochs", "score", "last_epochs", "runs",
             "share", "default")
# metrics.csv columns a trial may be scored by: the clean val split only, never test.
SCORES = ("val_acc", "val_macro_f1", "val_micro_f1")
QMC_SEED = 0  # the Sobol scrambling seed: the same points for every tuned run and every study


@dataclass
class TuneSettings:
    grid: dict[str, list[float]] = field(default_factory=dict)  # param -> values (grid)
    space: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # (lo, hi, log)
    trials: int | None = None            # points sampled from `space`
    seeds: int = 1
    epochs: int | None = None            # None: the run's own epochs
    score: str = "val_acc"
    last_epochs: int = 3
    runs: list[str] | None = None        # None: the runs `tuned_runs` picks
    share: dict[str, str] = field(default_factory=dict)
    default: bool = True

    @property
    def sampler(self) -> str:
        """'grid' (GridSampler) or 'qmc' (QMCSampler, scrambled Sobol)."""
        return "qmc" if self.space else "grid"

    @property
    def params(self) -> list[str]:
        """The settings searched, in TUNABLE order."""
        return [p for p in TUNABLE if p in (self.space or self.grid)]

    @property
    def lr(self) -> list[float] | None:
        """The lr grid (None for a sampled space)."""
        return self.grid.get("lr")

    def count(self) -> int:
        """How many points the sampler gives each tuned run."""
        return self.trials if self.space else math.prod(len(v) for v in self.grid.values())

    def to_yaml_dict(self) -> dict:
        out: dict[str, Any] = {k: list(v) for k, v in self.grid.items()}
        if self.space:
            out["space"] = {k: [lo, hi, "log" if log else "linear"]
                            for k, (lo, hi, log) in self.space.items()}
            out["trials"] = self.trials
        out.update(seeds=self.seeds, score=self.score, last_epochs=self.last_epochs,
                   default=self.default)
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


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _grid(value: Any, param: str, where: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where} must be a non-empty list of values")
    smallest = 0.0 if param == "weight_decay" else None  # a weight decay may be 0, an lr not
    for v in value:
        if not _number(v) or v < 0 or (smallest is None and v == 0):
            kind = "weight decay >= 0" if smallest is not None else "learning rate"
            raise UsageError(f"{where}: {v!r} is not a {'positive ' * (smallest is None)}{kind}")
    return sorted({float(v) for v in value})


def _space(value: Any, where: str) -> dict[str, tuple[float, float, bool]]:
    """`space: {param: [low, high, log|linear]}` (log by default)."""
    if not isinstance(value, dict) or not value:
        raise UsageError(f"{where} must map {' and/or '.join(TUNABLE)} to [low, high, log]")
    out = {}
    for param, bounds in value.items():
        if param not in TUNABLE:
            raise UsageError(f"{where}: '{param}' cannot be tuned (tunable: "
                             f"{', '.join(TUNABLE)})")
        scale = bounds[2] if isinstance(bounds, list) and len(bounds) == 3 else "log"
        if (not isinstance(bounds, list) or len(bounds) not in (2, 3)
                or not all(_number(b) for b in bounds[:2]) or scale not in ("log", "linear")
                or not 0 <= bounds[0] < bounds[1] or (scale == "log" and bounds[0] <= 0)):
            raise UsageError(f"{where}.{param} must be [low, high] or [low, high, log|linear] "
                             f"with 0 <= low < high (low > 0 on a log scale), got {bounds!r}")
        out[str(param)] = (float(bounds[0]), float(bounds[1]), scale == "log")
    return out


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


def _search(raw: dict, where: str) -> TuneSettings:
    """The grid or the sampled space, whichever the section gives (exactly one)."""
    grid = {p: _grid(raw[p], p, f"{where}.{p}") for p in TUNABLE if p in raw}
    if "space" in raw:
        if grid:
            raise UsageError(f"{where}: give either a grid ({', '.join(grid)}: [...]) or "
                             "space: with trials:, not both")
        if "trials" not in raw:
            raise UsageError(f"{where}.space needs 'trials', the number of points per run")
        return TuneSettings(space=_space(raw["space"], f"{where}.space"),
                            trials=_count(raw["trials"], f"{where}.trials"))
    if "lr" not in grid:
        raise UsageError(f"{where} needs 'lr', the grid of base learning rates, or 'space' "
                         "with 'trials'")
    if "trials" in raw:
        raise UsageError(f"{where}.trials goes with space: (a grid tries each of its values)")
    return TuneSettings(grid=grid)


def parse_tune(raw: Any, names: list[str], source: str = "plan") -> TuneSettings | None:
    """`tune:` of a plan whose runs are `names`; None when the plan has none."""
    if raw is None:
        return None
    where = f"{source}: tune"
    raw = checked_mapping(raw, TUNE_KEYS, where)
    out = _search(raw, where)
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
