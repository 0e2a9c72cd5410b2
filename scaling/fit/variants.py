"""Variants of the Approach 3 law, and the rolling backtest that chooses among them.

Whether alpha and beta are tied, or E is kept away from zero, changes extrapolations by percents
(measured on public ladders; see docs/benchmarks.md), and no variant wins on every data set. So
the default is chosen on the user's own data, the way OLMo's model ladder validates a law by
"rollout": fit on the smaller scales, predict the next one up, and keep the variant that predicts
best. Only the data given to the fit are used: data that the user holds out (``scaling.backtest``)
never decide it.

Variants (``--variant NAME`` forces one):

* ``free``: E, A, B, alpha, beta all free (Hoffmann et al. 2022, Approach 3).
* ``tied``: alpha = beta. The stage-1 law of Muennighoff et al. 2023, and the form of Gadre et al.
  2024 ("Language models scale reliably with over-training and on downstream tasks"), whose
  L(C, M) = E + (a M^eta + b M^-eta) C^-eta with M = D/N is exactly this law with eta = alpha =
  beta, so it also covers over-trained runs (large D/N).
* ``free-efloor`` / ``tied-efloor``: the same with E >= ``E_FLOOR_FRACTION`` x the lowest loss in
  the data. A free fit can trade E against A and B and run E towards zero (0.12 nats was seen on a
  public ladder whose lowest loss was near 3): that says the curvature the data show is not enough
  to locate the irreducible loss, and such fits extrapolate as pure power laws. The floor is a
  guard rail, not physics: no measured language-model loss has had an irreducible part below half
  the lowest loss reached.

Rolling backtest: runs are ordered by compute (a ``budget`` column when present, else 6ND). Fold k
(k = 1 .. ``FOLDS``) fits on the runs below the (1 - k/10) compute quantile and scores the runs
between that cut and the next one up, by mean absolute percentage error of the loss. On an isoFLOP
ladder, whose largest budget often holds more than a tenth of the runs, a quantile that falls in a
slice already scored steps to the next budget down, so each fold holds out one budget.

The extrapolation asked for: a backtest inside the data steps along compute by ~10%, while a user
predicts ×3-×17 in N. A variant whose exponents the data do not pin down backtests well and
extrapolates badly (on Gadre et al. 2024's over-training ladders the free law wins the folds and
misses the 6.9B model by 4.5-7.9%, where alpha = beta misses by 0.7-5.2%). So each variant is also
fitted on all the runs, bootstrapped (``SPREAD_RESAMPLES`` resamples of the runs) and its
prediction at the *target* (``--target-params/--target-tokens``; by default ``default_target``:
10x the largest training compute at the runs' median tokens per parameter) gets a 95% interval.
A variant's score is the root of the sum of squares of its backtest MAPE (how far off it is where
it can be checked) and the half-width of that interval in % (how far off it may be where it is
asked). The lowest score wins, unless a simpler variant (earlier in ``VARIANTS``: tied, free, then
the floored ones) is within ``TIE_TOLERANCE`` (5%) of it. Measured on the 10 public ladders
shipped in ``scaling.datasets`` (``benchmarks/variant_selection.py``, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.accounting import flops

E_FLOOR_FRACTION = 0.5
FOLDS = 3
FOLD_STEP = 0.1
#: a fold needs at least this many training runs per free parameter
MIN_RUNS_PER_PARAM = 3
#: a variant must beat every simpler one (earlier in ``VARIANTS``) by more than this relative
#: margin of its score to be chosen: parsimony unless the data clearly say otherwise
TIE_TOLERANCE = 0.05
#: bootstrap resamples of each variant for the interval at the target
SPREAD_RESAMPLES = 100
#: the default target: this many times the largest training compute
TARGET_COMPUTE_FACTOR = 10.0


#: Kaplan et al. 2020's law is suggested (``law_check``) when its rolling backtest beats the chosen
#: variant's by more than this relative margin (the variants' own parsimony margin)
LAW_CHECK_MARGIN = TIE_TOLERANCE
#: ... or, with no fold to backtest on, when its BIC is lower by more than this: "very strong"
#: evidence on Kass & Raftery's (1995) scale
LAW_BIC_MARGIN = 10.0


@dataclass(frozen=True)
class Variant:
    name: str
    tie: tuple[tuple[str, str], ...]     #: fit-space pairs
    e_floor: bool
    doc: str


VARIANTS: dict[str, Variant] = {v.name: v for v in (      # simplest first: ties go to the earlier
    Variant("tied", (("alpha", "beta"),), False,
            "alpha = beta (Muennighoff et al. 2023 stage 1; Gadre et al. 2024's over-training form)"),
    Variant("free", (), False, "E, A, B, alpha, beta free (Hoffmann et al. 2022)"),
    Variant("tied-efloor", (("alpha", "beta"),), True, f"alpha = beta, E >= {E_FLOOR_FRACTION} x lowest loss"),
    Variant("free-efloor", (), True, f"free, E >= {E_FLOOR_FRACTION} x lowest loss"),
)}


def variant_bounds(variant: Variant, loss) -> dict | None:
    """Fit-space bound overrides of a variant: e = log E >= log(fraction x lowest loss)."""
    if not variant.e_floor:
        return None
    return {"e": (float(np.log(E_FLOOR_FRACTION * np.min(loss))), np.inf)}


def scale_of(frame: pd.DataFrame) -> np.ndarray:
    """Each run's compute, the axis of the rollout: the nominal ``budget`` when the table has one
    (isoFLOP sweeps), else 6 N D, rounded to 0.02 decade so that one budget is never split."""
    if "budget" in frame.columns:
        b = pd.to_numeric(frame["budget"], errors="coerce").values.astype(float)
        if np.isfinite(b).all() and (b > 0).all():
            return np.log10(b)
    c = flops(frame["params"].values.astype(float), frame["tokens"].values.astype(float))
    return np.round(np.log10(c) / 0.02) * 0.02


def default_target(frame: pd.DataFrame) -> tuple[float, float]:
    """(N, D) at ``TARGET_COMPUTE_FACTOR`` x the largest 6ND of the runs, at their median tokens per
    parameter: a step up in compute in the shape of the runs (x3-x9 in N on the public ladders; a
    plain x10 in N at the same ratio overshoots isoFLOP sweeps, whose next budget is x3 in compute)."""
    n, d = frame["params"].to_numpy(float), frame["tokens"].to_numpy(float)
    ratio = float(np.median(d / n))
    c = TARGET_COMPUTE_FACTOR * float(np.max(6.0 * n * d))
    n_t = float(np.sqrt(c / (6.0 * ratio)))
    return n_t, n_t * ratio


def rolling_folds(frame: pd.DataFrame, n_free: int, folds: int = FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train mask, test mask) per fold; folds with too few training runs, or no test run, are
    dropped."""
    s = scale_of(frame)
    out = []
    upper = np.inf
    for k in range(1, folds + 1):
        cut = np.quantile(s, 1.0 - FOLD_STEP * k)
        below = s[s < upper]
        if below.size and cut >= below.max():
            # discrete scales (an isoFLOP ladder's budgets): the quantile fell in the slice already
            # scored, so this fold holds out the next level down
            cut = below.max()
        train = s < cut
        test = (s >= cut) & (s < upper)
        if test.sum() == 0 or train.sum() < MIN_RUNS_PER_PARAM * n_free or len(np.unique(s[train])) < 3:
            break
        out.append((train, test))
        upper = cut
    return out


