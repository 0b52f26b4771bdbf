"""The study's statistics: per-run intervals, comparisons, the batch-size interaction, the
sanity equivalence, their families with adjusted p-values, and the ranking of the variants, as
one JSON-ready dict (STUDY/summary.json) that the report then states.

Every number comes from resnorm.statistics on the per-image validation predictions of
each (run, seed) (RUN/seed-S/predictions.npz): the intervals count both the seeds and the
finite validation set. Metric names are metrics.csv's (`val_acc`, `val_macro_f1`, ...), values
are fractions. Nothing here raises on a degenerate study: a comparison that cannot be made
(a run missing, diverged on every seed, without predictions) is listed with its `reason`.

The comparisons rest on one seed-variance model per split and metric, fitted to every run
with predictions (resnorm.statistics.model: each run's seed variance moderated towards
the runs' pool; `model` names it with its df); the sanity pair, trained with the same seeds,
is compared seed by seed. A diverged seed is a failure the statistics see: its best checkpoint
before the divergence is scored with the others (what the recipe delivers), and a diverged
seed without one is counted in `diverged` and named in the run's `method`.

The runs each comparison uses come from the study's design (`roles.design`, read from the
study manifest): its `pairs` are compared, its `primary` pairs, sanity pair and batch groups
form the primary family, its ranked runs are ranked.

Families (resnorm.statistics.families): the primary family holds the sanity
equivalence, the design's primary pairs on the primary metric and the
interaction, tested jointly by step-down max-T on the model (Holm where there is no model),
each with `ci95_simultaneous` and `mde_points`; every other comparison is exploratory,
Benjamini–Hochberg-adjusted. Each test carries `family`, `p` (raw) and `p_adjusted`;
`verdict` is the adjusted one, `verdict_unadjusted` the 95 % interval's alone. `families`
gives each family's median `mde_points` (the smallest difference found with 80 % power).
`ranking` holds the primary runs' `best_set` (those the simultaneous intervals cannot exclude
from best), P(best) and expected rank on the primary metric.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


from resnorm.fileio import atomic_write_text
from resnorm.norms import norm_info
from resnorm.report.families import adjust_families, calibrate_family
from resnorm.report.roles import Roles
from resnorm.report.run_scores import (N_BOOT, SPLITS, RunSeeds, StudyStats, json_safe,
                                       run_entry, seed_predictions)
from resnorm import statistics as st
from resnorm.study.plan.manifest import Design
from resnorm.study.execution.records import RunRecord
from resnorm.studydir import StudyDir

__all__ = ["study_summary", "write_summary", "RUN_METRICS", "COMPARED_METRICS", "TEST_METRICS",
           "METHOD", "primary_metric"]

RUN_METRICS = tuple(f"{split}_{m}" for split in SPLITS for m in st.METRICS)
COMPARED_METRICS = ("val_acc", "val_macro_f1")  # val_micro_f1 equals val_acc
# With a test split, the same on test: the held-out estimate (val chose the epochs).
TEST_METRICS = ("test_acc", "test_macro_f1")
METHOD = ("Each run was trained once per seed and its best checkpoint evaluated on the same "
          "validation (and test) images. Intervals are 95 % and count both sources of noise: the "
          "seed-to-seed spread and the finite validation set (a bootstrap over images, paired "
          "across runs because every run sees the same images), with the seed-by-image noise "
          "counted once. A run's own interval uses its own seeds; a comparison uses every "
          "run's seed variance moderated towards the study's pooled one (3 seeds alone give "
          "a t with 2 df and intervals too wide to decide anything), and PyTorch BN against "
          "own BN, trained with the same seeds, is compared seed by seed. A diverged seed's "
          "best checkpoint before the divergence counts with the others. With one seed per "
          "run, the interval is "
          "the paired image bootstrap alone (conditional on the trained models) and the p-value "
          "of an accuracy difference is McNemar's exact test. A difference is stated only when "
          "the adjusted test of its family rejects (see below) and its 95 % interval excludes "
          "0; otherwise the verdict is \"no clear difference\".")
# --- the summary ------------------------------------------------------------------------------

def _contrast(kind: str, names: list[str], stats: StudyStats, metric: str,
              groups: tuple[str, str] = ("first", "second")) -> dict:
    """a − b ("compare") or the interaction of four runs on `metric`'s split (its `groups`:
    the two batch groups' names, first and second), under the split's model (each pair alone
    where there is none), or a 'not computable' result naming why."""
    split, m = metric.split("_", 1)
    seeds_of = [stats.seeds[n] for n in names]
    missing = [g.missing or f"a run has no {split} predictions" for g in seeds_of
               if g.missing or split not in g.by_split]
    if missing:
        return {"diff": None, "ci95": None, "p": None, "verdict": st.NOT_COMPUTABLE,
                "reason": missing[0], "method": f"not computable: {missing[0]}"}
    model = stats.model(split, m)
    if model is not None and all(n in model.names for n in names):
        weights = _terms(names) if kind == "interaction" else {names[0]: 1.0, names[1]: -1.0}
        labels = ([(st.INTERACTION_VERDICT.format(groups[1]),
                    st.INTERACTION_VERDICT.format(groups[0]))]
                  if kind == "interaction" else None)
        res = st.results(model, [weights], m, labels)[0]
        return _with_sensitivity(res, model, names, groups) if kind == "interaction" else res
    sets = [g.by_split[split] for g in seeds_of]
    try:
        kwargs = stats.kwargs(split, sets[0][0].labels.size)
        return (st.compare(*sets, m, **kwargs) if kind == "compare"
                else st.interaction(*sets, m, groups=groups, **kwargs))
    except ValueError as exc:  # e.g. runs evaluated on other validation sets
        return {"diff": None, "ci95": None, "p": None, "verdict": st.NOT_COMPUTABLE,
                "reason": str(exc), "method": f"not computable: {exc}"}


def _terms(names: list[str]) -> dict[str, float]:
    """The interaction's weights over second_small, second_large, first_small, first_large."""
    out: dict[str, float] = {}
    for name, w in zip(names, (1.0, -1.0, -1.0, 1.0)):
        out[name] = out.get(name, 0.0) + w
    return out


