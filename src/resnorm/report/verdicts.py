"""The study's verdicts as the report states them: what the study could detect, the primary
family's table (raw and adjusted p, simultaneous intervals), the ranking of the variants as a
best set (a figure), and how an adjusted verdict reads in a table cell or a sentence.

P(best) stays in summary.json but is not stated: the simulation found the seed-level t draws
it comes from overconfident at small gaps (runs given P(best) >= 0.9 were truly best 75 % of
the time), while the best set held the best at its stated level."""
from __future__ import annotations

from pathlib import Path

from resnorm.report.calibration import equivalence_sentence, power_sentence
from resnorm.report.document import Block, Bold, Cell, Img, Para, Sub, Table
from resnorm.report.figures import plot_ranking
from resnorm.statistics import INTERACTION_VERDICT
from resnorm.report.format import ci_pct, diff_ci, metric_label, p_value, pts, signed_pts

VERDICT_TEXT = {"a higher": "{a} higher", "b higher": "{b} higher",
                "no clear difference": "no clear difference", "not computable": "not computable"}
ADJUSTED_AWAY = "no clear difference after adjustment"  # the raw 95 % CI alone excludes 0
DIRECTIONAL = ("a higher", "b higher")
EQUIVALENCE_WORDS = {"equivalent": "EQUIVALENT", "not equivalent": "NOT EQUIVALENT",
                     "inconclusive": "inconclusive", "not computable": "not computable"}


def verdict_cell(c: dict, a: str, b: str) -> Cell:
    """The adjusted verdict in words, bold when it states a difference (marked exploratory
    outside the primary family); one that only the unadjusted interval supports reads "no
    clear difference after adjustment"."""
    verdict = c["verdict"]
    if verdict == "no clear difference" and c.get("verdict_unadjusted") not in (None, verdict):
        return ADJUSTED_AWAY
    text = VERDICT_TEXT.get(verdict, verdict).format(a=a, b=b)
    if verdict in DIRECTIONAL:
        return Bold(text + (" (exploratory)" if c.get("family") == "exploratory" else ""))
    return text


ADJUSTMENTS = {"max-T": "max-T", "Holm": "Holm", "Benjamini-Hochberg": "BH"}


def p_adjusted(c: dict) -> str:
    """'0.012 (max-T)' or '0.030 (BH)': the adjusted p with its family's method."""
    if c.get("p_adjusted") is None:
        return "—"
    return f"{p_value(c['p_adjusted'])} ({ADJUSTMENTS.get(c.get('adjustment'), '?')})"


def simultaneous_ci(c: dict) -> str:
    """'−2.1 to +4.3' (points): the simultaneous interval of a primary test, '—' without."""
    ci = c.get("ci95_simultaneous")
    return f"{signed_pts(ci[0])} to {signed_pts(ci[1])}" if ci else "—"


# --- the primary family -----------------------------------------------------------------------

def detectable_text(summary: dict) -> str | None:
    """What the study could detect: the primary family's median detectable effect (80 %
    power at its level) against the largest difference it observed; it says first when the
    study cannot detect the differences it asks about."""
    fam = (summary.get("families") or {}).get("primary") or {}
    mde, gap = fam.get("mde_points"), fam.get("largest_gap_points")
    if mde is None:
        return None
    power = f"{100 * (summary.get('families') or {}).get('power', 0.8):.0f} %"
    measured = power_sentence(summary.get("calibration"))
    text = (f"the smallest difference the primary family detects with {power} power is about "
            f"{mde:.1f} points (the median over its tests, at the family's level"
            + (f"; {measured})" if measured else ")"))
    if gap is not None and gap < mde:
        return (f"This study cannot detect the differences it asks about: {text}, and the "
                f"largest difference it observed between its compared runs is {gap:.1f} "
                "points. More seeds (or more evaluated images) would be needed; a \"no clear "
                "difference\" below says nothing about whether the runs are alike.")
    return (f"What this study can detect: {text}; the largest difference observed is "
            f"{gap:.1f} points. Smaller true differences than the detectable one are often "
            "missed: \"no clear difference\" does not mean equal.")


def primary_blocks(summary: dict) -> list[Block]:
    """The primary family's method and one table: each test with its 95 % and simultaneous
    intervals, raw, adjusted and plain Holm p, the difference it would detect, and the
    adjusted verdict."""
    families = summary.get("families") or {}
    fam = families.get("primary")
    if not fam:
        return []
    metric = families["metric"]
    rows = (_sanity_rows(summary.get("sanity")) + _pair_rows(summary, metric)
            + _interaction_rows(summary.get("interaction")))
    head = f"a − b, {metric_label(metric)} (95 % CI)"
    return [Sub(f"Primary family: the study's questions, on {metric_label(metric)}"),
            Para(fam["method"]),
            Table(["Test", "a", "b", head, "Simultaneous 95 % CI", "p", "p adjusted",
                   "Holm p", "Detectable", "Verdict"], rows,
                  caption="Verdicts follow the adjusted p (its method in brackets); the raw p "
                          "and plain Holm's are beside it. Detectable: the difference the "
                          "test finds with 80 % power at the family's level. Intervals in "
                          "points." + _equivalence_note(summary))]


