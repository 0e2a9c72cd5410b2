"""Kaplan law, L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D.

Kaplan et al. 2020, "Scaling Laws for Neural Language Models", eq. 1.5 (their fit: alpha_N 0.076,
alpha_D 0.095, N_c 8.8e13, D_c 5.4e13 non-embedding parameters and tokens). No irreducible term: it
describes runs far above any floor, where loss falls as a power of N and D together; unlike
Chinchilla's additive form, the gain from more data grows with the model. Fitted in log space as
log L = alpha_D * LSE((alpha_N / alpha_D)(n_c - log N), d_c - log D), n_c = log N_c, d_c = log D_c.
"""

from __future__ import annotations

import numpy as np

from scaling.laws.base import Law, LawData


class Kaplan(Law):
    name = "kaplan"
    fit_names = ("n_c", "d_c", "alpha_n", "alpha_d")
    public_names = ("N_c", "D_c", "alpha_N", "alpha_D")
    exp_params = ("n_c", "d_c")
    bounds = {"n_c": (-20.0, 120.0), "d_c": (-20.0, 120.0), "alpha_n": (1e-3, 5.0), "alpha_d": (1e-3, 5.0)}
    #: ``--start`` fills the parameters it does not give from Kaplan et al.'s own fit (eq. 1.5)
    default_start = {"n_c": float(np.log(8.8e13)), "d_c": float(np.log(5.4e13)), "alpha_n": 0.076, "alpha_d": 0.095}

    def log_predict(self, theta, data: LawData, grad=False):
        theta = np.atleast_2d(theta)
        n_c, d_c, a_n, a_d = (theta[:, i:i + 1] for i in range(4))
        u = n_c - data.log_params
        z1 = (a_n / a_d) * u
        z2 = d_c - data.log_tokens
        m = np.maximum(z1, z2)
        e1, e2 = np.exp(z1 - m), np.exp(z2 - m)
        s = np.log(e1 + e2) + m
        pred = a_d * s
        if not grad:
            return pred
        w1 = e1 / (e1 + e2)
        w2 = 1.0 - w1
        return pred, [a_n * w1, a_d * w2, w1 * u, s - w1 * z1]

    def start_values(self) -> dict[str, np.ndarray]:
        return {"n_c": np.arange(5.0, 45.0, 5.0), "d_c": np.arange(5.0, 45.0, 5.0),
                "alpha_n": np.array([0.05, 0.1, 0.2, 0.4, 0.8]), "alpha_d": np.array([0.05, 0.1, 0.2, 0.4, 0.8])}

    def optimal(self, params: dict, flops):
        """Compute-optimal (N, D) at C = 6ND: minimising (N_c/N)^k + 6 D_c N / C with k = alpha_N/alpha_D
        gives N^(k+1) = k N_c^k C / (6 D_c) (Kaplan et al. 2020, §6 for their L(N, S) form; this is the
        same calculus on eq. 1.5)."""
        C = np.asarray(flops, dtype=float)
        k = params["alpha_N"] / params["alpha_D"]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            log_n = (np.log(k) + k * np.log(params["N_c"]) + np.log(C / 6.0) - np.log(params["D_c"])) / (k + 1.0)
            n = np.exp(log_n)
        return n, C / (6.0 * n)

    def params_exponent(self, params: dict) -> float:
        """N_opt grows as C^(alpha_D / (alpha_N + alpha_D))."""
        return float(params["alpha_D"] / (params["alpha_N"] + params["alpha_D"]))
