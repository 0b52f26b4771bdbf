"""The study's statistics: per-run intervals, comparisons, the batch-size interaction, the
sanity equivalence, their families with adjusted p-values, and the ranking of the variants, as
one JSON-ready dict (STUDY/summary.json) that the report then states.

Every number comes from resnorm.study.statistics on the per-image validation predictions of
each (run, seed) (RUN/seed-S/predictions.npz): the intervals count both the seeds and the
finite validation set. Metric names are metrics.csv's (`val_acc`, `val_macro_f1`, ...), values
are fractions. Nothing here raises on a degenerate study: a comparison that cannot be made
(a run missing, diverged on every seed, without predictions) is listed with its `reason`.

The runs each comparison uses come from the study's design (`roles.design`, read from the
study manifest): its `pairs` are compared, its `primary` pairs, sanity pair and batch groups
form the primary family, its ranked runs are ranked.

Families (resnorm.study.statistics.families): the primary family holds the sanity
equivalence, the design's primary pairs on the primary metric and the
interaction, Holm-adjusted, each with `ci95_simultaneous`; every other comparison is
exploratory, Benjamini–Hochberg-adjusted. Each test carries `family`, `p` (raw) and
`p_adjusted`; `verdict` is the adjusted one, `verdict_unadjusted` the 95 % interval's alone.
`ranking` orders the primary runs (`design.ranked()`) by P(best) on the primary metric.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from resnorm.fileio import atomic_write_text
from resnorm.norms import norm_info
from resnorm.report.format import metric_label
from resnorm.report.roles import Roles
from resnorm.study import statistics as st
from resnorm.study.manifest import Design
from resnorm.study.records import SUMMARY_FILE, RunRecord

__all__ = ["study_summary", "write_summary", "RUN_METRICS", "COMPARED_METRICS", "TEST_METRICS",
           "METHOD", "primary_metric"]

SPLITS = ("train", "val", "test")
RUN_METRICS = tuple(f"{split}_{m}" for split in SPLITS for m in st.METRICS)
COMPARED_METRICS = ("val_acc", "val_macro_f1")  # val_micro_f1 equals val_acc
# With a test split, the same on test: the held-out estimate (val chose the epochs).
TEST_METRICS = ("test_acc", "test_macro_f1")
N_BOOT = 2000
METHOD = ("Each run was trained once per seed and its best checkpoint evaluated on the same "
          "validation (and test) images. Intervals are 95 % and count both sources of noise: the "
          "seed-to-seed spread (a t interval over seeds) and the finite validation set (a "
          "bootstrap over images, paired across runs because every run sees the same images), "
          "with the seed-by-image noise counted once. Runs trained with the same seeds are "
          "compared seed by seed (seed s of each run shares its initialisation draw and data "
          "order). With one seed per run, the interval is "
          "the paired image bootstrap alone (conditional on the trained models) and the p-value "
          "of an accuracy difference is McNemar's exact test. A difference is stated only when "
          "the adjusted test of its family rejects (see below) and its 95 % interval excludes "
          "0; otherwise the verdict is \"no clear difference\".")
MAX_T_METHOD = ("Primary family ({m} tests): {questions}. The p-values are adjusted by Holm's "
                "step-down method with its Bonferroni bound replaced by the exact bound for "
                "these correlated tests (step-down max-T, Westfall & Young 1993; the "
                "correlation from the two-level bootstrap of the runs), which keeps the "
                "chance of even one false verdict in the family at 5 %; plain Holm, which "
                "allows for any correlation and so holds it nearer 3.5 % here, is beside it. "
                "The simultaneous intervals, from the same bound, hold every member's true "
                "value together with probability >= 95 %.")
HOLM_METHOD = ("Primary family ({m} tests): {questions}. Holm's step-down adjustment of the "
               "p-values keeps the chance of even one false verdict in the family at or below "
               "5 %; the simultaneous intervals, at the Bonferroni level 1 − 5 %/{m}, hold "
               "every member's true value together with probability >= 95 % (Holm can "
               "reject where such an interval still touches 0: the verdict follows the "
               "test).")
EXPLORATORY_METHOD = ("Exploratory (every other comparison: the second metric, the other "
                      "split, recipe and batch-size pairs, pairs the plan adds): "
                      "Benjamini–Hochberg adjusted p-values, which keep the expected share of "
                      "false verdicts among those stated at 5 %; read them as leads, not "
                      "findings.")


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
    per_trial = [t.predictions() or {} for t in done]
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


# --- the summary ------------------------------------------------------------------------------

def _contrast(kind: str, groups: list[_Seeds], stats: _Stats, metric: str) -> dict:
    """compare / interaction on `metric`'s split, or a 'not computable' result naming why."""
    split, m = metric.split("_", 1)
    missing = [g.missing or f"a run has no {split} predictions" for g in groups
               if g.missing or split not in g.by_split]
    if missing:
        return {"diff": None, "ci95": None, "p": None, "verdict": st.NOT_COMPUTABLE,
                "reason": missing[0], "method": f"not computable: {missing[0]}"}
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
            "n_images", "se", "df") + keys
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
    metric = primary_metric(out)
    metrics = COMPARED_METRICS + (TEST_METRICS if "test" in out["splits"] else ())
    design = roles.design
    out["comparisons"] = _comparisons(design.pairs, seeds, stats, metrics)
    out["interaction"] = _interaction(design, seeds, stats, metric)
    out["sanity"] = _sanity(design, seeds, stats, plan, metric)
    out["families"] = _adjust_families(out, design.primary, metric,
                                       design.primary != design.variant_pairs(), seeds, stats)
    out["ranking"] = _ranking(design.ranked(), seeds, stats, metric)
    return out


