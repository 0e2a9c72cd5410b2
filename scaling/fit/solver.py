"""Batched, bounded L-BFGS in numpy: many starts of one small problem optimised in lock-step.

Why: the replication's procedure (Besiroglu et al. 2024) runs scipy L-BFGS-B 4,500 times, one start
after another, with numerical gradients. Here every start advances at once through array
operations with analytic gradients; starts that converge leave the active set, and starts that
fall onto an already-occupied point (same parameters to 1e-6) are merged, so late iterations cost
little. Bounds are handled by projection with the bound-active coordinates frozen (as in
projected-gradient L-BFGS); the winner is then polished by scipy's L-BFGS-B.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController


@dataclass
class BatchResult:
    x: np.ndarray          #: [P, k] final points
    f: np.ndarray          #: [P] final objectives (inf where the start failed)
    iterations: int
    evaluations: int       #: start-evaluations, summed over starts
    #: [P] starts still descending when ``max_iter`` ran out (not converged)
    unfinished: np.ndarray | None = None


def _projected_grad(x, g, lo, hi):
    pg = g.copy()
    at_lo = (x <= lo) & (g > 0)
    at_hi = (x >= hi) & (g < 0)
    pg[at_lo | at_hi] = 0.0
    return pg


def batched_lbfgs(fun_grad, x0, lo, hi, *, max_iter=400, memory=8, ftol=1e-13, gtol=1e-10,
                  merge_decimals=6, funnel=(10, 0.05, 64)) -> BatchResult:
    """Minimise ``fun_grad`` from every row of ``x0`` at once.

    ``fun_grad(X [p, k], rows [p]) -> (f [p], g [p, k])`` where ``rows`` says which starts the
    rows of X are (for per-start data weights); non-finite values mark a start as failed.
    ``lo``/``hi`` are [k] or per-start [P, k] bounds (equal bounds fix a coordinate).
    ``funnel = (iters, fraction, minimum)``: after ``iters`` iterations only the best ``fraction``
    of the still-active starts (at least ``minimum``) go on; the others keep the point they reached
    and stay candidates. None runs every start to convergence.
    """
    x0 = np.array(x0, dtype=float)
    P, k = x0.shape
    lo_all, hi_all = np.broadcast_to(lo, (P, k)), np.broadcast_to(hi, (P, k))
    x = np.clip(x0, lo_all, hi_all)
    f, g = fun_grad(x, np.arange(P))
    evaluations = P
    ok = np.isfinite(f) & np.isfinite(g).all(axis=1)
    f = np.where(ok, f, np.inf)
    S = np.zeros((P, memory, k))
    Y = np.zeros((P, memory, k))
    rho = np.zeros((P, memory))
    active = ok.copy()
    it = 0
    for it in range(1, max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xa, fa, ga = x[idx], f[idx], g[idx]
        lo, hi = lo_all[idx], hi_all[idx]
        pg = _projected_grad(xa, ga, lo, hi)
        free = pg != 0.0
        # two-loop recursion on the free coordinates
        q = pg.copy()
        Sa, Ya, ra = S[idx], Y[idx], rho[idx]
        Sf, Yf = Sa * free[:, None, :], Ya * free[:, None, :]   # the pairs on the free coordinates
        alphas = np.zeros((idx.size, memory))
        for j in range(memory):           # newest first (slot 0 is newest)
            aj = ra[:, j] * np.einsum("pk,pk->p", Sf[:, j], q)
            alphas[:, j] = aj
            q -= aj[:, None] * Yf[:, j]
        rho0, yy = ra[:, 0], np.einsum("pk,pk->p", Ya[:, 0], Ya[:, 0])
        first = ~((rho0 > 0) & (yy > 0))
        gamma = np.where(first, 1.0, 1.0 / np.where(first, 1.0, rho0 * yy))   # s'y / y'y
        r = q * gamma[:, None]
        for j in reversed(range(memory)):
            bj = ra[:, j] * np.einsum("pk,pk->p", Yf[:, j], r)
            r += (alphas[:, j] - bj)[:, None] * Sf[:, j]
        d = -r * free
        slope = np.einsum("pk,pk->p", d, ga)
        bad = ~(slope < 0)
        d[bad] = -pg[bad]
        slope[bad] = -np.einsum("pk,pk->p", pg[bad], pg[bad])
        # first step of a start with no history: unit length
        t = np.where(first, np.minimum(1.0, 1.0 / np.maximum(np.abs(d).max(axis=1), 1e-300)), 1.0)
        # backtracking (Armijo) line search on the projected path, only on starts that still fail
        x_new = np.empty_like(xa)
        f_new = np.full(idx.size, np.inf)
        g_new = np.empty_like(ga)
        pending = np.arange(idx.size)
        for _ in range(40):
            xt = np.clip(xa[pending] + t[pending, None] * d[pending], lo[pending], hi[pending])
            ft, gt = fun_grad(xt, idx[pending])
            evaluations += pending.size
            okt = np.isfinite(ft) & np.isfinite(gt).all(axis=1)
            decrease = np.einsum("pk,pk->p", ga[pending], xt - xa[pending])
            accept = okt & (ft <= fa[pending] + 1e-4 * np.minimum(decrease, 0.0))
            acc = pending[accept]
            x_new[acc], f_new[acc], g_new[acc] = xt[accept], ft[accept], gt[accept]
            pending = pending[~accept]
            if pending.size == 0:
                break
            t[pending] *= 0.25
        stalled = np.zeros(idx.size, bool)
        stalled[pending] = True
        x_new[pending], f_new[pending], g_new[pending] = xa[pending], fa[pending], ga[pending]

        s, y = x_new - xa, g_new - ga
        sy_new = np.einsum("pk,pk->p", s, y)
        upd = sy_new > 1e-12 * np.maximum(np.einsum("pk,pk->p", y, y), 1e-300)
        ui = idx[upd]
        S[ui] = np.roll(S[ui], 1, axis=1)
        Y[ui] = np.roll(Y[ui], 1, axis=1)
        rho[ui] = np.roll(rho[ui], 1, axis=1)
        S[ui, 0], Y[ui, 0], rho[ui, 0] = s[upd], y[upd], 1.0 / sy_new[upd]

        df = fa - f_new
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        pg_new = _projected_grad(x_new, g_new, lo, hi)
        done = stalled | (df <= ftol * np.maximum(np.abs(f_new), 1e-300)) | (np.abs(pg_new).max(axis=1) <= gtol)
        active[idx[done]] = False
        if funnel and it == funnel[0]:
            ai = np.flatnonzero(active)
            n_keep = max(int(funnel[2]), int(np.ceil(funnel[1] * ai.size)))
            if ai.size > n_keep:
                active[ai[np.argsort(f[ai])[n_keep:]]] = False
        # merge starts that arrived at the same point: keep one
        if it % 5 == 0:
            ai = np.flatnonzero(active)
            if ai.size > 1:
                _, first_of = np.unique(np.round(x[ai], merge_decimals), axis=0, return_index=True)
                keep = np.zeros(ai.size, bool)
                keep[first_of] = True
                active[ai[~keep]] = False
    return BatchResult(x, f, it, evaluations, active & (it == max_iter))


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's thread pools, looked up on first use and kept."""
    return ThreadpoolController()


def polish(fun_grad_1d, x0, lo, hi, maxiter=2000, ftol=1e-15, gtol=1e-12):
    """scipy L-BFGS-B from one point with tight tolerances and the analytic gradient.

    BLAS is held to one thread: L-BFGS-B's vectors are tiny, and a multi-threaded OpenBLAS on a
    busy 2-core machine made this step ~6x slower (21 s against 3.4 s for one mixture fit). The
    libraries are found once (``_blas``): finding them on every call cost ~3 ms, as much as a
    typical polish."""
    with _blas().limit(limits=1, user_api="blas"):
        res = minimize(fun_grad_1d, x0, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                       options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxcor": 20})
    return res.x, float(res.fun)

