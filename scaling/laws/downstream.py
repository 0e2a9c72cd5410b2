"""Downstream law, step 2: a task's accuracy as a function of a smooth intermediate x (a task loss).

Step 1 (the intermediate from N and D) is the Chinchilla law of ``scaling.laws.chinchilla``, fitted
by ``scaling.fit``; this module holds the second step and nothing else. Both forms are written for
an accuracy-like score s in [0, 1] that falls as x rises (an error rate e is s = 1 - e):

* ``sigmoid`` (Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model
  Ladders", arXiv:2412.04403, their step 2): s(x) = b + a / (1 + exp(k (x - x0))), k > 0 (their
  a / (1 + exp(-k (L - L0))) + b with the sign of k made explicit). b, the accuracy left when x is
  large, is at least the task's chance level; the top b + a is at most 1 (a = (1 - b) u, u in
  [0, 1]); the fit includes their anchor point (x = 0, s = 1).
* ``exponential`` (Gadre et al. 2024, "Language models scale reliably with over-training and on
  downstream tasks", arXiv:2403.08540, Eq. 5): Err(x) = epsilon - k exp(-gamma x), i.e. s = 1 -
  epsilon + k exp(-gamma x); 1 - epsilon (the accuracy as x grows) at least the chance level.

Fitted by ``scipy.optimize.least_squares`` (bounded trust region) from a small grid of starts, on
the residuals s_pred - s: the objective the papers use (scipy's ``curve_fit``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

#: steepness bounds in units of 1/x (x is a loss in nats or bits: spans of 0.1 to 10)
K_BOUNDS = (1e-3, 1e3)
GAMMA_BOUNDS = (1e-4, 50.0)


def sigmoid(x, a, b, k, x0):
    """s(x) = b + a / (1 + exp(k (x - x0))) (Bhagia et al. 2024), overflow-safe."""
    z = np.clip(k * (np.asarray(x, dtype=float) - x0), -500.0, 500.0)
    return b + a / (1.0 + np.exp(z))


def exponential(x, epsilon, k, gamma):
    """s(x) = 1 - epsilon + k exp(-gamma x) (Gadre et al. 2024's Err(x) = epsilon - k exp(-gamma x))."""
    return 1.0 - epsilon + k * np.exp(-gamma * np.asarray(x, dtype=float))


@dataclass(frozen=True)
class Form:
    """One step-2 form: its public parameter names, the score function and how it is fitted."""

    name: str
    names: tuple[str, ...]
    citation: str

    def predict(self, params: dict, x) -> np.ndarray:
        fn = sigmoid if self.name == "sigmoid" else exponential
        return fn(x, *(float(params[n]) for n in self.names))

    def predict_many(self, draws: np.ndarray, x) -> np.ndarray:
        """Scores at ``x`` [n] (or one x per draw, [B]) for ``draws`` [B, k] of the public parameters."""
        x = np.asarray(x, dtype=float)
        cols = [draws[:, i:i + 1] for i in range(draws.shape[1])]
        if x.ndim == 1 and len(x) == len(draws):
            x = x[:, None]
        fn = sigmoid if self.name == "sigmoid" else exponential
        return fn(x, *cols)


FORMS = {
    "sigmoid": Form("sigmoid", ("a", "b", "k", "x0"), "Bhagia et al. 2024 (OLMo model ladder), step 2"),
    "exponential": Form("exponential", ("epsilon", "k", "gamma"), "Gadre et al. 2024, Eq. 5"),
}


@dataclass
class Step2Fit:
    form: str
    params: dict[str, float]
    cost: float                 #: half the sum of squared residuals (least_squares' cost)
    residual_sd: float          #: standard deviation of s - s_pred over the fitted points
    at_bounds: list[str]        #: parameters that ended on a bound


def _sigmoid_problem(x, floor):
    span = max(float(np.ptp(x)), 1e-3)
    lo = np.array([floor, 0.0, K_BOUNDS[0], float(x.min()) - 10 * span])
    hi = np.array([1.0, 1.0, K_BOUNDS[1], float(x.max()) + 10 * span])

    def public(theta):
        b, u, k, x0 = theta
        return {"a": (1.0 - b) * u, "b": b, "k": k, "x0": x0}

    def model(theta, xs):
        p = public(theta)
        return sigmoid(xs, p["a"], p["b"], p["k"], p["x0"])

    def starts(s):
        b0 = float(np.clip(min(s.min(), 1.0) - 0.01, floor, 1.0 - 1e-3))
        u0 = float(np.clip((s.max() - b0) / max(1.0 - b0, 1e-6), 0.05, 0.95))
        return [np.array([b0, u0, k / span, x0]) for k, x0 in
                itertools.product((1.0, 4.0, 16.0), np.quantile(x, [0.0, 0.5, 1.0]))]

    return lo, hi, public, model, starts


def _exponential_problem(x, floor):
    scale = max(float(np.mean(np.abs(x))), 1e-3)
    lo = np.array([0.0, 0.0, GAMMA_BOUNDS[0]])
    hi = np.array([1.0 - floor, np.inf, GAMMA_BOUNDS[1]])

    def public(theta):
        return {"epsilon": theta[0], "k": theta[1], "gamma": theta[2]}

    def model(theta, xs):
        return exponential(xs, *theta)

    def starts(s):
        eps0 = float(np.clip(1.0 - max(min(s.min(), 1.0) - 0.01, floor), 1e-3, 1.0 - floor))
        out = []
        for g in (0.25, 1.0, 4.0):
            gamma = min(g / scale, GAMMA_BOUNDS[1])
            xm, sm = float(np.median(x)), float(np.median(s))
            k0 = max(sm - (1.0 - eps0), 1e-3) * np.exp(min(gamma * xm, 50.0))
            out.append(np.array([eps0, k0, gamma]))
        return out

    return lo, hi, public, model, starts


def fit_step2(form: str, x, s, *, floor: float = 0.0, anchor: bool = False, weights=None,
              start: dict | None = None) -> Step2Fit:
    """Fit ``form`` to scores ``s`` at intermediates ``x``; ``floor``: the chance level (the
    lowest accuracy the form may approach); ``anchor``: add the point (0, 1) (the sigmoid's, as the
    OLMo ladder does); ``weights``: per point (bootstrap counts); ``start``: public parameters to
    start from alone (a warm start), else the grid of starts."""
    x, s = np.asarray(x, dtype=float), np.asarray(s, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = w > 0
    x_fit, s_fit, w_fit = x[keep], s[keep], w[keep]
    floor = float(np.clip(floor, 0.0, 0.999))
    if anchor:
        x_fit, s_fit, w_fit = np.append(x_fit, 0.0), np.append(s_fit, 1.0), np.append(w_fit, 1.0)
    lo, hi, public, model, starts = (_sigmoid_problem if form == "sigmoid" else _exponential_problem)(x[keep], floor)
    sw = np.sqrt(w_fit)

    def residuals(theta):
        return sw * (model(theta, x_fit) - s_fit)

    if start is not None:
        theta0 = _from_public(form, start, floor)
        candidates = [np.clip(theta0, lo, np.where(np.isfinite(hi), hi, theta0 + 1))]
    else:
        candidates = [np.clip(t, lo, np.where(np.isfinite(hi), hi, np.maximum(t, lo))) for t in starts(s_fit)]
    best = None
    for theta0 in candidates:
        try:
            res = least_squares(residuals, theta0, bounds=(lo, hi), method="trf", x_scale="jac",
                                xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
            best = res
    if best is None:
        raise ValueError("the step-2 fit failed from every start")
    p = {k: float(v) for k, v in public(best.x).items()}
    resid = model(best.x, x[keep]) - s[keep]
    span = np.where(np.isfinite(hi), hi - lo, np.abs(best.x) + 1.0)
    at = [n for n, v, a, b, sp in zip(_fit_names(form), best.x, lo, hi, span)
          if min(v - a, b - v) <= 1e-6 * max(sp, 1e-12) and n != "u"]
    return Step2Fit(form, p, float(best.cost), float(np.sqrt(np.average(resid ** 2, weights=w[keep]))), at)


def _fit_names(form: str) -> tuple[str, ...]:
    return ("b", "u", "k", "x0") if form == "sigmoid" else ("epsilon", "k", "gamma")


def _from_public(form: str, p: dict, floor: float) -> np.ndarray:
    if form == "sigmoid":
        b = max(float(p["b"]), floor)
        return np.array([b, float(p["a"]) / max(1.0 - b, 1e-9), float(p["k"]), float(p["x0"])])
    return np.array([float(p["epsilon"]), float(p["k"]), float(p["gamma"])])
