"""Fitting the two-step downstream law, choosing its intermediate and form, and its bootstrap.

* Step 1: the intermediate at each run's final point as L(N, D) = A/N^alpha + B/D^beta + E, fitted
  by ``scaling.fit.fit`` itself (same objective, multi-start search and variant choice).
* Step 2: the metric from the intermediate (``scaling.laws.downstream``) on every checkpoint of
  every run (``scaling.downstream.data.step2_points``).
* ``via="auto"`` / ``form="auto"``: each candidate intermediate (task bpb, task CE, validation loss)
  and form (sigmoid, exponential) is fitted without the runs of the largest model size and scored
  on them (mean absolute error of the metric at their final points): the held-out rung is what the
  OLMo ladder's authors checked by eye. The best wins unless an earlier candidate (bpb before ce
  before loss; sigmoid before exponential) is within ``TIE_TOLERANCE``; every score is recorded.
* Intervals: step 1's bootstrap over runs (``scaling.fit``), step 2's over runs (all of a run's
  checkpoints resampled together, since they are correlated), chained draw by draw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
import pandas as pd

from scaling.version import __version__
from scaling.downstream import data as ddata
from scaling.downstream.result import DownstreamFit
from scaling.errors import BadValue, DataError, UsageError
from scaling.laws import get_law
from scaling.laws.downstream import FORMS, fit_step2

#: a candidate must beat every earlier one by more than this relative margin (or 0.002 of the
#: metric absolute) of held-out error to be chosen
TIE_TOLERANCE = 0.05
TIE_ABSOLUTE = 0.002
AUTO_FORMS = ("sigmoid", "exponential")


def fit_step1(step1: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0, variant: str | None = None,
              source: str = "data", target=None):
    """``scaling.fit.fit`` on (params, tokens, loss = the intermediate): a ``FitResult``; ``target``
    (N, D) is where the variant choice weighs each variant's interval (``scaling.fit.variants``)."""
    from scaling.fit import fit
    return fit(step1, "chinchilla", bootstrap=bootstrap, seed=seed, source=source, want_profiles=False,
               variant=variant, target=target)


def _floor(data: ddata.TaskData) -> float:
    return float(data.chance) if data.chance is not None and 0.0 <= data.chance < 1.0 else 0.0


def _anchor(form: str, points: pd.DataFrame) -> bool:
    """The sigmoid's anchor (x = 0, accuracy 1) when the intermediate is a loss (all positive)."""
    return form == "sigmoid" and bool((points["x"] > 0).all())


def fit_both(data: ddata.TaskData, via: str, form: str, *, runs=None, bootstrap: int = 0, seed: int = 0,
             variant: str | None = None, source: str = "data", target=None):
    """(step-1 FitResult, step-2 Step2Fit, step-2 points) on the runs ``runs`` (all by default)."""
    sub = data if runs is None else dataclasses.replace(
        data, table=data.table[data.table["run_id"].isin(runs)].reset_index(drop=True))
    column = data.via_column(via)
    points = ddata.step2_points(sub, column)          # checked first: cheap, and its errors say more
    law = fit_step1(ddata.step1_table(sub, column), bootstrap=bootstrap, seed=seed, variant=variant, source=source,
                    target=target)
    if form == "sigmoid" and not ((points["s"] >= -1e-9) & (points["s"] <= 1 + 1e-9)).all():
        raise DataError(f"{data.metric_column} has values outside [0, 1]: the sigmoid form needs an accuracy or "
                        f"an error rate (use --form exponential, or another --metric)")
    f2 = fit_step2(form, points["x"], points["s"], floor=_floor(data), anchor=_anchor(form, points))
    return law, f2, points


def select(data: ddata.TaskData, vias, forms, variant: str | None = None, source: str = "data") -> dict:
    """Backtest of every (intermediate, form) candidate holding out the largest model size: the
    record kept in the fit file (``chosen``, ``reason``, ``criterion``, ``held_out``, ``candidates``)."""
    names = [f"{v}/{f}" for v in vias for f in forms]
    if len(names) == 1:
        return {"chosen": names[0], "reason": "given (--via and --form)", "candidates": {}}
    finals = ddata.final_rows(data.table)
    sizes = np.sort(finals["params"].unique())
    record = {"criterion": "fit without the largest model size, score the mean absolute error of the metric at "
                           "its runs' final points", "candidates": {}}
    if len(sizes) < 4:
        default = names[0]
        record.update(chosen=default, reason=f"only {len(sizes)} model sizes: holding out the largest would leave "
                                             f"fewer than 3 for step 1; {default} is the default")
        return record
    held = finals[finals["params"] == sizes[-1]]
    train = finals.loc[finals["params"] < sizes[-1], "run_id"]
    observed = held[data.metric_column].to_numpy(dtype=float)
    record["held_out"] = {"params": float(sizes[-1]), "runs": held["run_id"].tolist()}
    step1_cache = {}
    for via in vias:
        for form in forms:
            name = f"{via}/{form}"
            try:
                column = data.via_column(via)
                sub = dataclasses.replace(data, table=data.table[data.table["run_id"].isin(set(train))]
                                          .reset_index(drop=True))
                if via not in step1_cache:
                    step1_cache[via] = fit_step1(ddata.step1_table(sub, column), variant=variant, source=source)
                law = step1_cache[via]
                points = ddata.step2_points(sub, column)
                f2 = fit_step2(form, points["x"], points["s"], floor=_floor(data), anchor=_anchor(form, points))
                x = get_law("chinchilla").predict(law.params, held["params"].to_numpy(float), held["tokens"].to_numpy(float))
                pred = data.metric_of(FORMS[form].predict(f2.params, x))
                mae = float(np.mean(np.abs(pred - observed)))
                record["candidates"][name] = {"held_out_mae": mae, "predicted": pred.tolist(), "observed": observed.tolist()}
            except (UsageError, ValueError) as exc:
                record["candidates"][name] = {"held_out_mae": float("inf"), "error": str(exc).splitlines()[0][:200]}
    scores = {n: record["candidates"][n]["held_out_mae"] for n in names}
    low = min(scores.values())
    if not np.isfinite(low):
        first = next((c.get("error") for c in record["candidates"].values() if c.get("error")), "")
        record.update(chosen=names[0], reason=f"no candidate could be fitted without the largest model size "
                                              f"({first}); {names[0]} is the default")
        return record
    chosen = next(n for n in names if scores[n] <= low * (1 + TIE_TOLERANCE) + TIE_ABSOLUTE)
    record.update(chosen=chosen, reason=f"held-out MAE of the metric at N={sizes[-1]:.3g} ({len(held)} run(s)): "
                  + ", ".join(f"{n} {scores[n]:.4g}" for n in names))
    return record


