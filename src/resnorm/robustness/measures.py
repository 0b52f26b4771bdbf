"""The robustness numbers of one run, each with its 95 % interval over seeds and images.

A run's evaluations (resnorm.robustness.results) give, per seed s and held-out image i,
whether the prediction was right: clean, and under each (corruption, severity), as trained
and adapted. Every measure here is a mean over images of a per-image value y_s(i): the share
of the selected (corruption, severity) cells image i was right in (mean corrupted accuracy:
all cells; a severity's accuracy: that severity's cells; ...), or for a difference (the drop
from clean) the difference of two such values of the same seed. Its interval is the study's
seed-variance model with the run alone (resnorm.statistics: `moments_from_correct`, the
closed form of the paired image bootstrap, and `fit_seed_model`): the run's own seed spread
(K − 1 df) plus the image-sample variance, the seed-by-image noise counted once; one seed:
the images alone. Images are the unit: the C x S corrupted copies of one image are not
independent draws.

mCE (Hendrycks & Dietterich): CE_c = Σ_s E(f, c, s) / Σ_s E(ref, c, s), mCE = the mean of
CE_c over corruptions, E an error rate, `ref` the study's reference run (PyTorch BN, in
AlexNet's role). Computed per seed, paired by seed id with the reference (the same seed's
initialisation and data order), and averaged over seeds; its image variance by the delta
method: the per-image influence (1/C) Σ_c (e_f,c(i) − CE_c e_ref,c(i)) / E_ref,c.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resnorm import statistics as st

__all__ = ["RunArrays", "interval", "mce"]


@dataclass
class RunArrays:
    """A run's per-image correctness: clean (K, N) and corrupted (K, C, S, N), as trained or
    adapted, for seeds `seeds`."""

    seeds: list[int]
    clean: np.ndarray
    corrupted: np.ndarray

    def share(self, cells: np.ndarray | None = None) -> np.ndarray:
        """(K, N): per seed and image, the share of the (C, S) cells selected by the boolean
        mask `cells` (None: all) that the model got right."""
        mask = np.ones(self.corrupted.shape[1:3], bool) if cells is None else cells
        return self.corrupted[:, mask, :].mean(axis=1)

    def at(self, seeds: list[int]) -> "RunArrays":
        """The same run restricted to `seeds` (in that order)."""
        idx = [self.seeds.index(s) for s in seeds]
        return RunArrays(list(seeds), self.clean[idx], self.corrupted[idx])


def interval(values: np.ndarray, name: str = "run") -> dict:
    """The mean over seeds and images of `values` (K, N) with its 95 % interval on the
    seed-variance model (see the module notes): {"mean", "ci95", "seeds", "df"}."""
    values = np.asarray(values, dtype=np.float64)
    model = st.fit_seed_model([name], [values.mean(axis=1)],
                              st.moments_from_correct(values[None]), pool=False)
    res = st.results(model, [{name: 1.0}], "acc")[0]
    return {"mean": res["diff"], "ci95": res["ci95"], "seeds": len(values), "df": res["df"],
            "se": res["se"]}


def mce(run: RunArrays, ref: RunArrays, corruptions: list[str]) -> dict | None:
    """The run's mCE relative to `ref` with its 95 % interval (see the module notes), on the
    seeds both have; None when they share no seed or the reference made no error under a
    corruption (CE undefined)."""
    seeds = [s for s in run.seeds if s in ref.seeds]
    if not seeds:
        return None
    err_f = 1.0 - run.at(seeds).corrupted.mean(axis=2)   # (K, C, N): over severities
    err_r = 1.0 - ref.at(seeds).corrupted.mean(axis=2)
    e_f, e_r = err_f.mean(axis=2), err_r.mean(axis=2)     # (K, C)
    if np.any(e_r <= 0):
        return None
    ce = e_f / e_r                                        # (K, C)
    influence = ((err_f - ce[..., None] * err_r) / e_r[..., None]).mean(axis=1)  # (K, N)
    model = st.fit_seed_model(["mce"], [ce.mean(axis=1)],
                              st.moments_from_correct(influence[None]), pool=False)
    res = st.results(model, [{"mce": 1.0}], "acc")[0]
    per = {c: float(v) for c, v in zip(corruptions, ce.mean(axis=0))}
    return {"mean": res["diff"], "ci95": res["ci95"], "seeds": len(seeds), "ce": per}
