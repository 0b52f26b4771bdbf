"""The report's Robustness section: every variant on corrupted held-out images (summary.json
`robustness`, resnorm.robustness.summary): a heatmap of accuracy per variant and corruption at
the middle severity, accuracy against severity per variant with its interval band (adapted BN
dashed beside as trained), the robustness family's verdicts, a table per run and per
corruption group, and a sentence on which norms degrade least and whether adapting BN closes
the gap; every number with its 95 % interval."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from resnorm.norms import norm_info
from resnorm.plots import mpl_text
from resnorm.report.document import Bold, Cell, Img, Para, Section, Sub, Table
from resnorm.report.format import ci_pct, diff_ci, p_value, secs
from resnorm.report.verdicts import p_adjusted, simultaneous_ci, verdict_cell

__all__ = ["section_robustness", "robustness_sentences"]


def section_robustness(rob: dict | None, norms: dict[str, str], variants: list[str],
                       assets: Path) -> Section | None:
    """The section (None for a study without a robustness step)."""
    if not rob:
        return None
    s = Section("Robustness")
    s.add(Para(_setup_text(rob)))
    runs = rob.get("runs") or {}
    if not runs:
        return s.add(Para("No run was evaluated on the corrupted images yet."))
    shown = [r for r in dict.fromkeys([*(variants or []), rob.get("reference")])
             if r in runs] or list(runs)
    s.add(Para(" ".join(robustness_sentences(rob, norms))))
    s.add(Img(_plot_heatmap(rob, shown, norms, assets / "robustness-heatmap.png"),
              f"Accuracy (%) per variant and corruption at severity {rob['middle_severity']} "
              "(as trained; mean over seeds). Intervals: the table per run below and "
              "summary.json."))
    s.add(Img(_plot_severity(rob, shown, norms, assets / "robustness-severity.png"),
              "Accuracy against severity (0: clean), mean over the corruptions, per variant "
              "with its 95 % interval band; dotted: BN's statistics adapted on the corrupted "
              f"{rob.get('adapted_on') or 'val'} images."))
    s.add(Sub("The robustness family"), Para(_family_text(rob)), _family_table(rob))
    s.add(Sub("Per run"), _run_table(rob, runs))
    s.add(Sub("Per corruption group"), _group_table(rob, runs))
    s.add(Para(_exploratory_text(rob)))
    if rob.get("missing"):
        s.add(Para("Not evaluated: " + ", ".join(f"{n} ({why})" for n, why in
                                                  rob["missing"].items()) + "."))
    return s


def _setup_text(rob: dict) -> str:
    settings = rob.get("settings") or {}
    lib = rob.get("library") or {}
    shared = (" There is no test split: adaptation and scoring share the val images, so the "
              "adapted scores saw (unlabeled) the very images they are scored on."
              if rob.get("shared") else "")
    return (f"Every finished seed's best checkpoint scored on {rob.get('images')} held-out "
            f"{rob.get('scored')} images (never an image with a copy in train), corrupted by "
            f"{len(rob.get('corruptions') or settings.get('corruptions') or [])} corruptions "
            f"of Hendrycks & Dietterich (2019) at severities "
            f"{', '.join(map(str, rob.get('severities') or settings.get('severities') or []))}"
            f" ({lib.get('name')} {lib.get('version')}), applied at "
            f"{rob.get('size')}x{rob.get('size')} px: {rob.get('resolution')}. Runs whose norm "
            "keeps running statistics are scored twice: as trained, and with those statistics "
            f"re-estimated on the corrupted {rob.get('adapted_on') or 'val'} images, "
            "unlabeled (Schneider et al. 2020, full adaptation); the checkpoint is never "
            f"changed.{shared}{_cost(rob.get('seconds'))} {rob.get('method', '')}")


def _cost(seconds: dict | None) -> str:
    """What the step took (its last run): the corrupted set and the evaluations."""
    if not seconds:
        return ""
    return (f" The step took {secs(seconds.get('set', 0) + seconds.get('evaluation', 0))} "
            f"(corrupted images {secs(seconds.get('set'))}, evaluations "
            f"{secs(seconds.get('evaluation'))}).")


def _style(run: str, norms: dict[str, str]) -> dict:
    kind = norm_info(norms.get(run, run))
    return {"color": kind.color, "linestyle": kind.linestyle}


def _plot_heatmap(rob: dict, shown: list[str], norms: dict[str, str], path: Path) -> Path:
    corruptions = rob["corruptions"]
    grid = np.array([[100 * rob["runs"][r]["middle"][c]["mean"] for c in corruptions]
                     for r in shown])
    fig = Figure(figsize=(1.0 + 0.62 * len(corruptions), 1.2 + 0.42 * len(shown)),
                 layout="constrained")
    ax = fig.subplots()
    top = max(float(grid.max()), 1.0)  # the colours span what was measured, from 0
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=top, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                color="white" if v < 0.55 * top else "black")
    ax.set_xticks(range(len(corruptions)), [mpl_text(c.replace("_", " ")) for c in corruptions],
                  rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(shown)), [mpl_text(r) for r in shown], fontsize=8)
    ax.set_title(f"accuracy (%) at severity {rob['middle_severity']}", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def _plot_severity(rob: dict, shown: list[str], norms: dict[str, str], path: Path) -> Path:
    severities = [0, *rob["severities"]]
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for run in shown:
        entry = rob["runs"][run]
        style = _style(run, norms)
        for measures, adapted in ((entry, False), (entry.get("adapted"), True)):
            if not measures:
                continue
            points = [entry["clean"]] + [measures["by_severity"][str(s)]
                                         for s in rob["severities"]]
            mean = [p["mean"] for p in points]
            lo, hi = zip(*[p["ci95"] for p in points])
            label = mpl_text(run) + (" adapted" if adapted else "")
            ax.plot(severities, mean, marker="o", markersize=3, label=label,
                    color=style["color"], linestyle=":" if adapted else style["linestyle"])
            ax.fill_between(severities, lo, hi, color=style["color"], alpha=0.12, lw=0)
    ax.set(xlabel="severity (0: clean)", ylabel="accuracy", xticks=severities)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _family_text(rob: dict) -> str:
    fam = rob.get("family") or {}
    mde = fam.get("mde_points")
    return (f"{fam.get('size', 0)} tests ({'; '.join(fam.get('questions') or [])}), adjusted "
            f"together by {fam.get('adjustment') or 'no adjustment'} as the primary family is, "
            "with simultaneous intervals; "
            + (f"the median difference they detect with 80 % power is {mde:.1f} points."
               if mde is not None else "no test could be made."))


def _family_table(rob: dict) -> Table:
    rows = []
    for c in rob.get("comparisons") or []:
        verdict: Cell = (verdict_cell(c, c["a"], c["b"]) if c.get("kind") == "pair"
                         else _adapt_verdict(c))
        rows.append([c["a"], c["b"], diff_ci(c), simultaneous_ci(c), p_value(c.get("p")),
                     p_adjusted(c), verdict])
    return Table(["a", "b", "a − b, mean corrupted accuracy (95 % CI)", "simultaneous CI",
                  "p", "p adjusted", "verdict"], rows,
                 "The robustness family: the variants pairwise on mean corrupted accuracy "
                 "(as trained), and adapted BN against as trained (seed by seed).")


def _adapt_verdict(c: dict) -> Cell:
    verdict = c.get("verdict", "")
    if verdict == "no clear difference" and c.get("verdict_unadjusted") not in (None, verdict):
        return "no clear difference after adjustment"
    return Bold(verdict) if verdict in ("adapted higher", "as trained higher") else verdict


def _run_table(rob: dict, runs: dict) -> Table:
    rows = []
    for name, e in runs.items():
        ad = e.get("adapted") or {}
        rows.append([name, ci_pct(e["clean"]), ci_pct(e["mean_corrupted"]), _pts(e["drop"]),
                     _mce(e.get("mce")), ci_pct(ad.get("mean_corrupted")),
                     _pts(ad.get("drop")), _mce(ad.get("mce"))])
    ref = rob.get("reference")
    return Table(["run", "clean", "mean corrupted", "drop", "mCE", "adapted: corrupted",
                  "adapted: drop", "adapted: mCE"], rows,
                 "Accuracy (%) on the same held-out images, mean ± 95 % CI half-width; drop "
                 "= clean − mean corrupted (points); mCE (%) relative to "
                 f"{ref or 'no reference run'} as trained (100 = as the reference).")


def _pts(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    lo, hi = entry["ci95"]
    return f"{100 * entry['mean']:.1f} ± {50 * (hi - lo):.1f}"


def _mce(entry: dict | None) -> str:
    return ci_pct(entry) if entry else "—"


def _group_table(rob: dict, runs: dict) -> Table:
    groups = list(next(iter(runs.values()))["by_group"])
    rows = []
    for name, e in runs.items():
        rows.append([name, *[ci_pct(e["by_group"].get(g)) for g in groups]])
        if e.get("adapted"):
            rows.append([f"{name} adapted", *[ci_pct(e["adapted"]["by_group"].get(g))
                                               for g in groups]])
    return Table(["run", *groups], rows, "Accuracy (%) per corruption group over its "
                 "corruptions and the severities, mean ± 95 % CI half-width.")


def _exploratory_text(rob: dict) -> str:
    members = rob.get("exploratory") or []
    found = [m for m in members if m.get("verdict") not in ("no clear difference", None)]
    listed = "; ".join(f"{m['corruption']}: {m['a']} − {m['b']} {diff_ci(m)}"
                       for m in found[:8])
    return (f"Per corruption (exploratory, Benjamini–Hochberg over {len(members)} tests): "
            f"{len(found)} difference(s) after adjustment" + (f" — {listed}" if found else "")
            + (" …" if len(found) > 8 else "") + ". Read them as leads, not findings.")


def robustness_sentences(rob: dict, norms: dict[str, str]) -> list[str]:
    """Which norms hold up best under corruption (mean corrupted accuracy) and degrade least
    (the drop from clean: a weak model has little to lose, so both are said), as trained, and
    whether adapting BN closes the gap to the most robust variant; every number with its
    interval."""
    runs = rob.get("runs") or {}
    fam_runs = [r for c in rob.get("comparisons") or [] if c.get("kind") == "pair"
                for r in (c["a"], c["b"])]
    variants = [r for r in dict.fromkeys(fam_runs) if r in runs] or list(runs)
    if not variants:
        return []
    best = max(variants, key=lambda r: runs[r]["mean_corrupted"]["mean"])
    drops = sorted(variants, key=lambda r: runs[r]["drop"]["mean"])
    out = [f"As trained, the highest mean corrupted accuracy is {best}'s "
           f"{ci_pct(runs[best]['mean_corrupted'])}% (clean {ci_pct(runs[best]['clean'])}%); "
           f"the smallest drop from clean is {_drop(drops[0], runs)}, the largest "
           f"{_drop(drops[-1], runs)} (points; see the family below for which differences "
           "hold)."]
    for run, gap in (rob.get("gaps") or {}).items():
        verdict = next((c for c in rob.get("comparisons") or []
                        if c.get("kind") == "adapt" and c["b"] == run), None)
        gain = f" ({verdict['verdict']})" if verdict else ""
        out.append(f"Adapting {run}'s statistics changes its mean corrupted accuracy by "
                   f"{diff_ci(verdict) if verdict else '—'}{gain}; its gap to {gap['leader']} "
                   f"(most robust as trained) goes from {diff_ci(gap['before'])} to "
                   f"{diff_ci(gap['after'])}"
                   + _closed(gap["after"]) + ".")
    return out


def _drop(run: str, runs: dict) -> str:
    return f"{run}'s {_pts(runs[run]['drop'])} (clean {ci_pct(runs[run]['clean'])}%)"


def _closed(after: dict) -> str:
    """Whether the gap after adapting is closed: its interval holds 0, or lies below it."""
    lo, hi = after.get("ci95") or (None, None)
    if lo is None:
        return ""
    return (": closed (its interval holds 0)" if lo <= 0 <= hi else
            ": reversed (adapted ahead)" if hi < 0 else ": not closed")
