"""The study's verdicts as the report states them: the primary family's table (raw and
adjusted p, simultaneous intervals), the ranking of the variants (P(best), expected rank,
a figure), and how an adjusted verdict reads in a table cell or a sentence."""
from __future__ import annotations

from pathlib import Path

from resnorm.report.document import Block, Bold, Cell, Img, Para, Sub, Table
from resnorm.report.figures import plot_ranking
from resnorm.report.format import ci_pct, diff_ci, metric_label, p_value, pts, signed_pts

VERDICT_TEXT = {"a higher": "{a} higher", "b higher": "{b} higher",
                "no clear difference": "no clear difference", "not computable": "not computable"}
ADJUSTED_AWAY = "no clear difference after adjustment"  # the raw 95 % CI alone excludes 0
DIRECTIONAL = ("a higher", "b higher", "GN less sensitive", "BN less sensitive")
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

def primary_blocks(summary: dict) -> list[Block]:
    """The primary family's method and one table: each test with its 95 % and simultaneous
    intervals, raw, adjusted and plain Holm p, and the adjusted verdict."""
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
                   "Holm p", "Verdict"], rows,
                  caption="Verdicts follow the adjusted p (its method in brackets); the raw p "
                          "and plain Holm's are beside it. Intervals in points.")]


def _cells(c: dict) -> list[Cell]:
    return [diff_ci(c), simultaneous_ci(c), p_value(c.get("p")), p_adjusted(c),
            p_value(c.get("p_holm"))]


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
        cell = Bold(verdict) if verdict in DIRECTIONAL else verdict
    return [["batch-size interaction", f"{r['gn_small']} − {r['gn_large']}",
             f"{r['bn_small']} − {r['bn_large']}", *_cells(inter), cell]]


# --- the ranking ------------------------------------------------------------------------------

def ranking_blocks(summary: dict, assets: Path) -> list[Block]:
    """The ranking of the primary runs: which is best, with what probability, a table and the
    rank distribution figure."""
    rk = summary.get("ranking")
    if not rk:
        return []
    blocks: list[Block] = [Sub(f"Ranking on {metric_label(rk['metric'])}")]
    if "p_best" not in rk:
        return blocks + [Para(f"No ranking: {rk.get('reason', 'too few runs')}.")]
    stats = summary.get("runs", {})
    order = sorted(rk["runs"], key=lambda n: rk["expected_rank"][n])
    blocks.append(Para(f"{rk['method']} {best_sentence(rk, stats)}."))
    blocks.append(Table(["Run", f"{metric_label(rk['metric'], capital=True)} (mean ± 95 % CI)",
                         "P(best)", "Expected rank"],
                        [[n, ci_pct(stats.get(n, {}).get(rk["metric"])),
                          f"{rk['p_best'][n]:.2f}", f"{rk['expected_rank'][n]:.1f}"]
                         for n in order]))
    blocks.append(Img(plot_ranking(rk, assets / "ranking.png"),
                      "Each run's probability of each rank (1 = best) over the bootstrap "
                      "replicates, and its probability of being the best."))
    if rk.get("left_out"):
        blocks.append(Para("Left out of the ranking: " + "; ".join(
            f"{n} ({why})" for n, why in rk["left_out"].items()) + "."))
    return blocks


def best_sentence(rk: dict, stats: dict | None = None) -> str:
    """'gn is the best of the 6 ranked runs on val accuracy with probability 0.93 (...)', or,
    when none reaches the threshold, which runs are tied for best (with their P(best))."""
    if not rk.get("best"):
        return (f"No run is the best on {metric_label(rk['metric'])} with probability >= "
                f"{rk['threshold']:.1f}: {tied_text(rk, stats)}")
    b = rk["best"]
    return (f"{b} is the best of the {len(rk['runs'])} ranked runs on "
            f"{metric_label(rk['metric'])} with probability {rk['p_best'][b]:.2f} (expected "
            f"rank {rk['expected_rank'][b]:.1f}{_score(rk, b, stats)})")


def tied_text(rk: dict, stats: dict | None = None) -> str:
    """'2 are tied for best at this scale — bn (P(best) 0.55, ...), gn (...), together 0.99'."""
    tied = rk["tied"]
    listed = ", ".join(f"{n} (P(best) {rk['p_best'][n]:.2f}{_score(rk, n, stats)})"
                       for n in tied)
    held = sum(rk["p_best"][n] for n in tied)
    return f"{len(tied)} are tied for best at this scale — {listed}, together {held:.2f}"


def _score(rk: dict, name: str, stats: dict | None) -> str:
    entry = (stats or {}).get(name, {}).get(rk["metric"])
    return f"; {metric_label(rk['metric'])} {ci_pct(entry)}" if entry else ""
