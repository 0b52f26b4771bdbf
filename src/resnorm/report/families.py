"""The study's tests in families (summary.json `families`): which are primary (the sanity
equivalence, the primary pairs on the primary metric, the batch-size interaction) and which
exploratory, each family adjusted (resnorm.statistics.families, jointly on the study's
model for the primary one), what each can detect, and the texts that say how it was done and
how well it held in simulations of this study's own design (`report.calibration`)."""
from __future__ import annotations

import numpy as np

from resnorm import statistics as st
from resnorm.report.calibration import (best_set_sentence, calibration_studies,
                                        family_sentence, study_calibration)
from resnorm.report.format import metric_label

__all__ = ["adjust_families", "weights", "calibrate_family", "describe_calibration",
           "excluded_text", "family_design"]

MAX_T_METHOD = ("Primary family ({m} tests): {questions}. The tests are made jointly: each "
                "run's seed-to-seed variance is moderated towards the study's pooled seed "
                "variance (empirical Bayes, as limma does; the pool counts only as many df as "
                "the runs' spreads vouch for at 95 %, so a run that spreads more keeps its "
                "own{excluded}), and the step-down max-T method (Westfall & Young 1993) takes "
                "its critical value from the tests' joint null drawn from that model, each "
                "statistic over the variance draws it allows; plain Holm's p is beside it. "
                "{calibration}")
HOLM_METHOD = ("Primary family ({m} tests): {questions}. Holm's step-down adjustment of the "
               "p-values keeps the chance of even one false verdict in the family at or below "
               "5 % as far as each test's own p is right; the simultaneous intervals, at the "
               "Bonferroni level 1 − 5 %/{m}, hold every member's true value together with "
               "about that probability (Holm can reject where such an interval still touches "
               "0: the verdict follows the test). It was not simulated for this study.")
BEST_SET_METHOD = ("The runs that cannot be excluded from best: a run is left out only when "
                   "another is above it by the primary family's simultaneous interval of "
                   "their difference (Hsu's multiple comparisons with the best); {held}. A "
                   "pair outside the family excludes nothing.")
EXPLORATORY_METHOD = ("Exploratory (every other comparison: the second metric, the other "
                      "split, recipe and batch-size pairs, pairs the plan adds): "
                      "Benjamini–Hochberg adjusted p-values, which keep the expected share of "
                      "false verdicts among those stated at 5 %; read them as leads, not "
                      "findings.")


def adjust_families(out: dict, pairs: list[tuple[str, str]], metric: str, from_plan: bool,
                    model: st.SeedModel | None) -> dict:
    """Label every test primary or exploratory and adjust each family (see
    resnorm.statistics.families); returns the families' description."""
    keys = {frozenset(p) for p in pairs}
    primary = [c for c in out["comparisons"]
               if c["metric"] == metric and frozenset((c["a"], c["b"])) in keys]
    exploratory = [c for c in out["comparisons"] if not any(c is p for p in primary)]
    primary += [x for x in (out["sanity"], out["interaction"]) if x]
    st.adjust_model(primary, [weights(m) for m in primary], model)
    st.adjust(exploratory, st.EXPLORATORY)
    tested = [m for m in primary if m.get("p") is not None]
    adjustment = tested[0]["adjustment"] if tested else None
    questions = _questions(out, keys, metric, from_plan)
    return {"alpha": st.ALPHA, "metric": metric, "power": st.POWER,
            "primary": {"size": len(tested), "questions": questions, "adjustment": adjustment,
                        "mde_points": _median_mde(tested),
                        "largest_gap_points": _largest_gap(tested),
                        "method": None},
            "exploratory": {"size": sum(c.get("p") is not None for c in exploratory),
                            "mde_points": _median_mde([c for c in exploratory
                                                       if c.get("p") is not None]),
                            "method": EXPLORATORY_METHOD}}