def _comparisons(pairs: list[dict], seeds: dict[str, _Seeds], stats: _Stats,
                 metrics: tuple[str, ...]) -> list[dict]:
    """Every pair of the design on each metric (`differs_in` in words)."""
    out = []
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        if a not in seeds or b not in seeds:
            continue
        differs = ", ".join(pair.get("differs_in") or []) or "nothing"
        for metric in metrics:
            res = _contrast("compare", [seeds[a], seeds[b]], stats, metric)
            out.append({"a": a, "b": b, "differs_in": differs, "metric": metric,
                        **_public(res)})
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


def _interaction(design: Design, seeds: dict[str, _Seeds], stats: _Stats,
                 metric: str) -> dict | None:
    """(second small − second large) − (first small − first large) of the design's first two
    batch groups (for the assignment: GN's change minus BN's), at the smallest and largest
    batch sizes both groups were trained at. Keys name the groups: `gn_small`, `bn_large`..."""
    if len(design.batch) < 2:
        return None
    first, second = list(design.batch)[:2]
    by_size = {g: {m.batch_size: m.run for m in design.batch[g] if m.run in seeds}
               for g in (first, second)}
    common = sorted(set(by_size[first]) & set(by_size[second]))
    if len(common) < 2:
        return None
    small, large = common[0], common[-1]
    names = {f"{g}_{end}": by_size[g][size] for g in (second, first)
             for end, size in (("small", small), ("large", large))}
    res = _contrast("interaction", [seeds[n] for n in names.values()], stats, metric)
    if "sensitivity" in res:  # the statistics name the groups gn (second) and bn (first)
        res["sensitivity"] = {second: res["sensitivity"]["gn"], first: res["sensitivity"]["bn"]}
    return {"metric": metric, "batch_sizes": [small, large], "runs": names,
            "groups": [first, second], "labels": [_group_label(design, g) for g in (first, second)], **_public(res)}


def _group_label(design: Design, group: str) -> str:
    """A batch group as the report names it: its runs' norm label ('GN'), else its name."""
    labels = {norm_info(design.norms.get(m.run, group)).label for m in design.batch[group]}
    return labels.pop() if len(labels) == 1 else group


def _sanity(design: Design, seeds: dict[str, _Seeds], stats: _Stats, plan: dict,
            metric: str) -> dict | None:
    """The design's sanity pair (PyTorch BN vs own BN) as an equivalence test (TOST: `p` is its p-value, `p_difference`
    the difference test's) on `metric` (the primary one), within ± the plan's tolerance
    (sanity_tolerance.metric). The family's adjustment decides `equivalence`."""
    if design.sanity is None or not all(n in seeds for n in design.sanity):
        return None
    from resnorm.study.plan import DEFAULT_TOLERANCE

    a, b = design.sanity
    tol = float({**DEFAULT_TOLERANCE, **(plan.get("sanity_tolerance") or {})}["metric"])
    res = _contrast("compare", [seeds[a], seeds[b]], stats, metric)
    public = {k: v for k, v in _public(res).items() if k != "verdict"}
    method = (f"Equivalence within ± {tol:g} by two one-sided tests (TOST) on the difference: "
              + res["method"])
    return {"a": a, "b": b, "metric": metric, "tolerance": tol, "test": "equivalence",
            **public, "method": method, "p_difference": public.get("p"),
            "p": _finite(st.equivalence_p(res, tol)), "equivalence": st.equivalence(res, tol)}


