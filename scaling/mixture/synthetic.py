"""A mixture study with a known truth, for tests and benchmarks of mixture designs: Ye et al. 2024's
law for three loss domains over three components at one scale, whose equal-weight optimum mixes the
first two (no share of the third). ``runs_at`` draws runs with log-normal noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.laws.mixture import MixingLaw, simplex_grid

DOMAINS = ("a", "b", "c")
TRUTH = {"a": {"c": 1.5, "k": 0.6, "t": [-1.5, 0.5, 1.0]},
         "b": {"c": 1.0, "k": 0.5, "t": [0.8, -2.0, 1.2]},
         "c": {"c": 2.0, "k": 0.4, "t": [0.4, 0.6, -1.0]}}
#: the scale of every run and the noise of its losses (log-normal sd)
N, D, NOISE = 1e7, 2e8, 0.01
LAW = MixingLaw(DOMAINS)


def runs_at(R, rng, noise: float = NOISE) -> pd.DataFrame:
    """One run per mixture (rows of ``R`` over ``DOMAINS``) at (N, D): ``mix.<d>`` and ``loss.<d>`` columns."""
    R = np.atleast_2d(np.asarray(R, float))
    t = pd.DataFrame({"params": N, "tokens": D, **{f"mix.{d}": R[:, j] for j, d in enumerate(DOMAINS)}})
    for d in DOMAINS:
        t[f"loss.{d}"] = LAW.loss(TRUTH[d], R) * np.exp(rng.normal(0, noise, len(R)))
    return t


def true_optimum_loss() -> float:
    """The lowest equal-weight mean loss over the simplex (a grid of step 1/200)."""
    return float(np.mean([LAW.loss(TRUTH[d], simplex_grid(3, 200)) for d in DOMAINS], axis=0).min())
