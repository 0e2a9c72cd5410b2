"""Data mixtures: fit the data mixing law (Ye et al. 2024), find the loss-minimising mixture at a
target scale (with per-domain unique-data limits, Muennighoff et al. 2023), and measure whether
small runs rank mixtures as large runs do.

Store conventions: proportions as ``mix.<domain>`` columns summing to 1 (derived from a
``code_fraction`` column when absent: ``mix.code = x``, ``mix.text = 1 - x``), per-domain validation
losses as ``loss.<domain>``.

Kinds of fit (Ye et al. 2024, section 4, "nested use of scaling laws"):
- *direct*: every run at one scale; L_i(r) is fitted to the runs' losses.
- *nested*: runs at several scales; per mixture and domain a scaling law in (N, D) is fitted to
  the runs, each mixture is predicted at the target scale, and L_i(r) is fitted to those
  predictions (at ``optimize`` time, since the target is known only then). The per-mixture form is
  the richest every mixture supports: Chinchilla (>= 6 distinct (N, D), >= 3 sizes and token
  counts, not on one line in log space), else E + A/C^gamma (>= 3 compute values), else A/C^gamma.

    python -m scaling.mixture fit results/ --domains text,code --bootstrap 100 --out mix.json
    python -m scaling.mixture optimize --fit mix.json --params 1e8 --tokens 2e9 --unique-tokens code=20M --json
    python -m scaling.mixture transfer results/ --small-params 1M --large-params 10M
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.stats import rankdata

import scaling
from scaling import columns as cols
from scaling.accounting import flops, parse_size
from scaling.cli import ArgumentParser, UsageError, run_cli, add_store_argument, nonnegative_int
from scaling.fit import DELTA, Problem, fit_stage, local_batch
from scaling.laws.base import LawData
from scaling.laws.chinchilla import Chinchilla
from scaling.laws.mixture import ComputeLaw, MixingLaw, Proportions, effective_mixture, simplex_grid
from scaling.results import JsonFile, format_number, plain
from scaling.mixing_fit import fit_mixing, fit_mixing_batch
from scaling.store import read_table, write_table_file
from scaling import mixture_models as mm
from scaling.intervals import interval

#: R_D* of the C4 fit (Muennighoff et al. 2023; fits/muennighoff2023_c4.json)
RD_STAR = 15.387756
#: proportions must sum to 1 within this ...
SUM_TOL = 1e-6
#: ... or within this, and are then renormalised with a warning (weights published to 3 decimals)
RENORM_TOL = 1e-2
#: token counts at which the nested mixing law is refitted to price repeated data (interpolated in log D)
TOKEN_GRID = 24
#: optimum search: Dirichlet candidates for smooth predictors (then SLSQP) and for trees (RegMix:
#: mean of the TOP_K best)
SMOOTH_SAMPLES = 20000
TREE_SAMPLES = 100000
TOP_K = 100
#: distinct mixtures below which --model auto does not cross-validate (the law alone), and the
#: fewest a tree model is fitted on
MIN_CV_MIXTURES = 6
MIN_TREE_MIXTURES = 10
#: params within this relative distance of --small-params / --large-params are that size
SIZE_TOL = 0.05
SCALING_FORMS = {"chinchilla": (Chinchilla(), {}), "compute": (ComputeLaw(), {}),
                 "power": (ComputeLaw(), {"e": ComputeLaw.NO_FLOOR})}


# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------
@dataclass
class MixtureRuns:
    frame: pd.DataFrame
    domains: list[str]          #: mixture components (order of r and t)
    loss_domains: list[str]     #: domains whose loss.<d> is modelled
    r: np.ndarray               #: [n, M] proportions
    mixture: np.ndarray         #: [n] index into ``mixtures``
    mixtures: np.ndarray        #: [n_mix, M] distinct proportions
    notes: list[str]

    def loss(self, domain) -> np.ndarray:
        return self.frame[f"loss.{domain}"].to_numpy(float)


def _row_name(frame, i) -> str:
    return f"run {frame['run_id'].iloc[i]}" if "run_id" in frame.columns else f"row {i + 1}"


def read_mixtures(table: pd.DataFrame, loss_domains=None, need_scale=True, source="data",
                  loss_columns=True) -> MixtureRuns:
    """ok-status runs with their proportions (validated) and losses; ``loss_domains`` None = every
    ``loss.<d>`` column. Components never used by any run are dropped (their t is undetermined)."""
    notes = []
    table = cols.canonicalise(table).reset_index(drop=True)
    if "status" in table.columns:
        bad = table["status"].astype(str) != "ok"
        if bad.any():
            notes.append(f"excluded {int(bad.sum())} run(s) whose status is not ok")
            table = table[~bad].reset_index(drop=True)
    mix_cols = [c for c in table.columns if str(c).startswith("mix.")]
    if not mix_cols:
        if "code_fraction" not in table.columns:
            raise UsageError(f"{source}: no mixture columns (expected mix.<domain> proportions or code_fraction)")
        table["mix.text"], table["mix.code"] = np.nan, np.nan
        mix_cols = ["mix.text", "mix.code"]
    mix = table[mix_cols].apply(pd.to_numeric, errors="coerce")
    absent = mix.isna().all(axis=1)
    if absent.any() and "code_fraction" in table.columns:   # runs that only say --code-fraction x
        cf = pd.to_numeric(table["code_fraction"], errors="coerce")
        derive = absent & cf.notna()
        for name, value in (("mix.text", 1.0 - cf), ("mix.code", cf)):
            if name not in mix.columns:
                mix[name] = np.nan
            mix.loc[derive, name] = value[derive]
        absent = mix.isna().all(axis=1)
    if absent.any():
        notes.append(f"dropped {int(absent.sum())} run(s) without mixture proportions")
        table, mix = table[~absent].reset_index(drop=True), mix[~absent].reset_index(drop=True)
    mix = mix.fillna(0.0)
    values = mix.to_numpy(float)
    if (values < 0).any() or not np.isfinite(values).all():
        i = int(np.flatnonzero((values < 0).any(axis=1) | ~np.isfinite(values).all(axis=1))[0])
        raise UsageError(f"{source}: {_row_name(table, i)} has a negative or non-finite mixture proportion")
    sums = values.sum(axis=1)
    far = np.abs(sums - 1.0) > RENORM_TOL
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise UsageError(f"{source}: {_row_name(table, i)}: mixture proportions sum to {sums[i]:.9g}, "
                         f"not 1 (rows within {RENORM_TOL:g} of 1 are renormalised)")
    off = np.abs(sums - 1.0) > SUM_TOL
    if off.any():       # published weights rounded to a few decimals: renormalise, say so once
        notes.append(f"renormalised the mixture proportions of {int(off.sum())} row(s) whose sum was off 1 "
                     f"by up to {np.abs(sums - 1.0).max():.3g} (rounded weights)")
        mix = mix.div(sums, axis=0)
        values = mix.to_numpy(float)
    names = [str(c)[4:] for c in mix.columns]
    used = values.max(axis=0) > 0
    if not used.all():
        unused = ", ".join(n for n, u in zip(names, used) if not u)
        notes.append(f"dropped mixture component(s) no run uses: {unused}")
    first = list(loss_domains or [])    # --domains order first, then the table's column order
    order = sorted((n for n, u in zip(names, used) if u), key=lambda n: first.index(n) if n in first else 99)
    if len(order) < 2:
        raise UsageError(f"{source}: a mixture needs at least two components with non-zero proportions "
                         f"(have: {', '.join(order) or 'none'})")
    r = mix[[f"mix.{d}" for d in order]].to_numpy(float)
    available = [str(c)[5:] for c in table.columns if str(c).startswith("loss.") and table[c].notna().any()]
    if loss_domains:
        unknown = [d for d in loss_domains if d not in available]
        if unknown:
            raise UsageError(f"{source}: unknown domain(s) {', '.join(unknown)} (runs have losses for: "
                             f"{', '.join(available) or 'none'})")
        chosen = list(loss_domains)
    else:
        chosen = sorted(available, key=lambda d: order.index(d) if d in order else 99)
    if loss_columns and not chosen:
        raise UsageError(f"{source}: no loss.<domain> columns")
    needed = (["params", "tokens"] if need_scale else []) + [f"loss.{d}" for d in chosen]
    table["_row"] = np.arange(len(table))
    table, dropped = cols.numeric_columns(table, needed, source)
    if dropped:
        notes.append(f"dropped {dropped} row(s) with missing values")
    if table.empty:
        raise UsageError(f"{source}: no usable rows")
    r = r[table["_row"].to_numpy()]
    mixtures, inverse = np.unique(np.round(r, 6), axis=0, return_inverse=True)
    return MixtureRuns(table, order, chosen, r, inverse.ravel(), mixtures, notes)


# --------------------------------------------------------------------------------------------
# The fit as a value
# --------------------------------------------------------------------------------------------
@dataclass
class MixtureFit(JsonFile):
    """A mixing-law fit (own object; ``scaling.results.FitResult`` describes one scaling law).
    ``params``: {loss domain: {c, k, t}} with t in ``domains`` order (sum 0); for a nested fit they
    are the law at ``settings.reference`` (the largest run's scale), refitted at each target."""

    kind: str
    domains: list[str]
    loss_domains: list[str]
    params: dict
    objective: dict
    n_points: int
    n_mixtures: int
    r2: dict
    mixtures: list = field(default_factory=list)
    scaling_law: str | None = None
    range: dict = field(default_factory=dict)
    ci: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    data_sha256: str | None = None
    version: str = ""
    law: str = "mixture"
    #: per loss domain: the predictor used (``scaling.mixture_models``), its stored state, and every
    #: candidate's cross-validated scores
    model: dict = field(default_factory=dict)
    predictors: dict = field(default_factory=dict)
    cv: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from scaling.mixture_models import public
        d = asdict(self)
        d["predictors"] = public(self.predictors)
        return {"law": d.pop("law"), **{k: plain(v) for k, v in d.items()}}

    @classmethod
    def load(cls, path) -> "MixtureFit":
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UsageError(f"{path}: no such fit file") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read fit file {path}: {exc}") from None
        if not isinstance(d, dict) or d.get("law") != "mixture":
            raise UsageError(f"{path}: not a mixture fit (law {d.get('law') if isinstance(d, dict) else None!r}); "
                             f"make one with python -m scaling.mixture fit")
        missing = [k for k in ("kind", "domains", "loss_domains", "params") if k not in d]
        nested_ok = d.get("mixtures") and d.get("scaling_law") in SCALING_FORMS
        if missing or d["kind"] not in ("nested", "direct") or (d["kind"] == "nested" and not nested_ok):
            raise UsageError(f"{path}: malformed mixture fit (lacks {', '.join(missing) or 'per-mixture laws'})")
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def boot(self) -> dict | None:
        b = self.settings.get("bootstrap") or {}
        return b if b.get("n") else None

    def summary(self) -> str:
        head = (f"law: mixture (Ye et al. 2024), {self.kind}"
                + (f" over per-mixture {self.scaling_law} laws" if self.kind == "nested" else "")
                + f"    runs: {self.n_points}    mixtures: {self.n_mixtures}")
        lines = [head, f"components: {', '.join(self.domains)}    normalisation: sum_j t_ij = 0"]
        ref = self.settings.get("reference")
        if ref:
            lines.append(f"mixing law shown at the largest run's scale: "
                         f"N={format_number(ref['params'])}, D={format_number(ref['tokens'])}")
        tn = [f"t.{d}" for d in self.domains]
        lines.append(f"{'domain':<10} {'c':>10} {'k':>10} " + " ".join(f"{n:>10}" for n in tn) + f" {'R^2':>8}")
        for d in self.loss_domains:
            p = self.params[d]
            lines.append(f"{d:<10} {format_number(p['c']):>10} {format_number(p['k']):>10} "
                         + " ".join(f"{format_number(v):>10}" for v in p["t"]) + f" {format_number(self.r2.get(d)):>8}")
            ci = self.ci.get(d)
            if ci:
                cells = zip(("c", "k", *tn), (ci["c"], ci["k"], *ci["t"]))
                lines.append("  95% CI: " + ", ".join(f"{n} [{format_number(a)}, {format_number(b)}]" for n, (a, b) in cells))
        if self.cv:
            names = sorted({n for c in self.cv.values() for n in c}, key=lambda n: list(self.cv[next(iter(self.cv))]).index(n)
                           if n in self.cv[next(iter(self.cv))] else 99)
            lines.append(f"predictors by {self.settings.get('cv_folds', '?')}-fold cross-validation over mixtures "
                         f"(Spearman / MAE of out-of-fold predictions; * = used):")
            lines.append(f"{'domain':<12} " + " ".join(f"{n:>20}" for n in names))
            lines[-1] = lines[-1].rstrip()
            for d in self.loss_domains:
                cells = []
                for n in names:
                    c = self.cv.get(d, {}).get(n)
                    mark = "*" if self.model.get(d) == n else " "
                    cells.append(f"{c['spearman']:.3f}/{c['mae']:.3g}{mark}" if c and c["spearman"] is not None
                                 and np.isfinite(c["spearman"]) else "-")
                lines.append(f"{d:<12} " + " ".join(f"{c:>20}" for c in cells))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Fitting the mixing law (the fitting layer's objective and optimiser)
# --------------------------------------------------------------------------------------------
def _check_enough(law: MixingLaw, n_mix: int) -> None:
    k = len(law.domains) + 1
    if n_mix < k:
        raise UsageError(f"{n_mix} mixture(s) for {k} mixing-law parameters per domain (c, k and "
                         f"{len(law.domains) - 1} free t): need at least {k} distinct mixtures")


def _r2(y, pred):
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else None


def _interval(v):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)] if v.ndim == 1 else v[np.isfinite(v).all(axis=tuple(range(1, v.ndim)))]
    if not len(v):
        return None
    return np.stack(interval(v, axis=0), axis=-1).tolist()


