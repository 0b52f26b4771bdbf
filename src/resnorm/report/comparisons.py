"""The comparisons between runs: the sanity check (PyTorch BN vs own BN, curve by curve against
the plan's tolerance) and batch size (BN vs GN)."""
from __future__ import annotations

import math
from pathlib import Path

from resnorm.report.document import Bold, Img, Para, Section, Table
from resnorm.report.figures import plot_batch, plot_sanity
from resnorm.report.format import fine_pct, fine_pts, lr_rule_text, num, pct, pts, secs, val
from resnorm.report.roles import NORM_LABELS, Roles, mean_of, val_count
from resnorm.study.records import RunRecord

CURVE_COLUMNS = ("train_loss", "train_acc", "train_micro_f1", "train_macro_f1",
                 "val_loss", "val_acc", "val_micro_f1", "val_macro_f1")


def _difference(column: str, x: float, y: float) -> float:
    """|x - y|, relative to the larger magnitude for loss curves; inf when not finite."""
    d = abs(x - y)
    if column.endswith("loss"):
        d = d / max(abs(x), abs(y), 1e-12)
    return d if math.isfinite(d) else math.inf


def sanity_diffs(a: RunRecord, b: RunRecord) -> list[dict]:
    """Per curve: the difference after epoch 1 and the largest over the epochs both runs have."""
    out = []
    pairs = list(zip(a.rows, b.rows))
    for column in CURVE_COLUMNS:
        diffs = [(_difference(column, ra[column], rb[column]), ra["epoch"]) for ra, rb in pairs]
        worst, at = max(diffs, key=lambda t: t[0]) if diffs else (0.0, None)
        out.append({"curve": column, "first": diffs[0][0] if diffs else None,
                    "max_diff": worst, "epoch": at, "relative": column.endswith("loss")})
    return out


def sanity_verdict(diffs: list[dict], tol: dict) -> str:
    """'held' (within tolerance throughout), 'drifted' (matched after epoch 1, apart later,
    as rounding differences compound) or 'failed' (apart already after epoch 1)."""
    if not diffs or not all(_within(d, "first", tol) for d in diffs):
        return "failed"
    return "held" if all(_within(d, "max_diff", tol) for d in diffs) else "drifted"


def _within(d: dict, which: str, tol: dict) -> bool:
    limit = tol["first_epoch"] if which == "first" else tol["loss" if d["relative"] else "metric"]
    return d[which] is not None and d[which] <= limit


VERDICTS = {"held": "HELD: the curves agree within tolerance at every epoch",
            "drifted": "the curves agree after epoch 1, so the two layers compute the same "
                       "thing, but drifted apart beyond tolerance later, as rounding "
                       "differences compound over training",
            "failed": "FAILED: the curves differ beyond tolerance already after epoch 1"}


def section_sanity(roles: Roles, tol: dict, assets: Path) -> tuple[Section, dict | None]:
    s = Section("Sanity check: PyTorch BN vs own BN")
    if roles.sanity is None or not all(r.rows for r in roles.sanity):
        s.add(Para("Needs two finished runs that differ only in norm: torch_bn and bn. "
                   "Not available in this study yet."))
        return s, None
    a, b = roles.sanity
    diffs = sanity_diffs(a, b)
    verdict = sanity_verdict(diffs, tol)
    s.add(Para(f"{a.name} uses PyTorch's nn.BatchNorm2d, {b.name} the from-scratch BatchNorm2d. "
               "They share seed, initialisation and data order, so any difference is numerical; "
               "it starts tiny and grows with training, as small differences compound. "
               f"Tolerance after epoch 1: {pts(tol['first_epoch'])} on accuracy/F1 and "
               f"{pct(tol['first_epoch'])} relative on loss; over all epochs: "
               f"{pts(tol['metric'])} and {pct(tol['loss'])}." + _granularity(b)))
    rows = []
    for d in diffs:
        fmt = (lambda x: fine_pct(x) + " rel.") if d["relative"] else fine_pts
        yes = lambda ok: "yes" if ok else Bold("no")  # noqa: E731
        rows.append([d["curve"], fmt(d["first"]), yes(_within(d, "first", tol)),
                     fmt(d["max_diff"]), val(d["epoch"]), yes(_within(d, "max_diff", tol))])
    s.add(Table(["Curve", "After epoch 1", "Within", "Largest difference", "At epoch",
                 "Within"], rows))
    s.add(Para(f"Verdict over {min(len(a.rows), len(b.rows))} epochs: {VERDICTS[verdict]}."))
    s.add(Img(plot_sanity(a, b, assets / "sanity.png"),
              f"{b.name} (thick, light) and {a.name} (dashed) on top of each other."))
    return s, {"a": a, "b": b, "diffs": diffs, "verdict": verdict}


def _granularity(run: RunRecord) -> str:
    n = val_count(run)
    return f" With {n:,} validation images, one image is {pts(1 / n)} of val accuracy." if n else ""


def section_batch(roles: Roles, plan: dict, assets: Path) -> Section:
    s = Section("Batch size: BN vs GN")
    s.add(Para(f"Learning-rate rule across batch sizes: {lr_rule_text(plan)}."))
    if not roles.batch:
        s.add(Para("Needs BN or GN runs at two or more batch sizes with otherwise the same "
                   "recipe. Not available in this study yet."))
        return s
    groups = {k: [r for r in g if r.ok] for k, g in roles.batch.items()}
    groups = {k: g for k, g in groups.items() if g}
    if groups:
        s.add(Img(plot_batch(groups, assets / "batch_size.png"),
                  "Best-checkpoint val accuracy and mean time per epoch against batch size."))
    rows = []
    for kind, members in roles.batch.items():
        for r in members:
            rows.append([r.name, NORM_LABELS.get(kind, kind), val(r.config.get("batch_size")),
                         val(r.config.get("lr")), val(r.config.get("patience")), r.status,
                         pct(r.score("val", "acc")), pct(r.score("val", "macro_f1")),
                         val((r.final or {}).get("epochs_run")),
                         val((r.final or {}).get("best_epoch")),
                         secs(mean_of(r, "epoch_time_s")), num(mean_of(r, "images_per_s"), 0)])
    s.add(Table(["Run", "Norm", "Batch", "lr", "Patience", "Status", "Val acc", "Val macro F1",
                 "Epochs run", "Best epoch", "Time/epoch", "Images/s"], rows))
    return s


def batch_spreads(roles: Roles) -> dict[str, dict]:
    """Per norm: the range of val accuracy over batch sizes (finished runs only)."""
    out = {}
    for kind, members in roles.batch.items():
        scored = [(r.config.get("batch_size"), r.score("val", "acc")) for r in members if r.ok]
        scored = [(b, a) for b, a in scored if a is not None]
        if len(scored) >= 2:
            accs = [a for _, a in scored]
            out[kind] = {"spread": max(accs) - min(accs), "sizes": [b for b, _ in scored],
                         "by_size": dict(scored)}
    return out
