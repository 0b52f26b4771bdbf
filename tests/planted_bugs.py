"""Bugs planted in the statistics, for tests/test_calibration_bugs.py: each a patch that
replaces one function, everywhere it was imported, by a wrong version of it (the seven of
issue 39 and the mistakes they stand for)."""
from __future__ import annotations

import sys
from typing import Callable

import numpy as np
from scipy import stats

from resnorm.statistics import contrasts, families, model, null


def plant(monkeypatch, module, name: str, make: Callable) -> None:
    """Replace `module.name` by `make(original)` in every loaded module that holds it."""
    original = getattr(module, name)
    wrong = make(original)
    for mod in list(sys.modules.values()):
        if getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, wrong)


def identity_correlation(monkeypatch) -> None:
    """max-T's null with its statistics independent: each statistic's draws shuffled apart
    (their own distribution kept, their correlation lost)."""
    def make(original):
        def statistics(m, w, n_sim=null.N_SIM, rng=None):
            t = original(m, w, n_sim, rng)
            g = np.random.default_rng(0)
            return np.stack([g.permutation(row) for row in t])
        return statistics
    plant(monkeypatch, null, "null_statistics", make)


def normal_max_t(monkeypatch) -> None:
    """max-T's null on the normal: each statistic over its true se, no variance draws."""
    def make(original):
        def statistics(m, w, n_sim=null.N_SIM, rng=None):
            rng = null.study_rng(m) if rng is None else rng
            w = np.atleast_2d(w)
            r = len(m.names)
            sigma2 = null._variance_draws(m, n_sim, rng)
            z = rng.standard_normal((2 * r, n_sim))
            theta = w @ (np.sqrt(sigma2 / m.k[:, None]) * z[:r] + null._image_root(m) @ z[r:])
            coef, image = model.contrast_parts(m, w)
            return np.abs(theta) / np.sqrt(coef @ sigma2 + image[:, None])
        return statistics
    plant(monkeypatch, null, "null_statistics", make)


def detectable_at_alpha(monkeypatch) -> None:
    """The detectable effect at α = 5 %, not at the family's critical level."""
    plant(monkeypatch, families, "detectable_effect",
          lambda original: lambda se, df, p_crit, power=0.8: original(se, df, 0.05, power))


def tost_on_the_normal(monkeypatch) -> None:
    """TOST's p on the normal whatever the df."""
    def make(original):
        def equivalence_p(result, tolerance):
            diff, se = result.get("diff"), result.get("se")
            if diff is None or se is None or se == 0:
                return original(result, tolerance)
            return float(max(stats.norm.sf((diff + tolerance) / se),
                             stats.norm.cdf((diff - tolerance) / se)))
        return equivalence_p
    plant(monkeypatch, contrasts, "equivalence_p", make)


def full_pooling(monkeypatch) -> None:
    """Every run's seed variance pooled fully (prior df ∞), whatever the data say."""
    plant(monkeypatch, model, "seed_prior",
          lambda original: lambda s2, d: (original(s2, d)[0], np.inf))


def swapped_weights(monkeypatch) -> None:
    """The posterior's weights swapped: the prior weighted by the run's df, the run by d0."""
    def make(original):
        def share(d0, d):
            if not np.isfinite(d0):
                return np.zeros_like(d)
            return np.where(d > 0, d / np.maximum(d0 + d, 1e-300), 1.0)
        return share
    plant(monkeypatch, model, "_prior_share", make)


def image_variance_ignored(monkeypatch) -> None:
    """A contrast's variance without its image part."""
    plant(monkeypatch, model, "contrast_parts",
          lambda original: lambda m, w: (original(m, w)[0], np.zeros(np.atleast_2d(w).shape[0])))


BUGS = {
    "max-T with identity correlation": identity_correlation,
    "max-T on the normal instead of t": normal_max_t,
    "detectable effect at alpha instead of the family's level": detectable_at_alpha,
    "TOST on the normal instead of t": tost_on_the_normal,
    "full pooling": full_pooling,
    "swapped posterior weights": swapped_weights,
    "image variance ignored": image_variance_ignored,
}
__all__ = ["BUGS", "plant"]
