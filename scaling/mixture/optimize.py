"""The loss-minimising mixture at a target scale, under per-domain unique-data limits (Muennighoff
et al. 2023), bounds and a KL budget around a prior."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from scaling.mixture import models as mm
from scaling.accounting import parse_size
from scaling.errors import BadValue
from scaling.cli import DataError, UsageError
from scaling.laws.mixture import MixingLaw, effective_mixture, simplex_grid
from scaling.mixture.runs import SIZE_TOL
from scaling.mixture.result import MixtureFit, _interval
from scaling.mixture.predict import _losses, _mixing_at, _mixing_draws
from scaling.laws.mixture_scale import JointMixtureLaw


def _preset_rd_star() -> float:
    """R_D* of the C4 fit (Muennighoff et al. 2023), read from its preset ``fits/muennighoff2023_c4.json``."""
    from scaling.results import FitResult
    return float(FitResult.load("muennighoff2023_c4").params["rd_star"])


#: R_D* of the C4 fit, the default for repeated data of a domain (one source: the preset file)
RD_STAR = _preset_rd_star()


#: token counts at which the nested mixing law is refitted to price repeated data (interpolated in log D)
TOKEN_GRID = 24


#: optimum search: Dirichlet candidates for smooth predictors (then SLSQP) and for trees (RegMix:
#: mean of the TOP_K best)
SMOOTH_SAMPLES = 20000


TREE_SAMPLES = 100000


TOP_K = 100


@dataclass
class Constraints:
    """Where an optimum may lie: per-domain bounds and a KL ball around the prior (Olmix)."""

    prior: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    kl_max: float | None = None

    def kl(self, R) -> np.ndarray:
        R = np.atleast_2d(R)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(R > 0, R * np.log(R / self.prior), 0.0)
        return terms.sum(axis=1)

    def feasible(self, R, tol=1e-9) -> np.ndarray:
        R = np.atleast_2d(R)
        ok = ((R >= self.lo - tol) & (R <= self.hi + tol)).all(axis=1)
        if self.kl_max is not None:
            ok &= self.kl(R) <= self.kl_max + tol
        return ok

    def binding(self, r, tol=1e-4) -> list[str]:
        out = [f"min of {i}" for i in np.flatnonzero((self.lo > 0) & (r <= self.lo + tol))]
        out += [f"max of {i}" for i in np.flatnonzero((self.hi < 1) & (r >= self.hi - tol))]
        if self.kl_max is not None and self.kl(r)[0] >= self.kl_max - tol * max(1.0, self.kl_max):
            out.append("kl")
        return out


def dirichlet_samples(prior, n: int, rng) -> np.ndarray:
    """RegMix's candidate mixtures: Dirichlet draws around the prior, alpha = prior x M x f with
    the concentration factor f log-uniform in [0.1, 5] (sparse mixtures to near-prior ones)."""
    m = len(prior)
    f = np.exp(rng.uniform(np.log(0.1), np.log(5.0), n))[:, None]
    alpha = np.maximum(np.asarray(prior, float)[None, :] * m * f, 1e-3)
    g = rng.gamma(alpha)
    g_sum = g.sum(axis=1, keepdims=True)
    bad = g_sum[:, 0] <= 0
    g[bad] = np.asarray(prior, float)
    return g / np.where(bad[:, None], 1.0, g_sum)


#: mixture shares are multiples of this in grids and plans (``runners.mixgrid``, ``scaling.design``),
#: as published mixture tables are (to 3 decimals)
SHARE_STEP = 1e-3


def round_shares(R) -> np.ndarray:
    """Mixtures [C, M] rounded to ``SHARE_STEP``, each row still summing to 1 (the rounding remainder
    goes to its largest share): what a runner trains when it is given them."""
    R = np.round(np.clip(np.atleast_2d(np.asarray(R, float)), 0, 1) / SHARE_STEP) * SHARE_STEP
    R[np.arange(len(R)), R.argmax(axis=1)] += 1.0 - R.sum(axis=1)
    return R


def search_simplex(objective, cons: Constraints, smooth: bool, rng, n_samples: int | None = None,
                   top_k: int = TOP_K) -> tuple[np.ndarray, str]:
    """Minimise ``objective`` ([C, M] -> [C]) over feasible mixtures. Candidates: the prior, the
    simplex grid (small M) and Dirichlet draws around the prior. Smooth objectives: the best
    feasible candidate refined by SLSQP under the constraints; trees and ensembles: RegMix's mean
    of the ``top_k`` best candidates (a mean of feasible points is feasible: the box and the KL
    ball are convex). Returns (mixture, method)."""
    m = len(cons.prior)
    n_samples = n_samples or (SMOOTH_SAMPLES if smooth else TREE_SAMPLES)
    cands = [cons.prior[None, :], dirichlet_samples(cons.prior, n_samples, rng)]
    if m <= 6:
        cands.append(simplex_grid(m))
    R = np.vstack(cands)
    R = R[cons.feasible(R)]
    if not len(R):
        raise UsageError("no mixture satisfies the constraints (--min/--max/--kl-max): loosen them")
    vals = np.concatenate([objective(R[i:i + 20000]) for i in range(0, len(R), 20000)])
    order = np.argsort(vals)
    if not smooth:
        top = R[order[:min(top_k, len(R))]]
        return top.mean(axis=0), f"mean of the {len(top)} best of {len(R)} feasible Dirichlet samples (RegMix)"
    best = R[order[0]]
    constraints = [{"type": "eq", "fun": lambda r: r.sum() - 1.0}]
    if cons.kl_max is not None:
        constraints.append({"type": "ineq", "fun": lambda r: cons.kl_max - cons.kl(np.clip(r, 1e-12, 1))[0]})
    res = minimize(lambda r: float(objective(np.clip(r, 0, 1)[None])[0]), best, method="SLSQP",
                   bounds=list(zip(cons.lo, cons.hi)), constraints=constraints,
                   options={"ftol": 1e-12, "maxiter": 300})
    cand = np.clip(res.x, 0, 1)
    cand /= cand.sum()
    if cons.feasible(cand[None], tol=1e-6)[0] and objective(cand[None])[0] <= vals[order[0]]:
        return cand, f"best of {len(R)} feasible candidates, refined by SLSQP"
    return best, f"best of {len(R)} feasible candidates"


def _parse_domain_values(items, what, known, positive=True) -> dict[str, float]:
    out = {}
    for item in items or []:
        for part in str(item).split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep:
                raise UsageError(f"malformed {what} {part!r} (expected DOMAIN=VALUE, e.g. code=1)")
            if name not in known:
                raise UsageError(f"unknown domain {name!r} in {what} (fit has: {', '.join(known)})")
            try:
                out[name] = parse_size(value) if positive else float(value)
            except (UsageError, ValueError):
                raise UsageError(f"malformed {what} value {value!r} for {name}") from None
    return out


def make_constraints(fit: MixtureFit, prior="tokens", minimum=None, maximum=None, kl_max=None) -> Constraints:
    """``prior``: ``tokens`` (the mean mixture of the fitted runs: RegMix samples its proxies around
    the token distribution, so their mean is it), ``uniform``, a dict, or a JSON/CSV file of
    domain weights; ``minimum``/``maximum``: {domain: share}; ``kl_max``: KL(r || prior) bound."""
    m = len(fit.domains)
    if isinstance(prior, dict):
        given = prior
    elif prior == "uniform":
        given = {d: 1.0 / m for d in fit.domains}
    elif prior == "tokens":
        mean = fit.settings.get("mean_mixture") or {}
        given = mean if mean else {d: float(np.mean([mx["mix"][d] for mx in fit.mixtures])) for d in fit.domains} \
            if fit.mixtures else {d: 1.0 / m for d in fit.domains}
    else:
        given = _read_prior(prior)
    unknown = [d for d in given if d not in fit.domains]
    if unknown:
        raise UsageError(f"unknown domain(s) {', '.join(unknown)} in --prior (fit has: {', '.join(fit.domains)})")
    p = np.array([float(given.get(d, 0.0)) for d in fit.domains])
    if (p < 0).any() or not np.isfinite(p).all() or abs(p.sum() - 1.0) > 1e-3:
        raise BadValue("prior", f"{{arg}} must be non-negative weights over the fit's domains summing to 1 (sum {p.sum():.6g})")
    p = np.maximum(p / p.sum(), 1e-12)
    lo = np.array([float((minimum or {}).get(d, 0.0)) for d in fit.domains])
    hi = np.array([float((maximum or {}).get(d, 1.0)) for d in fit.domains])
    if (lo < 0).any() or (hi > 1).any() or (lo > hi).any() or lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9:
        raise UsageError("--min/--max must be shares in [0, 1] with min <= max, sum of mins <= 1 <= sum of maxes")
    if kl_max is not None and not (kl_max >= 0 and np.isfinite(kl_max)):
        raise BadValue("kl_max", "{arg} must be a non-negative number")
    return Constraints(p, lo, hi, kl_max)


def _read_prior(path) -> dict:
    f = Path(str(path))
    if not f.exists():
        raise BadValue("prior", f"{{arg}} {path}: not tokens, uniform or an existing file")
    try:
        if f.suffix.lower() == ".json":
            d = json.loads(f.read_text())
            d = d.get("train_domain_weights", d) if isinstance(d, dict) else d
        else:
            t = pd.read_csv(f)
            if t.shape[1] < 2:
                raise DataError(f"--prior {path}: a CSV prior has two columns, domain and weight "
                                f"(this one has {t.shape[1]})")
            d = dict(zip(t.iloc[:, 0].astype(str), pd.to_numeric(t.iloc[:, 1], errors="coerce")))
        return {str(k): float(v) for k, v in d.items()}
    except (OSError, ValueError, TypeError, AttributeError, RecursionError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read --prior {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def optimize_mixture(fit: MixtureFit, params: float, tokens: float, weights: dict | None = None,
                     unique_tokens: dict | None = None, rd_star: float = RD_STAR,
                     constraints: Constraints | None = None, seed: int = 0) -> dict:
    """Loss-minimising mixture at (N, D) for weights over loss domains (a weighted mean of L_i).

    Direct fits optimise their chosen predictors (``scaling.mixture.models``): smooth ones (law,
    log-linear) by SLSQP from the best of 20k Dirichlet candidates, trees and ensembles by RegMix's
    search (mean of the 100 best of 100k Dirichlet draws around the prior). ``constraints``: the
    prior, per-domain bounds and a KL-to-prior bound (Olmix).

    With unique-token limits U_j (nested fits), domain j's r_j D tokens are repeated when
    r_j D > U_j and count as D'_j (Muennighoff et al. 2023); the run then behaves like one on the
    effective mixture r'_j = D'_j / sum D' with sum D' tokens, so L_i is evaluated at r' and at that
    token count (nested fits are refitted over a token grid down to the smallest sum D' of the
    candidates). ``mixture`` is the nominal share of training tokens. A moderate limit can *raise*
    the nominal share of the scarce domain (oversampling makes up for repeats being worth less); a
    tight one lowers it, since repeats beyond a few R_D* are worth almost nothing.
    """
    if not (params > 0 and tokens > 0):
        raise UsageError("--params and --tokens must be positive")
    if not rd_star > 0:
        raise BadValue("rd_star", "{arg} must be positive")
    weights = dict(weights) if weights else {d: 1.0 for d in fit.loss_domains}
    for what, given, known in (("--weights", weights, fit.loss_domains),
                               ("--unique-tokens", unique_tokens or {}, fit.domains)):
        bad = [d for d in given if d not in known]
        if bad:
            raise UsageError(f"unknown domain {bad[0]!r} in {what} (fit has: {', '.join(known)})")
    if any(v < 0 or not np.isfinite(v) for v in weights.values()) or sum(weights.values()) <= 0:
        raise BadValue("weights", "{arg} must be non-negative with a positive sum")
    if any(not v > 0 for v in (unique_tokens or {}).values()):
        raise BadValue("unique_tokens", "{arg} must be positive")
    if unique_tokens and fit.kind == "direct":
        raise BadValue("unique_tokens", "{arg} needs a nested fit: a direct fit has no token dimension to price "
                         "repeated data (fit runs at two or more scales)")
    cons = constraints or make_constraints(fit)
    rng = np.random.default_rng(seed)
    total_w = sum(weights.values())
    w = {d: weights.get(d, 0.0) / total_w for d in fit.loss_domains}
    warnings = _range_warnings(fit, params, tokens)
    law = MixingLaw(fit.domains)
    limits = np.array([(unique_tokens or {}).get(d, np.inf) for d in fit.domains])
    used = [d for d in fit.loss_domains if w[d] > 0]
    # the law's own path (and its bootstrap intervals) unless some used domain chose another predictor
    predictors = fit.kind == "direct" and bool(fit.predictors) and any(
        fit.predictors[d]["model"] != "law" for d in used)
    smooth = not predictors or all(fit.predictors[d]["model"] in ("law", "log-linear") for d in used)
    joint = JointMixtureLaw(fit.domains) if fit.kind == "joint" else None
    if fit.kind == "nested" and unique_tokens:
        probe = np.vstack([cons.prior[None], dirichlet_samples(cons.prior, 2000, np.random.default_rng(seed))])
        lowest = effective_mixture(probe, tokens, limits, rd_star).total.min()
    else:
        lowest = tokens
    token_grid = np.geomspace(lowest, tokens, TOKEN_GRID) if lowest < tokens * (1 - 1e-9) else np.array([tokens])
    # the joint law has D in it: no refit at the target; ``thetas`` are then its records by domain
    at = None if joint is not None else _mixing_at(fit, params, token_grid)

    def per_domain(thetas, R):
        if predictors:
            return {d: mm.predict(fit.predictors[d], R, law) for d in fit.loss_domains}
        eff = effective_mixture(R, tokens, limits, rd_star)
        if joint is not None:
            return {d: joint.predict(thetas[d], params, eff.total, eff.proportions) for d in fit.loss_domains}
        return _losses(law, thetas, np.log(at.tokens), eff.proportions, np.log(eff.total))

    def solve_for(thetas, rng_):
        def objective(R):
            per = per_domain(thetas, R)
            return sum(w[d] * per[d] for d in used)
        r, method = search_simplex(objective, cons, smooth, rng_)
        per = {d: float(v[0]) for d, v in per_domain(thetas, r[None]).items()}
        return r, float(sum(w[d] * per[d] for d in used)), per, method

    r, loss, per, method = solve_for(dict(fit.params) if joint is not None else at.thetas, rng)
    eff = effective_mixture(r[None], tokens, limits, rd_star)
    out = {"kind": fit.kind, "params": float(params), "tokens": float(tokens), "weights": w,
           "mixture": dict(zip(fit.domains, r.tolist())), "loss": loss, "losses": per,
           "model": {d: (fit.predictors[d]["model"] if fit.predictors else "law") for d in fit.loss_domains},
           "search": method, "prior": dict(zip(fit.domains, cons.prior.tolist())),
           "kl_to_prior": float(cons.kl(r)[0]),
           "epochs": dict(zip(fit.domains, eff.epochs[0].tolist())),
           "domain_tokens": dict(zip(fit.domains, eff.tokens[0].tolist())),
           "effective_tokens": dict(zip(fit.domains, eff.effective_tokens[0].tolist())),
           "effective_mixture": dict(zip(fit.domains, eff.proportions[0].tolist())),
           "unique_tokens": {d: float(v) for d, v in (unique_tokens or {}).items()},
           "rd_star": float(rd_star), "ci": None}
    if fit.kind == "direct" and fit.predictors:
        iv = {d: fit.predictors[d].get("interval", [np.nan, np.nan]) for d in fit.loss_domains}
        out["losses_interval"] = {d: [per[d] + iv[d][0], per[d] + iv[d][1]] for d in fit.loss_domains}
    for b in cons.binding(r):
        if b == "kl":
            warnings.append(f"the optimum lies on the --kl-max constraint (KL to the prior {out['kl_to_prior']:.3g})")
        else:
            kind_, j = b.split(" of ")
            d = fit.domains[int(j)]
            warnings.append(f"the optimum lies on the --{kind_} constraint of {d} ({r[int(j)]:.3g})")
    lo_hi = fit.range.get("mix", {})
    for d, v in out["effective_mixture"].items():
        if d in lo_hi and not lo_hi[d][0] - 1e-9 <= v <= lo_hi[d][1] + 1e-9:
            warnings.append(f"the optimal proportion of {d} ({v:.3g}) lies outside the trained range "
                            f"[{lo_hi[d][0]:.3g}, {lo_hi[d][1]:.3g}]: the predictor extrapolates")
    if fit.boot and not predictors:
        if joint is not None:
            draws = {d: [joint.record_of(row) for row in fit.boot["draws"][d]] for d in fit.loss_domains}
        else:
            draws = _mixing_draws(fit, at, params)
        results = []
        for b in range(min(len(v) for v in draws.values())):
            th = {d: draws[d][b] for d in fit.loss_domains}
            if joint is not None or all(np.isfinite(t).all() for t in th.values()):
                results.append(solve_for(th, np.random.default_rng(seed + 1 + b))[:3])
        if results:
            out["ci"] = {"mixture": {d: _interval([x[0][j] for x in results]) for j, d in enumerate(fit.domains)},
                         "loss": _interval([x[1] for x in results]),
                         "losses": {d: _interval([x[2][d] for x in results]) for d in fit.loss_domains},
                         "draws": len(results)}
    out["warnings"] = warnings
    return out


def _range_warnings(fit: MixtureFit, params, tokens) -> list[str]:
    out = []
    for name, value in (("params", params), ("tokens", tokens)):
        lo, hi = fit.range.get(name, (None, None))
        if lo is None:
            continue
        if fit.kind == "direct" and not (lo * (1 - SIZE_TOL) <= value <= hi * (1 + SIZE_TOL)):
            out.append(f"target {name} {value:.4g} differs from the fitted scale [{lo:.4g}, {hi:.4g}]: a direct "
                       f"fit does not model scale, so this is the optimum at the fitted scale")
        elif fit.kind in ("nested", "joint") and not lo <= value <= hi:
            out.append(f"target {name} {value:.4g} is outside the fitted range [{lo:.4g}, {hi:.4g}]: "
                       + ("the per-mixture scaling laws extrapolate" if fit.kind == "nested"
                          else "the joint law extrapolates"))
    return out