def choose(frame: pd.DataFrame, loss: np.ndarray, fit_once, predict, candidates=None, spread=None,
           target: dict | None = None) -> dict:
    """Choose a variant by its backtest and, with ``spread``, its interval at the target.

    ``fit_once(mask, variant) -> params`` fits the law on the runs of ``mask``; ``predict(params,
    mask) -> losses``; ``spread(variant) -> half-width %`` of the variant's 95% bootstrap interval at
    the target (``target`` records where: params, tokens, how). Returns the record kept in the fit
    file: ``chosen``, ``criterion``, ``candidates`` (name -> backtest MAPE per fold and their mean,
    ``target_halfwidth``, ``score``), ``folds``, ``target`` and ``reason``."""
    names = list(candidates or VARIANTS)
    folds = rolling_folds(frame, n_free=5)
    record = {"criterion": f"rolling backtest: fit below the {', '.join(f'{100 * (1 - FOLD_STEP * k):.0f}%' for k in range(1, FOLDS + 1))} "
                           f"compute quantiles, score the next slice up by MAPE of the loss"
                           + ("; score = sqrt(backtest MAPE^2 + (half-width of the 95% bootstrap interval at the "
                              "target, %)^2)" if spread is not None else ""),
              "folds": [{"n_train": int(tr.sum()), "n_test": int(te.sum())} for tr, te in folds],
              "candidates": {}}
    if target is not None:
        record["target"] = target
    if len(folds) < 1:
        record.update(chosen="free", reason="too few runs or compute scales for a rolling backtest "
                                            "(need 3+ distinct scales and 15+ runs below the top 10%); "
                                            "the free law is the default")
        return record
    unfloored = {}          # (fold, tie) -> params of the variant without the E floor
    fitted = {}             # name -> params per fold (None where it failed), for the chosen one's record
    for name in names:
        v = VARIANTS[name]
        errs = []
        fitted[name] = [None] * len(folds)
        for k, (train, test) in enumerate(folds):
            try:
                p = unfloored.get((k, v.tie)) if v.e_floor else None
                if p is None or p["E"] < E_FLOOR_FRACTION * np.min(loss[train]):
                    p = fit_once(train, v)      # (a free optimum inside the floor is also the floored one)
                if not v.e_floor:
                    unfloored[(k, v.tie)] = p
                pred = predict(p, test)
                errs.append(float(np.mean(np.abs(pred - loss[test]) / loss[test]) * 100))
                fitted[name][k] = p
            except Exception as exc:          # a variant that cannot be fitted on a fold loses it
                errs.append(float("inf"))
                record.setdefault("errors", {})[name] = str(exc).splitlines()[0][:200]
        entry = {"backtest_mape": float(np.mean(errs)), "fold_mape": errs}
        score = entry["backtest_mape"]
        if spread is not None and np.isfinite(score):
            try:
                entry["target_halfwidth"] = float(spread(v))
            except Exception as exc:
                entry["target_halfwidth"] = float("inf")
                record.setdefault("errors", {})[name] = str(exc).splitlines()[0][:200]
            score = float(np.hypot(score, entry["target_halfwidth"]))
        entry["score"] = score
        record["candidates"][name] = entry
    low = min(record["candidates"][n]["score"] for n in names)
    # scores within 5% of the best go to the simplest variant (a floor that does not bind gives the
    # same fit; a free exponent that wins by a hair has fitted noise)
    best = next(n for n in names if record["candidates"][n]["score"] <= low * (1 + TIE_TOLERANCE) + 1e-12)
    if spread is None:
        scores = ", ".join(f"{n} {record['candidates'][n]['backtest_mape']:.3g}%" for n in names)
        record.update(chosen=best, reason=f"lowest rolling-backtest MAPE over {len(folds)} fold(s): {scores}")
    else:
        scores = ", ".join(f"{n} {record['candidates'][n]['score']:.3g} (backtest {record['candidates'][n]['backtest_mape']:.3g}%, "
                           f"+-{record['candidates'][n].get('target_halfwidth', float('nan')):.3g}% at the target)" for n in names)
        record.update(chosen=best, reason=f"lowest score over {len(folds)} fold(s) and the target: {scores}")
    record["out_of_fold"] = out_of_fold_record(frame, folds, loss, fitted[best], predict)
    return record


