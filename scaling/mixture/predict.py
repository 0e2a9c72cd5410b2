"""The mixing law at a target scale: per-domain losses of any mixture, tables and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.mixture import models as mm
from scaling.cli import DataError, UsageError
from scaling.intervals import interval
from scaling.laws.base import LawData
from scaling.laws.mixture import MixingLaw, Proportions
from scaling.laws.mixture_scale import JointMixtureLaw
from scaling.mixture.law_fit import fit_mixing, fit_mixing_batch
from scaling.mixture.runs import RENORM_TOL, SUM_TOL

from scaling.laws.mixture import SCALING_FORMS


def _public_array(law, theta, inverse=False) -> np.ndarray:
    """Fit-space rows [..., k] -> published values (A = e^a, ...), or back; NaN stays NaN."""
    out = np.array(theta, float)
    for j, name in enumerate(law.fit_names):
        if name in law.exp_params:
            out[..., j] = np.log(out[..., j]) if inverse else np.exp(out[..., j])
    return out


def _scaling_log_predict(form, thetas, params, tokens) -> np.ndarray:
    """Log-loss of each fit-space row of ``thetas`` [..., k] at (params, tokens [G]) -> [..., G]."""
    law = SCALING_FORMS[form][0]
    shape = thetas.shape[:-1]
    data = LawData(np.full(len(tokens), float(params)), np.asarray(tokens, float))
    return law.log_predict(thetas.reshape(-1, thetas.shape[-1]), data).reshape(*shape, len(tokens))


@dataclass
class _At:
    r: np.ndarray                        #: [n_mix, M] proportions the law is fitted on
    tokens: np.ndarray                   #: [G] ascending
    thetas: dict                         #: domain -> [G, k] fit space
    log_loss: dict                       #: domain -> [G, n_mix] predictions fitted on (nested)
    objective: dict


def _mixing_at(fit, params: float, tokens) -> _At:
    """The mixing law at (params, each of ``tokens``): nested fits refit L_i(r) on the per-mixture
    predictions there (global search at the largest D, then warm starts down the grid)."""
    law = MixingLaw(fit.domains)
    tokens = np.sort(np.asarray(tokens, float))
    if fit.kind == "direct":
        thetas = {d: law.from_record(fit.params[d])[None] for d in fit.loss_domains}
        return _At(np.empty((0, len(fit.domains))), tokens[-1:], thetas, {}, dict(fit.objective))
    r = np.array([[m["mix"][d] for d in fit.domains] for m in fit.mixtures])
    law_s = SCALING_FORMS[fit.scaling_law][0]
    thetas, logs, objective = {}, {}, {}
    for d in fit.loss_domains:
        th = np.array([law_s.to_fit(m["scaling"][d]["params"]) for m in fit.mixtures])
        logs[d] = _scaling_log_predict(fit.scaling_law, th, params, tokens).T           # [G, n_mix]
        out, start = [None] * len(tokens), None
        for g in reversed(range(len(tokens))):
            theta, f = fit_mixing(law, r, np.exp(logs[d][g]), start)
            out[g], start = theta, theta
            if g == len(tokens) - 1:
                objective[d] = f
        thetas[d] = np.array(out)
    return _At(r, tokens, thetas, logs, objective)


def predict_losses(fit, params: float, tokens: float, proportions) -> dict[str, np.ndarray]:
    """Per-domain loss of a model of ``params`` trained on ``tokens`` of each mixture in
    ``proportions`` ([C, M] rows over ``fit.domains``, or one row), without repetition: the
    fitted mixing law at that scale (nested fits refit it there, as ``optimize_mixture`` does)."""
    r = np.atleast_2d(np.asarray(proportions, float))
    if r.shape[1] != len(fit.domains) or not np.allclose(r.sum(axis=1), 1.0, atol=SUM_TOL):
        raise UsageError(f"proportions must be rows over {', '.join(fit.domains)} summing to 1")
    if fit.kind == "joint":
        joint = JointMixtureLaw(fit.domains)
        return {d: joint.predict(fit.params[d], params, tokens, r) for d in fit.loss_domains}
    at = _mixing_at(fit, params, [tokens])
    return _losses(MixingLaw(fit.domains), at.thetas, np.log(at.tokens), r, np.full(len(r), np.log(tokens)))


def predict_table(fit, proportions, params: float | None = None, tokens: float | None = None) -> dict:
    """Per loss domain: (prediction, 95% low, 95% high) at each row of ``proportions`` [C, M].

    Direct fits use their chosen predictor and its cross-validation residual interval; nested fits
    the mixing law refitted at (``params``, ``tokens``), with intervals from the bootstrap draws
    when the fit has them, else from the law's log-residual scatter over the mixtures there."""
    r = np.atleast_2d(np.asarray(proportions, float))
    law = MixingLaw(fit.domains)
    out = {}
    if fit.kind == "direct":
        for d in fit.loss_domains:
            cand = fit.predictors.get(d)
            if cand is not None:
                pred = mm.predict(cand, r, law)
                lo, hi = cand.get("interval", [np.nan, np.nan])
                out[d] = (pred, pred + lo, pred + hi)
            else:                                       # a fit file from before predictors
                pred = law.loss(fit.params[d], r)
                draws = (fit.boot or {}).get("draws", {}).get(d)
                if draws:
                    stack = np.array([law.loss({"c": x[0], "k": x[1], "t": x[2:]}, r) for x in draws])
                    out[d] = (pred, *interval(stack, axis=0))
                else:
                    out[d] = (pred, np.full(len(r), np.nan), np.full(len(r), np.nan))
        return out
    if params is None or tokens is None:
        raise UsageError(f"this is a {fit.kind} fit (runs at several scales): give --params and --tokens")
    if fit.kind == "joint":
        joint = JointMixtureLaw(fit.domains)
        for d in fit.loss_domains:
            pred = joint.predict(fit.params[d], params, tokens, r)
            draws = (fit.boot or {}).get("draws", {}).get(d)
            if draws:
                out[d] = (pred, *interval(joint.predict_draws(np.asarray(draws, float), params, tokens, r), axis=0))
            else:
                sd = float(((fit.settings.get("diagnostics") or {}).get("residual_sd") or {}).get(d, np.nan))
                out[d] = (pred, pred * np.exp(-1.96 * sd), pred * np.exp(1.96 * sd))
        return out
    at = _mixing_at(fit, params, [tokens])
    preds = _losses(law, at.thetas, np.log(at.tokens), r, np.full(len(r), np.log(tokens)))
    draws = _mixing_draws(fit, at, params) if fit.boot else None
    for d in fit.loss_domains:
        pred = preds[d]
        if draws is not None:
            th = draws[d][:, 0]
            th = th[np.isfinite(th).all(axis=1)]
            stack = np.exp(law.log_predict(th, Proportions(r)))
            out[d] = (pred, *interval(stack, axis=0))
        else:
            resid = at.log_loss[d][0] - law.log_predict(at.thetas[d][:1], Proportions(at.r))[0]
            sd = float(np.std(resid))
            out[d] = (pred, pred * np.exp(-1.96 * sd), pred * np.exp(1.96 * sd))
    return out


