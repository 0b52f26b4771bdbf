"""The report's tuning section: each tuned run's val score against its trials' settings (lr,
or lr and weight decay), the expected best val score against the number of trials (Dodge et
al. 2019; Tang et al. 2020's estimator), the untuned setting beside the chosen one, and how
stable each choice is under the noise of the val images (resnorm.statistics.choice). Reads
STUDY/tuning through resnorm.study.tuning.results; adds `tuning` to the summary
(summary.json; the README gives its keys)."""
from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter

from resnorm.plots import mpl_text
from resnorm.report.document import Bullets, Img, Para, Section, Table
from resnorm.report.figures import save_figure
from resnorm.report.format import ci_pct
from resnorm.rundir import RunDir
from resnorm.statistics.choice import choice_shares
from resnorm.statistics.intervals import wilson_interval
from resnorm.studydir import StudyDir
from resnorm.study.tuning.results import (
    TrialPoint, TuneResult, curves_cross, expected_max, lr_text, read_choices, read_settings)

__all__ = ["tuning_summary", "section_tuning", "budget_curves", "choice_noise",
           "STABLE_SHARE", "NOISE_RESAMPLES"]

STABLE_SHARE = 0.70     # a choice winning fewer of the resamples than this is called unstable
NOISE_RESAMPLES = 1000  # bootstrap resamples of the val images per tuned run
_METRIC = {"val_acc": "acc", "val_macro_f1": "macro_f1", "val_micro_f1": "micro_f1"}


def _chosen(r: TuneResult) -> TrialPoint | None:
    return r.point(r.chosen) or _at(r, r.chosen_lr)


def _at(r: TuneResult, lr: float | None) -> TrialPoint | None:
    return next((p for p in r.trials if lr is not None and lr_text(p.lr) == lr_text(lr)), None)


def _edges(r: TuneResult) -> dict[str, str]:
    return r.edges or ({"lr": r.at_edge} if r.at_edge else {})


def _val_predictions(study: Path, p: TrialPoint) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Each seed's (val labels, val predictions) of a trial, None if a seed has none."""
    if p.dir is None:
        return None
    folders = sorted(f for f in (StudyDir(study).dir / p.dir).parent.iterdir()
                     if StudyDir.seed_of(f) is not None)
    out = []
    for folder in folders:
        val = (RunDir(folder).predictions() or {}).get("val")
        if val is None:
            return None
        out.append((val["labels"], val["preds"]))
    return out or None


def choice_noise(study: Path, r: TuneResult) -> dict:
    """How often the chosen trial stays the best when the val images are resampled (the
    approximation is resnorm.statistics.choice's): per finished trial its share of
    NOISE_RESAMPLES resamples, the chosen one's share, and whether it is below
    STABLE_SHARE. Or {"reason": ...} where it cannot be computed."""
    # in the order the choice breaks ties (resnorm.study.tuning.phase): the lr nearest the
    # untuned one, then the lowest trial number
    ok = sorted((p for p in r.trials if p.status == "ok" and p.score is not None),
                key=lambda p: (abs(math.log(p.lr / r.default_lr)), p.number or 0))
    best = _chosen(r)
    if best is None or len(ok) < 2:
        return {"reason": "fewer than two finished trials: nothing to choose between"}
    preds = [_val_predictions(study, p) for p in ok]
    labels = preds[0][0][0] if preds[0] else None
    if labels is None or any(x is None or any(not np.array_equal(lab, labels) for lab, _ in x)
                             for x in preds):
        return {"reason": "a trial has no per-image val predictions (predictions.npz)"}
    shares = choice_shares(labels, [[pr for _, pr in x] for x in preds],
                           [p.score for p in ok], _METRIC[r.score], NOISE_RESAMPLES)
    chosen = float(shares[ok.index(best)]) if best in ok else None
    by_number = sorted(zip(ok, shares), key=lambda x: x[0].number or 0)
    return {"shares": [{"number": p.number, "lr": p.lr, "weight_decay": p.weight_decay,
                        "share": float(s)} for p, s in by_number],
            "chosen_share": chosen, "resamples": NOISE_RESAMPLES, "threshold": STABLE_SHARE,
            "unstable": chosen is not None and chosen < STABLE_SHARE,
            "method": "bootstrap over the val images: each trial's score moved by what the "
                      "resample does to its best checkpoint's val metric (paired)"}


def tuning_summary(study: Path, results: dict[str, TuneResult] | None = None) -> dict:
    """summary.json's `tuning` ({} for a study without a tuning phase)."""
    results = read_choices(study) if results is None else results
    out = {}
    for name, r in results.items():
        best = _chosen(r)
        out[name] = {
            "sampler": r.sampler,
            "trials": [{"number": p.number, "params": dict(p.params), "lr": p.lr,
                        "weight_decay": p.weight_decay, "score": p.score, "status": p.status,
                        "untuned": p.untuned} for p in r.trials],
            "chosen": r.chosen, "chosen_lr": r.chosen_lr,
            "chosen_weight_decay": best.weight_decay if best else None,
            "at_edge": r.at_edge, "edges": _edges(r), "default_lr": r.default_lr,
            "default_weight_decay": r.default_wd, "score": r.score,
            "last_epochs": r.last_epochs, "shared_with": r.shared_with,
            "choice_noise": choice_noise(study, r)}
    return out


