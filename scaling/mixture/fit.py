"""Fitting the data mixing law (Ye et al. 2024): direct at one scale, or nested through per-mixture
scaling laws, with bootstrap intervals and cross-validated predictors."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd

from scaling.mixture import models as mm
from scaling.accounting import flops
from scaling.errors import BadValue
from scaling.cli import DataError, UsageError
from scaling.fit import DELTA, Problem, count_warnings, fit_stage, local_batch
from scaling.fit.objective import LOOSE_POLISH
from scaling.laws.mixture_scale import JointMixtureLaw, MixScaleData
from scaling.laws.base import LawData
from scaling.laws.mixture import MixingLaw
from scaling.mixture.law_fit import fit_mixing, fit_mixing_batch
from scaling.version import __version__
from scaling.mixture.runs import MixtureRuns, read_mixtures
from scaling.mixture.result import MixtureFit, SCALING_FORMS, _interval
from scaling.mixture.predict import _mixing_at, _mixing_draws, _public_array, evaluate_fit
from scaling.intervals import interval


#: distinct mixtures below which --model auto does not cross-validate (the law alone), and the
#: fewest a tree model is fitted on
MIN_CV_MIXTURES = 6


MIN_TREE_MIXTURES = 10


def _check_enough(law: MixingLaw, n_mix: int) -> None:
    k = len(law.domains) + 1
    if n_mix < k:
        raise DataError(f"{n_mix} mixture(s) for {k} mixing-law parameters per domain (c, k and "
                         f"{len(law.domains) - 1} free t): need at least {k} distinct mixtures")


def _r2(y, pred):
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else None


def _params_ci(law: MixingLaw, thetas) -> dict:
    recs = np.array([[np.exp(t[0]), np.exp(t[1]), *t[2:]] for t in thetas])
    iv = _interval(recs)
    return {} if iv is None else {"c": iv[0], "k": iv[1], "t": iv[2:]}


def _supported_form(params, tokens) -> str | None:
    pairs = np.unique(np.round(np.log(np.c_[params, tokens]), 6), axis=0)
    n_c = len(np.unique(np.round(np.log(flops(params, tokens)), 6)))
    if (len(pairs) >= 6 and len(np.unique(pairs[:, 0])) >= 3 and len(np.unique(pairs[:, 1])) >= 3
            and np.linalg.matrix_rank(np.c_[np.ones(len(pairs)), pairs]) == 3):
        return "chinchilla"
    return "compute" if n_c >= 3 else "power" if n_c >= 2 else None


def _fit_scaling(form, data: LawData, loss):
    law, fixed = SCALING_FORMS[form]
    problem, z, f, warnings, _, _ = fit_stage(law, data, loss, fixed=dict(fixed), want_profiles=False)
    return problem, z, f, warnings


def fit_mixture(table: pd.DataFrame, domains=None, *, kind="auto", scaling_law="auto", bootstrap=0,
                seed=0, source="data", model: str = "auto", cv_folds: int = mm.CV_FOLDS) -> MixtureFit:
    """Fit the mixing law per loss domain, directly or nested over per-mixture scaling laws; for
    direct fits, also the predictors of ``scaling.mixture.models`` (``model``: one of
    ``mm.CANDIDATES``, or ``auto`` = the best cross-validated per domain)."""
    t0 = time.perf_counter()
    if model != "auto" and model not in mm.CANDIDATES:
        raise UsageError(f"unknown model {model!r} (known: auto, {', '.join(mm.CANDIDATES)})")
    if model != "auto" and mm.needs_lightgbm(model):
        mm.lightgbm()
    if cv_folds < 2:
        raise BadValue("cv_folds", "{arg} must be >= 2")
    if kind not in ("auto", "nested", "direct", "joint"):
        raise UsageError(f"unknown kind {kind!r} (auto, nested, direct, joint)")
    if scaling_law not in ("auto", *SCALING_FORMS):
        raise UsageError(f"unknown scaling law {scaling_law!r} (auto, {', '.join(SCALING_FORMS)})")
    if bootstrap < 0:
        raise BadValue("bootstrap", "{arg} must be >= 0")
    choice = None
    if kind == "auto":
        kind = "nested" if _n_scales(read_mixtures(table, domains, need_scale=False, source=source).frame) > 1 \
            else "direct"
        if kind == "nested":
            choice = choose_kind(read_mixtures(table, domains, need_scale=True, source=source), scaling_law)
            kind = choice["chosen"]
    runs = read_mixtures(table, domains, need_scale=(kind in ("nested", "joint")), source=source)
    law = MixingLaw(runs.domains)
    rng = np.random.default_rng(seed)
    settings = {"delta": DELTA, "objective": "sum of Huber(delta) of log-loss residuals",
                "normalisation": "sum_j t_ij = 0 (k_i is the reducible loss at the uniform mixture)",
                "reference_paper": "Ye et al. 2024, Data Mixing Laws", "notes": runs.notes}
    if kind in ("nested", "joint") and model not in ("auto", "law"):
        raise BadValue("model", f"{{arg}} {model}: a {kind} fit (runs at several scales) uses its own law; fit one scale "
                         f"with --kind direct for other predictors")
    if choice is not None:
        settings["kind_choice"] = choice
    fitter = {"nested": _fit_nested, "direct": _fit_direct, "joint": _fit_joint}[kind]
    out = fitter(runs, law, scaling_law, bootstrap, rng, settings)
    if kind == "direct":
        out.update(_fit_predictors(runs, law, out, model, cv_folds, seed, settings))
    frame = runs.frame
    fitted = {"mix": {d: [float(v.min()), float(v.max())] for d, v in zip(runs.domains, runs.r.T)}}
    for c in ("params", "tokens"):
        v = pd.to_numeric(frame[c], errors="coerce") if c in frame.columns else pd.Series(dtype=float)
        if v.notna().any():
            fitted[c] = [float(v.min()), float(v.max())]
    used = [c for c in ("params", "tokens", *(f"loss.{d}" for d in runs.loss_domains)) if c in frame.columns]
    payload = pd.concat([frame[used], pd.DataFrame(runs.r, columns=runs.domains)], axis=1)
    settings["mean_mixture"] = dict(zip(runs.domains, runs.mixtures.mean(axis=0).tolist()))
    sha = hashlib.sha256(payload.to_csv(index=False, float_format="%.17g").encode()).hexdigest()
    if bootstrap:
        settings["bootstrap"]["seed"] = int(seed)
    settings["seconds"] = round(time.perf_counter() - t0, 3)
    return MixtureFit(kind=kind, domains=runs.domains, loss_domains=runs.loss_domains, n_points=len(frame),
                      n_mixtures=len(runs.mixtures), range=fitted, warnings=runs.notes + out.pop("warnings"),
                      settings=settings, data_sha256=sha, version=__version__, **out)


def _run_counts(runs: MixtureRuns, rng, bootstrap: int) -> np.ndarray:
    """[bootstrap, rows] weights of a bootstrap over *runs*: a run (one mixture at one model size) is
    drawn with all its checkpoints, which are not independent draws of the law (resampling rows
    treats 50 checkpoints of one run as 50 runs, and the intervals come out several times too narrow)."""
    key = pd.Series(list(zip(runs.mixture, runs.frame["params"].to_numpy(float))))
    cluster = pd.factorize(key)[0]
    n = int(cluster.max()) + 1
    per_run = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float)
    return per_run[:, cluster]


def _fit_joint(runs: MixtureRuns, law, scaling_law, bootstrap, rng, settings) -> dict:
    """Shukor et al. 2025's additive law per loss domain on every run and checkpoint at once
    (``scaling.laws.mixture_scale``), by the toolkit's fitter; bootstrap over runs."""
    frame = runs.frame
    N, D = frame["params"].to_numpy(float), frame["tokens"].to_numpy(float)
    data = MixScaleData(N, D, runs.r)
    params, objective, r2, ci, warned, every, draws_out, resid_sd = {}, {}, {}, {}, [], [], {}, {}
    counts = _run_counts(runs, rng, bootstrap) if bootstrap else None
    for d in runs.loss_domains:
        loss = runs.loss(d)
        joint = JointMixtureLaw(runs.domains, loss_scale=float(np.median(loss)))
        stage = fit_stage(joint, data, loss, want_profiles=False)
        theta = stage.problem.theta(stage.z)[0]
        params[d] = joint.to_record(theta)
        objective[d] = float(stage.objective)
        log_fit = joint.log_predict(theta[None], data)[0]
        r2[d] = _r2(loss, np.exp(log_fit))
        resid_sd[d] = float(np.std(np.log(loss) - log_fit))
        if stage.warnings:
            warned.append(list(stage.warnings))
            every += [f"loss.{d}: {w}" for w in stage.warnings]
        if bootstrap:
            bp = Problem(joint, data, stage.problem.y, np.repeat(stage.problem.base[None], bootstrap, 0),
                         stage.problem.M, stage.problem.free, counts)
            zb, fb = local_batch(bp, np.repeat(stage.z[None], bootstrap, 0))
            tb = bp.theta(zb, np.arange(bootstrap))
            tb = tb[np.isfinite(fb) & np.isfinite(tb).all(axis=1)]
            public = np.array([list(joint.to_public(t).values()) for t in tb])
            draws_out[d] = public.tolist()
            lo, hi = interval(public, axis=0)
            ci[d] = {n: [float(a), float(b)] for n, a, b in zip(joint.public_names, lo, hi)}
    settings.update(scaling_form="L_i(N, D, h) = E + A/N^alpha + B/D^beta + 1/sum_j C_j h_j^gamma_j "
                                 "(Shukor et al. 2025, additive law)",
                    reference={"params": float(N[np.argmax(N * D)]), "tokens": float(D[np.argmax(N * D)])})
    settings["diagnostics"] = {"warnings": every, "residual_sd": resid_sd}
    if bootstrap:
        settings["bootstrap"] = {"n": int(bootstrap), "resample": "runs (a mixture at one size, with all its checkpoints)",
                                 "names": list(JointMixtureLaw(runs.domains).public_names), "draws": draws_out}
    warnings = count_warnings(warned, len(runs.loss_domains), "joint fits") if warned else []
    return {"params": params, "objective": objective, "r2": r2, "ci": ci, "warnings": warnings,
            "mixtures": [], "scaling_law": None}