def proportions_for(table: pd.DataFrame, fit, source="mixtures") -> np.ndarray:
    """The ``mix.<domain>`` columns of ``table`` as rows over ``fit.domains`` [n, M]: absent
    domains are 0, a share of a domain the fit does not know is an error, sums within 1e-2 of 1
    are renormalised (rows off by more are an error)."""
    mix_cols = [c for c in table.columns if str(c).startswith("mix.")]
    if not mix_cols:
        if "code_fraction" in table.columns and set(fit.domains) <= {"text", "code"}:
            cf = pd.to_numeric(table["code_fraction"], errors="coerce")
            table = table.assign(**{"mix.text": 1 - cf, "mix.code": cf})
            mix_cols = ["mix.text", "mix.code"]
        else:
            raise DataError(f"{source}: no mix.<domain> columns (the fit's domains: {', '.join(fit.domains)})")
    mix = table[mix_cols].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    unknown = [str(c)[4:] for c in mix_cols if str(c)[4:] not in fit.domains and (mix[c] > 0).any()]
    if unknown:
        raise DataError(f"{source}: unknown domain(s) {', '.join(unknown)} (the fit's domains: {', '.join(fit.domains)})")
    r = np.column_stack([mix[f"mix.{d}"].to_numpy(float) if f"mix.{d}" in mix.columns else np.zeros(len(mix))
                         for d in fit.domains])
    if (r < 0).any() or not np.isfinite(r).all():
        i = int(np.flatnonzero((r < 0).any(axis=1) | ~np.isfinite(r).all(axis=1))[0])
        raise DataError(f"{source}: row {i + 1} has a negative or non-finite proportion")
    sums = r.sum(axis=1)
    if (np.abs(sums - 1) > RENORM_TOL).any():
        i = int(np.flatnonzero(np.abs(sums - 1) > RENORM_TOL)[0])
        raise DataError(f"{source}: row {i + 1}: proportions over the fit's domains sum to {sums[i]:.6g}, not 1")
    return r / sums[:, None]


