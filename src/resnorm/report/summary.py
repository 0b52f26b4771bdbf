"""The study's statistics: per-run intervals, comparisons, the batch-size interaction and the
sanity equivalence, as one JSON-ready dict (STUDY/summary.json) that the report then states.

Every number comes from resnorm.study.statistics on the per-image validation predictions of
each (run, seed) (RUN/seed-S/predictions.npz): the intervals count both the seeds and the
finite validation set. Metric names are metrics.csv's (`val_acc`, `val_macro_f1`, ...), values
are fractions. Nothing here raises on a degenerate study: a comparison that cannot be made
(a run missing, diverged on every seed, without predictions) is listed with its `reason`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from resnorm.fileio import atomic_write_text
from resnorm.predictions import read_predictions
from resnorm.report.roles import Roles
from resnorm.study import statistics as st
from resnorm.study.records import SUMMARY_FILE, RunRecord

__all__ = ["study_summary", "write_summary", "RUN_METRICS", "COMPARED_METRICS", "TEST_METRICS",
           "METHOD", "primary_metric"]

SPLITS = ("train", "val", "test")
RUN_METRICS = tuple(f"{split}_{m}" for split in SPLITS for m in st.METRICS)
COMPARED_METRICS = ("val_acc", "val_macro_f1")  # val_micro_f1 equals val_acc
# With a test split, the same on test: the held-out estimate (val chose the epochs).
TEST_METRICS = ("test_acc", "test_macro_f1")
N_BOOT = 2000
# Plan fields that say nothing about the experiment (where and how fast it ran).
IGNORED_FIELDS = ("seed", "device", "amp", "channels_last", "compile", "compile_mode",
                  "eval_batch_size", "num_classes")
METHOD = ("Each run was trained once per seed and its best checkpoint evaluated on the same "
          "validation (and test) images. Intervals are 95 % and count both sources of noise: the "
          "seed-to-seed spread (a t interval over seeds) and the finite validation set (a "
          "bootstrap over images, paired across runs because every run sees the same images), "
          "with the seed-by-image noise counted once. Runs trained with the same seeds are "
          "compared seed by seed (seed s of each run shares its initialisation draw and data "
          "order). With one seed per run, the interval is "
          "the paired image bootstrap alone (conditional on the trained models) and the p-value "
          "of an accuracy difference is McNemar's exact test. A difference is stated only when "
          "its interval excludes 0.")


@dataclasses.dataclass
class _Seeds:
    """A run's finished seeds as the statistics need them, per split."""

    seeds: list[int | None]
    by_split: dict[str, list[st.SeedPredictions]]  # only splits every finished seed has
    missing: str | None = None                       # why there are none


def _seed_predictions(run: RunRecord) -> _Seeds:
    done = run.done
    if not done:
        why = (f"{run.name} has no finished seed ({run.status_text})" if run.trials
               else f"{run.name} was not trained")
        return _Seeds([], {}, why)
    per_trial = [read_predictions(t.dir) or {} for t in done]
    by_split = {}
    for split in SPLITS:
        if all(split in p for p in per_trial):
            by_split[split] = [st.SeedPredictions(t.seed, p[split]["labels"], p[split]["preds"])
                               for t, p in zip(done, per_trial)]
    missing = None if "val" in by_split else (f"{run.name} has no per-image predictions "
                                              "(trained by an older resnorm)")
    return _Seeds([t.seed for t in done], by_split, missing)


class _Stats:
    """Shared bootstrap indices and replicate cache per split, so that every interval of a
    split is drawn from the same image resamples (and each replicate is computed once)."""

    def __init__(self) -> None:
        self.indices: dict[tuple[str, int], np.ndarray] = {}
        self.cache: dict = {}

    def kwargs(self, split: str, n: int) -> dict:
        key = (split, n)
        if key not in self.indices:
            self.indices[key] = st.bootstrap_indices(n, N_BOOT, np.random.default_rng(0))
        return {"indices": self.indices[key], "cache": self.cache}


def _finite(x: Any) -> Any:
    """JSON-safe: NaN/inf as None, numpy scalars as floats, lists element-wise."""
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _run_entry(run: RunRecord, seeds: _Seeds, stats: _Stats) -> dict:
    entry: dict[str, Any] = {"seeds": seeds.seeds, "status": run.status_text,
                             "trials": len(run.trials)}
    if seeds.missing and not seeds.seeds:
        entry["reason"] = seeds.missing
        return entry
    for split in SPLITS:
        group = seeds.by_split.get(split)
        for metric in st.METRICS:
            name = f"{split}_{metric}"
            if group:
                res = st.summarize(group, metric, **stats.kwargs(split, group[0].labels.size))
                entry[name] = {k: _finite(res.get(k)) for k in ("mean", "std", "ci95", "n")}
                entry[name]["method"] = res["method"]
            else:
                values = [t.score(split, metric) for t in run.done]
                if values and all(v is not None for v in values):
                    entry[name] = _seed_interval(values)
    return entry