def step2_bootstrap(data: ddata.TaskData, points: pd.DataFrame, form: str, start: dict, n: int, seed: int) -> np.ndarray:
    """[n, k] draws of step 2's parameters, refitted on resamples of whole runs (a run's
    checkpoints together), warm-started at the estimate."""
    rng = np.random.default_rng(seed + 7919)
    runs = points["run_id"].to_numpy()
    unique, inverse = np.unique(runs, return_inverse=True)
    names = FORMS[form].names
    out = np.full((n, len(names)), np.nan)
    for b in range(n):
        counts = np.bincount(rng.integers(len(unique), size=len(unique)), minlength=len(unique))
        w = counts[inverse].astype(float)
        if (w > 0).sum() < len(names) + 1:
            continue
        try:
            f = fit_step2(form, points["x"], points["s"], floor=_floor(data), anchor=_anchor(form, points),
                          weights=w, start=start)
        except ValueError:
            continue
        out[b] = [f.params[k] for k in names]
    return out[np.isfinite(out).all(axis=1)]


def fit_downstream(table: pd.DataFrame, task: str, metric: str = "acc", *, via: str = "auto", form: str = "auto",
                   bootstrap: int = 200, seed: int = 0, variant: str | None = None,
                   source: str = "data", target=None) -> DownstreamFit:
    """Fit the two-step law for ``task``'s ``metric`` on ``table`` (see the module docstring);
    ``target`` (N, D): where it will predict, for step 1's variant choice."""
    t0 = time.perf_counter()
    if form not in ("auto", *FORMS):
        raise UsageError(f"unknown --form {form!r} (known: auto, {', '.join(FORMS)})")
    data = ddata.task_data(table, task, metric, source)
    if via == "auto":
        vias = data.available_vias()
        if not vias:
            raise BadValue("via", f"{{arg}} auto: no intermediate for {task} in {source} (none of "
                             f"{', '.join(ddata.VIAS[v].format(task=task) for v in ddata.AUTO_VIAS)} is finite on "
                             f"every run's final point); name a column with --via")
    else:
        data.via_column(via)
        vias = [via]
    forms = list(AUTO_FORMS) if form == "auto" else [form]
    selection = select(data, vias, forms, variant, source)
    via, form = selection["chosen"].split("/", 1)
    law, f2, points = fit_both(data, via, form, bootstrap=bootstrap, seed=seed, variant=variant, source=source,
                               target=target)
    warnings = [f"step 1: {w}" for w in law.warnings]
    for name in f2.at_bounds:
        if name in ("k", "x0", "gamma"):
            warnings.append(f"step 2: parameter {name} sits at a bound ({f2.params[name]:.4g}): the curve's shape is "
                            f"not determined by these points")
    step2 = {"params": f2.params, "residual_sd": f2.residual_sd, "n_points": int(len(points)),
             "at_bounds": f2.at_bounds, "x_range": [float(points["x"].min()), float(points["x"].max())],
             "anchor": _anchor(form, points), "floor": _floor(data)}
    if bootstrap:
        draws = step2_bootstrap(data, points, form, f2.params, bootstrap, seed)
        step2["draws"] = draws.tolist()
        step2["bootstrap"] = {"n": int(bootstrap), "seed": int(seed), "failed": int(bootstrap - len(draws)),
                              "resampled": "runs (all checkpoints of a run together)"}
    column = data.via_column(via)
    used = data.table[["run_id", "params", "tokens", column, data.metric_column]]
    sha = hashlib.sha256(used.to_csv(index=False, float_format="%.17g").encode()).hexdigest()
    settings = {"skip_fraction": ddata.SKIP_FRACTION, "smooth": ddata.SMOOTH, "source": str(source),
                "bootstrap": int(bootstrap), "seed": int(seed), "seconds": round(time.perf_counter() - t0, 3),
                "step1_points": int(law.n_points), "checkpoints": bool(data.table.groupby("run_id").size().max() > 1)}
    return DownstreamFit(task=task, metric=metric, via=via, via_column=column, form=form,
                         lower_is_better=data.lower_is_better, chance=data.chance, step1=law.to_dict(), step2=step2,
                         n_runs=int(data.table["run_id"].nunique()), n_points=int(len(points)), selection=selection,
                         warnings=warnings, settings=settings, data_sha256=sha, version=__version__)
