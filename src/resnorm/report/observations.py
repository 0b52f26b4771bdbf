"""Observations: short statements, each derived from numbers shown in the report's tables.

Each observer gets what the sections computed (the runs, their roles, the sanity check, the
batch-size spreads, the BIN gates, the Grad-CAM summary) and returns a sentence, a list of
sentences or None; it computes nothing the tables do not show."""
from __future__ import annotations

import math
from typing import Any, Callable

from resnorm.report.format import fine_pct, fine_pts, num, pct, pts, val
from resnorm.report.roles import NORM_LABELS
from resnorm.study.records import best_run


def observations(runs, roles, sanity, tol, spreads, gates, gradcam) -> list[str]:
    """Short statements, each derived from numbers shown in the report's tables."""
    found = [f(runs, roles, sanity, tol, spreads, gates, gradcam) for f in _OBSERVERS]
    items = [o for group in found for o in (group if isinstance(group, list) else [group]) if o]
    return items or ["Nothing to observe yet: no run has finished."]


def _obs_best_worst(runs, roles, *_):
    scored = [(r, r.score("val", "acc")) for r in roles.variants if r.ok]
    scored = [(r, a) for r, a in scored if a is not None]
    if len(scored) < 2:
        return None
    best, b = max(scored, key=lambda t: t[1])
    worst, w = min(scored, key=lambda t: t[1])
    return (f"Among the {len(scored)} norm variants, {best.name} reached the highest val "
            f"accuracy ({pct(b)}) and {worst.name} the lowest ({pct(w)}), "
            f"{pts(b - w)} apart.")


def _obs_generalisation(runs, *_):
    best = best_run(runs)
    if best is None:
        return None
    tr, va = best.score("train", "acc"), best.score("val", "acc")
    if tr is None or va is None:
        return None
    gap = (f"train above val by {pts(tr - va)}" if tr > va else
           f"val above train by {pts(va - tr)}" if va > tr else "no gap")
    return (f"The best run overall, {best.name}, scored {pct(tr)} on train and {pct(va)} on val "
            f"({gap}).")


def _obs_sanity(runs, roles, sanity, tol, *_):
    if sanity is None:
        return None
    pair = f"{sanity['a'].name} and {sanity['b'].name}"
    first = max(sanity["diffs"], key=lambda d: d["first"] - tol["first_epoch"])
    worst_metric = max((d for d in sanity["diffs"] if not d["relative"]),
                       key=lambda d: d["max_diff"])
    worst_loss = max((d for d in sanity["diffs"] if d["relative"]), key=lambda d: d["max_diff"])
    start = (f"after epoch 1 {pair} differ by at most {_diff_text(first, 'first')} "
             f"(on {first['curve']}; tolerance {pts(tol['first_epoch'])} / "
             f"{pct(tol['first_epoch'])})")
    later = (f"over all epochs by up to {fine_pts(worst_metric['max_diff'])} on "
             f"{worst_metric['curve']} (tolerance {pts(tol['metric'])}) and "
             f"{fine_pct(worst_loss['max_diff'])} relative on {worst_loss['curve']} "
             f"(tolerance {pct(tol['loss'])})")
    verdict = sanity["verdict"]
    if verdict == "held":
        return f"The sanity check held: {start}; {later}."
    if verdict == "drifted":
        return (f"The sanity check held at the start but not throughout: {start}, yet "
                f"{later}; the layers agree, and the runs drift apart as rounding "
                "differences compound.")
    return f"The sanity check failed: {start}."


def _diff_text(d: dict, which: str) -> str:
    return fine_pct(d[which]) + " relative" if d["relative"] else fine_pts(d[which])


def _compare_shown(a: float, b: float, fmt: Callable[[float], str]) -> int:
    """-1, 0 or 1 as a < b, a == b, a > b — equal when the report shows them equal, so that no
    sentence claims a difference its numbers do not show."""
    if fmt(a) == fmt(b):
        return 0
    return -1 if a < b else 1


