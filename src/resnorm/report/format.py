"""Number formatting: tables and observations share it, so the numbers match."""
from __future__ import annotations

import math
from typing import Any


def pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fine_pts(x: float) -> str:
    """A (possibly tiny) accuracy difference in points, without rounding it to zero."""
    p = 100 * x
    if p == 0:
        return "0 points"
    return f"{p:.2f} points" if p >= 0.01 else f"{p:.1e} points"


def fine_pct(x: float) -> str:
    """A (possibly tiny) relative difference in percent, without rounding it to zero."""
    p = 100 * x
    if p == 0:
        return "0%"
    return f"{p:.2f}%" if p >= 0.01 else f"{p:.1e}%"


def secs(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def val(x: Any) -> str:
    """A config value for a table cell."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def lr_rule_text(plan: dict) -> str:
    """The plan's lr rule across batch sizes in words (as the study stated it, if it did)."""
    return plan.get("lr_rule_text") or f"lr_rule: {plan.get('lr_rule', 'not stated')}"


def half_width(ci: list | None) -> float | None:
    """Half the width of a 95 % CI (the "±" of the report), or None."""
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return (ci[1] - ci[0]) / 2


def ci_pct(entry: dict | None) -> str:
    """A per-run score as '79.3 ± 0.8' (percent, mean ± CI half-width), '—' when absent."""
    if not entry or entry.get("mean") is None:
        return "—"
    hw = half_width(entry.get("ci95"))
    mean = f"{100 * entry['mean']:.1f}"
    return f"{mean} ± {100 * hw:.1f}" if hw is not None else f"{mean} (no interval)"


def signed_pts(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def diff_ci(res: dict) -> str:
    """'+0.4 points (95 % CI −0.9 to +1.7)' for a contrast, or why it is absent."""
    if res.get("diff") is None or not res.get("ci95"):
        return f"not computable ({res.get('reason', 'no data')})"
    lo, hi = res["ci95"]
    return f"{signed_pts(res['diff'])} points (95 % CI {signed_pts(lo)} to {signed_pts(hi)})"


def p_value(p: float | None) -> str:
    if p is None:
        return "—"
    return "<\u00a00.001" if p < 0.001 else f"{p:.3f}"  # (a no-break space: never two lines)


METRIC_WORDS = {"acc": "accuracy", "macro_f1": "macro F1", "micro_f1": "micro F1",
                "loss": "loss"}


def metric_label(metric: str, capital: bool = False) -> str:
    """'val_acc' -> 'val accuracy' ('Val accuracy' with `capital`), 'test_macro_f1' -> 'test
    macro F1'."""
    split, _, what = metric.partition("_")
    text = f"{split} {METRIC_WORDS.get(what, what)}"
    return text[0].upper() + text[1:] if capital else text
