"""Each run's scores as the statistics see them: its scored seeds' per-image predictions per
split (`seed_predictions`: the finished seeds and the diverged ones with a checkpoint before
the divergence), the study's shared image resamples and seed-variance models (`StudyStats`),
and a run's entry of summary.json's `runs` (`run_entry`: mean, SD and 95 % interval per split
and metric). resnorm.report.summary builds the rest of summary.json on these."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from resnorm import statistics as st
from resnorm.study.execution.records import RunRecord

__all__ = ["SPLITS", "N_BOOT", "RunSeeds", "seed_predictions", "StudyStats", "json_safe",
           "run_entry"]

SPLITS = ("train", "val", "test")
N_BOOT = 2000


@dataclasses.dataclass
class RunSeeds:
    """A run's scored seeds as the statistics need them, per split: the finished ones and the
    diverged ones with a best checkpoint before the divergence."""

    seeds: list[int | None]
    by_split: dict[str, list[st.SeedPredictions]]  # only splits every scored seed has
    missing: str | None = None                       # why there are none
    diverged: int = 0                                # diverged seeds, scored or not
    unscored: int = 0                                # diverged seeds without a checkpoint


def seed_predictions(run: RunRecord) -> RunSeeds:
    diverged = [t for t in run.trials if t.status == "diverged"]
    with_checkpoint = {id(t): p for t in diverged if (p := t.predictions())}
    scored = [t for t in run.trials if t.ok or id(t) in with_checkpoint]
    counts = {"diverged": len(diverged), "unscored": len(diverged) - len(with_checkpoint)}
    if not scored:
        why = (f"{run.name} has no finished seed ({run.status_text})" if run.trials
               else f"{run.name} was not trained")
        return RunSeeds([], {}, why, **counts)
    per_trial = [with_checkpoint.get(id(t)) or t.predictions() or {} for t in scored]
    by_split = {}
    for split in SPLITS:
        if all(split in p for p in per_trial):
            by_split[split] = [st.SeedPredictions(t.seed, p[split]["labels"], p[split]["preds"])
                               for t, p in zip(scored, per_trial)]
    missing = None if "val" in by_split else (f"{run.name} has no per-image predictions "
                                              "(trained by an older resnorm)")
    return RunSeeds([t.seed for t in scored], by_split, missing, **counts)


class StudyStats:
    """Shared bootstrap indices and replicate cache per split, so that every interval of a
    split is drawn from the same image resamples (and each replicate is computed once), and
    the seed-variance model per (split, metric), fitted once to every run."""

    def __init__(self, seeds: dict[str, RunSeeds], recipes: dict[str, str | None]) -> None:
        self.indices: dict[tuple[str, int], np.ndarray] = {}
        self.cache: dict = {}
        self.seeds = seeds
        self.recipes = recipes
        self.models: dict[tuple[str, str], st.SeedModel | None] = {}
        self.paired: dict[tuple[str, str, str], st.SeedModel] = {}

    def kwargs(self, split: str, n: int) -> dict:
        key = (split, n)
        if key not in self.indices:
            self.indices[key] = st.bootstrap_indices(n, N_BOOT, np.random.default_rng(0))
        return {"indices": self.indices[key], "cache": self.cache}

    def model(self, split: str, metric: str) -> st.SeedModel | None:
        """The model of every run with `split` predictions; None when no run has two seeds
        or the runs were evaluated on different images (then each pair stands alone)."""
        if (split, metric) not in self.models:
            runs = {n: g.by_split[split] for n, g in self.seeds.items() if split in g.by_split}
            fit = None
            if runs and max(len(r) for r in runs.values()) >= 2:
                try:
                    n = next(iter(runs.values()))[0].labels.size
                    # runs that are not comparable stay out of the pooled seed variance
                    excluded = st.runs_not_comparable(
                        runs, {r: self.seeds[r].diverged for r in runs},
                        {r: x for r, x in self.recipes.items() if r in runs and x})
                    fit = st.fit_runs(runs, metric, excluded=excluded, **self.kwargs(split, n))
                except ValueError:
                    fit = None
            self.models[(split, metric)] = fit
        return self.models[(split, metric)]


def json_safe(x: Any) -> Any:
    """JSON-safe: NaN/inf as None, numpy scalars as floats, lists element-wise."""
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def run_entry(run: RunRecord, seeds: RunSeeds, stats: StudyStats) -> dict:
    entry: dict[str, Any] = {"seeds": seeds.seeds, "status": run.status_text,
                             "trials": len(run.trials), "diverged": seeds.diverged}
    note = _divergence_note(seeds)
    if seeds.missing and not seeds.seeds:
        entry["reason"] = seeds.missing
        return entry
    for split in SPLITS:
        group = seeds.by_split.get(split)
        for metric in st.METRICS:
            name = f"{split}_{metric}"
            if group:
                res = st.summarize(group, metric, **stats.kwargs(split, group[0].labels.size))
                entry[name] = {k: json_safe(res.get(k)) for k in ("mean", "std", "ci95", "n")}
                entry[name]["method"] = res["method"] + note
            else:
                values = [t.score(split, metric) for t in run.done]
                if values and all(v is not None for v in values):
                    entry[name] = _seed_interval(values)
    return entry


def _divergence_note(seeds: RunSeeds) -> str:
    """What the run's score says about its diverged seeds ('' without any)."""
    if not seeds.diverged:
        return ""
    scored = seeds.diverged - seeds.unscored
    text = f" {seeds.diverged} seed(s) diverged"
    if scored:
        text += f"; {scored} scored at the best checkpoint before the divergence"
    if seeds.unscored:
        text += (f"; {seeds.unscored} had no checkpoint and are not in the mean, which is "
                 "therefore over the seeds that survived")
    return text + "."


def _seed_interval(values: list[float]) -> dict:
    """A t interval over seeds alone (no per-image predictions to bootstrap)."""
    ci = st.t_interval(values)
    if ci is None:
        return {"mean": values[0], "std": None, "ci95": None, "n": 1,
                "method": "one seed and no per-image predictions: no interval"}
    return {"mean": ci[0], "std": float(np.std(values, ddof=1)), "ci95": [ci[1], ci[2]],
            "n": len(values), "method": f"t interval over {len(values)} seeds (image noise not "
                                        "counted: no per-image predictions)"}
