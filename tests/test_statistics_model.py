"""resnorm.statistics: the seed-variance model, its prior, the runs kept out of the pool, the
family's joint null drawn from the model, the detectable effect and the TOST, each checked
exactly against what it should compute (tests/test_calibration_bugs.py runs these same
checks against planted bugs; tests/test_calibration.py checks the rates they lead to)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import special, stats

from resnorm.statistics import (adjust, equivalence_p, fit_seed_model, interval_at, max_t_null,
                                not_comparable, null_p_values, results)
from resnorm.statistics.model import ImageMoments, contrast_arrays, detectable_effect
from resnorm.statistics.prior import seed_prior

NAMES = ["a", "b", "c", "d", "e", "f"]


def _model(s2: list[float], k: int = 3, image: float = 1e-4, means=None,
           excluded: dict | None = None):
    """A fitted model whose runs have exactly the seed variances `s2` (k seeds each)."""
    names = NAMES[:len(s2)]
    offsets = np.array([-1.0, 0.0, 1.0]) if k == 3 else np.array([-1.0, 1.0]) / np.sqrt(2)
    scores = [(m or 0.0) + np.sqrt(v) * offsets for v, m in zip(s2, means or [0.0] * len(s2))]
    r = len(s2)
    cov = image * (0.5 * np.eye(r) + 0.5)  # images shared: correlated across runs
    moments = ImageMoments(np.full(r, 1e-4), cov, 150)
    return fit_seed_model(names, scores, moments, excluded)


def test_the_posterior_variance_weights_the_prior_by_its_df():
    """σ̃²_r = (d0 s0² + d_r S_r²)/(d0 + d_r), s0² the pooled variance, for every run."""
    model = _model([1.0, 2.0, 1.5, 0.5, 3.0, 1.2])
    d = model.k - 1
    assert 0 < model.d0 < np.inf
    s0sq = float(np.sum(d * model.s2) / np.sum(d))
    assert model.s0sq == pytest.approx(s0sq)
    want = (model.d0 * s0sq + d * model.s2) / (model.d0 + d)
    np.testing.assert_allclose(model.s2_mod, want)


def test_the_prior_df_is_the_datas_lower_bound():
    """Runs that spread alike with many seeds vouch for much pooling; a run at 100× the
    others' variance leaves the prior under 1 df; with 3 seeds of 9 alike runs the bound is
    a few df (the point estimate would be ∞)."""
    alike = stats.chi2.ppf((np.arange(9) + 0.5) / 9, 40) / 40      # 41 seeds each, alike
    assert seed_prior(alike, np.full(9, 40.0))[1] > 30
    wide = np.array([1.0] * 8 + [100.0])
    assert seed_prior(wide, np.full(9, 2.0))[1] < 1
    typical = stats.chi2.ppf((np.arange(9) + 0.5) / 9, 2) / 2
    assert 1 < seed_prior(typical, np.full(9, 2.0))[1] < 10


def test_runs_kept_out_of_the_pool_keep_their_own_variance():
    """An excluded run's moderated variance is its own S², and it adds nothing to s0²."""
    model = _model([1.0, 2.0, 1.5, 0.5, 3.0, 40.0], excluded={"f": "1 diverged seed"})
    assert model.s2_mod[-1] == pytest.approx(40.0) and model.prior_df[-1] == 0
    assert model.s0sq == pytest.approx(np.mean([1.0, 2.0, 1.5, 0.5, 3.0]))
    assert model.df_prior == 10


def test_not_comparable_names_why():
    out = not_comparable({"a": [0.45, 0.5, 0.48], "b": [0.1, 0.11, 0.09], "c": [0.4, 0.5, 0.45],
                          "lit": [0.3, 0.31, 0.3]}, 150, chance=0.1, diverged={"c": 1},
                         recipes={"a": "default", "b": "default", "c": "default",
                                  "lit": "literal"})
    assert set(out) == {"b", "c", "lit"}
    assert "chance" in out["b"] and "diverged" in out["c"] and "literal" in out["lit"]
    # a tie of recipes sets none apart
    assert not_comparable({"a": [0.5], "b": [0.5]}, 150, None, None,
                          {"a": "x", "b": "y"}) == {}


def test_a_contrasts_variance_counts_seeds_and_images():
    """se² = Σ_r coef_r S_r² + wᵀ C w: for runs that pool fully, the seed part is
    (w_a² + w_b²)/K · s0², the image part the image covariance's."""
    model = _model([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], image=0.2)
    w = np.zeros(6)
    w[0], w[1] = 1.0, -1.0
    arr = contrast_arrays(model, w[None])
    image = float(w @ model.moments.cov_c @ w)
    assert image > 0.05
    assert arr["se"][0] ** 2 == pytest.approx(2 / 3 * model.s0sq + image, rel=1e-6)


