"""What the report reads from a Grad-CAM summary (gradcam.json) and how its shares are
stated: the gallery's tiles, pointing-game hits, and shares with their 95 % intervals. Below
both the Grad-CAM section and the observations, which state the same numbers."""
from __future__ import annotations

import math

from resnorm.report.format import pct
from resnorm.statistics import t_interval, wilson_interval


def proportion_ci(hits: int, total: int) -> str:
    """'62.0% (55.1–68.4%)': a share with its Wilson 95 % interval."""
    ci = wilson_interval(hits, total)
    if ci is None:
        return "—"
    return f"{pct(ci[0])} ({100 * ci[1]:.1f}–{100 * ci[2]:.1f}%)"


def gallery_tiles(g: dict) -> dict[str, list[dict]]:
    """The gallery maps of gradcam.json, correct and incorrect, over all classes."""
    return {kind: [t for c in g.get("classes", []) for t in c.get(kind, [])]
            for kind in ("correct", "incorrect")}


def hit_counts(tiles: list[dict]) -> tuple[int, int]:
    scored = [t["pointing_hit"] for t in tiles if "pointing_hit" in t]
    return int(sum(scored)), len(scored)


def mean_ci(values: list[float]) -> str:
    """'40.2% (38.1–42.3%)': a mean share with its 95 % t interval (one value: no interval)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    ci = t_interval(values)
    if ci is None:
        return pct(values[0])
    return f"{pct(ci[0])} ({100 * ci[1]:.1f}–{100 * ci[2]:.1f}%)"