def _with_sensitivity(res: dict, model: st.SeedModel, names: list[str],
                      groups: tuple[str, str]) -> dict:
    first, second = groups
    ss, sl, fs, fl = (float(model.means[model.names.index(n)]) for n in names)
    res["sensitivity"] = {second: sl - ss, first: fl - fs}
    res["method"] = (f"Interaction ({second}_small − {second}_large) − ({first}_small − "
                     f"{first}_large) = sensitivity_{first} − sensitivity_{second}, "
                     "sensitivity = large − small batch (positive: "
                     f"{second} is hurt less by the small batch); " + res["method"])
    return res


def _public(res: dict, *keys: str) -> dict:
    keep = ("diff", "ci95", "p", "verdict", "method", "reason", "seeds", "sensitivity",
            "n_images", "se", "df", "model", "paired") + keys
    return {k: json_safe(res[k]) if k != "sensitivity" else
            {n: json_safe(v) for n, v in res[k].items()} for k in keep if k in res}


def primary_metric(summary: dict) -> str:
    """The metric the study's verdicts rest on: test accuracy where a test split was scored
    (held out: it chose nothing), else val accuracy."""
    return "test_acc" if "test" in summary.get("splits", {}) else "val_acc"


def study_summary(runs: list[RunRecord], plan: dict, roles: Roles,
                  calibration: int | None = None, previous: dict | None = None) -> dict:
    """The statistics of a study (the summary.json contract; see the module notes).
    `calibration`: the studies to simulate (`report.calibration`); `previous`: the last
    summary.json, whose calibration is reused when its inputs are unchanged."""
    seeds = {r.name: seed_predictions(r) for r in runs}
    stats = StudyStats(seeds, {r.name: r.config.get("recipe") for r in runs})
    out: dict[str, Any] = {"method": METHOD, "n_boot": N_BOOT, "splits": _splits(runs),
                           "runs": {r.name: run_entry(r, seeds[r.name], stats) for r in runs}}
    metric = primary_metric(out)
    out["model"] = _model_entry(stats, metric)
    metrics = COMPARED_METRICS + (TEST_METRICS if "test" in out["splits"] else ())
    design = roles.design
    sanity = frozenset(design.sanity or ())
    out["comparisons"] = _comparisons(design.pairs, seeds, stats, metrics, sanity)
    out["interaction"] = _interaction(design, seeds, stats, metric)
    out["sanity"] = _sanity(design, seeds, stats, plan, metric)
    split, key = metric.split("_", 1)
    out["families"] = adjust_families(out, design.primary, metric,
                                      design.primary != design.variant_pairs(),
                                      stats.model(split, key))
    out["ranking"] = _ranking(design.ranked(), seeds, stats, metric, out["comparisons"])
    sanity = stats.paired.get((*design.sanity, metric)) if design.sanity else None
    calibrate_family(out, stats.model(split, key), sanity, design.ranked(), calibration,
                     previous)
    return out


def _model_entry(stats: StudyStats, metric: str) -> dict | None:
    """The primary metric's seed-variance model: its name, the runs kept out of the pool
    (name -> why), the prior's df d0 (the data's 95 % lower bound; None: ∞, pooled fully)
    and the seed df it rests on."""
    split, m = metric.split("_", 1)
    model = stats.model(split, m)
    if model is None:
        return None
    return {"name": st.MODEL_NAME, "metric": metric, "runs": model.names,
            "excluded": dict(model.excluded),
            "prior_df": json_safe(model.d0), "seed_df": model.df_prior,
            "pooled_seed_sd": json_safe(math.sqrt(model.s0sq)),
            "seed_sd": {n: json_safe(math.sqrt(v)) for n, v in zip(model.names, model.s2)},
            "moderated_seed_sd": {n: json_safe(math.sqrt(v))
                                  for n, v in zip(model.names, model.s2_mod)}}