def choose_kind(runs: MixtureRuns, scaling_law="auto") -> dict:
    """Nested or joint, by fitting both without the largest model size and scoring its runs (mean
    absolute error of their losses over the loss domains): the extrapolation in N a user asks for.
    With fewer than 3 sizes nothing can be held out and the nested fit stays the default."""
    frame = runs.frame
    N = frame["params"].to_numpy(float)
    sizes = np.unique(N)
    record = {"criterion": "fit without the largest model size, mean absolute error of its runs' losses",
              "candidates": {}}
    if len(sizes) < 3:
        record.update(chosen="nested", reason=f"{len(sizes)} model size(s): nothing to hold out; nested is the default")
        return record
    held = N == sizes[-1]
    train = frame[~held]
    record["held_out"] = {"params": float(sizes[-1]), "runs": int(held.sum())}
    for kind in ("nested", "joint"):
        try:
            probe = fit_mixture(train, runs.domains, kind=kind, scaling_law=scaling_law)
            ev = evaluate_fit(probe, frame[held].assign(status="ok"), source="held-out runs")
            record["candidates"][kind] = float(np.mean([v["mae"] for v in ev["domains"].values()]))
        except UsageError as exc:
            record["candidates"][kind] = float("inf")
            record.setdefault("errors", {})[kind] = str(exc).splitlines()[0][:200]
    best = min(record["candidates"], key=lambda k: (record["candidates"][k], k != "nested"))
    scores = ", ".join(f"{k} {v:.4g}" for k, v in record["candidates"].items())
    record.update(chosen=best, reason=f"held-out MAE at N={sizes[-1]:.3g} ({int(held.sum())} runs): {scores}")
    return record


