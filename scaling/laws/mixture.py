"""Data mixing law (Ye et al. 2024, "Data Mixing Laws: Optimizing Data Mixtures by Predicting
Language Modeling Performance"), the small scaling form it is nested with, and effective mixtures
under repetition (Muennighoff et al. 2023).

Per validation domain i, over training proportions r (summing to 1):

    L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)

Fitted like the scaling laws: log-loss predicted as LSE(log c_i, log k_i + t_i . r), Huber on
log-loss. Because sum_j r_j = 1, adding s to every t_ij and dividing k_i by e^s changes nothing: the
law is stored in the canonical form sum_j t_ij = 0, where k_i is the reducible loss at the uniform
mixture (``normalise`` maps any (k, t) there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.accounting import flops
from scaling.laws.base import Law, LawData
from scaling.laws.data_constrained import effective_data

#: warm starts of the mixing law: c at these fractions of the smallest loss (0: a pure exponential)
C_FRACTIONS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98)


def normalise(k, t):
    """(k, t) -> the same law with sum_j t_j = 0 (Ye et al.'s form is invariant to a shift of t)."""
    t = np.asarray(t, float)
    shift = t.mean(axis=-1, keepdims=True)
    return np.asarray(k, float) * np.exp(shift[..., 0]), t - shift


@dataclass
class Proportions:
    """What the mixing law reads: proportions [n, M] (a stand-in for ``LawData``)."""

    r: np.ndarray

    def __len__(self):
        return len(self.r)


class MixingLaw(Law):
    """L_i(r) for one validation domain over mixture components ``domains`` (Ye et al. 2024).

    Fit space: e = log c, a = log k, t (one per component; kept summing to 0 by the fitter's free
    coordinates, see ``sum_zero_map``).
    """

    name = "mixture"
    exp_params = ("e", "a")

    def __init__(self, domains):
        self.domains = tuple(domains)
        self.fit_names = ("e", "a", *(f"t.{d}" for d in self.domains))
        self.public_names = ("c", "k", *(f"t.{d}" for d in self.domains))
        self.bounds = {"e": (-30.0, 5.0), "a": (-30.0, 10.0), **{f"t.{d}": (-50.0, 50.0) for d in self.domains}}

    def log_predict(self, theta, data: Proportions, grad=False):
        theta = np.atleast_2d(theta)
        e, a, t = theta[:, :1], theta[:, 1:2], theta[:, 2:]
        s = a + t @ data.r.T                                   # [P, n]
        m = np.maximum(e, s)
        we, ws = np.exp(e - m), np.exp(s - m)
        total = we + ws
        pred = m + np.log(total)
        if not grad:
            return pred
        we, ws = we / total, ws / total
        return pred, [we, ws, *(ws * data.r[:, j] for j in range(data.r.shape[1]))]

    def sum_zero_map(self) -> tuple[np.ndarray, list[str]]:
        """Free coordinates -> fit space with the last t = -(sum of the others): the matrix ``M``
        of ``scaling.fit.Problem`` and the free names."""
        m = len(self.domains)
        M = np.zeros((2 + m, 1 + m))
        M[0, 0] = M[1, 1] = 1.0
        for j in range(m - 1):
            M[2 + j, 2 + j] = 1.0
            M[1 + m, 2 + j] = -1.0
        return M, list(self.fit_names[:2 + m - 1])

    def start_grid(self, loss, proportions=None, n_random: int = 7, seed: int = 0) -> np.ndarray:
        """Free-coordinate starts whose number grows linearly, not exponentially, with M.

        With ``proportions`` [n, M] (what the fitter passes): for c at fractions
        ``C_FRACTIONS`` of the smallest loss, log(L - c) = sum_j beta_j r_j is linear in r (sum r = 1)
        and least squares gives log k = mean(beta), t = beta - mean(beta) directly; each of those warm
        starts also goes out with ``n_random`` scrambled-Sobol perturbations of t (scale 1). At 17
        components that is 48 starts where the old grid had 15 * 3^16 = 6.5e8. Without proportions,
        a small grid over c and k with t = 0 (the uniform mixture's loss)."""
        loss = np.asarray(loss, float)
        m = len(self.domains)
        lo, span = float(loss.min()), float(np.ptp(loss)) + 1e-3 * float(loss.min())
        if proportions is None:
            e = np.log(lo * np.array([0.05, 0.3, 0.6, 0.85, 0.97]))
            a = np.log(span) + np.array([-2.0, 0.0, 2.0])
            ee, aa = np.meshgrid(e, a, indexing="ij")
            return np.c_[ee.ravel(), aa.ravel(), np.zeros((ee.size, m - 1))]
        r = np.asarray(proportions, float)
        starts = []
        from scipy.stats import qmc
        noise = (qmc.Sobol(max(m - 1, 1), scramble=True, seed=seed).random(8)[1:1 + n_random] - 0.5) * 2.0
        for f in C_FRACTIONS:
            c = f * lo
            beta, *_ = np.linalg.lstsq(r, np.log(np.maximum(loss - c, 1e-6 * lo)), rcond=None)
            log_k, t = float(beta.mean()), beta - beta.mean()
            base = np.r_[np.log(max(c, 1e-9 * lo)), log_k, t[:m - 1]]
            starts.append(base)
            for row in noise:
                starts.append(base + np.r_[0.0, 0.0, row[:m - 1]])
        return np.array(starts)

    def to_record(self, theta) -> dict:
        theta = np.asarray(theta, float)
        return {"c": float(np.exp(theta[0])), "k": float(np.exp(theta[1])), "t": [float(v) for v in theta[2:]]}

    def from_record(self, rec: dict) -> np.ndarray:
        k, t = normalise(rec["k"], rec["t"])
        return np.array([np.log(rec["c"]), np.log(k), *t])

    def loss(self, rec: dict, proportions) -> np.ndarray:
        """L_i at proportions [n, M] for a stored record {c, k, t}."""
        r = np.atleast_2d(np.asarray(proportions, float))
        return np.exp(self.log_predict(self.from_record(rec)[None, :], Proportions(r))[0])


class ComputeLaw(Law):
    """L(C) = E + A / C^gamma with C = 6 N D: the per-mixture scaling form when the runs of a mixture
    are too few to determine the Chinchilla law's two exponents (e.g. one isoFLOP line or three
    sizes). With E held at ~0 it is the pure power law used for two runs."""

    name = "compute"
    fit_names = ("a", "e", "gamma")
    public_names = ("A", "E", "gamma")
    exp_params = ("a", "e")
    bounds = {"a": (-30.0, 90.0), "e": (-30.0, 5.0), "gamma": (0.0, 3.0)}
    #: e held here makes the "power" form: E = e^-50, negligible
    NO_FLOOR = -50.0

    def log_predict(self, theta, data: LawData, grad=False):
        theta = np.atleast_2d(theta)
        a, e, gamma = theta[:, :1], theta[:, 1:2], theta[:, 2:3]
        log_c = np.log(flops(data.params, data.tokens))
        s = a - gamma * log_c
        m = np.maximum(s, e)
        ws, we = np.exp(s - m), np.exp(e - m)
        total = ws + we
        pred = m + np.log(total)
        if not grad:
            return pred
        ws, we = ws / total, we / total
        return pred, [ws, we, -ws * log_c]

    def start_values(self) -> dict[str, np.ndarray]:
        return {"a": np.arange(-5.0, 50.0, 5.0), "e": np.arange(-1.0, 2.0, 0.5),
                "gamma": np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8])}