def out_of_fold_record(frame: pd.DataFrame, folds, loss: np.ndarray, fitted, predict) -> dict:
    """What the rolling backtest says about runs beyond the data, at two distances: each fold's slice
    predicted by the law fitted below it (``out_of_fold``, and ``decades``: the mean over those runs
    of the decades of compute, 6ND, each lies beyond the largest run of its fit, measured as
    ``scaling.intervals.decades_beyond`` measures a target), and, under
    ``farther``, by the law fitted one fold lower still (two slices out, about twice as far).
    ``fitted[k]``: the law's parameters fitted below fold k (None where that fit failed);
    ``predict(params, mask) -> losses``. Williams & Goodman 1971 take a forecast's empirical error
    at each lead time; ``scaling.intervals.predictive_sd`` reads the two distances so."""
    compute = np.log10(flops(frame["params"].to_numpy(float), frame["tokens"].to_numpy(float)))
    leads = {1: ([], []), 2: ([], [])}          # lead -> (log residuals, decades beyond the fit)
    for k, (_, test) in enumerate(folds):
        for lead, (residuals, decades) in leads.items():
            j = k + lead - 1                    # the fold whose fit predicts slice k at this lead
            if j >= len(folds) or fitted[j] is None:
                continue
            try:
                pred = predict(fitted[j], test)
            except Exception:                   # a fit that cannot predict this slice is left out
                continue
            residuals += list(np.log(loss[test]) - np.log(pred))
            decades += list(np.maximum(0.0, compute[test] - compute[folds[j][0]].max()))
    record = out_of_fold(leads[1][0])
    if leads[1][1]:
        record["decades"] = float(np.mean(leads[1][1]))
    far = out_of_fold(leads[2][0])
    if far["n"]:
        record["farther"] = {**far, "decades": float(np.mean(leads[2][1]))}
    return record


def out_of_fold(residuals) -> dict:
    """What the rolling backtest's held-out slices say about a new run beyond the data: ``n`` runs,
    the ``rms`` and ``mean`` of their log residuals log(loss / predicted), each predicted by the law
    fitted below it. ``scaling.predict``'s predictive interval takes the larger of ``rms`` and the
    in-sample scatter: the runs fitted sit closer to the law than a run one budget beyond them does
    (Marin's isoFLOP ladders: 1.0-1.6% against 0.6-1.1%), and 95% intervals from the in-sample
    scatter alone held 47-53% of the runs of their two largest budgets (docs/benchmarks.md). Empirical
    prediction intervals from out-of-sample forecast errors: Williams & Goodman 1971, JASA 66:752."""
    r = np.asarray(residuals, float)
    r = r[np.isfinite(r)]
    if not r.size:
        return {"n": 0, "rms": None, "mean": None}
    return {"n": int(r.size), "rms": float(np.sqrt(np.mean(r ** 2))), "mean": float(np.mean(r))}


