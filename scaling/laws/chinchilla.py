"""Chinchilla law, L(N, D) = E + A / N^alpha + B / D^beta.

Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", Approach 3; fitted as in
Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt"): log-loss predicted as
LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e.
"""

from __future__ import annotations

import itertools

import numpy as np

from scaling.laws.base import Law, LawData, log_sum_exp3

#: The replication's 4,500-point initialisation grid (Besiroglu et al. 2024):
#: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}.
EPOCH_GRID = {
    "a": np.arange(0, 30, 5.0),
    "b": np.arange(0, 30, 5.0),
    "e": np.arange(-1, 1.5, 0.5),
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
}


def grid_product(grid: dict[str, np.ndarray], names) -> np.ndarray:
    return np.array(list(itertools.product(*(grid[n] for n in names))), dtype=float)


class Chinchilla(Law):
    name = "chinchilla"
    fit_names = ("a", "b", "e", "alpha", "beta")
    public_names = ("A", "B", "E", "alpha", "beta")
    bounds = {"a": (-20.0, 60.0), "b": (-20.0, 60.0), "e": (-20.0, 5.0),
              "alpha": (0.0, 5.0), "beta": (0.0, 5.0)}

    def log_predict(self, theta, data: LawData, grad=False):
        theta = np.atleast_2d(theta)
        a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
        pred, wa, wb, we = log_sum_exp3(a - alpha * data.log_params, b - beta * data.log_tokens, e)
        if not grad:
            return pred
        return pred, [wa, wb, we, -wa * data.log_params, -wb * data.log_tokens]

    def start_values(self) -> dict[str, np.ndarray]:
        return dict(EPOCH_GRID)