def budget_curves(results: dict[str, TuneResult]) -> dict[str, list[float]]:
    """Each run's expected best score for 1..N of its trials (a diverged or failed trial
    counts as 0: it gives no model). Runs with another number of trials are compared over
    the budgets they share."""
    out = {}
    for name, r in results.items():
        scores = [p.score if p.score is not None else 0.0 for p in r.trials]
        if scores:
            out[name] = [expected_max(scores, n) for n in range(1, len(scores) + 1)]
    return out


def _point_text(p: TrialPoint | None) -> str:
    """A trial's val score with its Wilson 95 % interval over the scored val images."""
    if p is None:
        return "—"
    if p.score is None:
        return p.status
    ci = wilson_interval(round(p.score * p.val_images), p.val_images) if p.val_images else None
    if ci is None:
        return f"{100 * p.score:.1f} (no interval)"
    return ci_pct({"mean": p.score, "ci95": [ci[1], ci[2]]})


def _setting(p: TrialPoint | None) -> str:
    if p is None:
        return "none finished"
    return lr_text(p.lr) + (f", wd {lr_text(p.weight_decay)}" if p.weight_decay is not None
                            else "")


def _table(results: dict[str, TuneResult], runs: dict, tuning: dict) -> Table:
    rows = []
    for name, r in results.items():
        final = runs.get(name, {})
        test = final.get("test_acc") or final.get("val_acc")
        share = tuning[name]["choice_noise"].get("chosen_share")
        edges = "; ".join(f"{'lowest' if e == 'low' else 'highest'} {param} tried: widen"
                          for param, e in _edges(r).items())
        rows.append([name, lr_text(r.default_lr), _point_text(r.default_point),
                     _setting(_chosen(r)), _point_text(_chosen(r)),
                     f"{100 * share:.0f} %" if share is not None else "—", ci_pct(test),
                     edges])
    return Table(["run", "untuned lr", "val at untuned", "chosen (lr, wd)", "val at chosen",
                  "chosen in resamples", "final runs (held-out)", "note"], rows,
                 "Val scores of the tuning trials (%, one score per trial: the mean over its "
                 "seeds of the median of the last epochs; ± the Wilson 95 % interval over the "
                 f"scored val images); how often the chosen trial stays best in "
                 f"{NOISE_RESAMPLES:,} bootstrap resamples of the val images; the final runs' "
                 "held-out accuracy (test where scored, ± its 95 % interval) at the choice.")


def _plot_lr(results: dict[str, TuneResult], path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, r) in enumerate(results.items()):
        ok = sorted((p for p in r.trials if p.score is not None), key=lambda p: p.lr)
        line, = ax.plot([p.lr for p in ok], [p.score for p in ok], marker="o",
                        label=mpl_text(name), color=f"C{i % 10}")
        bad = [p.lr for p in r.trials if p.score is None]
        ax.plot(bad, [0.0] * len(bad), "x", color=line.get_color(), markersize=8)
        chosen = _chosen(r)
        if chosen is not None:
            ax.plot([chosen.lr], [chosen.score], "*", color=line.get_color(), markersize=16,
                    markeredgecolor="k")
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="val score",
           title="Val score against lr (star: chosen; x at 0: diverged or failed)")
    return _save(fig, ax, path)


def _plot_search(results: dict[str, TuneResult], path: Path) -> Path:
    """lr against weight decay per tuned run, each trial coloured by its val score."""
    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig = Figure(figsize=(3.2 * cols + 0.8, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True)).ravel()
    scores = [p.score for r in results.values() for p in r.trials if p.score is not None]
    norm = dict(vmin=min(scores, default=0.0), vmax=max(scores, default=1.0), cmap="viridis")
    for ax, (name, r) in zip(axes, results.items()):
        ok = [p for p in r.trials if p.score is not None]
        dots = ax.scatter([p.lr for p in ok], [p.weight_decay for p in ok],
                          c=[p.score for p in ok], s=60, edgecolors="k", **norm)
        bad = [p for p in r.trials if p.score is None]
        ax.plot([p.lr for p in bad], [p.weight_decay for p in bad], "x", color="C3")
        best = _chosen(r)
        if best is not None:
            ax.plot([best.lr], [best.weight_decay], "*", markersize=22, markerfacecolor="none",
                    markeredgecolor="C3", markeredgewidth=1.5)
        ax.set(xscale="log", yscale="log", title=mpl_text(name))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    for ax in axes[len(results):]:
        ax.set_visible(False)
    fig.supxlabel("learning rate (log)")
    fig.supylabel("weight decay (log)")
    fig.colorbar(dots, ax=list(axes[:len(results)]), label="val score")
    return save_figure(fig, path)