def bic(loss: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Schwarz's (1978) criterion of a fit with ``k`` free parameters, Gaussian on the log-loss
    residuals: n ln(RSS / n) + k ln n (lower is better)."""
    r = np.log(np.asarray(pred, float)) - np.log(np.asarray(loss, float))
    n = len(r)
    return float(n * np.log(max(float(np.mean(r ** 2)), 1e-300)) + k * np.log(n))


def law_check_in_sample(loss: np.ndarray, pred_chosen: np.ndarray, k_chosen: int, pred_law: np.ndarray,
                        k_law: int, law: str = "kaplan") -> dict:
    """``law_check`` where no fold can backtest (fewer than three compute scales below the top, so
    ``choose`` fell back to the free variant): the two laws fitted on every run compared by ``bic``;
    ``better`` when the other law's is lower by more than ``LAW_BIC_MARGIN``.

    What extrapolation cannot be tested on, in-sample fit penalised for its parameters decides.
    Measured (docs/benchmarks.md): the five public isoFLOP ladders cut to their three smallest
    budgets favour Chinchilla's law by 32-68 and it predicts their next budget better (0.34-0.53%
    against Kaplan's 0.87-1.51%); the CPU demo's three smallest budgets favour Kaplan's, which
    predicts the held-out 1e12 budget better."""
    b_chosen, b_law = bic(loss, pred_chosen, k_chosen), bic(loss, pred_law, k_law)
    if len(loss) < MIN_RUNS_PER_PARAM * k_chosen:      # a fold's bar: fewer runs fit any law closely
        return {"law": law, "criterion": "bic", "bic": b_law, "chosen_bic": b_chosen, "better": False,
                "reason": f"no fold to backtest on, and {len(loss)} runs are too few to compare laws in "
                          f"sample (need {MIN_RUNS_PER_PARAM * k_chosen})"}
    better = bool(np.isfinite(b_law) and b_chosen - b_law > LAW_BIC_MARGIN)
    return {"law": law, "criterion": "bic", "bic": b_law, "chosen_bic": b_chosen, "better": better,
            "reason": f"no fold to backtest on: {law} BIC {b_law:.1f} vs Chinchilla's {b_chosen:.1f} on all "
                      f"{len(loss)} runs; chosen when lower by more than {LAW_BIC_MARGIN:g}"}


def law_check(frame: pd.DataFrame, loss: np.ndarray, fit_once, predict, record: dict, law: str = "kaplan") -> dict:
    """Backtest another law on the folds that chose the variant (``record``), and say whether it
    predicts these runs better.

    Runs of tiny models, or early in training, sit far above their irreducible loss, and the gain
    from more data grows with the model there: Kaplan et al. 2020's floor-free L(N, D) fits them,
    Chinchilla's additive form does not (the CPU demo's runs: R^2 0.968 against 0.914, held-out
    budget 6.0% against 14.7%). On real ladders it extrapolates worse (9 of 10 public ladders in
    docs/benchmarks.md), so it is chosen (``scaling.fit.fit``) only when the data say so: ``better``
    when its backtest MAPE is below the chosen variant's by more than ``LAW_CHECK_MARGIN``. ``fit_once(mask) -> params`` fits
    ``law``; ``predict(params, mask) -> losses``."""
    folds = rolling_folds(frame, n_free=5)[:len(record.get("folds", []))]
    chosen = record["candidates"][record["chosen"]]["backtest_mape"]
    errs, fitted = [], []
    for train, test in folds:
        try:
            p = fit_once(train)
            pred = predict(p, test)
            errs.append(float(np.mean(np.abs(pred - loss[test]) / loss[test]) * 100))
            fitted.append(p)
        except Exception:           # a law that cannot be fitted on a fold loses it
            errs.append(float("inf"))
            fitted.append(None)
    mape = float(np.mean(errs)) if errs else float("inf")
    better = bool(np.isfinite(mape) and mape < chosen * (1 - LAW_CHECK_MARGIN))
    return {"law": law, "backtest_mape": mape, "fold_mape": errs, "chosen_backtest_mape": float(chosen),
            "better": better,
            "out_of_fold": out_of_fold_record(frame, folds, loss, fitted, predict),
            "reason": f"{law} backtest {mape:.3g}% vs the chosen variant's {chosen:.3g}% on the same "
                      f"{len(folds)} fold(s); suggested when lower by more than {100 * LAW_CHECK_MARGIN:.0f}%"}