def predict_frame(fit, table: pd.DataFrame, params=None, tokens=None, source="mixtures") -> pd.DataFrame:
    """``run_id`` (when present) and the ``mix.*`` columns of ``table``, in its row order, with
    ``pred.<d>``, ``pred.<d>.lo`` and ``pred.<d>.hi`` for every modelled domain."""
    r = proportions_for(table, fit, source)
    keep = [c for c in table.columns if c == "run_id" or str(c).startswith("mix.")]
    out = table[keep].reset_index(drop=True).copy()
    for d, (p, lo, hi) in predict_table(fit, r, params, tokens).items():
        out[f"pred.{d}"], out[f"pred.{d}.lo"], out[f"pred.{d}.hi"] = p, lo, hi
    if fit.kind == "direct" and fit.predictors:
        out["outside_trained"] = np.any([mm.outside(c, r) for c in fit.predictors.values()], axis=0)
    return out


def evaluate_fit(fit, table: pd.DataFrame, source="data") -> dict:
    """Spearman, Pearson, MAE and n per domain of the fit's predictions against the ``loss.<d>``
    of runs it never saw (nested fits: each run predicted at its own (N, D))."""
    table = cols.canonicalise(table).reset_index(drop=True)
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "ok"].reset_index(drop=True)
    domains = [d for d in fit.loss_domains if f"loss.{d}" in table.columns]
    if not domains:
        raise DataError(f"{source}: no loss.<domain> column of the fit's domains ({', '.join(fit.loss_domains)})")
    r = proportions_for(table, fit, source)
    preds = {d: np.full(len(table), np.nan) for d in domains}
    if fit.kind == "direct":
        for d, (p, _, _) in predict_table(fit, r).items():
            if d in preds:
                preds[d] = p
    else:
        missing = [c for c in ("params", "tokens") if c not in table.columns]
        if missing:
            raise DataError(f"{source}: a nested fit predicts each run at its own size: column(s) "
                            f"{', '.join(missing)} missing")
        scale = np.column_stack([cols.numbers_or_missing(table[c], c, source) for c in ("params", "tokens")])
        for n, dd in np.unique(scale[np.isfinite(scale).all(axis=1)], axis=0):
            sel = (scale[:, 0] == n) & (scale[:, 1] == dd)
            for d, (p, _, _) in predict_table(fit, r[sel], n, dd).items():
                if d in preds:
                    preds[d][sel] = p
    out = {}
    for d in domains:
        y = pd.to_numeric(table[f"loss.{d}"], errors="coerce").to_numpy(float)
        ok = np.isfinite(y)
        out[d] = mm.scores(y[ok], preds[d][ok])
    return {"domains": out, "n_runs": int(len(table)), "model": dict(fit.model)}


def _mixing_draws(fit, at: _At, params: float) -> dict:
    """Bootstrap draws of the mixing law at ``at``'s scales: domain -> [B, G, k]."""
    boot = fit.boot
    law = MixingLaw(fit.domains)
    if fit.kind == "direct":
        return {d: np.array([law.from_record({"c": c, "k": k, "t": t}) for c, k, t in
                             ((row[0], row[1], row[2:]) for row in boot["draws"][d])])[:, None]
                for d in fit.loss_domains}
    counts = np.asarray(boot["mixture_counts"], float)
    B, G = len(counts), len(at.tokens)
    out = {}
    for d in fit.loss_domains:
        th = _public_array(SCALING_FORMS[fit.scaling_law][0], np.asarray(boot["scaling"][d], float), inverse=True)
        logs = _scaling_log_predict(fit.scaling_law, th, params, at.tokens)           # [B, n_mix, G]
        y = logs.transpose(0, 2, 1).reshape(B * G, -1)
        ok = np.isfinite(y).all(axis=1)
        start = np.tile(at.thetas[d], (B, 1))
        res = np.full(start.shape, np.nan)
        if ok.any():
            res[ok] = fit_mixing_batch(law, at.r, y[ok], start[ok], np.repeat(counts, G, axis=0)[ok])
        out[d] = res.reshape(B, G, -1)
    return out


def _losses(law, thetas: dict, log_tokens, eff, log_total) -> dict:
    """Per-domain loss at effective proportions and effective total tokens (log-linear in D between
    the token grid's fits)."""
    out = {}
    for d, th in thetas.items():
        logl = law.log_predict(th, Proportions(eff))                                # [G, C]
        if len(log_tokens) == 1:
            out[d] = np.exp(logl[0])
            continue
        x = np.clip(log_total, log_tokens[0], log_tokens[-1])
        j = np.clip(np.searchsorted(log_tokens, x) - 1, 0, len(log_tokens) - 2)
        w = (x - log_tokens[j]) / (log_tokens[j + 1] - log_tokens[j])
        cols_ = np.arange(len(x))
        out[d] = np.exp(logl[j, cols_] * (1 - w) + logl[j + 1, cols_] * w)
    return out