def _seed_interval(values: list[float]) -> dict:
    """A t interval over seeds alone (no per-image predictions to bootstrap)."""
    ci = st.t_interval(values)
    if ci is None:
        return {"mean": values[0], "std": None, "ci95": None, "n": 1,
                "method": "one seed and no per-image predictions: no interval"}
    return {"mean": ci[0], "std": float(np.std(values, ddof=1)), "ci95": [ci[1], ci[2]],
            "n": len(values), "method": f"t interval over {len(values)} seeds (image noise not "
                                        "counted: no per-image predictions)"}


# --- which pairs to compare ------------------------------------------------------------------

def _fields(plan: dict) -> dict[str, dict]:
    """Each plan run's settings (defaults + overrides), without the ones that do not change
    the experiment."""
    defaults = plan.get("defaults") or {}
    out = {}
    for r in plan.get("runs") or []:
        if isinstance(r, dict) and "name" in r:
            fields = {**defaults, **{k: v for k, v in r.items() if k != "name"}}
            out[str(r["name"])] = {k: v for k, v in fields.items() if k not in IGNORED_FIELDS}
    return out


def _differences(a: dict, b: dict) -> list[str]:
    from resnorm.study.plan import train_default

    def value(fields: dict, key: str) -> Any:
        if key in fields:
            return fields[key]
        try:
            return train_default(key)
        except KeyError:
            return None

    return [k for k in sorted(set(a) | set(b)) if value(a, k) != value(b, k)]


def comparison_pairs(plan: dict) -> list[tuple[str, str, str]]:
    """(a, b, what differs): every pair of plan runs that differ in exactly one setting, in plan
    order, then the plan's `comparisons:` pairs."""
    fields = _fields(plan)
    names = list(fields)
    pairs, seen = [], set()
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = _differences(fields[a], fields[b])
            if len(diff) == 1:
                pairs.append((a, b, diff[0]))
                seen.add(frozenset((a, b)))
    for a, b in plan.get("comparisons") or []:
        if frozenset((a, b)) not in seen and a in fields and b in fields:
            pairs.append((a, b, ", ".join(_differences(fields[a], fields[b])) or "nothing"))
            seen.add(frozenset((a, b)))
    return pairs


# --- the summary ------------------------------------------------------------------------------

def _contrast(kind: str, groups: list[_Seeds], stats: _Stats, metric: str) -> dict:
    """compare / interaction on val, or a 'not computable' result naming why."""
    missing = [g.missing for g in groups if g.missing]
    if missing:
        return {"diff": None, "ci95": None, "p": None, "verdict": st.NOT_COMPUTABLE,
                "reason": missing[0], "method": f"not computable: {missing[0]}"}
    split, m = metric.split("_", 1)
    sets = [g.by_split[split] for g in groups]
    try:
        kwargs = stats.kwargs(split, sets[0][0].labels.size)
        res = (st.compare(*sets, m, **kwargs) if kind == "compare"
               else st.interaction(*sets, m, **kwargs))
    except ValueError as exc:  # e.g. runs evaluated on other validation sets
        return {"diff": None, "ci95": None, "p": None, "verdict": st.NOT_COMPUTABLE,
                "reason": str(exc), "method": f"not computable: {exc}"}
    return res


def _public(res: dict, *keys: str) -> dict:
    keep = ("diff", "ci95", "p", "verdict", "method", "reason", "seeds", "sensitivity",
            "n_images") + keys
    return {k: _finite(res[k]) if k != "sensitivity" else
            {n: _finite(v) for n, v in res[k].items()} for k in keep if k in res}


def primary_metric(summary: dict) -> str:
    """The metric the study's verdicts rest on: test accuracy where a test split was scored
    (held out: it chose nothing), else val accuracy."""
    return "test_acc" if "test" in summary.get("splits", {}) else "val_acc"


