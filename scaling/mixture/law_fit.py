"""Fitting the data mixing law (Ye et al. 2024) with the fitting layer's objective and optimiser:
one law per loss domain, globally from data-driven warm starts, or many targets at once (bootstrap
draws, token counts). Used by ``scaling.mixture`` and ``scaling.mixture.models``."""

from __future__ import annotations

import numpy as np

from scaling.fit.objective import LOOSE_POLISH, Problem, local_batch, solve
from scaling.laws.mixture import MixingLaw, Proportions


class _Targets(Problem):
    """Problem whose log-losses differ per start (``y`` [P, n]): many fits of the same mixtures
    (bootstrap draws, token counts) advance together in one batched L-BFGS."""

    def fun_grad(self, z, rows=None):
        y = self.y if rows is None else self.y[rows]
        pred, grads = self.law.log_predict(self.theta(z, rows), self.data, grad=True)
        r = pred - y
        psi = np.clip(r, -self.delta, self.delta)
        h = psi * (r - 0.5 * psi)
        if self.weights is not None:
            w = self.weights if rows is None else self.weights[rows]
            h, psi = h * w, psi * w
        g_theta = np.stack([(psi * gj).sum(axis=1) for gj in grads], axis=1)
        return h.sum(axis=1), g_theta @ self.M


def mixing_problem(law: MixingLaw, r, y, weights=None, cls=Problem) -> Problem:
    M, free = law.sum_zero_map()
    data = Proportions(np.asarray(r, float))
    return cls(law, data, np.asarray(y, float), np.zeros(M.shape[0]), M, free, weights)


def fit_mixing(law: MixingLaw, r, loss, start=None):
    """Global multi-start fit of L_i(r) (or a local one from fit-space ``start``): theta, objective."""
    problem = mixing_problem(law, r, np.log(loss))
    starts = law.start_grid(loss, r) if start is None else problem.z_of(start)[None, :]
    z, f, _ = solve(problem, starts)
    return problem.theta(z)[0], float(f)


def fit_mixing_batch(law: MixingLaw, r, log_loss, start_theta, weights=None) -> np.ndarray:
    """Local fits of many targets ``log_loss`` [P, n] at once, each from ``start_theta`` [P, k]."""
    problem = mixing_problem(law, r, log_loss, weights, cls=_Targets)
    starts = np.array([problem.z_of(t) for t in start_theta])
    z, f = local_batch(problem, starts, polish_tol=LOOSE_POLISH)
    theta = problem.theta(z)
    theta[~np.isfinite(f)] = np.nan
    return theta