def _adjust_families(out: dict, pairs: list[tuple[str, str]], metric: str, from_plan: bool,
                     seeds: dict[str, _Seeds], stats: _Stats) -> dict:
    """Label every test primary or exploratory and adjust each family (see
    resnorm.study.statistics.families); returns the families' description."""
    keys = {frozenset(p) for p in pairs}
    primary = [c for c in out["comparisons"]
               if c["metric"] == metric and frozenset((c["a"], c["b"])) in keys]
    exploratory = [c for c in out["comparisons"] if not any(c is p for p in primary)]
    primary += [x for x in (out["sanity"], out["interaction"]) if x]
    split, key = metric.split("_", 1)
    runs = {n: g.by_split[split] for n, g in seeds.items() if split in g.by_split}
    n_images = next((r[0].labels.size for r in runs.values()), 0)
    st.adjust_primary(primary, [_weights(m) for m in primary], runs, key,
                      **(stats.kwargs(split, n_images) if runs else {}))
    st.adjust(exploratory, st.EXPLORATORY)
    tested = [m for m in primary if m.get("p") is not None]
    adjustment = tested[0]["adjustment"] if tested else None
    questions = _questions(out, keys, metric, from_plan)
    method = MAX_T_METHOD if adjustment == "max-T" else HOLM_METHOD
    return {"alpha": st.ALPHA, "metric": metric,
            "primary": {"size": len(tested), "questions": questions, "adjustment": adjustment,
                        "method": method.format(m=len(tested), questions="; ".join(questions))},
            "exploratory": {"size": sum(c.get("p") is not None for c in exploratory),
                            "method": EXPLORATORY_METHOD}}


def _questions(out: dict, keys: set[frozenset], metric: str, from_plan: bool) -> list[str]:
    """The primary family's questions in words."""
    runs = {name for pair in keys for name in pair}
    pairs = (f"the plan's {len(keys)} primary pair(s)" if from_plan else
             f"the {len(runs)} norm variants pairwise ({len(keys)} pairs)")
    return ((["own BN vs PyTorch BN (an equivalence test)"] if out["sanity"] else [])
            + [f"{pairs} on {metric_label(metric)}"]
            + ([_interaction_question(out["interaction"])] if out["interaction"] else []))


def _interaction_question(inter: dict) -> str:
    first, second = inter["labels"]
    return f"the batch-size interaction ({second} vs {first})"


def _weights(member: dict) -> dict[str, float]:
    """A test's contrast as {run: weight}: a − b, or the interaction's four runs."""
    r = member.get("runs")
    if r:  # the interaction: (second small − second large) − (first small − first large)
        first, second = member["groups"]
        terms = [(r[f"{second}_small"], 1.0), (r[f"{second}_large"], -1.0),
                 (r[f"{first}_small"], -1.0), (r[f"{first}_large"], 1.0)]
    else:
        terms = [(member["a"], 1.0), (member["b"], -1.0)]
    out: dict[str, float] = {}
    for name, w in terms:
        out[name] = out.get(name, 0.0) + w
    return out


def _ranking(names: list[str], seeds: dict[str, _Seeds], stats: _Stats,
             metric: str) -> dict | None:
    """P(best) and expected rank of `names` on `metric` (see
    resnorm.study.statistics.ranking); runs without predictions are left out, saying why."""
    split, m = metric.split("_", 1)
    usable = {n: seeds[n].by_split[split] for n in names
              if n in seeds and split in seeds[n].by_split}
    left_out = {n: (seeds[n].missing if n in seeds else None) or f"no {split} predictions"
                for n in names if n not in usable}
    if len(usable) < 2:
        return None
    try:
        n_images = next(iter(usable.values()))[0].labels.size
        res = st.rank_runs(usable, m, **stats.kwargs(split, n_images))
    except ValueError as exc:  # e.g. runs evaluated on other validation sets
        return {"metric": metric, "reason": str(exc), "left_out": left_out}
    return {**res, "metric": metric, "left_out": left_out}


def write_summary(study: Path, summary: dict) -> Path:
    path = Path(study) / SUMMARY_FILE
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path