def study_summary(runs: list[RunRecord], plan: dict, roles: Roles) -> dict:
    """The statistics of a study (the summary.json contract; see the module notes)."""
    stats = _Stats()
    seeds = {r.name: _seed_predictions(r) for r in runs}
    out: dict[str, Any] = {"method": METHOD, "n_boot": N_BOOT, "splits": _splits(runs),
                           "runs": {r.name: _run_entry(r, seeds[r.name], stats) for r in runs}}
    metrics = COMPARED_METRICS + (TEST_METRICS if "test" in out["splits"] else ())
    comparisons = []
    for a, b, differs in comparison_pairs(plan) + _role_pairs(roles, plan):
        if a not in seeds or b not in seeds:
            continue
        for metric in metrics:
            res = _contrast("compare", [seeds[a], seeds[b]], stats, metric)
            comparisons.append({"a": a, "b": b, "differs_in": differs, "metric": metric,
                                **_public(res)})
    out["comparisons"] = comparisons
    out["interaction"] = _interaction(roles, seeds, stats, primary_metric(out))
    out["sanity"] = _sanity(roles, seeds, stats, plan, primary_metric(out))
    return out


def _splits(runs: list[RunRecord]) -> dict:
    """Per evaluated split ('val', 'test'): its images, those scored, those with an exact or
    near copy in train, and whether those were scored (`inflated`), as the first finished
    trial recorded them (final.json `splits`; every run of a study reads the same data)."""
    for trial in (t for r in runs for t in r.done):
        counts = (trial.final or {}).get("splits")
        if counts:
            kept = bool(trial.config.get("keep_leaked"))
            return {split: {**c, "inflated": kept and c["leaked"] > 0}
                    for split, c in counts.items()}
    return {}


def _role_pairs(roles: Roles, plan: dict) -> list[tuple[str, str, str]]:
    """The pairs the report's sections discuss that may differ in more than one setting: each
    norm at its smallest vs largest batch size (lr and early stopping change with it), each
    literal-recipe run vs its default-recipe variant, and the sanity pair."""
    fields = _fields(plan)
    pairs = []
    for members in roles.batch.values():
        if len(members) >= 2:
            pairs.append((members[0].name, members[-1].name))
    pairs += [(lit.name, ref.name) for lit, ref in roles.literal if ref is not None]
    if roles.sanity is not None:
        pairs.append((roles.sanity[0].name, roles.sanity[1].name))
    known = {frozenset(p[:2]) for p in comparison_pairs(plan)}
    out = []
    for a, b in pairs:
        if frozenset((a, b)) in known:
            continue
        known.add(frozenset((a, b)))
        differs = (", ".join(_differences(fields[a], fields[b])) if a in fields and b in fields
                   else "—")
        out.append((a, b, differs or "nothing"))
    return out


def _interaction(roles: Roles, seeds: dict[str, _Seeds], stats: _Stats,
                 metric: str) -> dict | None:
    """(GN small − GN large) − (BN small − BN large) at the smallest and largest batch sizes
    both norms were trained at."""
    if not {"bn", "gn"} <= set(roles.batch):
        return None
    by_size = {k: {r.config.get("batch_size"): r for r in roles.batch[k]} for k in ("bn", "gn")}
    common = sorted(set(by_size["bn"]) & set(by_size["gn"]), key=lambda b: b or 0)
    if len(common) < 2:
        return None
    small, large = common[0], common[-1]
    names = {"gn_small": by_size["gn"][small].name, "gn_large": by_size["gn"][large].name,
             "bn_small": by_size["bn"][small].name, "bn_large": by_size["bn"][large].name}
    res = _contrast("interaction", [seeds[n] for n in names.values()], stats, metric)
    return {"metric": metric, "batch_sizes": [small, large], "runs": names, **_public(res)}


def _sanity(roles: Roles, seeds: dict[str, _Seeds], stats: _Stats, plan: dict,
            metric: str) -> dict | None:
    """PyTorch BN vs own BN as an equivalence test on `metric` (the primary one), within ± the
    plan's tolerance (sanity_tolerance.metric)."""
    if roles.sanity is None:
        return None
    from resnorm.study.plan import DEFAULT_TOLERANCE

    a, b = roles.sanity
    tol = float({**DEFAULT_TOLERANCE, **(plan.get("sanity_tolerance") or {})}["metric"])
    res = _contrast("compare", [seeds[a.name], seeds[b.name]], stats, metric)
    return {"a": a.name, "b": b.name, "metric": metric, "tolerance": tol,
            **_public(res), "equivalence": st.equivalence(res, tol)}


def write_summary(study: Path, summary: dict) -> Path:
    path = Path(study) / SUMMARY_FILE
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path
