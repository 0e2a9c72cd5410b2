"""Which mixtures to train next so that the predicted loss of the best mixture becomes trustworthy
(issue 25's design for mixtures; ``python -m scaling.design RUNS --fit MIX.json --quantity mixture``).

The target is the loss of the loss-minimising mixture r* (``optimize_mixture``: a weighted mean of the
per-domain losses) at the fit's scale (a direct fit, Ye et al. 2024's law at one (N, D)) or at a
target (N, D) (a joint fit, Shukor et al. 2025's law across scales). Its variance is linearised in
each loss domain's law parameters: domain d's log-loss residuals have scatter sigma_d, each run adds
J_d^T J_d / sigma_d^2 to domain d's information, and by the envelope theorem the optimum's loss
moves with the parameters as the loss at a fixed r* does, so its gradient is
sum_d w_d L_d(r*) d log L_d(r*) / d theta_d. Candidate runs are mixtures (the prior, the optimum,
each pure component, Dirichlet draws around the prior as ``runners.mixgrid`` draws them) at the
scales of the runs, each costing 6ND; the plan is the budgeted greedy of ``scaling.design``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.errors import BadValue, DataError
from scaling.cli import UsageError
from scaling.laws.mixture import MixingLaw, Proportions
from scaling.laws.mixture_scale import JointMixtureLaw, MixScaleData
from scaling.mixture.optimize import dirichlet_samples, make_constraints, optimize_mixture, round_shares
from scaling.mixture.result import MixtureFit
from scaling.mixture.predict import proportions_for
from scaling.mixture.runs import SIZE_TOL, read_mixtures
from scaling.optimal_design import SELECTION, budgeted_greedy, target_variance
from scaling.intervals import Z95

#: Dirichlet candidates around the prior (besides the prior, the optimum and the pure components)
N_CANDIDATES = 256


class DomainLaw:
    """One loss domain's law as the design sees it: log-loss and its Jacobian in the fit's free
    coordinates at any (mixtures, N, D)."""

    def __init__(self, fit: MixtureFit, domain: str):
        if fit.kind == "joint":
            self.law = JointMixtureLaw(fit.domains)
            self.theta = self.law.to_fit(self.law.from_record(fit.params[domain]))
            self.M = np.eye(len(self.theta))
        else:
            self.law = MixingLaw(fit.domains)
            self.theta = np.asarray(self.law.from_record(fit.params[domain]), float)
            self.M, _ = self.law.sum_zero_map()
        self.joint = fit.kind == "joint"

    def _data(self, r, n, d):
        r = np.atleast_2d(np.asarray(r, float))
        if self.joint:
            return MixScaleData(np.broadcast_to(n, len(r)).astype(float), np.broadcast_to(d, len(r)).astype(float), r)
        return Proportions(r)

    def log_loss(self, r, n, d) -> np.ndarray:
        return self.law.log_predict(self.theta[None], self._data(r, n, d))[0]

    def jacobian(self, r, n, d) -> np.ndarray:
        """[runs, free parameters]: d log L / d (free coordinates)."""
        _, grads = self.law.log_predict(self.theta[None], self._data(r, n, d), grad=True)
        return np.stack([g[0] for g in grads], axis=1) @ self.M


def _scales(frame: pd.DataFrame) -> list[tuple[float, float]]:
    """(N, D) of each model size's longest run: where a new mixture run would be trained."""
    return [(float(n), float(d)) for n, d in frame.groupby("params")["tokens"].max().items()]


def target_scale(fit: MixtureFit, frame: pd.DataFrame, target: dict | None) -> tuple[float, float]:
    """A direct fit plans at its own scale; a joint fit needs the target (N, D)."""
    if fit.kind == "direct":
        n, d = float(np.median(frame["params"])), float(np.median(frame["tokens"]))
        if target and not (abs(target["params"] / n - 1) <= SIZE_TOL and abs(target["tokens"] / d - 1) <= SIZE_TOL):
            raise UsageError(f"a direct mixture fit is at one scale (N={n:.4g}, D={d:.4g}) and plans there: drop "
                             f"--target-params/--target-tokens, or fit runs at several scales with --kind joint")
        return n, d
    if not target:
        raise UsageError("a joint mixture fit plans for a target scale: give --target-params N --target-tokens D")
    return float(target["params"]), float(target["tokens"])


def candidate_mixtures(fit: MixtureFit, optimum: np.ndarray, n: int = N_CANDIDATES, seed: int = 0) -> np.ndarray:
    """The prior (the runs' mean mixture), the optimum, each pure component and ``n`` Dirichlet
    draws around the prior (``runners.mixgrid``'s proposal), rounded as ``round_shares`` rounds, distinct."""
    prior = make_constraints(fit).prior
    draws = dirichlet_samples(prior, n, np.random.default_rng(seed))
    # shares rounded as runners.mixgrid rounds them: two candidates a runner would train as one
    # mixture are one candidate
    R = round_shares(np.vstack([prior[None], optimum[None], np.eye(len(prior)), draws]))
    _, first = np.unique(np.round(R, 9), axis=0, return_index=True)
    return R[np.sort(first)]


