"""Simulated studies for the calibration suite (tests/test_calibration.py) and the benchmark
that measures its table (benchmarks/calibration.py).

A study follows the demo (configs/demo.yaml): PyTorch BN and the six variants, BN and GN at a
second batch size, K seeds each (the same seed ids, as a study trains them), N validation
images of two classes. Per image i, run r and seed s the model is right with probability

    sigmoid(beta_i + delta_r + alpha_rs + gamma_ri),
    beta_i ~ N(MU, SB²) (image difficulty, shared by every run),  alpha_rs ~ N(0, SA_r²)
    (the seed effect),  gamma_ri ~ N(0, SG²) (a run × image interaction: which images a
    variant finds hard; 0 unless a scenario sets it).

MU, SB, SA give the demo's scale: about 46 % accuracy and a seed-to-seed spread of about 4
points at N = 150 (2.5 from the seed effect, the rest the seed-by-image luck). A run that
learns nothing (`chance`) is right with a fixed probability on every image, whatever its
seed; a diverged seed (`diverged`) is scored at chance too (its best checkpoint before the
divergence). `wide_sa` gives the seed effect at which a run's seed-to-seed spread of scores
is a multiple of the others'. Studies are drawn in batches as boolean arrays (studies, runs,
seeds, images).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize
from scipy.special import expit

MU, SB, SA = -0.2, 1.5, 0.15
K, N_IMAGES = 3, 150
VARIANTS = ["torch_bn", "bn", "in", "bin", "ln", "gn", "nn"]
SIX = VARIANTS[1:]
RUNS = VARIANTS + ["bn_b8", "gn_b8"]
TOLERANCE = 0.05  # the demo's sanity tolerance (5 points)
CHANCE = 0.1      # a run that learns nothing, or a diverged seed: 10 classes, guessed
INTERACTION = {"gn_b8": 1.0, "gn": -1.0, "bn_b8": -1.0, "bn": 1.0}
_X, _W = np.polynomial.hermite_e.hermegauss(80)
_W = _W / _W.sum()


def expected_acc(delta: float, sa: float = SA, sg: float = 0.0) -> float:
    """A run's expected accuracy over images, seeds (and the run × image effect)."""
    return float(np.sum(_W * expit(MU + math.sqrt(SB**2 + sa**2 + sg**2) * _X + delta)))


def seed_sd(sa: float, n: int) -> float:
    """The seed-to-seed SD of a run's score on n images: the seed effect's spread of the
    expected accuracy plus the seed-by-image luck (quadrature over seeds and images)."""
    z = MU + SB * _X[:, None] + sa * _X[None, :]            # images × seeds
    p = expit(z)
    by_seed = _W @ p                                         # E over images, per seed
    luck = float(_W @ (p * (1 - p)) @ _W) / n
    return math.sqrt(float(_W @ (by_seed - _W @ by_seed) ** 2) + luck)


@functools.lru_cache(maxsize=None)
def wide_sa(ratio: float, n: int) -> float:
    """The seed effect SD at which a run's seed-to-seed spread is `ratio` × the others'."""
    target = ratio * seed_sd(SA, n)
    return optimize.brentq(lambda sa: seed_sd(sa, n) - target, SA, 20 * SA)


def draw(rng: np.random.Generator, studies: int, *, n: int = N_IMAGES, k: int = K,
         deltas: dict[str, float] | None = None, sa: dict[str, float] | None = None,
         sg: float = 0.0, runs: list[str] = RUNS, chance: tuple[str, ...] = (),
         diverged: dict[str, int] | None = None) -> np.ndarray:
    """(studies, runs, k, n) booleans: which images each (run, seed) gets right."""
    delta = np.array([(deltas or {}).get(r, 0.0) for r in runs])
    sd = np.array([(sa or {}).get(r, SA) for r in runs])
    beta = MU + SB * rng.standard_normal((studies, 1, 1, n), dtype=np.float32)
    alpha = (sd[None, :, None] * rng.standard_normal((studies, len(runs), k)))[..., None]
    logit = beta + delta[None, :, None, None] + alpha.astype(np.float32)
    if sg:
        logit = logit + sg * rng.standard_normal((studies, len(runs), 1, n), dtype=np.float32)
    prob = expit(logit)
    for r, name in enumerate(runs):
        if name in chance:
            prob[:, r] = CHANCE
        prob[:, r, :(diverged or {}).get(name, 0)] = CHANCE
    return rng.random(logit.shape, dtype=np.float32) < prob