def _params_ci(law: MixingLaw, thetas) -> dict:
    recs = np.array([[np.exp(t[0]), np.exp(t[1]), *t[2:]] for t in thetas])
    iv = _interval(recs)
    return {} if iv is None else {"c": iv[0], "k": iv[1], "t": iv[2:]}


# --------------------------------------------------------------------------------------------
# Per-mixture scaling laws (nested fits)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def fit_mixture(table: pd.DataFrame, domains=None, *, kind="auto", scaling_law="auto", bootstrap=0,
                seed=0, source="data", model: str = "auto", cv_folds: int = mm.CV_FOLDS) -> MixtureFit:
    """Fit the mixing law per loss domain, directly or nested over per-mixture scaling laws; for
    direct fits, also the predictors of ``scaling.mixture_models`` (``model``: one of
    ``mm.CANDIDATES``, or ``auto`` = the best cross-validated per domain)."""
    t0 = time.perf_counter()
    if model != "auto" and model not in mm.CANDIDATES:
        raise UsageError(f"unknown model {model!r} (known: auto, {', '.join(mm.CANDIDATES)})")
    if model != "auto" and mm.needs_lightgbm(model):
        mm.lightgbm()
    if cv_folds < 2:
        raise UsageError("--cv-folds must be >= 2")
    if kind not in ("auto", "nested", "direct"):
        raise UsageError(f"unknown kind {kind!r} (auto, nested, direct)")
    if scaling_law not in ("auto", *SCALING_FORMS):
        raise UsageError(f"unknown scaling law {scaling_law!r} (auto, {', '.join(SCALING_FORMS)})")
    if bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    if kind == "auto":
        kind = "nested" if _n_scales(read_mixtures(table, domains, need_scale=False, source=source).frame) > 1 \
            else "direct"
    runs = read_mixtures(table, domains, need_scale=(kind == "nested"), source=source)
    law = MixingLaw(runs.domains)
    rng = np.random.default_rng(seed)
    settings = {"delta": DELTA, "objective": "sum of Huber(delta) of log-loss residuals",
                "normalisation": "sum_j t_ij = 0 (k_i is the reducible loss at the uniform mixture)",
                "reference_paper": "Ye et al. 2024, Data Mixing Laws", "notes": runs.notes}
    if kind == "nested" and model not in ("auto", "law"):
        raise UsageError(f"--model {model}: a nested fit (runs at several scales) uses the mixing law, nested "
                         f"over per-mixture scaling laws; fit one scale with --kind direct for other predictors")
    out = (_fit_nested if kind == "nested" else _fit_direct)(runs, law, scaling_law, bootstrap, rng, settings)
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
                      settings=settings, data_sha256=sha, version=scaling.__version__, **out)


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
    """Cross-validate the candidate predictors per domain (``scaling.mixture_models``), keep the
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
        need = {"law": len(runs.domains) + 1, "log-linear": len(runs.domains)}.get(model, MIN_TREE_MIXTURES)
        if any(mm.needs_lightgbm(n) for n in names):
            need = max(need, MIN_TREE_MIXTURES)
        if n_mix < need:
            raise UsageError(f"--model {model} needs at least {need} distinct mixtures; have {n_mix}")
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
        pick = mm.choose(res) if model == "auto" else model
        bases = {m: (out["params"][d] if m == "law" else mm.fit_base(m, runs.r, y, law)) for m in mm.members(pick)}
        cand = mm.combine(pick, bases, runs.r, y, law)
        cand["interval"] = mm.residual_interval(y, res[pick]["oof"])
        chosen[d], predictors[d] = pick, cand
        cv[d] = {n: {key: res[n][key] for key in ("spearman", "pearson", "mae", "n")} for n in names}
    settings["cv_folds"] = int(k)
    settings["predictors"] = {"candidates": names, "selection": "highest cross-validated Spearman per domain "
                              "(folds by mixture; MAE breaks ties)" if model == "auto" else f"forced: {model}",
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
        raise UsageError("a nested fit needs runs at two or more compute values (6ND) per mixture; "
                         "every mixture here has one scale (use --kind direct)")
    if scaling_law != "auto":
        keep = [m for m in keep if rank[forms[m]] >= rank[scaling_law]]
    if len(keep) < len(forms):
        warnings.append(f"{len(forms) - len(keep)} mixture(s) have too few scales for a "
                        f"{'per-mixture scaling' if scaling_law == 'auto' else scaling_law} law and are left out")
    _check_enough(law, len(keep))
    form = scaling_law if scaling_law != "auto" else min((forms[m] for m in keep), key=rank.get)
    mixtures, scaling_r2 = [], {d: [] for d in runs.loss_domains}
    messages: dict[str, int] = {}
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
            for msg in w:
                messages[msg] = messages.get(msg, 0) + 1
            theta = problem.theta(z)[0]
            rec[d] = {"params": problem.law.to_public(theta), "objective": f}
            scaling_r2[d].append((loss, np.exp(problem.law.log_predict(theta[None], data)[0])))
            if bootstrap:
                bp = Problem(problem.law, data, problem.y, np.repeat(problem.base[None], bootstrap, 0),
                             problem.M, problem.free, counts)
                zb, fb = local_batch(bp, np.repeat(z[None], bootstrap, 0))
                tb = bp.theta(zb, np.arange(bootstrap))
                tb[~np.isfinite(fb)] = np.nan
                boot_theta[d].append(_public_array(problem.law, tb))
        mixtures.append({"id": f"m{len(mixtures)}", "mix": dict(zip(runs.domains, runs.mixtures[m].tolist())),
                         "runs": int(len(idx)), "scaling": rec})
    warnings += [f"per-mixture {form} fits ({n} of {len(keep) * len(runs.loss_domains)}): {msg}"
                 for msg, n in messages.items()]
    fit = {"kind": "nested", "domains": runs.domains, "loss_domains": runs.loss_domains, "mixtures": mixtures,
           "scaling_law": form}
    c_all = flops(N, D)
    ref = {"params": float(N[np.argmax(c_all)]), "tokens": float(D[np.argmax(c_all)])}
    settings.update(reference=ref, scaling_form={"chinchilla": "E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)",
                                                 "compute": "E + A/C^gamma, C = 6ND",
                                                 "power": "A/C^gamma, C = 6ND"}[form])
    settings["diagnostics"] = {"scaling_r2": {d: _r2(*(np.concatenate(x) for x in zip(*v)))
                                              for d, v in scaling_r2.items()}}
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


# --------------------------------------------------------------------------------------------
# The mixing law at a scale (nested: refitted on the per-mixture predictions)
# --------------------------------------------------------------------------------------------
@dataclass
class _At:
    r: np.ndarray                        #: [n_mix, M] proportions the law is fitted on
    tokens: np.ndarray                   #: [G] ascending
    thetas: dict                         #: domain -> [G, k] fit space
    log_loss: dict                       #: domain -> [G, n_mix] predictions fitted on (nested)
    objective: dict


def _mixing_at(fit: MixtureFit, params: float, tokens) -> _At:
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


def predict_losses(fit: MixtureFit, params: float, tokens: float, proportions) -> dict[str, np.ndarray]:
    """Per-domain loss of a model of ``params`` trained on ``tokens`` of each mixture in
    ``proportions`` ([C, M] rows over ``fit.domains``, or one row), without repetition: the
    fitted mixing law at that scale (nested fits refit it there, as ``optimize_mixture`` does)."""
    r = np.atleast_2d(np.asarray(proportions, float))
    if r.shape[1] != len(fit.domains) or not np.allclose(r.sum(axis=1), 1.0, atol=SUM_TOL):
        raise UsageError(f"proportions must be rows over {', '.join(fit.domains)} summing to 1")
    at = _mixing_at(fit, params, [tokens])
    return _losses(MixingLaw(fit.domains), at.thetas, np.log(at.tokens), r, np.full(len(r), np.log(tokens)))


def predict_table(fit: MixtureFit, proportions, params: float | None = None, tokens: float | None = None) -> dict:
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
        raise UsageError("this is a nested fit (runs at several scales): give --params and --tokens")
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


def proportions_for(table: pd.DataFrame, fit: MixtureFit, source="mixtures") -> np.ndarray:
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
            raise UsageError(f"{source}: no mix.<domain> columns (the fit's domains: {', '.join(fit.domains)})")
    mix = table[mix_cols].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    unknown = [str(c)[4:] for c in mix_cols if str(c)[4:] not in fit.domains and (mix[c] > 0).any()]
    if unknown:
        raise UsageError(f"{source}: unknown domain(s) {', '.join(unknown)} (the fit's domains: {', '.join(fit.domains)})")
    r = np.column_stack([mix[f"mix.{d}"].to_numpy(float) if f"mix.{d}" in mix.columns else np.zeros(len(mix))
                         for d in fit.domains])
    if (r < 0).any() or not np.isfinite(r).all():
        i = int(np.flatnonzero((r < 0).any(axis=1) | ~np.isfinite(r).all(axis=1))[0])
        raise UsageError(f"{source}: row {i + 1} has a negative or non-finite proportion")
    sums = r.sum(axis=1)
    if (np.abs(sums - 1) > RENORM_TOL).any():
        i = int(np.flatnonzero(np.abs(sums - 1) > RENORM_TOL)[0])
        raise UsageError(f"{source}: row {i + 1}: proportions over the fit's domains sum to {sums[i]:.6g}, not 1")
    return r / sums[:, None]


def predict_frame(fit: MixtureFit, table: pd.DataFrame, params=None, tokens=None, source="mixtures") -> pd.DataFrame:
    """``run_id`` (when present) and the ``mix.*`` columns of ``table``, in its row order, with
    ``pred.<d>``, ``pred.<d>.lo`` and ``pred.<d>.hi`` for every modelled domain."""
    r = proportions_for(table, fit, source)
    keep = [c for c in table.columns if c == "run_id" or str(c).startswith("mix.")]
    out = table[keep].reset_index(drop=True).copy()
    for d, (p, lo, hi) in predict_table(fit, r, params, tokens).items():
        out[f"pred.{d}"], out[f"pred.{d}.lo"], out[f"pred.{d}.hi"] = p, lo, hi
    return out


def evaluate_fit(fit: MixtureFit, table: pd.DataFrame, source="data") -> dict:
    """Spearman, Pearson, MAE and n per domain of the fit's predictions against the ``loss.<d>``
    of runs it never saw (nested fits: each run predicted at its own (N, D))."""
    table = cols.canonicalise(table).reset_index(drop=True)
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "ok"].reset_index(drop=True)
    domains = [d for d in fit.loss_domains if f"loss.{d}" in table.columns]
    if not domains:
        raise UsageError(f"{source}: no loss.<domain> column of the fit's domains ({', '.join(fit.loss_domains)})")
    r = proportions_for(table, fit, source)
    preds = {d: np.full(len(table), np.nan) for d in domains}
    if fit.kind == "direct":
        for d, (p, _, _) in predict_table(fit, r).items():
            if d in preds:
                preds[d] = p
    else:
        scale = table[["params", "tokens"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        for n, dd in np.unique(scale, axis=0):
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


def _mixing_draws(fit: MixtureFit, at: _At, params: float) -> dict:
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


# --------------------------------------------------------------------------------------------
# optimize
# --------------------------------------------------------------------------------------------
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
        raise UsageError(f"--prior must be non-negative weights over the fit's domains summing to 1 (sum {p.sum():.6g})")
    p = np.maximum(p / p.sum(), 1e-12)
    lo = np.array([float((minimum or {}).get(d, 0.0)) for d in fit.domains])
    hi = np.array([float((maximum or {}).get(d, 1.0)) for d in fit.domains])
    if (lo < 0).any() or (hi > 1).any() or (lo > hi).any() or lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9:
        raise UsageError("--min/--max must be shares in [0, 1] with min <= max, sum of mins <= 1 <= sum of maxes")
    if kl_max is not None and not (kl_max >= 0 and np.isfinite(kl_max)):
        raise UsageError("--kl-max must be a non-negative number")
    return Constraints(p, lo, hi, kl_max)


def _read_prior(path) -> dict:
    f = Path(str(path))
    if not f.exists():
        raise UsageError(f"--prior {path}: not tokens, uniform or an existing file")
    try:
        if f.suffix.lower() == ".json":
            d = json.loads(f.read_text())
            d = d.get("train_domain_weights", d) if isinstance(d, dict) else d
        else:
            t = pd.read_csv(f)
            d = dict(zip(t.iloc[:, 0].astype(str), pd.to_numeric(t.iloc[:, 1], errors="coerce")))
        return {str(k): float(v) for k, v in d.items()}
    except (OSError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read --prior {path}: {exc}") from None


def optimize_mixture(fit: MixtureFit, params: float, tokens: float, weights: dict | None = None,
                     unique_tokens: dict | None = None, rd_star: float = RD_STAR,
                     constraints: Constraints | None = None, seed: int = 0) -> dict:
    """Loss-minimising mixture at (N, D) for weights over loss domains (a weighted mean of L_i).

    Direct fits optimise their chosen predictors (``scaling.mixture_models``): smooth ones (law,
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
        raise UsageError("--rd-star must be positive")
    weights = dict(weights) if weights else {d: 1.0 for d in fit.loss_domains}
    for what, given, known in (("--weights", weights, fit.loss_domains),
                               ("--unique-tokens", unique_tokens or {}, fit.domains)):
        bad = [d for d in given if d not in known]
        if bad:
            raise UsageError(f"unknown domain {bad[0]!r} in {what} (fit has: {', '.join(known)})")
    if any(v < 0 or not np.isfinite(v) for v in weights.values()) or sum(weights.values()) <= 0:
        raise UsageError("--weights must be non-negative with a positive sum")
    if any(not v > 0 for v in (unique_tokens or {}).values()):
        raise UsageError("--unique-tokens must be positive")
    if unique_tokens and fit.kind == "direct":
        raise UsageError("--unique-tokens needs a nested fit: a direct fit has no token dimension to price "
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
    if fit.kind == "nested" and unique_tokens:
        probe = np.vstack([cons.prior[None], dirichlet_samples(cons.prior, 2000, np.random.default_rng(seed))])
        lowest = effective_mixture(probe, tokens, limits, rd_star).total.min()
    else:
        lowest = tokens
    token_grid = np.geomspace(lowest, tokens, TOKEN_GRID) if lowest < tokens * (1 - 1e-9) else np.array([tokens])
    at = _mixing_at(fit, params, token_grid)

    def per_domain(thetas, R):
        if predictors:
            return {d: mm.predict(fit.predictors[d], R, law) for d in fit.loss_domains}
        eff = effective_mixture(R, tokens, limits, rd_star)
        return _losses(law, thetas, np.log(at.tokens), eff.proportions, np.log(eff.total))

    def solve_for(thetas, rng_):
        def objective(R):
            per = per_domain(thetas, R)
            return sum(w[d] * per[d] for d in used)
        r, method = search_simplex(objective, cons, smooth, rng_)
        per = {d: float(v[0]) for d, v in per_domain(thetas, r[None]).items()}
        return r, float(sum(w[d] * per[d] for d in used)), per, method

    r, loss, per, method = solve_for(at.thetas, rng)
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
        draws = _mixing_draws(fit, at, params)
        results = []
        for b in range(len(next(iter(draws.values())))):
            th = {d: draws[d][b] for d in fit.loss_domains}
            if all(np.isfinite(t).all() for t in th.values()):
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
        elif fit.kind == "nested" and not lo <= value <= hi:
            out.append(f"target {name} {value:.4g} is outside the fitted range [{lo:.4g}, {hi:.4g}]: "
                       f"the per-mixture scaling laws extrapolate")
    return out


# --------------------------------------------------------------------------------------------
# transfer: do small runs rank mixtures as large runs do?
# --------------------------------------------------------------------------------------------
def rank_agreement(x, y) -> dict[str, np.ndarray]:
    """Spearman rho, Kendall tau-b and pairwise decision accuracy between rows of x and y [B, n].

    Decision accuracy: over pairs the large runs (``y``) order strictly, the fraction the small
    runs (``x``) order the same way; a tie in ``x`` counts one half."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        spearman = (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
        iu = np.triu_indices(x.shape[1], 1)
        sx = np.sign(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]
        sy = np.sign(y[:, :, None] - y[:, None, :])[:, iu[0], iu[1]]
        kendall = (sx * sy).sum(1) / np.sqrt((sx ** 2).sum(1) * (sy ** 2).sum(1))
        decided = sy != 0
        score = np.where(sx == 0, 0.5, (sx == sy).astype(float))
        accuracy = (score * decided).sum(1) / decided.sum(1)
    return {"spearman": spearman, "kendall": kendall, "decision_accuracy": accuracy}


def _at_size(runs: MixtureRuns, target: float, what: str):
    n = runs.frame["params"].to_numpy(float)
    hit = np.abs(n / target - 1.0) <= SIZE_TOL
    if not hit.any():
        sizes = ", ".join(f"{v:.4g}" for v in np.unique(n))
        raise UsageError(f"no runs within {SIZE_TOL:.0%} of {what} {target:.4g} (sizes: {sizes})")
    return hit


def transfer(table: pd.DataFrame, small_params: float, large_params: float, *, bootstrap=1000, seed=0,
             source="data") -> dict:
    """Rank agreement of mixtures between two model sizes, per domain (loss.<d>) and overall (loss),
    with percentile intervals from resampling mixtures. Seeds (several runs of one mixture and
    size) are averaged."""
    if bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    runs = read_mixtures(table, None, need_scale=False, source=source)
    frame = runs.frame
    if "params" not in frame.columns:
        raise UsageError(f"{source}: missing required column params")
    frame["params"] = pd.to_numeric(frame["params"], errors="coerce")
    small, large = _at_size(runs, small_params, "--small-params"), _at_size(runs, large_params, "--large-params")
    if (small & large).any():
        raise UsageError("--small-params and --large-params select the same runs")
    metrics = [f"loss.{d}" for d in runs.loss_domains] + (["loss"] if "loss" in frame.columns else [])
    values = frame[metrics].apply(pd.to_numeric, errors="coerce")
    mean_s = values[small].groupby(runs.mixture[small]).mean()
    mean_l = values[large].groupby(runs.mixture[large]).mean()
    common = sorted(set(mean_s.index) & set(mean_l.index))
    if len(common) < 3:
        raise UsageError(f"{len(common)} mixture(s) were trained at both sizes: "
                         f"need at least 3 to compare rankings")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(bootstrap, len(common))) if bootstrap else None
    out = {"small_params": float(small_params), "large_params": float(large_params), "n_mixtures": len(common),
           "mixtures": [{"mix": dict(zip(runs.domains, runs.mixtures[m].tolist())),
                         "small": mean_s.loc[m].to_dict(), "large": mean_l.loc[m].to_dict()} for m in common],
           "domains": {}, "overall": None, "bootstrap": {"n": int(bootstrap), "seed": int(seed)}}
    for metric in metrics:
        x, y = mean_s.loc[common, metric].to_numpy(float), mean_l.loc[common, metric].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        stats = {k: float(v[0]) for k, v in rank_agreement(x[ok], y[ok]).items()}
        if idx is not None:
            xb, yb = x[idx], y[idx]
            good = np.isfinite(xb).all(1) & np.isfinite(yb).all(1)
            boot = rank_agreement(xb[good], yb[good])
            stats["ci"] = {k: _interval(v) for k, v in boot.items()}
        if metric == "loss":
            out["overall"] = stats
        else:
            out["domains"][metric[5:]] = stats
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _parser():
    p = ArgumentParser(prog="python -m scaling.mixture", description=__doc__.split("\n")[0],
                       epilog="examples:\n" + "\n".join(l for l in __doc__.splitlines() if "python -m" in l))
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit the data mixing law (Ye et al. 2024), nested over scaling laws",
                       epilog="example:\n  python -m scaling.mixture fit results/ --domains text,code "
                              "--out mix.json")
    add_store_argument(f, positional=True, help="store directory, CSV or Parquet file")
    f.add_argument("--domains", help="loss domains to model, e.g. text,code (default: every loss.<d>)")
    f.add_argument("--kind", choices=["auto", "nested", "direct"], default="auto",
                   help="auto: nested when the runs span more than one (N, D)")
    f.add_argument("--scaling-law", choices=["auto", *SCALING_FORMS], default="auto",
                   help="per-mixture law of a nested fit (auto: the richest every mixture supports)")
    f.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep only rows with this value (repeatable), e.g. --where model=70M --where step=30000")
    f.add_argument("--model", choices=["auto", *mm.CANDIDATES], default="auto",
                   help="predictor per domain (direct fits): auto = the best k-fold cross-validated Spearman "
                        "among law, log-linear, gbdt and their ensembles (default)")
    f.add_argument("--cv-folds", type=int, default=mm.CV_FOLDS, metavar="K",
                   help=f"folds (by mixture) of the cross-validation (default {mm.CV_FOLDS})")
    f.add_argument("--bootstrap", type=nonnegative_int, default=0, metavar="B", help="bootstrap resamples for intervals")
    f.add_argument("--seed", type=nonnegative_int, default=0)
    f.add_argument("--out", metavar="FIT.json")
    f.add_argument("--json", action="store_true")
    pr = sub.add_parser("predict", help="predicted per-domain losses (with 95%% intervals) of any mixtures",
                        epilog="example:\n  python -m scaling.mixture predict --fit mix.json --mixtures candidates.csv "
                               "--out pred.csv")
    pr.add_argument("--fit", required=True, metavar="FIT.json")
    pr.add_argument("--mixtures", required=True, metavar="SOURCE", help="any table with mix.<domain> columns")
    pr.add_argument("--params", help="target size (nested fits)")
    pr.add_argument("--tokens", help="target tokens (nested fits)")
    pr.add_argument("--out", metavar="PRED.csv|PRED.parquet")
    pr.add_argument("--json", action="store_true")
    ev = sub.add_parser("evaluate", help="Spearman, Pearson, MAE per domain on runs the fit never saw",
                        epilog="example:\n  python -m scaling.mixture evaluate --fit mix.json heldout.csv --json")
    ev.add_argument("--fit", required=True, metavar="FIT.json")
    add_store_argument(ev, positional=True, help="runs with mix.<domain> and loss.<domain> columns")
    ev.add_argument("--where", action="append", default=[], metavar="COL=VALUE")
    ev.add_argument("--json", action="store_true")
    o = sub.add_parser("optimize", help="loss-minimising mixture at a target scale",
                       epilog="example:\n  python -m scaling.mixture optimize --fit mix.json --params 1e8 "
                              "--tokens 2e9 --weights text=1,code=1 --unique-tokens code=20M --json")
    o.add_argument("--fit", required=True, metavar="FIT.json")
    o.add_argument("--params", required=True)
    o.add_argument("--tokens", required=True)
    o.add_argument("--weights", nargs="+", action="extend", default=[], metavar="DOMAIN=W",
                   help="objective weights over loss domains (normalised; default: equal)")
    o.add_argument("--unique-tokens", nargs="+", action="extend", default=[], metavar="DOMAIN=U",
                   help="unique tokens available in a domain; beyond them its tokens are repeated")
    o.add_argument("--rd-star", type=float, default=RD_STAR,
                   help=f"R_D* of the data-constrained law (default {RD_STAR}, Muennighoff et al. 2023 on C4)")
    o.add_argument("--prior", default="tokens", metavar="tokens|uniform|FILE",
                   help="centre of the search and of --kl-max: tokens (the fitted runs' mean mixture, default), "
                        "uniform, or a JSON/CSV of domain weights")
    o.add_argument("--min", nargs="+", action="extend", default=[], metavar="DOMAIN=SHARE")
    o.add_argument("--max", nargs="+", action="extend", default=[], metavar="DOMAIN=SHARE")
    o.add_argument("--kl-max", type=float, default=None, metavar="X", help="KL(mixture || prior) <= X (Olmix)")
    o.add_argument("--seed", type=nonnegative_int, default=0)
    o.add_argument("--json", action="store_true")
    t = sub.add_parser("transfer", help="do small runs rank mixtures as large runs do?",
                       epilog="example:\n  python -m scaling.mixture transfer results/ --small-params 1M "
                              "--large-params 10M --json")
    add_store_argument(t, positional=True, help="store directory, CSV or Parquet file")
    t.add_argument("--small-params", required=True)
    t.add_argument("--large-params", required=True)
    t.add_argument("--bootstrap", type=nonnegative_int, default=1000, metavar="B")
    t.add_argument("--seed", type=nonnegative_int, default=0)
    t.add_argument("--json", action="store_true")
    return p


def _print_optimum(out: dict) -> None:
    print(f"optimal mixture at N={format_number(out['params'])}, D={format_number(out['tokens'])} ({out['kind']} fit): "
          f"loss {out['loss']:.5g}; KL to the prior {out['kl_to_prior']:.3g}; {out['search']}")
    ci = out.get("ci") or {}
    for d, r in out["mixture"].items():
        iv = (ci.get("mixture") or {}).get(d)
        line = f"  {d:<10} {r:.4f}" + (f"  [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "")
        if d in out["losses"]:
            line += f"   loss {out['losses'][d]:.5g}"
            iv = (out.get("losses_interval") or {}).get(d)
            if iv:
                line += f" [{iv[0]:.4g}, {iv[1]:.4g}]"
        if out["unique_tokens"]:
            line += f"   epochs {out['epochs'][d]:.3g}, effective share {out['effective_mixture'][d]:.4f}"
        print(line)


def _print_transfer(out: dict) -> None:
    print(f"{out['n_mixtures']} mixtures at N~{format_number(out['small_params'])} and N~{format_number(out['large_params'])}")
    print(f"{'metric':<12} {'spearman':>20} {'kendall':>20} {'decision acc.':>20}")
    rows = [(f"loss.{d}", s) for d, s in out["domains"].items()]
    rows += [("loss", out["overall"])] if out["overall"] else []
    for name, s in rows:
        cells = []
        for k in ("spearman", "kendall", "decision_accuracy"):
            iv = (s.get("ci") or {}).get(k)
            cells.append(f"{s[k]:.3f}" + (f" [{iv[0]:.2f},{iv[1]:.2f}]" if iv else ""))
        print(f"{name:<12} " + " ".join(f"{c:>20}" for c in cells))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fit":
        domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
        if domains is not None and (not domains or len(domains) != len(args.domains.split(","))):
            raise UsageError(f"malformed --domains {args.domains!r} (expected e.g. text,code)")
        result = fit_mixture(cols.where(read_table(args.source), args.where), domains, kind=args.kind,
                             scaling_law=args.scaling_law,
                             bootstrap=args.bootstrap, seed=args.seed, source=args.source, model=args.model,
                             cv_folds=args.cv_folds)
        if args.out:
            result.save(args.out)
        print(result.to_json() if args.json else result.summary())
        return 0
    if args.command == "optimize":
        fit = MixtureFit.load(args.fit)
        weights = _parse_domain_values(args.weights, "--weights", fit.loss_domains, positive=False) or None
        unique = _parse_domain_values(args.unique_tokens, "--unique-tokens", fit.domains) or None
        cons = make_constraints(fit, args.prior,
                                _parse_domain_values(args.min, "--min", fit.domains, positive=False),
                                _parse_domain_values(args.max, "--max", fit.domains, positive=False), args.kl_max)
        out = optimize_mixture(fit, parse_size(args.params), parse_size(args.tokens), weights, unique,
                               args.rd_star, constraints=cons, seed=args.seed)
        for w in out["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        if args.json:
            print(json.dumps(plain(out), indent=1))
        else:
            _print_optimum(out)
        return 0
    if args.command == "predict":
        fit = MixtureFit.load(args.fit)
        n = parse_size(args.params) if args.params else None
        d = parse_size(args.tokens) if args.tokens else None
        if (n is None) != (d is None):
            raise UsageError("--params and --tokens go together")
        frame = predict_frame(fit, read_table(args.mixtures), n, d, source=args.mixtures)
        if args.out:
            write_table_file(frame, args.out)
        if args.json:
            print(frame.to_json(orient="records"))
        elif not args.out:
            print(frame.to_string(index=False))
        else:
            print(f"wrote {len(frame)} predictions to {args.out}")
        return 0
    if args.command == "evaluate":
        fit = MixtureFit.load(args.fit)
        out = evaluate_fit(fit, cols.where(read_table(args.source), args.where), source=args.source)
        if args.json:
            print(json.dumps(plain(out), indent=1))
        else:
            print(f"{out['n_runs']} runs; per domain: model, Spearman, Pearson, MAE, n")
            for dom, sc in out["domains"].items():
                print(f"  {dom:<16} {out['model'].get(dom, 'law'):<20} {sc['spearman']:.3f} {sc['pearson']:.3f} "
                      f"{sc['mae']:.4g} {sc['n']}")
        return 0
    out = transfer(read_table(args.source), parse_size(args.small_params), parse_size(args.large_params),
                   bootstrap=args.bootstrap, seed=args.seed, source=args.source)
    if args.json:
        print(json.dumps(plain(out), indent=1))
    else:
        _print_transfer(out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