def mixture_design(table: pd.DataFrame, fit: MixtureFit, *, target: dict | None, budget: float, k: int,
                   weights: dict | None = None, source: str = "data", n_candidates: int = N_CANDIDATES,
                   mixtures: np.ndarray | None = None, seed: int = 0, objective: str = "width") -> dict:
    """The plan (module docstring): the optimum and its loss now (bootstrap: the optimum re-found in
    each draw; and linearised), the expected interval after the proposed runs, the runs with their
    mixtures in the order chosen. ``mixtures``: the candidates ([C, M] over ``fit.domains``, e.g. the
    recipes a user can afford to run) instead of ``candidate_mixtures``."""
    if fit.kind not in ("direct", "joint"):
        raise DataError(f"a mixture design needs a direct or joint mixture fit; this one is {fit.kind} (it refits "
                        f"the mixing law at each target): fit with --kind joint (runs at several scales) or "
                        f"--kind direct (one scale)")
    if not fit.boot:
        raise DataError("the mixture fit has no bootstrap draws: refit it with --bootstrap 100 (python -m "
                        "scaling.mixture fit SOURCE --bootstrap 100 --out FIT.json)")
    runs = read_mixtures(table, fit.loss_domains, need_scale=True, source=source)
    frame = runs.frame
    r_runs = proportions_for(frame, fit, source)
    n_t, d_t = target_scale(fit, frame, target)
    opt = optimize_mixture(fit, n_t, d_t, weights=weights, seed=seed)
    w, used = opt["weights"], [d for d in fit.loss_domains if opt["weights"].get(d, 0) > 0]
    r_star = np.array([opt["mixture"][d] for d in fit.domains])

    laws = {d: DomainLaw(fit, d) for d in used}
    sizes = {d: laws[d].M.shape[1] for d in used}
    offset = dict(zip(used, np.cumsum([0] + [sizes[d] for d in used])[:-1]))
    total = sum(sizes.values())
    N, D = frame["params"].to_numpy(float), frame["tokens"].to_numpy(float)
    info, g, sigma, centre = np.zeros((total, total)), np.zeros(total), {}, 0.0
    for d in used:
        law, sl = laws[d], slice(offset[d], offset[d] + sizes[d])
        resid = np.log(runs.loss(d)) - law.log_loss(r_runs, N, D)
        dof = max(len(resid) - sizes[d], 1)
        sigma[d] = max(float(np.sqrt(np.sum(resid ** 2) / dof)), 1e-6)
        J = law.jacobian(r_runs, N, D)
        info[sl, sl] = J.T @ J / sigma[d] ** 2
        loss_d = float(np.exp(law.log_loss(r_star, n_t, d_t))[0])
        centre += w[d] * loss_d
        g[sl] = w[d] * loss_d * law.jacobian(r_star, n_t, d_t)[0]

    if mixtures is None:
        mixtures = candidate_mixtures(fit, r_star, n_candidates, seed)
    mixtures = np.atleast_2d(np.asarray(mixtures, float))
    if mixtures.shape[1] != len(fit.domains) or (mixtures < 0).any() or not np.allclose(mixtures.sum(axis=1), 1, atol=1e-3):
        raise DataError(f"candidate mixtures must be shares over {', '.join(fit.domains)} summing to 1")
    scales = [(n_t, d_t)] if fit.kind == "direct" else _scales(frame)
    cand_r = np.vstack([mixtures for _ in scales])
    cand_nd = np.repeat(np.array(scales, float), len(mixtures), axis=0)
    rows = np.zeros((len(cand_r), len(used), total))
    for i, d in enumerate(used):
        sl = slice(offset[d], offset[d] + sizes[d])
        rows[:, i, sl] = laws[d].jacobian(cand_r, cand_nd[:, 0], cand_nd[:, 1]) / sigma[d]
    costs = 6.0 * cand_nd[:, 0] * cand_nd[:, 1]
    cheapest = float(costs.min())
    if budget < cheapest:
        raise BadValue("budget", f"{{arg}} {budget:.3g} FLOPs buys none of the candidates (a run at the cheapest "
                                 f"scale costs {cheapest:.3g})")

    def variance(I):
        return target_variance(g, I)

    var0 = variance(info)
    current, left, picks = budgeted_greedy(variance, info, rows, costs, budget, k, var0, objective)

    def interval_of(var):
        half = Z95 * np.sqrt(max(var, 0.0))
        return [centre - half, centre + half]

    boot = (opt.get("ci") or {}).get("loss")
    chosen = [{"params": float(cand_nd[i, 0]), "tokens": float(cand_nd[i, 1]), "flops": float(costs[i]),
               "expected_gain": float(gain), "reason": "greedy",
               **{f"mix.{dm}": float(v) for dm, v in zip(fit.domains, cand_r[i])}} for i, gain in picks]
    return {"quantity": "mixture", "law": "mixture-scale" if fit.kind == "joint" else "mixture", "kind": fit.kind,
            "target": {"params": n_t, "tokens": d_t, "flops": 6.0 * n_t * d_t, "weights": w,
                       "mixture": opt["mixture"]},
            "prediction": centre, "optimum_loss_predictor": opt["loss"],
            "current_interval": [float(boot[0]), float(boot[1])] if boot else None,
            "current_interval_linearised": interval_of(var0), "expected_interval": interval_of(variance(current)),
            "residual_sd": sigma, "budget": float(budget), "flops_used": float(budget - left),
            "open_budgets": [], "candidates": int(len(cand_r)), "objective": objective, "selection": SELECTION,
            "warnings": list(opt.get("warnings") or []), "runs": chosen}
