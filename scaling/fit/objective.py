"""The fitting objective and its solver glue: a law's Huber loss on log-loss residuals (Hoffmann et
al. 2022) as a ``Problem``, many starts screened and polished (``scaling.fit.solver``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from scaling.errors import FitError
from scaling.laws.base import Law, LawData
from scaling.fit.solver import batched_lbfgs, polish


DELTA = 1e-3


#: a parameter is flagged as not identifiable when moving it down to x1/3 or up to x3 of its estimate
#: (others re-optimised) changes the objective by less than this fraction
FLAT_PROFILE = 0.01


PROFILE_FACTORS = (1 / 3, 1 / 2, 2.0, 3.0)


#: distinct optima whose objective is within this fraction of the best are reported
HAIR = 1e-3


MAX_STARTS = 20000


#: above 2x this many points the start grid is screened on a subsample of this size, and the
#: ``SCREEN_KEEP`` best distinct endpoints continue on all points
SCREEN_POINTS = 256


SCREEN_KEEP = 48


BASE_NAMES = ("E", "A", "B", "alpha", "beta")


#: pairs of fit-space parameters that ``--tie`` may tie (of one kind, as the papers tie them)
TIEABLE = ({"alpha", "beta"}, {"rd_star", "rn_star"})


# --------------------------------------------------------------------------------------------
# The objective over free parameters
# --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """Huber-on-log-loss for one law on one data set, over the free coordinates ``z``:
    theta = base + z @ M.T (M maps free coordinates to fit-space parameters; tying puts two 1s in
    a column, fixing leaves a parameter out)."""

    law: Law
    data: LawData
    y: np.ndarray                   #: log-loss [n]
    base: np.ndarray                #: fit-space values [k] or per-start [P, k] for fixed parameters
    M: np.ndarray                   #: [k, f]
    free: list[str]                 #: free coordinate names (fit space; tied ones as "alpha=beta")
    weights: np.ndarray | None = None   #: per-start point weights [P, n] (bootstrap)
    delta: float = DELTA
    bound_overrides: dict | None = None   #: fit-space name -> (lo, hi), replacing the law's bounds

    def theta(self, z, rows=None):
        base = self.base if self.base.ndim == 1 or rows is None else self.base[rows]
        return base + np.atleast_2d(z) @ self.M.T

    def fun_grad(self, z, rows=None):
        pred, grads = self.law.log_predict(self.theta(z, rows), self.data, grad=True)
        r = pred - self.y
        psi = np.clip(r, -self.delta, self.delta)      # Huber'(r)
        h = psi * (r - 0.5 * psi)                        # Huber(r)
        if self.weights is not None:
            w = self.weights if rows is None else self.weights[rows]
            h, psi = h * w, psi * w
        g_theta = np.stack([(psi * gj).sum(axis=1) for gj in grads], axis=1)
        return h.sum(axis=1), g_theta @ self.M

    def fun_grad_1d(self, z):
        f, g = self.fun_grad(z[None, :])
        return float(f[0]), g[0]

    def bounds(self):
        lo, hi = self.law.bounds_array()
        for name, (a, b) in (self.bound_overrides or {}).items():
            i = self.law.fit_names.index(name)
            lo[i], hi[i] = max(lo[i], a), min(hi[i], b)
        col = self.M.astype(bool)
        return (np.array([lo[c].max() for c in col.T]), np.array([hi[c].min() for c in col.T]))

    def z_of(self, theta):
        """Free coordinates of a full fit-space vector (first mapped parameter of each column)."""
        return np.array([theta[np.flatnonzero(c)[0]] for c in self.M.T.astype(bool)])

    def start_grid(self) -> np.ndarray:
        values = self.law.start_values()
        per = [values[name.split("=")[0]] for name in self.free]
        n = int(np.prod([len(v) for v in per]))
        grid = np.array(list(itertools.product(*per)), dtype=float)
        if n > MAX_STARTS:   # deterministic thinning of very large products (joint 7-parameter fits)
            grid = grid[np.random.default_rng(0).choice(n, MAX_STARTS, replace=False)]
        return grid


def make_problem(law: Law, data: LawData, loss, fixed: dict[str, float], tie: list[tuple[str, str]],
                 weights=None, bounds: dict | None = None) -> Problem:
    """``fixed``: fit-space name -> fit-space value; ``tie``: pairs of fit-space names."""
    k = len(law.fit_names)
    index = {n: i for i, n in enumerate(law.fit_names)}
    fixed = dict(fixed)
    groups: list[list[str]] = []
    tied = {}
    for a, b in tie:
        if a in fixed or b in fixed:        # tied to a held parameter: hold both at that value
            value = fixed.get(a, fixed.get(b))
            fixed[a] = fixed[b] = value
            continue
        tied[b] = a
    for name in law.fit_names:
        if name in fixed or name in tied:
            continue
        groups.append([name] + [b for b, a in tied.items() if a == name and b not in fixed])
    M = np.zeros((k, len(groups)))
    for j, g in enumerate(groups):
        for name in g:
            M[index[name], j] = 1.0
    base = np.zeros(k)
    for name, value in fixed.items():
        base[index[name]] = value
    return Problem(law, data, np.log(np.asarray(loss, float)), base, M, ["=".join(g) for g in groups], weights,
                   DELTA, bounds)


# --------------------------------------------------------------------------------------------
# Solving
# --------------------------------------------------------------------------------------------
def solve(problem: Problem, starts: np.ndarray, n_polish: int = 5):
    """Best free vector, its objective, and the polished distinct candidates [(f, z), ...]."""
    lo, hi = problem.bounds()
    if len(starts) == 1:
        z, f = polish(problem.fun_grad_1d, np.clip(starts[0], lo, hi), lo, hi)
        return z, f, [(f, z)]
    n = len(problem.y)
    if n > 2 * SCREEN_POINTS and len(starts) > SCREEN_KEEP and problem.weights is None and problem.base.ndim == 1:
        # screen the start grid on a fixed random subsample of the points, then continue the best
        # distinct endpoints on all of them: the landscape's basins are the same, the cost per
        # iteration of thousands of starts is not (2,000 points: 6 s -> ~1.5 s)
        rows = np.sort(np.random.default_rng(0).choice(n, SCREEN_POINTS, replace=False))
        sub = Problem(problem.law, problem.data.take(rows), problem.y[rows], problem.base, problem.M,
                      problem.free, None, problem.delta, problem.bound_overrides)
        pre = batched_lbfgs(sub.fun_grad, starts, lo, hi, max_iter=100, ftol=1e-10, gtol=1e-7,
                            funnel=(5, 0.02, 32))
        order = [i for i in np.argsort(pre.f) if np.isfinite(pre.f[i])]
        _, first = np.unique(np.round(pre.x[order], 2), axis=0, return_index=True)
        starts = pre.x[np.asarray(order)[np.sort(first)][:SCREEN_KEEP]]
        res = batched_lbfgs(problem.fun_grad, starts, lo, hi, max_iter=100, ftol=1e-10, gtol=1e-7,
                            funnel=None)
    else:
        res = batched_lbfgs(problem.fun_grad, starts, lo, hi, max_iter=100, ftol=1e-10, gtol=1e-7,
                            funnel=(5, 0.02, 32))
    order = [i for i in np.argsort(res.f) if np.isfinite(res.f[i])]
    if not order:
        raise FitError("the fit failed from every start (non-finite objective); check the data")
    picked, seen = [], set()
    for i in order:
        key = tuple(np.round(res.x[i], 2))
        if key not in seen:
            seen.add(key)
            picked.append(i)
        if len(picked) == n_polish:
            break
    candidates = sorted((polish(problem.fun_grad_1d, res.x[i], lo, hi)[::-1] for i in picked),
                        key=lambda c: c[0])
    f_best, z_best = candidates[0]
    return z_best, f_best, candidates


#: convergence of the batched local fits (bootstrap refits, profile points)
LOCAL_FTOL, LOCAL_GTOL = 1e-12, 1e-9
#: the polish of the starts they leave unfinished: tight by default (scipy's ftol is absolute below
#: f = 1, and a Huber objective of small log residuals is ~1e-4: at 1e-12 the joint mixture law's
#: refits stopped 2% above their optimum); ``LOOSE_POLISH`` for laws of a few parameters whose
#: batched refits stop close enough (the nested mixture fit: the same intervals to 5 digits, in
#: 60% of the time)
TIGHT_POLISH, LOOSE_POLISH = (1e-15, 1e-12), (LOCAL_FTOL, LOCAL_GTOL)


def local_batch(problem: Problem, starts, lo=None, hi=None, polish_tol=TIGHT_POLISH):
    """A local fit from each start (each row of the problem: a bootstrap resample, a profile point).
    Starts the batched L-BFGS leaves unconverged after its iterations are polished one by one
    (``polish``): on an ill-conditioned law (Shukor et al.'s joint mixture law, ~20 parameters,
    where the batched steps crawl) a bootstrap refit stopped 0.1-2% above its resample's optimum,
    short of it along the flat directions, and the bootstrap interval of an extrapolated optimum
    came out ~8x narrower than the linearised one (docs/benchmarks.md, stop 32)."""
    blo, bhi = problem.bounds()
    lo = blo if lo is None else lo
    hi = bhi if hi is None else hi
    res = batched_lbfgs(problem.fun_grad, starts, lo, hi, max_iter=300, ftol=LOCAL_FTOL, gtol=LOCAL_GTOL,
                        funnel=None, merge_decimals=12)
    x, f = res.x, res.f
    P = len(x)
    lo_all, hi_all = np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape)
    for i in np.flatnonzero(res.unfinished if res.unfinished is not None else np.zeros(P, bool)):
        def one(z, i=i):
            fi, gi = problem.fun_grad(z[None, :], np.array([i]))
            return float(fi[0]), gi[0]
        xi, fi = polish(one, x[i], lo_all[i], hi_all[i], ftol=polish_tol[0], gtol=polish_tol[1])
        if np.isfinite(fi) and fi <= f[i]:
            x[i], f[i] = xi, fi
    return x, f
