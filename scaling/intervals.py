"""The one interval this toolkit reports: the central percentile interval of bootstrap (or
resampled) draws, 95% unless asked (the 2.5th and 97.5th percentiles; Efron & Tibshirani 1993,
the percentile method, as Hoffmann et al. 2022 and Besiroglu et al. 2024 report their fits)."""

from __future__ import annotations

import numpy as np

from scaling.accounting import flops

LEVEL = 0.95
#: the normal quantile of a central 95% interval
Z95 = 1.959964


def log_sd(interval) -> float:
    """The standard deviation in log space that a 95% interval [lo, hi] of a positive quantity
    implies, read as lognormal: log(hi / lo) / (2 x 1.96)."""
    return float(np.log(interval[1] / interval[0]) / (2 * Z95))


def interval(draws, level: float = LEVEL, axis=None):
    """(lo, hi): the central ``level`` percentile interval of ``draws`` (arrays along ``axis``)."""
    q = 50.0 * (1.0 - level)
    lo, hi = np.percentile(np.asarray(draws, dtype=float), [q, 100.0 - q], axis=axis)
    return lo, hi


def interval_list(draws, level: float = LEVEL) -> list[float]:
    """``interval`` of a 1-d sample as two plain floats (what JSON files and Results carry)."""
    lo, hi = interval(draws, level)
    return [float(lo), float(hi)]


def conf_int_frame(names, draws=None, alpha: float = 0.05, stored=None, what: str = "this fit"):
    """statsmodels' ``conf_int``: a DataFrame indexed by parameter with columns ``lower`` and
    ``upper``, the central 1 - ``alpha`` percentile interval of the bootstrap ``draws`` ([B, k] in
    ``names`` order). Without draws, the ``stored`` 95% intervals ({name: [lo, hi]}) when ``alpha`` is
    0.05, else NaN with a warning that says how to get them."""
    import warnings

    import pandas as pd
    names = list(names)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    frame = pd.DataFrame(np.nan, index=pd.Index(names, name="parameter"), columns=["lower", "upper"])
    if draws is not None and len(draws):
        lo, hi = interval(np.asarray(draws, float), 1.0 - alpha, axis=0)
        frame["lower"], frame["upper"] = lo, hi
    elif stored and abs(alpha - 0.05) < 1e-12:
        for n in names:
            if n in stored and stored[n] is not None and len(stored[n]) == 2:
                frame.loc[n] = [float(stored[n][0]), float(stored[n][1])]
    if frame.isna().all().all():
        warnings.warn(f"{what} has no bootstrap draws: intervals are NaN (fit it with --bootstrap N)", stacklevel=3)
    return frame


# --- a new run's loss: the predictive interval of scaling.predict, scaling.backtest and the
# downstream chain (``fit``: a ``scaling.results.FitResult``; only its settings are read)

def residual_sd(fit) -> float | None:
    """Scatter of the fitted runs about the law, in log-loss (``settings.diagnostics.residuals``)."""
    r = ((fit.settings.get("diagnostics") or {}).get("residuals") or {})
    sd = r.get("std")
    return float(sd) if sd is not None and np.isfinite(sd) else None


def _out_of_fold(fit) -> dict:
    """The fit's ``settings.diagnostics.out_of_fold`` record ({} without one)."""
    return (fit.settings.get("diagnostics") or {}).get("out_of_fold") or {}


def out_of_fold_rms(fit, farther: bool = False) -> float | None:
    """RMS log error of the rolling backtest's held-out slices, each predicted by the law fitted below
    it (``settings.diagnostics.out_of_fold``; ``scaling.fit.variants.out_of_fold_record``), or with
    ``farther`` by the law fitted one fold lower still; None without such folds."""
    record = _out_of_fold(fit)
    r = (record.get("farther") or {}).get("rms") if farther else record.get("rms")
    return float(r) if r is not None and np.isfinite(r) else None


def predictive_sd(fit, decades=None):
    """The log-normal sd of a new run about the law, and where it comes from: the larger of the
    fitted runs' scatter and the rolling backtest's out-of-fold RMS error (a run beyond the data is
    at least as far off the law as the backtest's held-out slices were; ``scaling.fit.variants.
    out_of_fold_record``). On 16 held-out splits of the public ladders, 95% intervals from the
    scatter alone held 85% of the held-out runs on average (47-53% of Marin's two largest budgets);
    with the larger of the two, 93% (63-83% there), and following each run's distance as below,
    94.4% (67-93% there; ``benchmarks/interval_coverage.py``, docs/benchmarks.md).

    With ``decades`` (each target's decades of compute beyond the fitted runs, ``decades_beyond``)
    the sd is per target, as Williams & Goodman 1971 take the error at each lead time: the one-fold
    value up to the distance the folds scored at, rising linearly to the RMS of the slices predicted
    two folds out (``out_of_fold.farther``) at theirs, and held there beyond (never extrapolated: a
    growth read off folds 0.02 decade apart would make it 20-fold at one decade). Returns
    (sd, how): sd a float, or an array shaped like ``decades``; None without a residual sd."""
    sd, oof = residual_sd(fit), out_of_fold_rms(fit)
    if sd is None:
        return None
    near, how = sd, "residual scatter"
    if oof is not None and oof > sd:
        near, how = oof, "the rolling backtest's out-of-fold error (larger than the runs' scatter)"
    if decades is None:
        return near, how
    d = np.asarray(decades, float)
    record = _out_of_fold(fit)
    far = record.get("farther") or {}
    d1, d2, rms2 = record.get("decades"), far.get("decades"), far.get("rms")
    if None in (d1, d2, rms2) or not d2 > d1 or not rms2 > near:
        return np.full(d.shape, near), how
    w = np.clip((d - d1) / (d2 - d1), 0.0, 1.0)
    return (near + w * (rms2 - near),
            f"{how}, rising with distance to the RMS error two folds out ({rms2:.3g} at {d2:.2g} decade)")


def decades_beyond(fit, params, tokens) -> np.ndarray | None:
    """Decades of compute (6ND) each target lies beyond the largest fitted run (0 inside), from the
    fit's ``settings.range``; None for a fit file without it (written before 2026-12-07)."""
    top = ((fit.settings.get("range") or {}).get("flops") or [None, None])[1]
    if not top:
        return None
    return np.maximum(0.0, np.log10(flops(np.asarray(params, float), np.asarray(tokens, float)) / float(top)))


def checked_decades(fit) -> float | None:
    """The farthest distance (decades of compute) at which the rolling backtest measured the law's
    error beyond its data: two folds out where the fit recorded it, else one."""
    record = _out_of_fold(fit)
    far = (record.get("farther") or {}).get("decades")
    return far if far is not None else record.get("decades")


def prediction_interval(loss, draws, scatter: float, seed: int = 0, level: float = 95.0):
    """95% predictive interval of a new run's loss: parameter uncertainty (one bootstrap draw of
    the law per sample) times a new run's scatter about the law (a log-normal residual of sd
    ``scatter``, one value or one per target: ``predictive_sd``). Without draws, the scatter alone.
    Shape [..., 2]."""
    loss = np.asarray(loss, float)
    rng = np.random.default_rng(seed)
    base = np.log(draws) if draws is not None and len(draws) else np.log(loss)[None, ...]
    reps = max(1, 4000 // len(base))
    logp = np.repeat(base, reps, axis=0) + rng.normal(0.0, scatter, (len(base) * reps,) + loss.shape)
    return np.exp(np.stack(interval(logp, level / 100.0, axis=0), axis=-1))