def test_a_repeated_test_is_not_adjusted():
    """The joint null carries the contrasts' correlation: a test repeated is one test (its
    adjusted p as alone), not two (about twice as large)."""
    model = _model([1.0, 2.0, 1.5, 0.5, 3.0, 1.2])
    w = np.array([[1.0, -1.0, 0, 0, 0, 0]])
    df = contrast_arrays(model, w)["df"]
    one = max_t_null([0.01], null_p_values(model, w, df, 20000, np.random.default_rng(1)))[0]
    two = max_t_null([0.01, 0.01], null_p_values(model, np.repeat(w, 2, axis=0),
                                                 np.repeat(df, 2), 20000,
                                                 np.random.default_rng(1)))[0]
    assert two[0] == pytest.approx(one[0], rel=0.1), (one, two)


def test_the_null_of_one_test_is_its_t_when_the_runs_spread_alike():
    """Runs whose seeds spread exactly alike (prior df ∞): one contrast's null p-values are
    uniform, P(p* <= 0.01) = 0.01, as its t with the Welch–Satterthwaite df says (normal
    statistics, without the variance draws, would make it far rarer)."""
    fit = _model([1.0] * 6, image=0.05)
    model = dataclasses.replace(fit, d0=np.inf, prior_share=np.ones(6),
                                s2_mod=np.full(6, fit.s0sq))  # pooled fully
    w = np.array([[1.0, -1.0, 0, 0, 0, 0], [1.0, 1.0, -1.0, -1.0, 0, 0]])
    df = contrast_arrays(model, w)["df"]
    null = null_p_values(model, w, df, 40000, np.random.default_rng(2))
    assert np.mean(null <= 0.01, axis=1) == pytest.approx([0.01, 0.01], abs=0.0025)


def test_the_detectable_effect_is_found_with_80_percent_power():
    """At the stated effect a t test at the family's level rejects in 80 % of draws of its
    estimate and of its se (χ² with df df), the se stated at its median."""
    rng = np.random.default_rng(3)
    se, df, p_crit = 0.02, 6.0, 0.004
    median_se = se * np.sqrt(stats.chi2.median(df) / df)
    effect = float(detectable_effect(median_se, df, p_crit))
    est = effect + se * rng.standard_normal(200_000)
    se_hat = se * np.sqrt(rng.chisquare(df, 200_000) / df)
    power = np.mean(np.abs(est / se_hat) > special.stdtrit(df, 1 - p_crit / 2))
    assert power == pytest.approx(0.80, abs=0.005)


def test_the_family_states_the_detectable_effect_at_its_own_level():
    """mde_points is the detectable effect at the family's critical p (the one its
    simultaneous intervals use), not at 5 %."""
    model = _model([1.0, 2.0, 1.5, 0.5, 3.0, 1.2], means=[0, 0.5, 1.0, 0, 2.0, 0.3])
    ws = [{a: 1.0, b: -1.0} for i, a in enumerate(NAMES) for b in NAMES[i + 1:]]
    members = results(model, ws)
    adjust(members, "primary", null_p=null_p_values(
        model, np.stack([model.index(w) for w in ws]), np.array([m["df"] for m in members]),
        20000, np.random.default_rng(4)))
    for m in members:
        half = (m["ci95_simultaneous"][1] - m["ci95_simultaneous"][0]) / 2
        p_crit = 2 * special.stdtr(m["df"], -half / m["se"])
        assert p_crit < 0.01
        crit = special.stdtrit(m["df"], 1 - p_crit / 2)  # the noncentral t, written out
        want = special.nctdtrinc(m["df"], 0.2, crit) * m["se"] / np.sqrt(
            stats.chi2.median(m["df"]) / m["df"])
        assert m["mde_points"] == pytest.approx(100 * want, rel=1e-6)
        assert interval_at(m, 1 - p_crit) == pytest.approx(m["ci95_simultaneous"])


def test_the_tost_at_its_margin_has_its_level():
    """TOST's p on the result's t: an estimate whose 90 % t interval touches the margin has
    p = 0.05 exactly (on the normal it would be below: few df)."""
    se, df, tol = 0.01, 2.0, 0.05
    diff = tol - stats.t.ppf(0.95, df) * se
    assert equivalence_p({"diff": diff, "se": se, "df": df}, tol) == pytest.approx(0.05)


def test_the_detectable_effect_is_quick_and_right_far_out():
    """A critical t of 10⁸ (1 df, p 1e-16: a 2-seed run kept out of the pool) costs no
    search, and beyond a critical t of 100 the far limit agrees with the exact noncentral t."""
    assert np.isfinite(detectable_effect(1.0, 1.0, 1e-16))
    for df, p in ((1.0, 1e-3), (2.0, 1e-5)):
        crit = special.stdtrit(df, 1 - p / 2)
        exact = special.nctdtrinc(df, 0.2, crit) / np.sqrt(stats.chi2.median(df) / df)
        assert crit > 100 and float(detectable_effect(1.0, df, p)) == pytest.approx(exact,
                                                                                 rel=1e-4)
