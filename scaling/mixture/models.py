"""Predictors of a domain's loss from the mixture proportions, behind one interface, and their
choice by cross-validation.

* ``law``: the data mixing law of Ye et al. 2024, L(r) = c + k exp(t . r) (``scaling.laws.mixture``).
* ``log-linear``: log L = beta . r (Olmix's log-linear regressor; Ye et al.'s law with c = 0), by
  least squares with a small ridge.
* ``gbdt``: gradient-boosted trees (LightGBM), as RegMix (Liu et al. 2024) regresses proxy losses on
  mixture weights. Optional extra ``mixtures``.
* ``mean``: the training runs' mean loss, whatever the mixture: what knowing nothing about the
  mixture gives; the yardstick of calibration below, and the choice when nothing beats it.
* ensembles ``law+gbdt``, ``log-linear+gbdt``, ``law+log-linear+gbdt``: the mean of the members'
  standardised predictions (each member's predictions on its training runs scaled to mean 0, sd 1),
  mapped back to the loss scale with the training losses' mean and sd. Ranking by it is ranking by
  the mean z-score, which on public data ranked nearly as well as trees at the proxies' scale and
  better than either at 1,000x (the issue's measurement).

``cross_validate`` scores every candidate by k-fold cross-validation over the *runs given* (folds
by distinct mixture, so repeated seeds of a mixture never sit on both sides): Spearman's rank
correlation and MAE of the out-of-fold predictions. ``auto`` keeps, per domain, the candidate with
the highest CV Spearman (MAE breaks ties, then the simpler candidate) among the *calibrated* ones:
a candidate whose out-of-fold MAE exceeds the losses' own spread (the out-of-fold MAE of ``mean``,
in the same folds) is never chosen, whatever its rank (an ensemble whose law's t_ij reached -49 on
12 runs ranked 0.83 and missed by 1.4e4 nats); when none is, ``mean`` is. Intervals come from the same
folds: a prediction's 95% interval is the prediction plus the 2.5 and 97.5 percentiles of the
chosen candidate's out-of-fold residuals (a cross-validation conformal interval, Barber et al.
2021's CV+ in its simplest form), so every predictor, trees and ensembles included, has one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.cli import DataError, UsageError
from scaling.intervals import interval_list

MODELS = ("law", "log-linear", "gbdt", "mean")
ENSEMBLES = {"law+gbdt": ("law", "gbdt"), "log-linear+gbdt": ("log-linear", "gbdt"),
             "law+log-linear+gbdt": ("law", "log-linear", "gbdt")}
CANDIDATES = MODELS + tuple(ENSEMBLES)
CV_FOLDS = 5
RIDGE = 1e-6
#: LightGBM settings for tables of tens to thousands of proxy runs (a few features, small trees)
GBDT_PARAMS = dict(objective="regression", num_leaves=15, max_depth=4, learning_rate=0.05,
                   n_estimators=400, feature_fraction=0.9, lambda_l2=0.1, seed=0, deterministic=True,
                   num_threads=1, verbose=-1)


def lightgbm():
    try:
        import lightgbm as lgb
    except ImportError:
        raise UsageError("--model gbdt needs LightGBM, which is not installed: "
                         "pip install 'scaling-toolkit[mixtures]'") from None
    return lgb


def have_lightgbm() -> bool:
    try:
        import lightgbm  # noqa: F401
        return True
    except ImportError:
        return False


def members(name: str) -> tuple[str, ...]:
    return ENSEMBLES.get(name, (name,))


def needs_lightgbm(name: str) -> bool:
    return "gbdt" in members(name)


# --------------------------------------------------------------------------------------------
# one model: fit -> state (JSON-able), predict(state)
# --------------------------------------------------------------------------------------------
def _booster(state: dict):
    """The LightGBM booster of a gbdt state, parsed once and kept under a private key (``_``-keys
    are not saved; see ``public``)."""
    b = state.get("_booster")
    if b is None:
        b = state["_booster"] = lightgbm().Booster(model_str=state["model"])
    return b


def public(obj):
    """``obj`` without private (``_``-prefixed) keys, for saving."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [public(v) for v in obj]
    return obj