def _n_scales(frame) -> int:
    """Distinct (N, D) among the runs (1 when the table has no scale columns)."""
    if not {"params", "tokens"} <= set(frame.columns):
        return 1
    scale = frame[["params", "tokens"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    scale = scale[(scale > 0).all(axis=1)]
    return len(np.unique(np.round(np.log(scale), 6), axis=0)) if len(scale) else 1


def _fit_direct(runs: MixtureRuns, law, scaling_law, bootstrap, rng, settings) -> dict:
    _check_enough(law, len(runs.mixtures))
    params, objective, r2, thetas, ci = {}, {}, {}, {}, {}
    for d in runs.loss_domains:
        loss = runs.loss(d)
        thetas[d], objective[d] = fit_mixing(law, runs.r, loss)
        params[d] = law.to_record(thetas[d])
        r2[d] = _r2(loss, law.loss(params[d], runs.r))
    if bootstrap:
        n = len(runs.frame)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float)
        draws = {}
        for d in runs.loss_domains:
            y = np.broadcast_to(np.log(runs.loss(d)), counts.shape)
            th = fit_mixing_batch(law, runs.r, y, np.repeat(thetas[d][None], bootstrap, 0), counts)
            draws[d] = [[np.exp(t[0]), np.exp(t[1]), *t[2:]] for t in th if np.isfinite(t).all()]
            ci[d] = _params_ci(law, th[np.isfinite(th).all(axis=1)])
        settings["bootstrap"] = {"n": int(bootstrap), "resample": "runs", "names": list(law.public_names),
                                 "draws": draws}
    return {"params": params, "objective": objective, "r2": r2, "ci": ci, "warnings": []}


def _fit_predictors(runs: MixtureRuns, law, out: dict, model: str, folds: int, seed: int, settings) -> dict:
    """Cross-validate the candidate predictors per domain (``scaling.mixture.models``), keep the
    chosen one (``auto``: best CV Spearman) fitted on every run, with its CV residual interval."""
    n_mix = len(runs.mixtures)
    warnings = []
    if model == "auto":
        names = list(mm.CANDIDATES)
        if not mm.have_lightgbm():
            names = [n for n in names if not mm.needs_lightgbm(n)]
            warnings.append("LightGBM is not installed: trees and their ensembles are left out of --model auto "
                            "(pip install 'scaling-toolkit[mixtures]')")
        if n_mix < MIN_CV_MIXTURES:
            names = ["law"]
            warnings.append(f"{n_mix} mixtures: too few to cross-validate predictors (need {MIN_CV_MIXTURES}); "
                            f"the mixing law is used")
    else:
        names = [model]
        need = {"law": len(runs.domains) + 1, "log-linear": len(runs.domains), "mean": 1}.get(model, MIN_TREE_MIXTURES)
        if any(mm.needs_lightgbm(n) for n in names):
            need = max(need, MIN_TREE_MIXTURES)
        if n_mix < need:
            raise DataError(f"--model {model} needs at least {need} distinct mixtures; have {n_mix}")
    k = min(folds, n_mix)
    chosen, predictors, cv = {}, {}, {}
    for d in runs.loss_domains:
        y = runs.loss(d)
        law_theta = law.from_record(out["params"][d])
        if n_mix >= 2 and k >= 2:
            res = mm.cross_validate(runs.r, y, runs.mixture, names, law, k=k, seed=seed, law_start=law_theta)
        else:
            res = {n: {"spearman": float("nan"), "pearson": float("nan"), "mae": float("nan"), "n": 0,
                       "oof": np.full(len(y), np.nan)} for n in names}
        pick = mm.choose(res, y) if model == "auto" else model
        if model == "auto" and pick == "mean" and n_mix >= 2 and k >= 2:
            warnings.append(f"loss.{d}: no predictor beats the mean loss out of fold (its MAE {mm.spread(res, y):.3g}); "
                            f"the mean is used: these runs do not say how the mixture moves this loss")
        bases = {m: (out["params"][d] if m == "law" else mm.fit_base(m, runs.r, y, law)) for m in mm.members(pick)}
        cand = mm.with_bounds(mm.combine(pick, bases, runs.r, y, law), runs.r, y)
        cand["interval"] = mm.residual_interval(y, res[pick]["oof"])
        chosen[d], predictors[d] = pick, cand
        cv[d] = {n: {key: res[n][key] for key in ("spearman", "pearson", "mae", "n")} for n in names}
    settings["cv_folds"] = int(k)
    settings["predictors"] = {"candidates": names, "selection": "highest cross-validated Spearman per domain among "
                              "the candidates whose out-of-fold MAE is within the losses' own spread (folds by "
                              "mixture; MAE breaks ties)" if model == "auto" else f"forced: {model}",
                              "bounds": "predictions held within the training losses' range widened by itself on "
                                        "each side; mixtures outside the trained proportions flagged",
                              "interval": "prediction + 2.5/97.5 percentiles of out-of-fold residuals"}
    out["warnings"] = out.get("warnings", []) + warnings
    return {"model": chosen, "predictors": predictors, "cv": cv}


def _fit_nested(runs: MixtureRuns, law, scaling_law, bootstrap, rng, settings) -> dict:
    frame, warnings = runs.frame, []
    N, D = frame["params"].to_numpy(float), frame["tokens"].to_numpy(float)
    members = [np.flatnonzero(runs.mixture == m) for m in range(len(runs.mixtures))]
    forms = [_supported_form(N[i], D[i]) for i in members]
    rank = {"power": 0, "compute": 1, "chinchilla": 2}
    keep = [m for m, f in enumerate(forms) if f is not None]
    if not keep:
        raise DataError("a nested fit needs runs at two or more compute values (6ND) per mixture; "
                         "every mixture here has one scale (use --kind direct)")
    if scaling_law != "auto":
        keep = [m for m in keep if rank[forms[m]] >= rank[scaling_law]]
    if len(keep) < len(forms):
        warnings.append(f"{len(forms) - len(keep)} mixture(s) have too few scales for a "
                        f"{'per-mixture scaling' if scaling_law == 'auto' else scaling_law} law and are left out")
    _check_enough(law, len(keep))
    form = scaling_law if scaling_law != "auto" else min((forms[m] for m in keep), key=rank.get)
    mixtures, scaling_r2 = [], {d: [] for d in runs.loss_domains}
    warned: list[list[str]] = []
    every: list[str] = []
    boot_theta = {d: [] for d in runs.loss_domains}
    for m in keep:
        idx = members[m]
        data = LawData(N[idx], D[idx])
        counts = (rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=bootstrap).astype(float)
                  if bootstrap else None)
        rec = {}
        for d in runs.loss_domains:
            loss = runs.loss(d)[idx]
            problem, z, f, w = _fit_scaling(form, data, loss)
            if w:
                warned.append(list(w))
            every += [f"mixture m{len(mixtures)} ({len(idx)} runs), loss.{d}: {msg}" for msg in w]
            theta = problem.theta(z)[0]
            rec[d] = {"params": problem.law.to_public(theta), "objective": f}
            scaling_r2[d].append((loss, np.exp(problem.law.log_predict(theta[None], data)[0])))
            if bootstrap:
                bp = Problem(problem.law, data, problem.y, np.repeat(problem.base[None], bootstrap, 0),
                             problem.M, problem.free, counts)
                zb, fb = local_batch(bp, np.repeat(z[None], bootstrap, 0), polish_tol=LOOSE_POLISH)
                tb = bp.theta(zb, np.arange(bootstrap))
                tb[~np.isfinite(fb)] = np.nan
                boot_theta[d].append(_public_array(problem.law, tb))
        mixtures.append({"id": f"m{len(mixtures)}", "mix": dict(zip(runs.domains, runs.mixtures[m].tolist())),
                         "runs": int(len(idx)), "scaling": rec})
    warnings += count_warnings(warned, len(keep) * len(runs.loss_domains), f"per-mixture {form} fits")
    fit = {"kind": "nested", "domains": runs.domains, "loss_domains": runs.loss_domains, "mixtures": mixtures,
           "scaling_law": form}
    c_all = flops(N, D)
    ref = {"params": float(N[np.argmax(c_all)]), "tokens": float(D[np.argmax(c_all)])}
    settings.update(reference=ref, scaling_form={"chinchilla": "E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)",
                                                 "compute": "E + A/C^gamma, C = 6ND",
                                                 "power": "A/C^gamma, C = 6ND"}[form])
    settings["diagnostics"] = {"scaling_r2": {d: _r2(*(np.concatenate(x) for x in zip(*v)))
                                              for d, v in scaling_r2.items()},
                               "per_mixture_warnings": every}
    if bootstrap:
        settings["bootstrap"] = {
            "n": int(bootstrap), "resample": "runs within each mixture (scaling laws), mixtures (mixing law)",
            "mixture_counts": rng.multinomial(len(keep), np.full(len(keep), 1.0 / len(keep)), size=bootstrap),
            "scaling": {d: np.stack(boot_theta[d], axis=1).tolist() for d in runs.loss_domains},
            "names": list(SCALING_FORMS[form][0].public_names)}
    probe = MixtureFit(**fit, params={}, objective={}, n_points=0, n_mixtures=len(keep), r2={}, settings=settings)
    at = _mixing_at(probe, ref["params"], [ref["tokens"]])
    params, objective, r2, ci = {}, {}, {}, {}
    for d in runs.loss_domains:
        params[d] = law.to_record(at.thetas[d][0])
        objective[d] = at.objective[d]
        r2[d] = _r2(np.exp(at.log_loss[d][0]), law.loss(params[d], at.r))
    if bootstrap:
        draws = _mixing_draws(probe, at, ref["params"])
        ci = {d: _params_ci(law, draws[d][:, 0][np.isfinite(draws[d][:, 0]).all(axis=1)]) for d in draws}
    return {"params": params, "objective": objective, "r2": r2, "ci": ci, "warnings": warnings,
            "mixtures": mixtures, "scaling_law": form}
