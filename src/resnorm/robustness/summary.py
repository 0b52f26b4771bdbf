"""summary.json's `robustness`: what the robustness step measured, with intervals and verdicts.

Per run (as trained, and adapted where BN was): clean accuracy on the same images, mean
corrupted accuracy (every corruption and severity), its drop from clean, mCE relative to the
reference run, accuracy per severity, per corruption (over severities, and at the middle
severity: the report's heatmap) and per corruption group; each with its 95 % interval
(resnorm.robustness.measures).

The design's robustness question (resnorm.study.plan.design.robustness_question) is a family
of its own, adjusted like the primary family: the variants pairwise on mean corrupted
accuracy under one seed-variance model fitted to every evaluated run (as trained and
adapted: `fit_seed_model` on the closed-form image moments, the runs paired by image), and
each BN-bearing variant adapted against as trained, seed by seed (the same model per seed),
tested jointly by resnorm.statistics' step-down max-T (`adjust_model`). Per corruption the
same comparisons are exploratory (Benjamini–Hochberg).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from resnorm import statistics as st
from resnorm.robustness.corruptions import GROUPS
from resnorm.robustness.measures import RunArrays, interval, mce
from resnorm.robustness.results import collect_scores, read_step

__all__ = ["ADAPTED", "FAMILY", "robustness_summary", "adapted_name"]

ADAPTED = " (adapted)"   # the name of a run's adapted pseudo-run: "bn (adapted)"
FAMILY = "robustness"
METHOD = ("Each finished seed's best checkpoint predicted the same held-out images under "
          "every corruption and severity; BN-bearing runs also after re-estimating BN's "
          "statistics on the corrupted val images (unlabeled; Schneider et al. 2020). A "
          "run's number is a mean over its seeds and the images, with a 95 % interval from "
          "its own seed spread and the image sample (images are the unit: an image's "
          "corrupted copies move together). The comparisons rest on one seed-variance model "
          "of every evaluated run (seed variances moderated towards their pool, as for the "
          "clean verdicts), paired by image; adapted vs as trained is compared seed by seed. "
          "The family (the variants pairwise on mean corrupted accuracy, and adapted vs as "
          "trained) is adjusted jointly by step-down max-T, like the primary family; the "
          "comparisons per corruption are exploratory (Benjamini–Hochberg). mCE: the mean "
          "over corruptions of the run's error summed over severities divided by the "
          "reference run's, per seed (paired by seed), with a delta-method image variance. "
          "With one seed per run the intervals count the images alone (conditional on the "
          "trained models).")


def adapted_name(run: str) -> str:
    return run + ADAPTED


def robustness_summary(study: str | Path, runs: list[tuple[str, list[int]]],
                       question: dict) -> dict | None:
    """summary.json's `robustness` for the study's runs ((name, seeds) in plan order) and
    the design's robustness `question` ({pairs, adapt, reference}); None without a step."""
    step = read_step(study)
    if step is None:
        return None
    scores = collect_scores(study, [(name, s) for name, seeds in runs for s in seeds])
    out: dict[str, Any] = {k: step.get(k) for k in ("settings", "scored", "adapted_on",
                                                    "shared", "images", "resolution", "size",
                                                    "library", "seconds")}
    out["method"] = METHOD
    out["missing"] = {name: "not evaluated" for name, _ in runs if name not in scores}
    if not scores:
        return out
    corruptions, severities = _grid(scores)
    arrays: dict[str, RunArrays] = {}
    for name, trials in scores.items():
        arrays.update(_arrays(name, trials, corruptions, severities))
    ref = question.get("reference") if question.get("reference") in arrays else None
    out.update(corruptions=corruptions, severities=severities, reference=ref,
               middle_severity=severities[(len(severities) - 1) // 2])
    out["runs"] = {name: _run_entry(name, arrays, ref, corruptions, severities)
                   for name in scores}
    family, model = _family(arrays, question, None)
    st.adjust_model(family, [m["weights"] for m in family], model)
    exploratory = [m for c in corruptions
                   for m in _family(arrays, question, _cells(corruptions, severities, [c]),
                                    corruption=c)[0]]
    st.adjust(exploratory, st.EXPLORATORY)
    out["comparisons"] = [_public(m, FAMILY) for m in family]
    out["exploratory"] = [_public(m) for m in exploratory]
    out["model"] = _model_entry(model)
    out["family"] = _family_entry(out["comparisons"], question)
    out["gaps"] = _gaps(model, question)
    return out


def _gaps(model, question: dict) -> dict:
    """For each adapted variant, its gap on mean corrupted accuracy to the variant most
    robust as trained, before and after adapting (under the family's model; the leader is
    chosen after looking, so these are descriptive, not verdicts)."""
    variants = [v for pair in question.get("pairs") or [] for v in pair]
    variants = [v for v in dict.fromkeys(variants) if model is not None and v in model.names]
    if model is None or not variants:
        return {}
    means = dict(zip(model.names, model.means))
    best = max(variants, key=lambda v: means[v])
    out = {}
    for run in question.get("adapt") or []:
        adapted = adapted_name(run)
        if run == best or run not in model.names or adapted not in model.names:
            continue
        before, after = st.results(model, [{best: 1.0, run: -1.0}, {best: 1.0, adapted: -1.0}],
                                   "acc")
        out[run] = {"leader": best, "before": _public(before), "after": _public(after)}
    return out


def _grid(scores: dict) -> tuple[list[str], list[int]]:
    """The corruptions and severities every evaluation has, in the first one's order."""
    first = next(iter(scores.values()))[0]
    cs = [c for c in first.corruptions
          if all(c in t.corruptions for trials in scores.values() for t in trials)]
    ss = [s for s in first.severities
          if all(s in t.severities for trials in scores.values() for t in trials)]
    return cs, ss


def _arrays(name: str, trials: list, corruptions: list[str], severities: list[int]
            ) -> dict[str, RunArrays]:
    """The run's correctness arrays as trained, and adapted when every seed was."""
    def pick(t, preds):
        ci = [t.corruptions.index(c) for c in corruptions]
        si = [t.severities.index(s) for s in severities]
        return preds[np.ix_(ci, si)] == t.labels

    seeds = [t.seed for t in trials]
    clean = np.stack([t.clean == t.labels for t in trials])
    out = {name: RunArrays(seeds, clean, np.stack([pick(t, t.preds) for t in trials]))}
    if all(t.adapted is not None for t in trials):
        out[adapted_name(name)] = RunArrays(seeds, clean,
                                            np.stack([pick(t, t.adapted) for t in trials]))
    return out


def _cells(corruptions: list[str], severities: list[int], only_c=None, only_s=None
           ) -> np.ndarray:
    """A (C, S) mask of the cells of `only_c` corruptions and `only_s` severities."""
    return np.array([[(only_c is None or c in only_c) and (only_s is None or s in only_s)
                      for s in severities] for c in corruptions])


def _run_entry(name: str, arrays: dict, ref: str | None, corruptions: list[str],
               severities: list[int]) -> dict:
    """A run's numbers as trained, and under `adapted` its adapted ones."""
    def measures(a: RunArrays) -> dict:
        mid = severities[(len(severities) - 1) // 2]
        return {"mean_corrupted": interval(a.share()),
                "drop": interval(a.clean.astype(float) - a.share()),
                "mce": mce(a, arrays[ref], corruptions) if ref else None,
                "by_severity": {str(s): interval(a.share(_cells(corruptions, severities,
                                                                only_s=[s])))
                                for s in severities},
                "by_corruption": {c: interval(a.share(_cells(corruptions, severities, [c])))
                                  for c in corruptions},
                "middle": {c: interval(a.share(_cells(corruptions, severities, [c], [mid])))
                           for c in corruptions},
                "by_group": {g: interval(a.share(_cells(corruptions, severities, names)))
                             for g, names in GROUPS.items()
                             if any(c in names for c in corruptions)}}

    a = arrays[name]
    entry = {"seeds": a.seeds, "clean": interval(a.clean), **measures(a)}
    if adapted_name(name) in arrays:
        entry["adapted"] = measures(arrays[adapted_name(name)])
    return entry


def _shares(arrays: dict, cells: np.ndarray | None) -> dict[str, np.ndarray]:
    return {name: a.share(cells) for name, a in arrays.items()}


def _family(arrays: dict, question: dict, cells: np.ndarray | None, corruption=None
            ) -> tuple[list[dict], Any]:
    """The question's comparisons on the cells `cells` (None: all): the pairs under one
    model of every run, adapted vs as trained seed by seed; and that model."""
    shares = _shares(arrays, cells)
    model = _model(shares, arrays)
    where = {"corruption": corruption} if corruption else {}
    members = []
    for a, b in question.get("pairs") or []:
        if model is not None and a in model.names and b in model.names:
            res = st.results(model, [{a: 1.0, b: -1.0}], "acc")[0]
            members.append({"a": a, "b": b, "kind": "pair", **where, **res,
                            "weights": {a: 1.0, b: -1.0}})
    for run in question.get("adapt") or []:
        adapted = adapted_name(run)
        if run in arrays and adapted in arrays:
            res = _paired(shares[adapted], shares[run])
            members.append({"a": adapted, "b": run, "kind": "adapt", **where, **res,
                            "weights": {adapted: 1.0, run: -1.0}})
    return members, model


def _model(shares: dict[str, np.ndarray], arrays: dict):
    """The seed-variance model of every run on these shares, on the seeds all runs have
    (None when they share fewer than one)."""
    common = [s for s in next(iter(arrays.values())).seeds
              if all(s in a.seeds for a in arrays.values())]
    if not common:
        return None
    values = [shares[n][[arrays[n].seeds.index(s) for s in common]] for n in arrays]
    return st.fit_seed_model(list(arrays), [v.mean(axis=1) for v in values],
                             st.moments_from_correct(np.stack(values)))


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    """a − b seed by seed (the same trained model each seed), as a contrast result."""
    d = np.asarray(a, float) - np.asarray(b, float)
    model = st.fit_seed_model(["difference"], [d.mean(axis=1)], st.moments_from_correct(d[None]),
                              pool=False)
    res = st.results(model, [{"difference": 1.0}], "acc", [("adapted higher",
                                                              "as trained higher")])[0]
    res["method"] += " Paired by seed: adapted and as trained are the same model per seed."
    return res


def _public(m: dict, family: str | None = None) -> dict:
    keep = ("a", "b", "kind", "corruption", "diff", "ci95", "p", "p_adjusted", "adjustment",
            "verdict", "verdict_unadjusted", "ci95_simultaneous", "mde_points", "se", "df",
            "seeds", "method", "family")
    out = {k: _finite(m[k]) for k in keep if k in m}
    if family:
        out["family"] = family
    return out


def _finite(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _model_entry(model) -> dict | None:
    if model is None:
        return None
    return {"name": st.MODEL_NAME, "runs": model.names, "prior_df": _finite(model.d0),
            "seed_df": model.df_prior, "n_images": model.moments.n_images}


def _family_entry(members: list[dict], question: dict) -> dict:
    tested = [m for m in members if m.get("p") is not None]
    mde = [m["mde_points"] for m in tested if m.get("mde_points") is not None]
    questions = []
    if question.get("pairs"):
        questions.append(f"{len(question['pairs'])} pair(s) of variants on mean corrupted "
                         "accuracy")
    if question.get("adapt"):
        questions.append(f"adapted vs as trained for {', '.join(question['adapt'])}")
    return {"size": len(tested), "adjustment": tested[0].get("adjustment") if tested else None,
            "questions": questions, "mde_points": float(np.median(mde)) if mde else None,
            "alpha": st.ALPHA}
