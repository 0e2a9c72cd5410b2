"""Data-constrained law (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", eq. 5-7).

    R_D = max(D / U_D - 1, 0)                     N_opt(C_U): Chinchilla-optimal size for U_D tokens
    D'  = U_D + U_D R_D* (1 - exp(-R_D / R_D*))   U_N = min(N, N_opt(C_U)),  R_N = max(N / U_N - 1, 0)
    N'  = U_N + U_N R_N* (1 - exp(-R_N / R_N*))   L = E + A / N'^alpha + B / D'^beta

With alpha = beta, N_opt(C_U) = G^2 U_D. In general, inverting D_opt(C) = (C/6)^(alpha/(alpha+beta)) / G
(Hoffmann et al. 2022) gives log N_opt(C_U) = (1 + beta/alpha) log G + (beta/alpha) log U_D.
R_D*, R_N* are fitted on a linear scale, as in the paper's code. U_D is the unique data *seen*,
min(unique tokens available, D).
"""

from __future__ import annotations

import numpy as np

from scaling.laws.base import Law, LawData, log_sum_exp3
from scaling.laws.chinchilla import EPOCH_GRID

#: The paper's start grid for R_D*, R_N* ({0, 6.67, 13.3, 20}; zeros give NaN and are skipped),
#: widened over several decades so that the global optimum of a flat valley is found too.
R_STAR_GRID = np.unique(np.concatenate([[6.67, 13.3, 20.0], np.geomspace(0.3, 3000.0, 13)]))


def effective_data(tokens, unique_tokens, rd_star):
    """D' (Muennighoff et al. 2023, eq. 5): repeated tokens decay in value with e-folding R_D*."""
    unique_tokens = np.minimum(unique_tokens, tokens)
    repeats = np.maximum(np.asarray(tokens, float) / unique_tokens - 1.0, 0.0)
    return unique_tokens + unique_tokens * rd_star * (1.0 - np.exp(-repeats / rd_star))


class DataConstrained(Law):
    name = "data-constrained"
    fit_names = ("a", "b", "e", "alpha", "beta", "rd_star", "rn_star")
    public_names = ("A", "B", "E", "alpha", "beta", "rd_star", "rn_star")
    bounds = {"a": (-20.0, 60.0), "b": (-20.0, 60.0), "e": (-20.0, 5.0),
              "alpha": (1e-3, 5.0), "beta": (1e-3, 5.0),
              "rd_star": (1e-3, 1e5), "rn_star": (1e-3, 1e5)}
    required = ("params", "tokens", "unique_tokens")

    def log_predict(self, theta, data: LawData, grad=False):
        theta = np.atleast_2d(theta)
        a, b, e, alpha, beta, rd, rn = (theta[:, i:i + 1] for i in range(7))
        # U_D counts unique tokens *seen*: a run shorter than its unique pool sees only D of them
        N, logN, U = data.params, data.log_params, np.minimum(data.unique_tokens, data.tokens)
        logU = np.log(U)

        # effective data D'
        R_D = np.maximum(data.tokens / U - 1.0, 0.0)
        q = np.exp(-R_D / rd)
        D_eff = U * (1.0 + rd * (1.0 - q))
        logD_eff = np.log(D_eff)

        # effective parameters N': U_N = min(N, N_opt(C_U))
        logG = (np.log(alpha) + a - np.log(beta) - b) / (alpha + beta)
        log_nopt = (1.0 + beta / alpha) * logG + (beta / alpha) * logU
        active = log_nopt < logN
        logU_N = np.where(active, log_nopt, logN)
        U_N = np.exp(logU_N)
        R_N = np.maximum(N / U_N - 1.0, 0.0)
        p = np.exp(-R_N / rn)
        N_eff = U_N * (1.0 + rn * (1.0 - p))
        logN_eff = np.log(N_eff)

        pred, wa, wb, we = log_sum_exp3(a - alpha * logN_eff, b - beta * logD_eff, e)
        if not grad:
            return pred

        dlogD_drd = (U / D_eff) * ((1.0 - q) - (R_D / rd) * q)
        dlogN_drn = (U_N / N_eff) * ((1.0 - p) - (R_N / rn) * p)
        # d log N' / d log U_N, only where U_N = N_opt(C_U) (otherwise U_N = N is data)
        dlogN_dlogUN = np.where(active, (U_N / N_eff) * (1.0 + rn * (1.0 - p) - p * N / U_N), 0.0)
        dlogG_dalpha = (1.0 / alpha - logG) / (alpha + beta)
        dlogG_dbeta = (-1.0 / beta - logG) / (alpha + beta)
        dnopt_da = 1.0 / alpha
        dnopt_dalpha = (-(beta / alpha**2) * logG + (1.0 + beta / alpha) * dlogG_dalpha
                        - (beta / alpha**2) * logU)
        dnopt_dbeta = (logG / alpha + (1.0 + beta / alpha) * dlogG_dbeta + logU / alpha)

        via_n = -wa * alpha * dlogN_dlogUN   # d pred / d log U_N
        grads = [
            wa + via_n * dnopt_da,
            wb - via_n * dnopt_da,
            we,
            -wa * logN_eff + via_n * dnopt_dalpha,
            -wb * logD_eff + via_n * dnopt_dbeta,
            -wb * beta * dlogD_drd,
            -wa * alpha * dlogN_drn,
        ]
        return pred, grads

    def start_values(self) -> dict[str, np.ndarray]:
        grid = dict(EPOCH_GRID)
        grid["alpha"] = np.clip(grid["alpha"], 0.1, None)
        grid["beta"] = np.clip(grid["beta"], 0.1, None)
        grid["alpha"], grid["beta"] = np.unique(grid["alpha"]), np.unique(grid["beta"])
        grid["rd_star"] = R_STAR_GRID
        grid["rn_star"] = R_STAR_GRID
        return grid

    def effective_data(self, params, tokens, unique_tokens):
        return effective_data(tokens, unique_tokens, params["rd_star"])
