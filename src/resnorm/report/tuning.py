"""The report's tuning section: each tuned run's val score against lr, the expected best val
score against the number of trials (Dodge et al. 2019; Tang et al. 2020's estimator), and the
untuned lr beside the chosen one. Reads STUDY/tuning through resnorm.study.tuning.results;
adds `tuning` to the summary (summary.json): {run: {grid: [{lr, score, status}], chosen_lr,
at_edge, default_lr, score, last_epochs}}."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from resnorm.fileio import read_json
from resnorm.plots import mpl_text
from resnorm.report.document import Bullets, Img, Para, Section, Table
from resnorm.report.format import ci_pct
from resnorm.statistics.intervals import wilson_interval
from resnorm.study.tuning.results import (
    CHOICE_FILE, TUNING_DIR, GridPoint, TuneResult, curves_cross, expected_max, lr_text,
    read_choices)

__all__ = ["tuning_summary", "section_tuning", "budget_curves"]


def tuning_summary(study: Path) -> dict:
    """summary.json's `tuning` ({} for a study without a tuning phase)."""
    return {name: {"grid": [{"lr": p.lr, "score": p.score, "status": p.status} for p in r.grid],
                   "chosen_lr": r.chosen_lr, "at_edge": r.at_edge, "default_lr": r.default_lr,
                   "score": r.score, "last_epochs": r.last_epochs}
            for name, r in read_choices(study).items()}


def budget_curves(results: dict[str, TuneResult]) -> dict[str, list[float]]:
    """Each run's expected best score for 1..N trials of its grid (a diverged or failed
    trial counts as 0: it gives no model). Runs with another grid size are compared over
    the budgets they share."""
    out = {}
    for name, r in results.items():
        scores = [p.score if p.score is not None else 0.0 for p in r.grid]
        if scores:
            out[name] = [expected_max(scores, n) for n in range(1, len(scores) + 1)]
    return out


def _point_text(p: GridPoint | None) -> str:
    """A grid value's val score with its Wilson 95 % interval over the scored val images."""
    if p is None:
        return "—"
    if p.score is None:
        return p.status
    ci = wilson_interval(round(p.score * p.val_images), p.val_images) if p.val_images else None
    if ci is None:
        return f"{100 * p.score:.1f} (no interval)"
    return ci_pct({"mean": p.score, "ci95": [ci[1], ci[2]]})


def _at(r: TuneResult, lr: float | None) -> GridPoint | None:
    return next((p for p in r.grid if lr is not None and lr_text(p.lr) == lr_text(lr)), None)


def _table(results: dict[str, TuneResult], runs: dict) -> Table:
    rows = []
    for name, r in results.items():
        final = runs.get(name, {})
        test = final.get("test_acc") or final.get("val_acc")
        edge = {"low": "lowest of the grid: widen it", "high": "highest of the grid: widen it"}
        rows.append([name, lr_text(r.default_lr), _point_text(_at(r, r.default_lr)),
                     lr_text(r.chosen_lr) if r.chosen_lr is not None else "none finished",
                     _point_text(_at(r, r.chosen_lr)), ci_pct(test),
                     edge.get(r.at_edge or "", "")])
    return Table(["run", "untuned lr", "val at untuned lr", "chosen lr", "val at chosen lr",
                  "final runs (held-out)", "note"], rows,
                 "Val scores of the tuning trials (%, one score per lr: the mean over its "
                 "seeds of the median of the last epochs; ± the Wilson 95 % interval over the "
                 "scored val images); the final runs' held-out accuracy (test where scored, "
                 "± its 95 % interval) trained at the chosen lr.")