def _obs_batch(runs, roles, sanity, tol, spreads, *_):
    if not spreads:
        return None
    parts = [f"{NORM_LABELS.get(k, k)}'s val accuracy spans {pts(v['spread'])} over batch sizes "
             f"{', '.join(str(b) for b in v['sizes'])}" for k, v in spreads.items()]
    text = "; ".join(parts) + "."
    if {"bn", "gn"} <= set(spreads):
        order = _compare_shown(spreads["gn"]["spread"], spreads["bn"]["spread"], pts)
        text += " GN was " + {-1: "less sensitive to batch size than BN",
                              0: "about as sensitive to batch size as BN",
                              1: "more sensitive to batch size than BN"}[order] + " in this study."
        small = min(set(spreads["bn"]["by_size"]) & set(spreads["gn"]["by_size"]), default=None)
        if small is not None:
            text += (f" At batch {small}: GN {pct(spreads['gn']['by_size'][small])}, "
                     f"BN {pct(spreads['bn']['by_size'][small])}.")
    return text


def _obs_gates(runs, roles, sanity, tol, spreads, gates, *_):
    if gates is None:
        return None
    f = gates["furthest"]
    return (f"{gates['run']}'s gates ended at a mean ρ of {num(gates['mean'])} (1 = BN, 0 = IN); "
            f"{gates['below']} of {gates['channels']} channels fell below 0.5, and {f['layer']} "
            f"moved furthest toward IN (mean ρ {num(f['mean'])}).")


def _obs_gradcam(runs, roles, sanity, tol, spreads, gates, g):
    if g is None:
        return None
    out = []
    conc, share = g.get("concentration") or {}, g.get("concentration_top_share", 0.1)
    c, i = conc.get("correct"), conc.get("incorrect")
    if c is not None and i is not None:
        rel = {1: "more", -1: "less", 0: "as"}[_compare_shown(c, i, pct)]
        out.append(f"Grad-CAM maps of correctly classified images put {pct(c)} of their mass in "
                   f"their brightest {share:.0%} of pixels, vs {pct(i)} for misclassified images "
                   f"({rel} concentrated when right; a flat map would score {share:.0%}).")
    hits = g.get("gallery_pointing") or {}
    if hits.get("correct") is not None and hits.get("incorrect") is not None:
        out.append(f"In the galleries, the maps' maximum fell inside the object's box for "
                   f"{pct(hits['correct'])} of correctly and {pct(hits['incorrect'])} of "
                   "incorrectly classified images.")
    pointing = {k: v for k, v in (g.get("pointing") or {}).items() if math.isfinite(v["score"])}
    if pointing:
        best = max(pointing, key=lambda k: pointing[k]["score"])
        worst = min(pointing, key=lambda k: pointing[k]["score"])
        top, bottom = pointing[best]["score"], pointing[worst]["score"]
        if _compare_shown(top, bottom, pct) == 0:
            text = (f"In the pointing game, the maps of all {len(pointing)} scored runs hit the "
                    f"object's box equally often ({pct(top)})")
        else:
            text = (f"In the pointing game, {best}'s maps hit the object's box most often "
                    f"({pct(top)}) and {worst}'s least ({pct(bottom)})")
        out.append(text + f"; chance is {pct(pointing[best].get('chance'))}.")
    return out


def _obs_literal(runs, roles, *_):
    out = []
    for lit, ref in roles.literal:
        if not lit.ok:
            continue
        text = (f"The literal recipe ({lit.name}: {val(lit.config.get('optimizer'))}, lr "
                f"{val(lit.config.get('lr'))}) reached {pct(lit.score('val', 'acc'))} val "
                "accuracy")
        if ref is not None and ref.ok:
            text += (f", against {pct(ref.score('valid', 'acc'))} for {ref.name} with the "
                     f"{val(ref.config.get('recipe'))} recipe")
        out.append(text + ".")
    return out


def _obs_problems(runs, *_):
    out = []
    for r in runs:
        if r.status == "diverged":
            at = (r.final or {}).get("diverged_at")
            where = f" at {_where(at)}" if at else ""
            after = ("its numbers are from its best checkpoint before that" if r.evaluation("val")
                     else "it has no checkpoint to evaluate")
            out.append(f"{r.name} diverged{where} (non-finite loss); {after}.")
        elif r.status == "failed":
            out.append(f"{r.name} failed: {r.error}.")
    unfinished = [r.name for r in runs if r.status in ("interrupted", "not started")]
    if unfinished:
        out.append(f"{len(unfinished)} planned run(s) have not finished: {', '.join(unfinished)}.")
    return out


def _where(at: Any) -> str:
    if isinstance(at, dict):
        return ", ".join(f"{k} {v}" for k, v in at.items())
    return f"epoch {at}"


_OBSERVERS: list[Callable] = [_obs_best_worst, _obs_generalisation, _obs_sanity, _obs_batch,
                              _obs_gates, _obs_gradcam, _obs_literal, _obs_problems]
