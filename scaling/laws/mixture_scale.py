"""Joint mixture-scale law: a domain's loss from model size, training tokens and the mixture at once.

Shukor et al. 2025 ("Scaling Laws for Optimal Data Mixtures"), additive law, per target domain i:

    L_i(N, D, h) = E + A / N^alpha + B / D^beta + 1 / sum_j C_j h_j^gamma_j

with h the training mixture (proportions summing to 1), C_j >= 0, gamma_j >= 0. Fitted on every
run and checkpoint at once (Huber on log-loss, the toolkit's one fitter, ``scaling.fit``), so a
mixture trained at one size only still informs the law at others, unlike the nested fit (a
Chinchilla law per mixture, then the mixing law at the target scale; Ye et al. 2024).

Fit space: E, A, B, C_j as logs (e, a, b, c.<j>); alpha, beta, gamma.<j> as they are. A domain
with h_j = 0 contributes nothing to the sum (0^gamma = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scaling.laws.base import Law


@dataclass
class MixScaleData:
    """(N, D, proportions) of each point, logs precomputed; ``h`` [n, M] rows over the law's domains."""

    params: np.ndarray
    tokens: np.ndarray
    h: np.ndarray
    log_params: np.ndarray = field(init=False)
    log_tokens: np.ndarray = field(init=False)
    log_h: np.ndarray = field(init=False)          #: log h, 0 where h = 0 (masked by ``present``)
    present: np.ndarray = field(init=False)        #: h > 0

    def __post_init__(self):
        self.params = np.asarray(self.params, float)
        self.tokens = np.asarray(self.tokens, float)
        self.h = np.atleast_2d(np.asarray(self.h, float))
        self.log_params, self.log_tokens = np.log(self.params), np.log(self.tokens)
        self.present = self.h > 0
        self.log_h = np.log(np.where(self.present, self.h, 1.0))

    def take(self, index) -> "MixScaleData":
        return MixScaleData(self.params[index], self.tokens[index], self.h[index])

    def __len__(self):
        return len(self.params)


class JointMixtureLaw(Law):
    """Shukor et al. 2025's additive law over ``domains`` (the mixture's components)."""

    name = "mixture-scale"
    required = ("params", "tokens")

    def __init__(self, domains, loss_scale: float = 3.0):
        self.domains = list(domains)
        self.fit_names = ("e", "a", "alpha", "b", "beta", *(f"c.{d}" for d in self.domains),
                          *(f"gamma.{d}" for d in self.domains))
        self.public_names = ("E", "A", "alpha", "B", "beta", *(f"C.{d}" for d in self.domains),
                             *(f"gamma.{d}" for d in self.domains))
        self.exp_params = ("e", "a", "b", *(f"c.{d}" for d in self.domains))
        self.bounds = {"e": (-20.0, 5.0), "a": (-20.0, 60.0), "b": (-20.0, 60.0), "alpha": (0.0, 3.0),
                       "beta": (0.0, 3.0), **{f"c.{d}": (-30.0, 30.0) for d in self.domains},
                       **{f"gamma.{d}": (0.0, 5.0) for d in self.domains}}
        #: a typical loss of the data, so that the start grid begins near E
        self.loss_scale = float(loss_scale)

    def log_predict(self, theta, data: MixScaleData, grad=False):
        theta = np.atleast_2d(theta)
        k = len(self.domains)
        e, a, alpha, b, beta = (theta[:, i:i + 1] for i in range(5))
        c, gamma = theta[:, 5:5 + k], theta[:, 5 + k:5 + 2 * k]
        t_e = np.exp(e)                                             # [P, 1]
        t_a = np.exp(a - alpha * data.log_params)                   # [P, n]
        t_b = np.exp(b - beta * data.log_tokens)
        # u_pj = C_j h_pj^gamma_j, [P, n, k]; zero where h = 0
        u = np.exp(np.clip(c[:, None, :] + gamma[:, None, :] * data.log_h[None], -700, 700)) * data.present[None]
        s = u.sum(axis=2)
        m = 1.0 / s
        total = t_e + t_a + t_b + m
        pred = np.log(total)
        if not grad:
            return pred
        inv = 1.0 / total
        mm = -(m * m * inv)[:, :, None] * u                         # d log L / d c_j
        grads = [t_e * inv, t_a * inv, -t_a * data.log_params * inv, t_b * inv, -t_b * data.log_tokens * inv]
        grads += [mm[:, :, j] for j in range(k)]
        grads += [mm[:, :, j] * data.log_h[None, :, j] for j in range(k)]
        return pred, grads

    def predict(self, record: dict, N, D, h):
        """Loss at (N, D) for mixtures ``h`` [n, M] (rows over ``domains``), broadcast over N, D;
        ``record``: ``to_record``'s form."""
        h = np.atleast_2d(np.asarray(h, float))
        N, D = (np.broadcast_to(np.asarray(x, float), (len(h),)) for x in (N, D))
        theta = self.to_fit(self.from_record(record))[None, :]
        return np.exp(self.log_predict(theta, MixScaleData(N, D, h))[0])

    def predict_draws(self, draws, N, D, h) -> np.ndarray:
        """[B, n] losses for ``draws`` [B, k] of the public parameters (``public_names`` order)."""
        h = np.atleast_2d(np.asarray(h, float))
        N, D = (np.broadcast_to(np.asarray(x, float), (len(h),)) for x in (N, D))
        theta = np.array([self.to_fit(dict(zip(self.public_names, row))) for row in np.atleast_2d(draws)])
        return np.exp(self.log_predict(theta, MixScaleData(N, D, h)))

    def record_of(self, public_row) -> dict:
        """A row of public parameters (``public_names`` order) as ``to_record``'s form."""
        return self.to_record(self.to_fit(dict(zip(self.public_names, public_row))))

    def start_values(self) -> dict[str, np.ndarray]:
        """A small grid around plausible values (its product is every start): E at a third or
        four fifths of a typical loss, A and B over two scales, the exponents low and high; the
        mixture term starts flat (C_j = 1, gamma_j = 0.5) and is found by the descent."""
        out = {"e": np.log(self.loss_scale * np.array([0.3, 0.8])), "a": np.array([2.0, 6.0]),
               "alpha": np.array([0.25, 0.6]), "b": np.array([3.0, 8.0]), "beta": np.array([0.25, 0.6])}
        out.update({f"c.{d}": np.array([0.0]) for d in self.domains})
        out.update({f"gamma.{d}": np.array([0.5]) for d in self.domains})
        return out

    def to_record(self, theta) -> dict:
        """Fit-space vector -> the record kept in a fit file: E, A, alpha, B, beta, C and gamma by domain."""
        p = self.to_public(theta)
        return {"E": p["E"], "A": p["A"], "alpha": p["alpha"], "B": p["B"], "beta": p["beta"],
                "C": {d: p[f"C.{d}"] for d in self.domains}, "gamma": {d: p[f"gamma.{d}"] for d in self.domains}}

    def from_record(self, record: dict) -> dict:
        """A fit file's record -> public parameters (``to_fit`` takes them)."""
        out = {k: float(record[k]) for k in ("E", "A", "alpha", "B", "beta")}
        out.update({f"C.{d}": float(record["C"][d]) for d in self.domains})
        out.update({f"gamma.{d}": float(record["gamma"][d]) for d in self.domains})
        return out
