"""What the fitter needs from a law: parameter names, bounds, a start grid, and the log-prediction
with its analytic gradient, vectorised over many parameter vectors at once.

A law works in *fit space*: A = exp(a), B = exp(b), E = exp(e) (Hoffmann et al. 2022, Approach 3),
other parameters as they are. ``to_public`` maps a fit-space vector to the published names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LawData:
    """Columns a law reads, as float arrays (logs precomputed once per fit)."""

    params: np.ndarray
    tokens: np.ndarray
    unique_tokens: np.ndarray | None = None
    log_params: np.ndarray = field(init=False)
    log_tokens: np.ndarray = field(init=False)

    def __post_init__(self):
        self.params = np.asarray(self.params, dtype=float)
        self.tokens = np.asarray(self.tokens, dtype=float)
        if self.unique_tokens is not None:
            self.unique_tokens = np.asarray(self.unique_tokens, dtype=float)
        self.log_params = np.log(self.params)
        self.log_tokens = np.log(self.tokens)

    def take(self, index) -> "LawData":
        u = None if self.unique_tokens is None else self.unique_tokens[index]
        return LawData(self.params[index], self.tokens[index], u)

    def __len__(self):
        return len(self.params)


def log_sum_exp3(z1, z2, z3):
    """log(exp z1 + exp z2 + exp z3) and the softmax weights, stable for any magnitudes.

    Works in place on fresh temporaries (this is the fitter's inner loop); inputs are not modified.
    """
    m = np.maximum(z1, z2)
    np.maximum(m, z3, out=m)
    x1, x2, x3 = np.subtract(z1, m), np.subtract(z2, m), np.subtract(z3, m)
    np.exp(x1, out=x1)
    np.exp(x2, out=x2)
    np.exp(x3, out=x3)
    s = x1 + x2
    s += x3
    inv = np.reciprocal(s)
    np.log(s, out=s)
    s += m
    x1 *= inv
    x2 *= inv
    x3 *= inv
    return s, x1, x2, x3


class Law:
    """Base class; subclasses set the class attributes and implement ``log_predict``."""

    name: str = ""
    fit_names: tuple[str, ...] = ()      #: fit-space names, e.g. ("a", "b", "e", "alpha", "beta")
    public_names: tuple[str, ...] = ()   #: published names, e.g. ("A", "B", "E", "alpha", "beta")
    exp_params: tuple[str, ...] = ("a", "b", "e")   #: fit-space names stored as logs
    bounds: dict[str, tuple[float, float]] = {}
    required: tuple[str, ...] = ("params", "tokens")

    # --- name mapping -------------------------------------------------------------------
    def public_to_fit_name(self, name: str) -> str:
        """``A`` -> ``a``, ``alpha`` -> ``alpha``; case-insensitive on the public side."""
        for f, p in zip(self.fit_names, self.public_names):
            if name == p or name == f or name.lower() == p.lower():
                return f
        raise KeyError(name)

    def to_public(self, theta) -> dict[str, float]:
        out = {}
        for f, p, v in zip(self.fit_names, self.public_names, np.asarray(theta, dtype=float)):
            out[p] = float(np.exp(v)) if f in self.exp_params else float(v)
        return out

    def to_fit(self, public: dict[str, float]) -> np.ndarray:
        vals = []
        for f, p in zip(self.fit_names, self.public_names):
            v = float(public[p])
            vals.append(np.log(v) if f in self.exp_params else v)
        return np.array(vals)

    def public_value_to_fit(self, fit_name: str, value: float) -> float:
        return float(np.log(value)) if fit_name in self.exp_params else float(value)

    def bounds_array(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.bounds[n][0] for n in self.fit_names], dtype=float)
        hi = np.array([self.bounds[n][1] for n in self.fit_names], dtype=float)
        return lo, hi

    # --- numerics ----------------------------------------------------------------------
    def log_predict(self, theta: np.ndarray, data: LawData, grad: bool = False):
        """Predicted log-loss for each row of ``theta`` [P, k] at each point [n] -> [P, n];
        with ``grad``, also a list of k arrays [P, n]: d log-loss / d theta_j."""
        raise NotImplementedError

    def predict(self, params: dict[str, float], N, D, U=None):
        """Loss at (N, D[, U]) for published parameters; vectorised over numpy broadcasting."""
        N, D = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float))
        U = None if U is None else np.broadcast_to(np.asarray(U, float), N.shape)
        shape = N.shape
        data = LawData(N.ravel(), D.ravel(), None if U is None else U.ravel())
        theta = self.to_fit(params)[None, :]
        return np.exp(self.log_predict(theta, data)[0]).reshape(shape)

    #: a generic single start (fit space), for ``--start`` when a free parameter is not given
    default_start = {"a": 6.0, "b": 7.0, "e": 0.5, "alpha": 0.35, "beta": 0.35,
                     "rd_star": 15.0, "rn_star": 5.0}

    def start_values(self) -> dict[str, np.ndarray]:
        """Per-parameter start values (fit space); the fitter takes their product over free ones."""
        raise NotImplementedError

    def optimal(self, params: dict, flops):
        """Compute-optimal (N, D) at C = 6ND for published ``params`` (the law's closed form)."""
        from scaling.accounting import chinchilla_optimal
        return chinchilla_optimal(flops, params["E"], params["A"], params["B"], params["alpha"], params["beta"])

    def params_exponent(self, params: dict) -> float:
        """a in N_opt ~ C^a: beta / (alpha + beta) for Chinchilla's form (Hoffmann et al. 2022)."""
        return float(params["beta"] / (params["alpha"] + params["beta"]))