def fit_base(name: str, r, y, law=None, start=None) -> dict:
    """Fit one base model on proportions ``r`` [n, M] and losses ``y`` [n]."""
    r, y = np.asarray(r, float), np.asarray(y, float)
    if name == "law":
        from scaling.mixture.law_fit import fit_mixing
        theta, _ = fit_mixing(law, r, y, start=start)
        return law.to_record(theta)
    if name == "log-linear":
        A = r.T @ r + RIDGE * np.eye(r.shape[1])
        return {"beta": np.linalg.solve(A, r.T @ np.log(y)).tolist()}
    if name == "mean":
        return {"mean": float(np.mean(y))}
    if name == "gbdt":
        lgb = lightgbm()
        params = dict(GBDT_PARAMS, min_data_in_leaf=max(2, len(y) // 50), min_data_in_bin=1)
        n_rounds = params.pop("n_estimators")
        booster = lgb.train(params, lgb.Dataset(r, y, params={"verbose": -1, "min_data_in_bin": 1}),
                            num_boost_round=n_rounds)
        return {"model": booster.model_to_string(), "_booster": booster}
    raise UsageError(f"unknown model {name!r} (known: {', '.join(CANDIDATES)}, auto)")


def predict_base(name: str, state: dict, r, law=None) -> np.ndarray:
    r = np.atleast_2d(np.asarray(r, float))
    if name == "law":
        return law.loss(state, r)
    if name == "log-linear":
        return np.exp(r @ np.asarray(state["beta"], float))
    if name == "gbdt":
        return np.asarray(_booster(state).predict(r), float)
    if name == "mean":
        return np.full(len(r), float(state["mean"]))
    raise UsageError(f"unknown model {name!r}")


def combine(name: str, base_states: dict, r_train, y_train, law=None) -> dict:
    """The state of a candidate from fitted base states: a base model's own, or an ensemble's
    members plus the standardisation constants measured on the training runs."""
    if name not in ENSEMBLES:
        return {"model": name, "state": base_states[name]}
    scale = {}
    for m in ENSEMBLES[name]:
        p = predict_base(m, base_states[m], r_train, law)
        scale[m] = [float(p.mean()), float(p.std() or 1.0)]
    return {"model": name, "members": {m: base_states[m] for m in ENSEMBLES[name]}, "scale": scale,
            "y": [float(np.mean(y_train)), float(np.std(y_train) or 1.0)]}


def predict(candidate: dict, r, law=None) -> np.ndarray:
    """Loss predictions of a stored candidate (``combine``'s output) at proportions ``r``, held
    inside ``bounds`` (``with_bounds``) when the candidate carries them."""
    name = candidate["model"]
    if name not in ENSEMBLES:
        out = predict_base(name, candidate["state"], r, law)
    else:
        z = np.mean([(predict_base(m, s, r, law) - candidate["scale"][m][0]) / candidate["scale"][m][1]
                     for m, s in candidate["members"].items()], axis=0)
        out = candidate["y"][0] + candidate["y"][1] * z
    if "bounds" in candidate:
        out = np.clip(out, *candidate["bounds"]["loss"])
    return out


def with_bounds(candidate: dict, r_train, y_train) -> dict:
    """The candidate with the range it was trained on: the proportions' per-component range and a
    band of plausible losses, the training losses' range widened by itself on each side. A
    prediction is held inside the band (so no predictor, however it extrapolates, answers 32 nats
    for losses of 3), and mixtures outside the proportions' range are flagged (``outside``)."""
    r, y = np.atleast_2d(np.asarray(r_train, float)), np.asarray(y_train, float)
    lo, hi = float(np.min(y)), float(np.max(y))
    width = max(hi - lo, 1e-6 * max(abs(hi), 1.0))
    return {**candidate, "bounds": {"loss": [lo - width, hi + width], "r_min": r.min(axis=0).tolist(),
                                    "r_max": r.max(axis=0).tolist()}}


def outside(candidate: dict, r, tol: float = 1e-9) -> np.ndarray:
    """Rows of ``r`` outside the proportions the candidate was trained on (any component)."""
    b = candidate.get("bounds")
    r = np.atleast_2d(np.asarray(r, float))
    if not b:
        return np.zeros(len(r), bool)
    return ((r < np.asarray(b["r_min"]) - tol) | (r > np.asarray(b["r_max"]) + tol)).any(axis=1)


# --------------------------------------------------------------------------------------------
# cross-validation
# --------------------------------------------------------------------------------------------
def folds_of(mixture_ids, k: int = CV_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold index per run: distinct mixtures are shuffled and dealt round-robin into k folds."""
    ids = np.asarray(mixture_ids)
    uniq = np.unique(ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    fold_of = {uniq[j]: i % k for i, j in enumerate(order)}
    return np.array([fold_of[i] for i in ids])


def scores(y, pred) -> dict:
    """Spearman's and Pearson's correlations and the MAE of the finite predictions. pandas ranks
    (average ranks for ties, as scipy's ``spearmanr``): importing ``scipy.stats`` costs every
    ``scaling.mixture`` command ~0.7 s."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ok = np.isfinite(pred)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0 or np.ptp(y[ok]) == 0:
        return {"spearman": float("nan"), "pearson": float("nan"),
                "mae": float(np.mean(np.abs(pred[ok] - y[ok]))) if ok.any() else float("nan"), "n": int(ok.sum())}
    ys, ps = pd.Series(y[ok]), pd.Series(pred[ok])
    return {"spearman": float(ys.corr(ps, method="spearman")), "pearson": float(np.corrcoef(y[ok], pred[ok])[0, 1]),
            "mae": float(np.mean(np.abs(pred[ok] - y[ok]))), "n": int(ok.sum())}


def cross_validate(r, y, mixture_ids, names, law=None, k: int = CV_FOLDS, seed: int = 0,
                   law_start=None) -> dict:
    """Out-of-fold predictions and scores of each candidate in ``names``. Base models are fitted
    once per fold and shared by the ensembles. ``law_start`` (fit space) warm-starts the law's fold
    fits beside its own data-driven starts."""
    r, y = np.asarray(r, float), np.asarray(y, float)
    n_mix = len(np.unique(mixture_ids))
    k = min(k, n_mix)
    if k < 2:
        raise DataError(f"{n_mix} distinct mixture(s): cross-validation needs at least 2")
    fold = folds_of(mixture_ids, k, seed)
    bases = sorted({m for n in names for m in members(n)}, key=MODELS.index)
    oof = {n: np.full(len(y), np.nan) for n in names}
    for f in range(k):
        tr, te = fold != f, fold == f
        states = {}
        for b in bases:
            try:
                states[b] = fit_base(b, r[tr], y[tr], law, start=None) if b != "law" else \
                    _law_fold(law, r[tr], y[tr], law_start)
            except UsageError:
                raise
            except Exception:             # a base that cannot be fitted on a fold scores NaN there
                states[b] = None
        for n in names:
            if any(states[m] is None for m in members(n)):
                continue
            cand = combine(n, states, r[tr], y[tr], law)
            oof[n][te] = predict(cand, r[te], law)
    return {n: {**scores(y, oof[n]), "oof": oof[n]} for n in names}


def _law_fold(law, r, y, start):
    """The mixing law on one fold: its data-driven warm starts plus the full-data optimum."""
    from scaling.fit import solve
    from scaling.mixture.law_fit import mixing_problem
    problem = mixing_problem(law, r, np.log(y))
    starts = law.start_grid(y, r, n_random=0)
    if start is not None:
        starts = np.vstack([starts, problem.z_of(np.asarray(start, float))[None, :]])
    z, _, _ = solve(problem, starts)
    return law.to_record(problem.theta(z)[0])


def spread(cv: dict, y=None) -> float:
    """The losses' own spread: the out-of-fold MAE of ``mean`` when it was cross-validated, else
    the losses' mean absolute deviation."""
    if "mean" in cv and np.isfinite(cv["mean"]["mae"]):
        return float(cv["mean"]["mae"])
    y = np.asarray(y, float)
    y = y[np.isfinite(y)]
    return float(np.mean(np.abs(y - y.mean()))) if len(y) else float("nan")


def calibrated(cv: dict, y=None) -> list[str]:
    """Candidates whose out-of-fold MAE is finite and at most the losses' spread (``spread``)."""
    limit = spread(cv, y)
    return [n for n in cv if np.isfinite(cv[n]["mae"]) and cv[n]["mae"] <= limit * (1 + 1e-12)]


def choose(cv: dict, y=None) -> str:
    """Highest CV Spearman among the calibrated candidates (all of them when neither ``mean`` nor
    ``y`` says what calibrated is); then lower MAE; then the earlier (simpler) candidate; ``mean``
    when nothing else is calibrated."""
    def key(n):
        s = cv[n]["spearman"] if n != "mean" else np.nan        # a constant ranks nothing
        return (-(s if np.isfinite(s) else -np.inf), cv[n]["mae"] if np.isfinite(cv[n]["mae"]) else np.inf,
                CANDIDATES.index(n))
    pool = list(cv) if ("mean" not in cv and y is None) else calibrated(cv, y)
    others = [n for n in pool if n != "mean"]
    if others:
        return min(others, key=key)
    if pool:
        return pool[0]
    return min(cv, key=lambda n: (cv[n]["mae"] if np.isfinite(cv[n]["mae"]) else np.inf, CANDIDATES.index(n)))


def residual_interval(y, oof) -> list[float]:
    """2.5 and 97.5 percentiles of out-of-fold residuals (y - prediction)."""
    res = np.asarray(y, float) - np.asarray(oof, float)
    res = res[np.isfinite(res)]
    return interval_list(res) if len(res) else [0.0, 0.0]