def _plot_grid(results: dict[str, TuneResult], path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, r) in enumerate(results.items()):
        ok = [p for p in r.grid if p.score is not None]
        line, = ax.plot([p.lr for p in ok], [p.score for p in ok], marker="o",
                        label=mpl_text(name), color=f"C{i % 10}")
        bad = [p.lr for p in r.grid if p.score is None]
        ax.plot(bad, [0.0] * len(bad), "x", color=line.get_color(), markersize=8)
        chosen = _at(r, r.chosen_lr)
        if chosen is not None:
            ax.plot([chosen.lr], [chosen.score], "*", color=line.get_color(), markersize=16,
                    markeredgecolor="k")
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="val score",
           title="Val score against lr (star: chosen; x at 0: diverged or failed)")
    return _save(fig, ax, path)


def _plot_budget(curves: dict[str, list[float]], path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(range(1, len(ys) + 1), ys, marker="o", label=mpl_text(name), color=f"C{i % 10}")
    ax.set(xlabel="trials (grid values drawn at random)", ylabel="expected best val score",
           title="Expected best val score against the tuning budget")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, ax, path)


def _save(fig: Figure, ax, path: Path) -> Path:
    """A tuning figure's common finish (scores as percentages, grid, legend), saved."""
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _crossings(curves: dict[str, list[float]]) -> list[str]:
    out = []
    for a, b in combinations(curves, 2):
        n = min(len(curves[a]), len(curves[b]))
        if curves_cross(curves[a][:n], curves[b][:n]):
            out.append(f"{a} and {b}: their expected-max curves cross, so their ranking "
                       "depends on the tuning budget (how many lrs one tries).")
    return out


def section_tuning(study: Path, summary: dict, assets: Path) -> Section | None:
    """The tuning section (None without a tuning phase); sets summary["tuning"]."""
    results = read_choices(study)
    if not results:
        return None
    summary["tuning"] = tuning_summary(study)
    settings = (read_json(Path(study) / TUNING_DIR / CHOICE_FILE) or {}).get("settings", {})
    curves = budget_curves(results)
    first = next(iter(results.values()))
    epochs = settings.get("epochs") or "the final runs'"
    sec = Section("Tuning: each run at its own learning rate")
    sec.add(Para(
        f"Before the final runs, each tuned run trained once per value of one grid of base "
        f"lrs ({', '.join(map(lr_text, settings.get('lr', [])))} at batch "
        f"{settings.get('base_batch_size', '?')}, scaled to each run's batch size by the "
        f"{settings.get('lr_rule', '?')} rule, plus the run's untuned lr), {epochs} epochs, "
        f"{settings.get('seeds', 1)} seed(s) per value. Its lr is the one with the best "
        f"{first.score} on the clean val images (the median of the last {first.last_epochs} "
        f"epochs, robust to one lucky epoch); a diverged or failed trial is never chosen. "
        "Test is not read before the final runs. The final runs then trained at the chosen "
        "lr; their scores are in the results above. Val scores carry the selection bias of "
        "having chosen on them."))
    sec.add(_table(results, summary.get("runs", {})))
    sec.add(Img(_plot_grid(results, assets / "tuning_lr.png"),
                "Val score against lr, one line per tuned run; the star is the chosen lr."))
    sec.add(Img(_plot_budget(curves, assets / "tuning_budget.png"),
                "Expected best val score when n of the grid's lrs are tried (Dodge et al. "
                "2019, expected validation performance; unbiased estimator for drawing "
                "without replacement, Tang et al. 2020). A diverged trial counts as 0."))
    notes = _crossings(curves) or ["No two runs' expected-max curves cross: within this grid "
                                   "their ranking does not depend on the tuning budget."]
    notes += [f"{name}: the chosen lr {lr_text(r.chosen_lr)} is the "
              f"{'lowest' if r.at_edge == 'low' else 'highest'} of its grid: the best lr may "
              "lie beyond it; widen the grid." for name, r in results.items() if r.at_edge]
    notes += [f"{r.shared_with} trains at {name}'s chosen lr (the sanity pair differs in the "
              "norm alone; or the plan's tune.share)."
              for name, r in results.items() if r.shared_with]
    notes += [f"{name}: no trial finished; its final runs used the untuned lr."
              for name, r in results.items() if r.chosen_lr is None]
    sec.add(Bullets(notes))
    return sec