def _equivalence_note(summary: dict) -> str:
    """' The sanity pair, placed at the margin ...: called equivalent in x % ...'."""
    text = equivalence_sentence(summary.get("calibration"))
    return f" The sanity pair, {text}." if text else ""


def _cells(c: dict) -> list[Cell]:
    mde = c.get("mde_points")
    return [diff_ci(c), simultaneous_ci(c), p_value(c.get("p")), p_adjusted(c),
            p_value(c.get("p_holm")),
            f"{mde:.1f}" if mde is not None and c.get("test") != "equivalence" else "—"]


def _pair_rows(summary: dict, metric: str) -> list[list[Cell]]:
    return [["difference", c["a"], c["b"], *_cells(c), verdict_cell(c, c["a"], c["b"])]
            for c in summary.get("comparisons", [])
            if c.get("family") == "primary" and c["metric"] == metric]


def _sanity_rows(san: dict | None) -> list[list[Cell]]:
    if not san:
        return []
    word = EQUIVALENCE_WORDS.get(san.get("equivalence"), "?")
    return [[f"equivalence within ± {pts(san['tolerance'])} (TOST)", san["a"], san["b"],
             *_cells(san), Bold(word) if word == "EQUIVALENT" else word]]


def _interaction_rows(inter: dict | None) -> list[list[Cell]]:
    if not inter:
        return []
    r = inter["runs"]
    verdict = inter.get("verdict", "?")
    if verdict == "no clear difference" and inter.get("verdict_unadjusted") not in (None,
                                                                                   verdict):
        cell: Cell = ADJUSTED_AWAY
    else:
        directional = {INTERACTION_VERDICT.format(label) for label in inter.get("labels") or []}
        cell = Bold(verdict) if verdict in directional else verdict
    first, second = inter["groups"]
    return [["batch-size interaction", f"{r[second + '_small']} − {r[second + '_large']}",
             f"{r[first + '_small']} − {r[first + '_large']}", *_cells(inter), cell]]


# --- the ranking ------------------------------------------------------------------------------

def ranking_blocks(summary: dict, assets: Path) -> list[Block]:
    """The ranking of the primary runs as a best set: a sentence, a table by mean score and a
    figure of the scores with their intervals."""
    rk = summary.get("ranking")
    if not rk:
        return []
    blocks: list[Block] = [Sub(f"Ranking on {metric_label(rk['metric'])}")]
    if "best_set" not in rk:
        return blocks + [Para(f"No ranking: {rk.get('reason', 'too few runs')}.")]
    stats = summary.get("runs", {})
    mean = lambda n: ((stats.get(n) or {}).get(rk["metric"]) or {}).get("mean")  # noqa: E731
    order = sorted(rk["runs"], key=lambda n: -(mean(n) if mean(n) is not None else -1))
    blocks.append(Para(f"{best_sentence(rk, stats)}. {rk['best_set_method']}"))
    blocks.append(Table(["Run", f"{metric_label(rk['metric'], capital=True)} (mean ± 95 % CI)",
                         "In the best set"],
                        [[n, ci_pct(stats.get(n, {}).get(rk["metric"])),
                          "yes" if n in rk["best_set"] else "no"] for n in order]))
    blocks.append(Img(plot_ranking(rk, stats, assets / "ranking.png"),
                      f"Each ranked run's {metric_label(rk['metric'])} (mean over seeds, 95 % "
                      "interval of the run alone); in colour the best set, in grey the runs "
                      "the primary family's simultaneous intervals put below another."))
    if rk.get("left_out"):
        blocks.append(Para("Left out of the ranking: " + "; ".join(
            f"{n} ({why})" for n, why in rk["left_out"].items()) + "."))
    return blocks


def best_sentence(rk: dict, stats: dict | None = None) -> str:
    """'gn is the best of the 6 ranked runs on test accuracy: ...' when the best set holds
    one run, else which runs cannot be excluded from best."""
    chosen = rk.get("best_set") or []
    label = metric_label(rk["metric"])
    if len(chosen) == 1:
        b = chosen[0]
        return (f"{b} is the best of the {len(rk['runs'])} ranked runs on {label}: every other "
                f"is below it by the primary family's simultaneous intervals "
                f"({label}{_score(rk, b, stats)})")
    listed = ", ".join(f"{n}{_score(rk, n, stats, bare=True)}" for n in chosen)
    return (f"The best on {label} is one of {len(chosen)} of the {len(rk['runs'])} ranked "
            f"runs, which the primary family's simultaneous intervals cannot tell apart from "
            f"the best: {listed}")


def _score(rk: dict, name: str, stats: dict | None, bare: bool = False) -> str:
    entry = (stats or {}).get(name, {}).get(rk["metric"])
    if not entry:
        return ""
    return f" ({ci_pct(entry)})" if bare else f" {ci_pct(entry)}"
