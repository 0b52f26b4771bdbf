"""The study's own calibration (summary.json `calibration`): how well its primary family holds
when its design is simulated (resnorm.statistics.calibration), and the sentences that state
it, each rate with its Monte Carlo standard error. Nothing here states a rate that was not
measured on this study's design.

How many studies are simulated is a setting: `resnorm report --calibration-studies N` (or
`build_report(..., calibration_studies=N)`), else the environment's
RESNORM_CALIBRATION_STUDIES, else `DEFAULT_STUDIES` (about 10 s on one core); 0 simulates
none (the report then says the rates were not measured). The result is cached in summary.json
with a fingerprint of its inputs (the fitted model, the family, the setting): rendering the
report again reuses it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

import numpy as np

from resnorm import statistics as st
from resnorm.errors import UsageError

__all__ = ["DEFAULT_STUDIES", "ENV", "calibration_studies", "study_calibration", "fingerprint",
           "family_sentence", "best_set_sentence", "power_sentence", "equivalence_sentence",
           "calibration_clause"]

DEFAULT_STUDIES = 800   # null studies (+ half as many planted): ~10 s on one free core
ENV = "RESNORM_CALIBRATION_STUDIES"
VERSION = 1             # bump when the simulation changes, so that caches are redone


def calibration_studies(setting: int | None = None) -> int:
    """The number of null studies to simulate: `setting`, else $RESNORM_CALIBRATION_STUDIES,
    else DEFAULT_STUDIES. A negative or non-integer value is a usage error."""
    value: Any = setting if setting is not None else os.environ.get(ENV, DEFAULT_STUDIES)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{ENV} must be a whole number of studies, got {value!r}") from None
    if n < 0:
        raise UsageError(f"the calibration studies must be >= 0, got {n}")
    return n


def fingerprint(design: st.FamilyDesign, studies: int) -> str:
    """A digest of everything the simulation depends on."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([VERSION, studies, st.CALIBRATION_NULL_DRAWS, list(design.weights),
                         list(design.labels), list(design.ranked), design.sanity,
                         design.tolerance, design.planted], sort_keys=True,
                        default=str).encode())
    for model in (design.model, design.sanity_model):
        if model is None:
            continue
        h.update(json.dumps([model.names, sorted(model.excluded.items()),
                             model.moments.n_images]).encode())
        for arr in (model.means, model.s2, model.k, model.moments.var_u, model.moments.cov_c):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()


def study_calibration(design: st.FamilyDesign | None, studies: int,
                      previous: dict | None = None) -> dict | None:
    """The calibration of `design` over `studies` simulated studies, or `previous` (the last
    summary.json's) when its fingerprint matches; None without a family to simulate or with
    `studies` 0."""
    if design is None or studies <= 0:
        return None
    key = fingerprint(design, studies)
    if previous and previous.get("fingerprint") == key:
        return previous
    out = st.calibrate(design, studies)
    return {**_finite(out), "fingerprint": key}


def _finite(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _rate(entry: dict | None) -> str:
    """'4.1 % (Monte Carlo SE 0.7)'."""
    if not entry or entry.get("rate") is None:
        return "not measured"
    return (f"{100 * entry['rate']:.1f} % of them (Monte Carlo SE "
            f"{100 * (entry.get('se') or 0):.1f} points)")


def _simulated(cal: dict) -> str:
    return (f"In {cal['studies']:,} simulated studies of this study's own design (its runs, "
            "seeds and images, each run's seed variance as fitted, no run truly different)")


def family_sentence(cal: dict | None) -> str:
    """The family's measured error rate and simultaneous coverage, or why there is none."""
    if not cal:
        return ("Its error rate was not simulated for this study (calibration studies set to "
                "0), so the report states none.")
    return (f"{_simulated(cal)} the family made a false directional verdict in "
            f"{_rate(cal.get('fwer'))}, and the simultaneous intervals held every member's "
            f"true value together in {_rate(cal.get('coverage'))}.")


def calibration_clause(cal: dict | None) -> str:
    """'in simulations of this design it made a false verdict in 3.1 % (...)' or why not."""
    if not cal:
        return "its error rate was not simulated for this study"
    return (f"in {cal['studies']:,} simulations of this study's design with no run truly "
            f"different it made a false verdict in {_rate(cal.get('fwer'))}")


def best_set_sentence(cal: dict | None) -> str:
    if not cal:
        return "How often it holds the best was not simulated for this study."
    text = (f"in simulated studies of this design it kept every truly best run (all, when no "
            f"run differs) in {_rate(cal.get('best_set'))}")
    if cal.get("best_set_planted"):
        text += (f", and the planted best in {_rate(cal['best_set_planted'])} when one pair "
                 "differed by the detectable effect")
    return text


def power_sentence(cal: dict | None) -> str | None:
    """The measured power at the stated detectable effect."""
    power = (cal or {}).get("power")
    if not power:
        return None
    a, b = power["pair"]
    return (f"measured in {power['studies']:,} simulated studies of this design with {a} "
            f"planted that far above {b}: found in {_rate(power)}")


def equivalence_sentence(cal: dict | None) -> str | None:
    """How often the sanity pair, placed at its margin, was called equivalent."""
    if not cal or not cal.get("false_equivalent"):
        return None
    return (f"placed at its margin (± {100 * cal['tolerance']:.0f} points) in simulated "
            f"studies of this design, was called equivalent in "
            f"{_rate(cal['false_equivalent'])}")