def _comparisons(pairs: list[dict], seeds: dict[str, RunSeeds], stats: StudyStats,
                 metrics: tuple[str, ...], sanity: frozenset = frozenset()) -> list[dict]:
    """Every pair of the design on every metric (`differs_in` in words); the sanity pair
    (`sanity`) seed by seed, as its test."""
    out = []
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        if a not in seeds or b not in seeds:
            continue
        differs = ", ".join(pair.get("differs_in") or []) or "nothing"
        for metric in metrics:
            res = ((frozenset((a, b)) == sanity and _paired(a, b, stats, metric))
                   or _contrast("compare", [a, b], stats, metric))
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


def _interaction(design: Design, seeds: dict[str, RunSeeds], stats: StudyStats,
                 metric: str) -> dict | None:
    """(second small − second large) − (first small − first large) of the design's first two
    batch groups, at the smallest and largest batch sizes both groups were trained at. Keys
    name the groups (`<group>_small`, `<group>_large`); the verdict says which group's label
    loses less by its small-batch recipe (`statistics.INTERACTION_VERDICT`), `sensitivity` is
    keyed by group name."""
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
    labels = (_group_label(design, first), _group_label(design, second))
    if labels[0] == labels[1]:  # two groups of one norm: their names tell them apart
        labels = (first, second)
    res = _contrast("interaction", list(names.values()), stats, metric, labels)
    if "sensitivity" in res:  # keyed by the groups' names, as `runs` and `groups` are
        res["sensitivity"] = {g: res["sensitivity"][label] for g, label in
                              zip((first, second), labels)}
    return {"metric": metric, "batch_sizes": [small, large], "runs": names,
            "groups": [first, second], "labels": list(labels), **_public(res)}


def _group_label(design: Design, group: str) -> str:
    """A batch group as the report names it: its runs' norm label ('GN'), else its name."""
    labels = {norm_info(design.norms.get(m.run, group)).label for m in design.batch[group]}
    return labels.pop() if len(labels) == 1 else group


def _sanity(design: Design, seeds: dict[str, RunSeeds], stats: StudyStats, plan: dict,
            metric: str) -> dict | None:
    """The design's sanity pair (PyTorch BN vs own BN) as an equivalence test (TOST: `p` is its p-value, `p_difference`
    the difference test's) on `metric` (the primary one), within ± the plan's tolerance
    (sanity_tolerance.metric). The family's adjustment decides `equivalence`."""
    if design.sanity is None or not all(n in seeds for n in design.sanity):
        return None
    from resnorm.study.plan.parse import DEFAULT_TOLERANCE

    a, b = design.sanity
    tol = float({**DEFAULT_TOLERANCE, **(plan.get("sanity_tolerance") or {})}["metric"])
    res = _paired(a, b, stats, metric) or _contrast("compare", [a, b], stats, metric)
    public = {k: v for k, v in _public(res).items() if k != "verdict"}
    method = (f"Equivalence within ± {tol:g} by two one-sided tests (TOST) on the difference: "
              + res["method"])
    return {"a": a, "b": b, "metric": metric, "tolerance": tol, "test": "equivalence",
            **public, "method": method, "p_difference": public.get("p"),
            "p": json_safe(st.equivalence_p(res, tol)), "equivalence": st.equivalence(res, tol)}


def _paired(a: str, b: str, stats: StudyStats, metric: str) -> dict | None:
    """a − b seed by seed when both were trained with the same seeds (else None)."""
    split, m = metric.split("_", 1)
    if not all(split in stats.seeds[n].by_split for n in (a, b)):
        return None
    sa, sb = stats.seeds[a].by_split[split], stats.seeds[b].by_split[split]
    try:
        fit = st.paired_fit(sa, sb, m, **stats.kwargs(split, sa[0].labels.size))
    except ValueError:
        return None
    if fit is None:
        return None
    stats.paired[(a, b, metric)] = fit
    res = st.results(fit, [{"difference": 1.0}], m)[0]
    res["method"] += " Paired by seed: every seed of the two runs shares its initialisation."
    return res


def _ranking(names: list[str], seeds: dict[str, RunSeeds], stats: StudyStats,
             metric: str, comparisons: list[dict]) -> dict | None:
    """The best set, P(best) and expected rank of `names` on `metric` (see
    resnorm.statistics.ranking); runs without predictions are left out, saying why."""
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
    simultaneous = {(c["a"], c["b"]): c.get("ci95_simultaneous") for c in comparisons
                    if c["metric"] == metric and c.get("family") == "primary"}
    return {**res, "metric": metric, "left_out": left_out,
            "best_set": st.best_set(res["runs"], simultaneous)}


def write_summary(study: Path, summary: dict) -> Path:
    path = StudyDir(study).summary
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path