@dataclass
class Effective:
    """A nominal mixture after repetition: per-domain tokens and epochs, effective tokens D'_j
    (Muennighoff et al. 2023, eq. 5), effective proportions D'_j / sum D' and the total D'."""

    tokens: np.ndarray            #: [C, M] r_j D
    epochs: np.ndarray            #: [C, M] tokens / unique tokens seen (1 when unlimited, 0 when unused)
    effective_tokens: np.ndarray  #: [C, M]
    proportions: np.ndarray       #: [C, M]
    total: np.ndarray             #: [C]


def effective_mixture(proportions, tokens: float, unique_tokens, rd_star: float) -> Effective:
    """Repeat domain j when r_j D > U_j; its tokens are then worth D'_j = U_j + U_j R_D*(1 - e^(-R/R_D*)),
    R = r_j D / U_j - 1. ``unique_tokens`` [M] uses inf for unlimited domains."""
    r = np.atleast_2d(np.asarray(proportions, float))
    d = r * float(tokens)
    u = np.broadcast_to(np.asarray(unique_tokens, float), d.shape)
    used = d > 0
    safe = np.where(used, d, 1.0)
    eff = np.where(used, effective_data(safe, u, rd_star), 0.0)
    epochs = np.where(used, safe / np.minimum(u, safe), 0.0)
    total = eff.sum(axis=1)
    return Effective(d, epochs, eff, eff / total[:, None], total)


def simplex_grid(m: int, max_points: int = 20000, max_steps: int = 1000) -> np.ndarray:
    """All proportions with denominators ``steps`` on the M-simplex, as fine as ``max_points`` allows."""
    from math import comb
    steps = max_steps
    while steps > 1 and comb(steps + m - 1, m - 1) > max_points:
        steps = int(steps * 0.9)
    if m == 1:
        return np.ones((1, 1))

    def compositions(total, parts):
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    return np.array(list(compositions(steps, m)), dtype=float) / steps


def _scaling_forms() -> dict:
    from scaling.laws.chinchilla import Chinchilla
    return {"chinchilla": (Chinchilla(), {}), "compute": (ComputeLaw(), {}),
            "power": (ComputeLaw(), {"e": ComputeLaw.NO_FLOOR})}


#: The per-mixture scaling laws of a nested mixture fit (Ye et al. 2024's step 1): name -> (law,
#: fixed parameters); ``power`` is the compute law without its floor.
SCALING_FORMS = _scaling_forms()