def _plot_budget(curves: dict[str, list[float]], path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(range(1, len(ys) + 1), ys, marker="o", label=mpl_text(name), color=f"C{i % 10}")
    ax.set(xlabel="trials (drawn at random from those tried)",
           ylabel="expected best val score",
           title="Expected best val score against the tuning budget")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, ax, path)


def _save(fig: Figure, ax, path: Path) -> Path:
    """A tuning figure's common finish (scores as percentages, grid, legend), saved."""
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    return save_figure(fig, path)


def _crossings(curves: dict[str, list[float]]) -> list[str]:
    out = []
    for a, b in combinations(curves, 2):
        n = min(len(curves[a]), len(curves[b]))
        if curves_cross(curves[a][:n], curves[b][:n]):
            out.append(f"{a} and {b}: their expected-max curves cross, so their ranking "
                       "depends on the tuning budget (how many settings one tries).")
    return out


def _notes(results: dict[str, TuneResult], tuning: dict, curves: dict) -> list[str]:
    notes = _crossings(curves) or ["No two runs' expected-max curves cross: within this "
                                   "search their ranking does not depend on the tuning budget."]
    for name, r in results.items():
        notes += [f"{name}: the chosen {param} {lr_text(getattr(_chosen(r), param))} is the "
                  f"{'lowest' if edge == 'low' else 'highest'} tried: the best may lie beyond "
                  "it; widen the search." for param, edge in _edges(r).items()
                  if _chosen(r) is not None]
        noise = tuning[name]["choice_noise"]
        if noise.get("unstable"):
            notes.append(
                f"{name}: the choice is unstable: the chosen trial is the best in only "
                f"{100 * noise['chosen_share']:.0f} % of {noise['resamples']:,} bootstrap "
                f"resamples of the val images (below {100 * STABLE_SHARE:.0f} %); another "
                "val sample could have chosen another setting.")
    notes += [f"{r.shared_with} trains at {name}'s choice (the sanity pair differs in the "
              "norm alone; or the plan's tune.share)." for name, r in results.items()
              if r.shared_with]
    notes += [f"{name}: no trial finished; its final runs used the untuned settings."
              for name, r in results.items() if r.chosen_lr is None]
    return notes


def _intro(settings: dict, first: TuneResult) -> Para:
    epochs = settings.get("epochs") or "the final runs'"
    if settings.get("space"):
        search = (f"{settings.get('trials')} points of the space "
                  + " x ".join(f"{k} [{lr_text(v[0])}, {lr_text(v[1])}] ({v[2]})"
                               for k, v in settings["space"].items())
                  + ", the same scrambled Sobol points (Optuna's QMCSampler, one fixed seed) "
                  "for every tuned run")
    else:
        search = ("every point of the grid " + " x ".join(
            f"{k} {', '.join(map(lr_text, settings.get(k, [])))}"
            for k in ("lr", "weight_decay") if k in settings) + " (Optuna's GridSampler)")
    return Para(
        f"Before the final runs, each tuned run trained {search}; lrs are base lrs at batch "
        f"{settings.get('base_batch_size', '?')}, scaled to each run's batch size by the "
        f"{settings.get('lr_rule', '?')} rule"
        f"{', plus the run’s untuned setting' if settings.get('default') else ''}; "
        f"{epochs} epochs, {settings.get('seeds', 1)} seed(s) per trial. The choice is the "
        f"Optuna study's best trial by {first.score} on the clean val images (the median of "
        f"the last {first.last_epochs} epochs, robust to one lucky epoch); a diverged or "
        "failed trial is never chosen. Test is not read before the final runs, which then "
        "trained at the choice. Their intervals are conditional on it: they count the seeds' "
        "and the test images' noise, not the chance that another val sample would have "
        "chosen another setting (the resample share below). Val scores carry the selection "
        "bias of having chosen on them.")


def section_tuning(study: Path, summary: dict, assets: Path) -> Section | None:
    """The tuning section (None without a tuning phase); sets summary["tuning"]."""
    results = read_choices(study)
    if not results:
        return None
    tuning = summary["tuning"] = tuning_summary(study, results)
    settings = read_settings(study)
    curves = budget_curves(results)
    sec = Section("Tuning: each run at its own learning rate")
    sec.add(_intro(settings, next(iter(results.values()))))
    sec.add(_table(results, summary.get("runs", {}), tuning))
    if any(p.weight_decay is not None for r in results.values() for p in r.trials):
        sec.add(Img(_plot_search(results, assets / "tuning_search.png"),
                    "The search per tuned run: each trial's lr and weight decay, coloured by "
                    "its val score; the red star rings the choice, x a diverged or failed trial."))
    else:
        sec.add(Img(_plot_lr(results, assets / "tuning_lr.png"),
                    "Val score against lr, one line per tuned run; the star is the chosen lr."))
    sec.add(Img(_plot_budget(curves, assets / "tuning_budget.png"),
                "Expected best val score when n of the trials are tried (Dodge et al. 2019, "
                "expected validation performance; unbiased estimator for drawing without "
                "replacement, Tang et al. 2020). A diverged trial counts as 0."))
    sec.add(Bullets(_notes(results, tuning, curves)))
    return sec