def calibrate_family(out: dict, model: st.SeedModel | None, sanity_model: st.SeedModel | None,
                     ranked: list[str], setting: int | None, previous: dict | None) -> None:
    """out["calibration"]: the primary family's rates on this study's design simulated
    (`setting` studies, see `report.calibration`; reused from the `previous` summary when
    unchanged), and the methods that state them."""
    out["calibration"] = study_calibration(family_design(out, model, sanity_model, ranked),
                                           calibration_studies(setting),
                                           (previous or {}).get("calibration"))
    describe_calibration(out)


def describe_calibration(out: dict) -> None:
    """The primary family's and the best set's methods, in place, with the rates measured on
    this study's design (`out["calibration"]`, None where it was not simulated)."""
    fam, cal = (out.get("families") or {}).get("primary"), out.get("calibration")
    if fam is not None:
        tested = fam["size"]
        questions = "; ".join(fam["questions"])
        if fam["adjustment"] == "max-T":
            fam["method"] = MAX_T_METHOD.format(
                m=tested, questions=questions, calibration=family_sentence(cal),
                excluded=excluded_text((out.get("model") or {}).get("excluded"), ": "))
        else:
            fam["method"] = HOLM_METHOD.format(m=tested, questions=questions)
    rk = out.get("ranking")
    if rk and "best_set" in rk:
        rk["best_set_method"] = BEST_SET_METHOD.format(held=best_set_sentence(cal))


def excluded_text(excluded: dict | None, lead: str = "") -> str:
    """'; kept out of the pool, each with its own spread: literal (recipe literal, ...)'."""
    if not excluded:
        return ""
    return (f"; kept out of the pool, each with its own spread{lead or ': '}"
            + "; ".join(f"{n}, {why}" for n, why in excluded.items()))


def _median_mde(members: list[dict]) -> float | None:
    """The family's detectable effect: the median over its difference tests (points)."""
    mde = [m["mde_points"] for m in members
           if m.get("test") != "equivalence" and m.get("mde_points") is not None]
    return float(np.median(mde)) if mde else None


def _largest_gap(members: list[dict]) -> float | None:
    """The largest observed difference among the family's difference tests (points)."""
    gaps = [abs(m["diff"]) for m in members
            if m.get("test") != "equivalence" and m.get("diff") is not None]
    return 100 * max(gaps) if gaps else None


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


def weights(member: dict) -> dict[str, float]:
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


def family_design(out: dict, model: st.SeedModel | None, sanity_model: st.SeedModel | None,
                  ranked: list[str]) -> st.FamilyDesign | None:
    """The primary family of the summary `out` as `calibrate` simulates it (None without a
    model or when its tests are not all on the model, e.g. Holm)."""
    metric = (out.get("families") or {}).get("metric")
    members = [c for c in out.get("comparisons", [])
               if c.get("family") == "primary" and c["metric"] == metric]
    members += [out["interaction"]] if (out.get("interaction") or {}).get("family") else []
    tested = [m for m in members if m.get("p") is not None]
    if model is None or not tested or tested[0].get("adjustment") != "max-T":
        return None
    ws = [weights(m) for m in tested]
    labels = [("a higher", "b higher")] * len(tested)  # any directional verdict counts
    sanity = out.get("sanity")
    use_sanity = bool(sanity and sanity.get("p") is not None and sanity_model is not None)
    return st.FamilyDesign(model, ws, labels, [n for n in ranked if n in model.names],
                           weights(sanity) if use_sanity else None,
                           sanity_model if use_sanity else None,
                           sanity.get("tolerance") if use_sanity else None,
                           _planted(tested, out["families"]["primary"].get("mde_points")))


def _planted(tested: list[dict], stated: float | None) -> tuple[str, str, float] | None:
    """The pair whose detectable effect is nearest the family's `stated` one (the median),
    planted at that effect."""
    pairs = [m for m in tested if not m.get("runs") and m.get("mde_points") is not None]
    if not pairs or stated is None:
        return None
    pair = min(pairs, key=lambda m: abs(m["mde_points"] - stated))
    return pair["a"], pair["b"], float(stated)
