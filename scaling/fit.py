"""Fit scaling laws the way the papers do, globally, with intervals and honest diagnostics.

Objective (Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024; Muennighoff et al. 2023):
the *sum* over runs of Huber_delta(LSE-prediction of log-loss - log-loss), delta = 1e-3. A mean would
shrink gradients by 1/n and make L-BFGS stop early.

Search: every start of the law's grid (for Chinchilla, the replication's 4,500 points) is optimised
at once by a batched L-BFGS (``scaling.optimize``); the best distinct candidates are polished by
scipy's L-BFGS-B. The data-constrained law is fitted as in its paper: a Chinchilla fit on the
single-epoch runs, then R_D*, R_N* on all runs with the base held fixed (or ``--base FIT.json``).

    python -m scaling.fit results/
    python -m scaling.fit chinchilla.csv --column params="Model Size" --column flops="Training FLOP" --exclude-top 5
"""

from __future__ import annotations

from typing import NamedTuple

import hashlib
import itertools
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.version import __version__
from scaling import columns as cols
from scaling.sources import read_table
from scaling.cli import ArgumentParser, UsageError, run_cli, add_store_argument, nonnegative_int, bootstrap_count, \
    parse_number
from scaling.errors import DataError, FitError
from scaling.laws import get_law
from scaling.laws.base import Law, LawData
from scaling.optimize import batched_lbfgs, polish
from scaling.results import FitResult
from scaling.variants import E_FLOOR_FRACTION, SPREAD_RESAMPLES, VARIANTS, choose, default_target, variant_bounds
from scaling.accounting import FLOP_CONVENTIONS
from scaling.approach2 import DEFAULT_ESTIMATOR, ESTIMATORS
from scaling.intervals import interval

DELTA = 1e-3
#: a parameter is flagged as not identifiable when moving it down to x1/3 or up to x3 of its estimate
#: (others re-optimised) changes the objective by less than this fraction
FLAT_PROFILE = 0.01
PROFILE_FACTORS = (1 / 3, 1 / 2, 2.0, 3.0)
#: distinct optima whose objective is within this fraction of the best are reported
HAIR = 1e-3
MAX_STARTS = 20000
#: above 2x this many points the start grid is screened on a subsample of this size, and the
#: ``SCREEN_KEEP`` best distinct endpoints continue on all points
SCREEN_POINTS = 256
SCREEN_KEEP = 48
BASE_NAMES = ("E", "A", "B", "alpha", "beta")
#: pairs of fit-space parameters that ``--tie`` may tie (of one kind, as the papers tie them)
TIEABLE = ({"alpha", "beta"}, {"rd_star", "rn_star"})


# --------------------------------------------------------------------------------------------
# The objective over free parameters
# --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """Huber-on-log-loss for one law on one data set, over the free coordinates ``z``:
    theta = base + z @ M.T (M maps free coordinates to fit-space parameters; tying puts two 1s in
    a column, fixing leaves a parameter out)."""

    law: Law
    data: LawData
    y: np.ndarray                   #: log-loss [n]
    base: np.ndarray                #: fit-space values [k] or per-start [P, k] for fixed parameters
    M: np.ndarray                   #: [k, f]
    free: list[str]                 #: free coordinate names (fit space; tied ones as "alpha=beta")
    weights: np.ndarray | None = None   #: per-start point weights [P, n] (bootstrap)
    delta: float = DELTA
    bound_overrides: dict | None = None   #: fit-space name -> (lo, hi), replacing the law's bounds

    def theta(self, z, rows=None):
        base = self.base if self.base.ndim == 1 or rows is None else self.base[rows]
        return base + np.atleast_2d(z) @ self.M.T

    def fun_grad(self, z, rows=None):
        pred, grads = self.law.log_predict(self.theta(z, rows), self.data, grad=True)
        r = pred - self.y
        psi = np.clip(r, -self.delta, self.delta)      # Huber'(r)
        h = psi * (r - 0.5 * psi)                        # Huber(r)
        if self.weights is not None:
            w = self.weights if rows is None else self.weights[rows]
            h, psi = h * w, psi * w
        g_theta = np.stack([(psi * gj).sum(axis=1) for gj in grads], axis=1)
        return h.sum(axis=1), g_theta @ self.M

    def fun_grad_1d(self, z):
        f, g = self.fun_grad(z[None, :])
        return float(f[0]), g[0]

    def bounds(self):
        lo, hi = self.law.bounds_array()
        for name, (a, b) in (self.bound_overrides or {}).items():
            i = self.law.fit_names.index(name)
            lo[i], hi[i] = max(lo[i], a), min(hi[i], b)
        col = self.M.astype(bool)
        return (np.array([lo[c].max() for c in col.T]), np.array([hi[c].min() for c in col.T]))

    def z_of(self, theta):
        """Free coordinates of a full fit-space vector (first mapped parameter of each column)."""
        return np.array([theta[np.flatnonzero(c)[0]] for c in self.M.T.astype(bool)])

    def start_grid(self) -> np.ndarray:
        values = self.law.start_values()
        per = [values[name.split("=")[0]] for name in self.free]
        n = int(np.prod([len(v) for v in per]))
        grid = np.array(list(itertools.product(*per)), dtype=float)
        if n > MAX_STARTS:   # deterministic thinning of very large products (joint 7-parameter fits)
            grid = grid[np.random.default_rng(0).choice(n, MAX_STARTS, replace=False)]
        return grid


def make_problem(law: Law, data: LawData, loss, fixed: dict[str, float], tie: list[tuple[str, str]],
                 weights=None, bounds: dict | None = None) -> Problem:
    """``fixed``: fit-space name -> fit-space value; ``tie``: pairs of fit-space names."""
    k = len(law.fit_names)
    index = {n: i for i, n in enumerate(law.fit_names)}
    fixed = dict(fixed)
    groups: list[list[str]] = []
    tied = {}
    for a, b in tie:
        if a in fixed or b in fixed:        # tied to a held parameter: hold both at that value
            value = fixed.get(a, fixed.get(b))
            fixed[a] = fixed[b] = value
            continue
        tied[b] = a
    for name in law.fit_names:
        if name in fixed or name in tied:
            continue
        groups.append([name] + [b for b, a in tied.items() if a == name and b not in fixed])
    M = np.zeros((k, len(groups)))
    for j, g in enumerate(groups):
        for name in g:
            M[index[name], j] = 1.0
    base = np.zeros(k)
    for name, value in fixed.items():
        base[index[name]] = value
    return Problem(law, data, np.log(np.asarray(loss, float)), base, M, ["=".join(g) for g in groups], weights,
                   DELTA, bounds)


# --------------------------------------------------------------------------------------------
# Solving
# --------------------------------------------------------------------------------------------
def solve(problem: Problem, starts: np.ndarray, n_polish: int = 5):
    """Best free vector, its objective, and the polished distinct candidates [(f, z), ...]."""
    lo, hi = problem.bounds()
    if len(starts) == 1:
        z, f = polish(problem.fun_grad_1d, np.clip(starts[0], lo, hi), lo, hi)
        return z, f, [(f, z)]
    n = len(problem.y)
    if n > 2 * SCREEN_POINTS and len(starts) > SCREEN_KEEP and problem.weights is None and problem.base.ndim == 1:
        # screen the start grid on a fixed random subsample of the points, then continue the best
        # distinct endpoints on all of them: the landscape's basins are the same, the cost per
        # iteration of thousands of starts is not (2,000 points: 6 s -> ~1.5 s)
        rows = np.sort(np.random.default_rng(0).choice(n, SCREEN_POINTS, replace=False))
        sub = Problem(problem.law, problem.data.take(rows), problem.y[rows], problem.base, problem.M,
                      problem.free, None, problem.delta, problem.bound_overrides)
        pre = batched_lbfgs(sub.fun_grad, starts, lo, hi, max_iter=100, ftol=1e-10, gtol=1e-7,
                            funnel=(5, 0.02, 32))
        order = [i for i in np.argsort(pre.f) if np.isfinite(pre.f[i])]
        _, first = np.unique(np.round(pre.x[order], 2), axis=0, return_index=True)
        starts = pre.x[np.asarray(order)[np.sort(first)][:SCREEN_KEEP]]
        res = batched_lbfgs(problem.fun_grad, starts, lo, hi, max_iter=100, ftol=1e-10, gtol=1e-7,
                            funnel=None)
    else:
        res = batched_lbfgs(problem.fun_grad, starts, lo, hi, max_iter=100, ftol=1e-10, gtol=1e-7,
                            funnel=(5, 0.02, 32))
    order = [i for i in np.argsort(res.f) if np.isfinite(res.f[i])]
    if not order:
        raise FitError("the fit failed from every start (non-finite objective); check the data")
    picked, seen = [], set()
    for i in order:
        key = tuple(np.round(res.x[i], 2))
        if key not in seen:
            seen.add(key)
            picked.append(i)
        if len(picked) == n_polish:
            break
    candidates = sorted((polish(problem.fun_grad_1d, res.x[i], lo, hi)[::-1] for i in picked),
                        key=lambda c: c[0])
    f_best, z_best = candidates[0]
    return z_best, f_best, candidates


def local_batch(problem: Problem, starts, lo=None, hi=None):
    blo, bhi = problem.bounds()
    lo = blo if lo is None else lo
    hi = bhi if hi is None else hi
    res = batched_lbfgs(problem.fun_grad, starts, lo, hi, max_iter=300, ftol=1e-12, gtol=1e-9,
                        funnel=None, merge_decimals=12)
    return res.x, res.f


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------
def _public_scale(law: Law, fit_name: str, z_value: float, factor: float) -> float:
    """Free coordinate moved so that the public parameter is multiplied by ``factor``."""
    return z_value + np.log(factor) if fit_name in law.exp_params else z_value * factor


def profiles(problem: Problem, z_best, f_best) -> dict[str, dict]:
    """For each free parameter: the objective with it held at x1/3 ... x3 of its estimate and the
    others re-optimised (batched, warm-started at the optimum)."""
    lo, hi = problem.bounds()
    rows, meta = [], []
    for j, name in enumerate(problem.free):
        for factor in PROFILE_FACTORS:
            v = _public_scale(problem.law, name.split("=")[0], z_best[j], factor)
            if lo[j] <= v <= hi[j]:
                rows.append(j)
                meta.append((j, factor, v))
    if not meta:
        return {}
    P = len(meta)
    starts = np.repeat(z_best[None, :], P, axis=0)
    plo, phi = np.repeat(lo[None, :], P, axis=0), np.repeat(hi[None, :], P, axis=0)
    for r, (j, _, v) in enumerate(meta):
        starts[r, j] = plo[r, j] = phi[r, j] = v
    _, f = local_batch(problem, starts, plo, phi)
    out: dict[str, dict] = {}
    for (j, factor, _), fr in zip(meta, f):
        entry = out.setdefault(problem.free[j], {"factors": [], "relative_increase": []})
        entry["factors"].append(round(factor, 6))
        entry["relative_increase"].append(float((fr - f_best) / f_best) if f_best > 0 else float(fr - f_best))
    return out


def _public_free_name(law: Law, free_name: str) -> str:
    parts = free_name.split("=")
    return "=".join(law.public_names[law.fit_names.index(p)] for p in parts)


def diagnose(problem: Problem, z_best, f_best, candidates, want_profiles=True):
    law = problem.law
    warnings: list[str] = []
    theta = problem.theta(z_best)[0]
    public = law.to_public(theta)
    # bounds
    lo, hi = problem.bounds()
    for j, name in enumerate(problem.free):
        span = max(abs(hi[j] - lo[j]), 1e-12)
        if min(z_best[j] - lo[j], hi[j] - z_best[j]) <= 1e-6 * span:
            which = "lower" if z_best[j] - lo[j] <= hi[j] - z_best[j] else "upper"
            pname = _public_free_name(law, name)
            warnings.append(f"parameter {pname} sits at its {which} bound ({public[pname.split('=')[0]]:.6g}); "
                            f"the optimum may lie outside the allowed range")
    # coverage
    for col, values in (("model sizes", problem.data.params), ("token counts", problem.data.tokens)):
        distinct = len(np.unique(np.round(np.log(values), 6)))
        if distinct < 3:
            warnings.append(f"only {distinct} distinct {col}: the exponents are poorly constrained")
    # near-equal distinct optima
    optima = []
    for f, z in candidates[1:]:
        if f <= f_best * (1 + HAIR):
            p_other = law.to_public(problem.theta(z)[0])
            differ = [n for n in public if abs(p_other[n] - public[n]) > 0.05 * max(abs(public[n]), 1e-12)]
            if differ:
                optima.append({"objective": float(f), "params": p_other})
                warnings.append(
                    f"a distinct optimum lies within {100 * (f - f_best) / max(f_best, 1e-300):.3g}% of the best objective "
                    f"with different {', '.join(differ)} ("
                    + ", ".join(f"{n} {p_other[n]:.4g} vs {public[n]:.4g}" for n in differ)
                    + "): these parameters are ill-determined by the data")
    prof = profiles(problem, z_best, f_best) if want_profiles else {}
    for name, entry in prof.items():
        flat = [side for side, pick in (("down to x1/3", lambda fct: fct < 1), ("up to x3", lambda fct: fct > 1))
                if (rises := [r for fct, r in zip(entry["factors"], entry["relative_increase"]) if pick(fct)])
                and len(rises) == 2 and max(rises) < FLAT_PROFILE]
        if flat:
            rise = max(r for fct, r in zip(entry["factors"], entry["relative_increase"])
                       if (fct > 1) == (flat[-1] == "up to x3"))
            warnings.append(
                f"parameter {_public_free_name(law, name)} is not identifiable from these data: moving it "
                f"{' or '.join(flat)} of its estimate (others re-optimised) changes the objective by only "
                f"{100 * rise:.2g}%; report its bootstrap interval, not the point")
    return warnings, {"profiles": {_public_free_name(law, k): v for k, v in prof.items()}, "optima": optima}


def warning_kind(message: str) -> tuple[str, tuple[str, ...]]:
    """(kind, parameters) of a ``diagnose`` warning, its numbers dropped, so that many fits'
    warnings can be counted by kind ("ill-determined A or E in 57 of 420 fits")."""
    m = re.match(r"parameter (\S+) sits at its (lower|upper) bound", message)
    if m:
        return f"at its {m[2]} bound", (m[1],)
    m = re.search(r"distinct optimum lies within .* with different (.+?) \(", message)
    if m:
        return "ill-determined (a distinct optimum within 0.1% of the best objective)", tuple(m[1].split(", "))
    m = re.match(r"parameter (\S+) is not identifiable", message)
    if m:
        return "not identifiable (a flat profile)", (m[1],)
    m = re.match(r"only \d+ distinct (model sizes|token counts)", message)
    if m:
        return f"fewer than 3 distinct {m[1]}", ()
    return re.sub(r"[-+]?\d[\d.]*(e[-+]?\d+)?", "#", message), ()


def count_warnings(messages_per_fit, total: int, what: str) -> list[str]:
    """One line per kind of warning over many fits (``messages_per_fit``: one list of ``diagnose``
    messages per fit that warned): how many of ``total`` fits had it, and which parameters."""
    kinds: dict[str, tuple[int, list[str]]] = {}
    for messages in messages_per_fit:
        seen = set()
        for msg in messages:
            kind, names = warning_kind(msg)
            n, union = kinds.get(kind, (0, []))
            union += [x for x in names if x not in union]
            kinds[kind] = (n + (kind not in seen), union)
            seen.add(kind)
    lines = []
    for kind, (n, names) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        who = (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]) + " " if names else ""
        if kind.startswith(("at its", "ill-determined", "not identifiable")):
            head = (f"parameter {who}{kind}" if kind.startswith("at its")
                    else f"{kind.split(' (')[0]} {who}({kind.split(' (', 1)[1]}")
        else:
            head = kind
        lines.append(f"{head.replace('  ', ' ')} in {n} of {total} {what} (--verbose lists them)")
    return lines


# --------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------
@dataclass
class FitData:
    data: LawData
    loss: np.ndarray
    frame: pd.DataFrame
    notes: list[str]


def prepare(table: pd.DataFrame, law_name: str | None, exclude_top: int = 0, source="data"):
    """Canonical columns, ok-status rows, NaN rows dropped (noted), ``exclude_top`` highest losses
    removed; returns the law name (chosen when None) and FitData."""
    notes = []
    table = cols.canonicalise(table)
    if "status" in table.columns:
        bad = table["status"].astype(str) != "ok"
        if bad.any():
            notes.append(f"excluded {int(bad.sum())} run(s) whose status is not ok")
            table = table[~bad]
    if law_name is None:
        law_name = default_law(table)
    law = get_law(law_name)
    table, dropped = cols.numeric_columns(table, [*law.required, "loss"], source)
    if dropped:
        notes.append(f"dropped {dropped} row(s) with missing values")
    if law_name == "chinchilla" and "unique_tokens" in table.columns:
        repeats = table["tokens"] > pd.to_numeric(table["unique_tokens"], errors="coerce") * (1 + 1e-9)
        if repeats.any():   # the Chinchilla law's D is unique data (Hoffmann et al. 2022)
            notes.append(f"excluded {int(repeats.sum())} run(s) that repeat data: the Chinchilla law assumes "
                         f"unique tokens (fit them with --law data-constrained)")
            table = table[~repeats].reset_index(drop=True)
    if exclude_top < 0:
        raise UsageError("--exclude-top must be >= 0")
    if exclude_top:
        if exclude_top >= len(table):
            raise UsageError(f"--exclude-top {exclude_top} leaves no points (have {len(table)})")
        table = table.sort_values("loss", kind="stable").iloc[:-exclude_top].reset_index(drop=True)
    if table.empty:
        raise DataError(f"{source}: no usable rows")
    loss = table["loss"].to_numpy(float)
    if np.ptp(loss) <= 1e-12 * max(abs(loss.max()), 1.0):
        raise DataError(f"{source}: every run has the same loss ({loss[0]:.6g}): nothing to fit a scaling law to")
    distinct = len(np.unique(np.round(np.log(table[list(law.required)].to_numpy(float)), 9), axis=0))
    if distinct < 3:
        raise DataError(f"{source}: {distinct} distinct ({', '.join(law.required)}) point(s): a scaling law needs runs "
                        f"at several sizes and token counts")
    data = LawData(table["params"].values, table["tokens"].values,
                   table["unique_tokens"].values if "unique_tokens" in law.required else None)
    return law_name, FitData(data, table["loss"].values.astype(float), table, notes)


def default_law(table: pd.DataFrame) -> str:
    """Data-constrained when unique_tokens varies and some run repeats data, else Chinchilla."""
    if {"unique_tokens", "tokens"} <= set(table.columns):
        u = pd.to_numeric(table["unique_tokens"], errors="coerce")
        d = pd.to_numeric(table["tokens"], errors="coerce")
        if u.nunique(dropna=True) > 1 and (d > u * (1 + 1e-9)).any():
            return "data-constrained"
    return "chinchilla"


def data_sha256(fd: FitData) -> str:
    cols_used = [c for c in ("params", "tokens", "unique_tokens", "loss") if c in fd.frame.columns]
    payload = fd.frame[cols_used].to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------
def _parse_assignments(items, what) -> dict[str, float]:
    out = {}
    for item in items or []:
        for part in str(item).split(","):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise UsageError(f"malformed {what} {part!r} (expected NAME=VALUE, e.g. alpha=0.35)")
            out[name.strip()] = parse_number(value, f"{what} {name.strip()}")
    return out


def _to_fit_names(law: Law, public: dict[str, float], what: str) -> dict[str, float]:
    out = {}
    for name, value in public.items():
        try:
            f = law.public_to_fit_name(name)
        except KeyError:
            raise UsageError(f"unknown parameter {name!r} in {what} for law {law.name} "
                             f"(known: {', '.join(law.public_names)})") from None
        if f in law.exp_params and not value > 0:
            raise UsageError(f"{what} {name}={value}: must be positive")
        lo, hi = law.bounds[f]
        v = law.public_value_to_fit(f, value)
        if f not in law.exp_params and not (max(lo, 0.0) < v <= hi):
            raise UsageError(f"{what} {name}={value}: must be in ({max(lo, 0.0):g}, {hi:g}] (a zero or negative "
                             f"exponent makes the law degenerate)")
        out[f] = v
    return out


def _parse_tie(law: Law, tie) -> list[tuple[str, str]]:
    pairs = []
    for item in tie or []:
        a, sep, b = str(item).partition("=")
        if not sep:
            raise UsageError(f"malformed --tie {item!r} (expected e.g. alpha=beta)")
        try:
            pair = (law.public_to_fit_name(a.strip()), law.public_to_fit_name(b.strip()))
        except KeyError as exc:
            raise UsageError(f"unknown parameter {exc.args[0]!r} in --tie for law {law.name}") from None
        if pair[0] == pair[1]:
            raise UsageError(f"--tie {item}: ties a parameter to itself")
        if set(pair) not in TIEABLE:
            raise UsageError(f"--tie {item}: only the exponents alpha=beta (or rd_star=rn_star) can be tied; "
                             f"a coefficient tied to another is no law of the papers")
        pairs.append(pair)
    return pairs


class Stage(NamedTuple):
    """What one optimisation gives (``fit_stage``); a tuple too, so ``problem, z, *_ = ...`` works."""

    problem: "Problem"
    z: np.ndarray               #: the best free vector, in fit space
    objective: float
    warnings: list
    diagnostics: dict
    n_starts: int


def fit_stage(law: Law, data: LawData, loss, *, fixed=None, tie=None, start=None, weights=None,
              want_profiles=True, bounds=None) -> Stage:
    """One optimisation: global multi-start over the law's grid, or local from ``start``.
    ``bounds``: fit-space name -> (lo, hi) narrowing the law's own bounds."""
    fixed = dict(fixed or {})
    problem = make_problem(law, data, loss, fixed, tie or [], weights, bounds)
    if not problem.free:
        raise UsageError("nothing to fit: every parameter is fixed")
    if len(loss) < len(problem.free):
        raise FitError(f"{len(loss)} point(s) for {len(problem.free)} free parameter(s): "
                         f"need at least as many points as free parameters")
    if start is not None:
        theta0 = np.array([start.get(n, fixed.get(n, law.default_start[n])) for n in law.fit_names])
        starts = problem.z_of(theta0)[None, :]
    else:
        starts = problem.start_grid()
    z, f, candidates = solve(problem, starts)
    warnings, diag = diagnose(problem, z, f, candidates, want_profiles)
    return Stage(problem, z, f, warnings, diag, len(starts))


def _r2(loss, pred):
    ss_res = float(np.sum((loss - pred) ** 2))
    ss_tot = float(np.sum((loss - loss.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else None


def fit(table: pd.DataFrame, law: str | None = None, *, fix=None, tie=None, base: FitResult | None = None,
        exclude_top: int = 0, start=None, bootstrap: int = 0, seed: int = 0, source: str = "data",
        want_profiles: bool = True, paper_tie: bool = True, variant: str | None = None,
        select_variant: bool = True, target: tuple[float, float] | None = None) -> FitResult:
    """Fit a law to a run table. ``fix``/``start``: {public name: value}; ``tie``: ["alpha=beta"].

    ``variant`` forces one of ``scaling.variants.VARIANTS`` for the Chinchilla law (or the stage-1
    fit of the data-constrained law); otherwise, when the user constrains nothing (no tie, fix,
    start or base), ``select_variant`` chooses it by a backtest on these data and its interval at the
    ``target`` (``scaling.variants``), and the fit
    file records the choice (``settings.variant``). ``paper_tie=False`` (``--untie``) forces the
    free variant in stage 1, the paper's own stage 1 is ``variant="tied"``. ``target`` (N, D): where
    the user will predict, which the variant choice weighs (``scaling.variants``)."""
    t0 = time.perf_counter()
    law_name, fd = prepare(table, law, exclude_top, source)
    the_law = get_law(law_name)
    fixed = _to_fit_names(the_law, dict(fix or {}), "--fix")
    start_fit = _to_fit_names(the_law, dict(start), "--start") if start else None
    tie_pairs = _parse_tie(the_law, tie)
    if variant is not None and variant not in VARIANTS:
        raise UsageError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    if variant is not None and (tie or {"alpha", "beta"} & set(fixed)):
        raise UsageError("--variant cannot be combined with --tie or a --fix of alpha/beta")
    held = set(fixed)          # fit-space names the user holds (--fix, --base); stage-1 ones are not
    settings = {"delta": DELTA, "objective": "sum of Huber(delta) of log-loss residuals",
                "fixed": {}, "tie": list(tie or []), "exclude_top": exclude_top,
                "start": dict(start or {}), "notes": fd.notes}
    warnings = list(fd.notes)
    stage1 = None
    chin = get_law("chinchilla")
    constrained = bool(tie_pairs) or bool({"alpha", "beta", "e"} & set(fixed)) or start_fit is not None
    two_stage = base is None and law_name == "data-constrained" and not all(
        n in fixed for n in ("a", "b", "e", "alpha", "beta"))
    single = fd.data.tokens <= fd.data.unique_tokens * (1 + 1e-9) if law_name == "data-constrained" else None
    chosen, record = None, None
    if base is None and (law_name == "chinchilla" or (two_stage and single.sum() >= 6)):
        mask = np.ones(len(fd.loss), bool) if law_name == "chinchilla" else single
        if variant is not None:
            chosen, record = VARIANTS[variant], {"chosen": variant, "reason": "forced by --variant"}
        elif law_name == "data-constrained" and not paper_tie:
            chosen, record = VARIANTS["free"], {"chosen": "free", "reason": "forced by --untie"}
        elif not constrained and select_variant:
            record = _choose_variant(chin, fd, mask, {k: v for k, v in fixed.items() if k in chin.fit_names}, target)
            chosen = VARIANTS[record["chosen"]]
        if chosen is not None:
            settings["variant"] = record
    if base is not None:
        base_fixed = {n: base.params[n] for n in BASE_NAMES if n in base.params}
        if not base_fixed:
            raise UsageError("the --base fit has none of E, A, B, alpha, beta")
        fixed = {**_to_fit_names(the_law, base_fixed, "--base"), **fixed}
        held |= set(fixed)
        settings["base"] = {"law": base.law, "params": base_fixed}
        procedure = "two-stage (base given)"
    elif two_stage:
        # the paper's procedure: Chinchilla on single-epoch runs, then R_D*, R_N* on all runs
        if single.sum() >= 5 + 1:
            fixed1 = {k: v for k, v in fixed.items() if k in chin.fit_names}
            tie1 = [p for p in tie_pairs if p[0] in chin.fit_names and p[1] in chin.fit_names]
            bounds1 = None
            if chosen is not None:
                tie1 = list(chosen.tie) if not ({"alpha", "beta"} & set(fixed1)) else tie1
                bounds1 = variant_bounds(chosen, fd.loss[single])
            elif paper_tie and not tie1 and not ({"alpha", "beta"} & set(fixed1)):
                # the paper's stage 1 ties alpha = beta; untied, beta/alpha can run off and make
                # N_opt(C_U) = G^(1+beta/alpha) U^(beta/alpha) meaningless in stage 2
                tie1 = [("alpha", "beta")]
            s1 = fd.data.take(single)
            problem1, z1, f1, w1, _, _ = fit_stage(chin, s1, fd.loss[single], fixed=fixed1, tie=tie1,
                                                  want_profiles=False, bounds=bounds1)
            stage1 = {"problem": problem1, "z": z1, "mask": single}
            p1 = chin.to_public(problem1.theta(z1)[0])
            fixed = {**fixed, **_to_fit_names(the_law, p1, "stage 1")}
            settings["stage1"] = {"law": "chinchilla", "n_points": int(single.sum()), "params": p1,
                                  "objective": f1, "tie": ["=".join(t) for t in tie1]}
            warnings += [f"stage 1: {w}" for w in w1]
            procedure = "two-stage"
        else:
            warnings.append(f"only {int(single.sum())} single-epoch run(s): fitting all parameters jointly "
                            f"instead of the paper's two-stage procedure")
            procedure = "joint"
    else:
        procedure = "local" if start_fit is not None else "multi-start"
    bounds = None
    if law_name == "chinchilla" and chosen is not None:
        tie_pairs = tie_pairs or list(chosen.tie)
        bounds = variant_bounds(chosen, fd.loss)
    problem, z, f, w, diag, n_starts = fit_stage(the_law, fd.data, fd.loss, fixed=fixed, tie=tie_pairs,
                                                 start=start_fit, want_profiles=want_profiles, bounds=bounds)
    warnings += w
    if record is not None and law_name == "chinchilla":
        settings["tie"] = ["=".join(t) for t in tie_pairs]
    theta = problem.theta(z)[0]
    params = the_law.to_public(theta)
    settings["fixed"] = {n: params[n] for n in the_law.public_names if the_law.public_to_fit_name(n) in held}
    settings["procedure"] = procedure if start_fit is None else f"{procedure}; local from --start"
    settings["starts"] = int(n_starts)
    pred_log = the_law.log_predict(theta[None, :], fd.data)[0]
    resid = pred_log - np.log(fd.loss)
    settings["diagnostics"] = {"residuals": {"mean": float(resid.mean()), "std": float(resid.std()),
                                             "median_abs": float(np.median(np.abs(resid))),
                                             "max_abs": float(np.abs(resid).max())}, **diag}
    ci = {}
    if bootstrap:
        draws = bootstrap_draws(the_law, problem, z, fd, stage1, bootstrap, seed)
        names = list(the_law.public_names)
        good = np.isfinite(draws).all(axis=1)
        lo, hi = interval(draws[good], axis=0)
        ci = {n: [float(a), float(b)] for n, a, b in zip(names, lo, hi)
              if n not in settings["fixed"] or stage1 is not None}
        settings["bootstrap"] = {"n": int(bootstrap), "seed": int(seed), "names": names,
                                 "failed": int((~good).sum()), "draws": draws[good].tolist()}
    settings["seconds"] = round(time.perf_counter() - t0, 3)
    return FitResult(law=law_name, params=params, objective=float(f), n_points=len(fd.loss),
                     r2=_r2(fd.loss, np.exp(pred_log)), ci=ci, warnings=warnings, settings=settings,
                     data_sha256=data_sha256(fd), version=__version__)


def _choose_variant(chin: Law, fd: FitData, mask: np.ndarray, fixed: dict, target=None) -> dict:
    """Backtest and interval at the target of the Chinchilla variants on the runs of ``mask``
    (``scaling.variants.choose``); ``target`` (N, D), by default ``scaling.variants.default_target``."""
    frame = fd.frame[mask].reset_index(drop=True)
    data, loss = fd.data.take(mask), fd.loss[mask]
    if target is None:
        n_t, d_t = default_target(frame)
        how = "default: 10x the largest training compute, at the runs' median tokens per parameter"
    else:
        (n_t, d_t), how = target, "given (--target-params, --target-tokens)"

    def fit_once(train, v):
        problem, z, *_ = fit_stage(chin, data.take(train), loss[train], fixed=fixed, tie=list(v.tie),
                                   want_profiles=False, bounds=variant_bounds(v, loss[train]))
        return chin.to_public(problem.theta(z)[0])

    def predict(params, test):
        return chin.predict(params, data.params[test], data.tokens[test])

    unfloored = {}           # tie -> (params, half-width) of the variant without the E floor

    def spread(v):
        """Half-width (%) of the variant's 95% bootstrap interval at the target, fitted on all runs
        (a floored variant whose floor does not bind is its unfloored twin: not refitted)."""
        twin = unfloored.get(v.tie) if v.e_floor else None
        if twin is not None and twin[0]["E"] >= E_FLOOR_FRACTION * float(np.min(loss)):
            return twin[1]
        stage = fit_stage(chin, data, loss, fixed=fixed, tie=list(v.tie), want_profiles=False,
                          bounds=variant_bounds(v, loss))
        draws = bootstrap_draws(chin, stage.problem, stage.z, FitData(data, loss, frame, []), None,
                                SPREAD_RESAMPLES, seed=0)
        draws = draws[np.isfinite(draws).all(axis=1)]
        A, B, E, alpha, beta = (draws[:, chin.public_names.index(n)] for n in ("A", "B", "E", "alpha", "beta"))
        lo, hi = interval(E + A / n_t ** alpha + B / d_t ** beta)
        params = chin.to_public(stage.problem.theta(stage.z)[0])
        half = float((hi - lo) / 2 / float(chin.predict(params, n_t, d_t)) * 100)
        if not v.e_floor:
            unfloored[v.tie] = (params, half)
        return half

    return choose(frame, loss, fit_once, predict, spread=spread,
                  target={"params": float(n_t), "tokens": float(d_t), "how": how})


def bootstrap_draws(law: Law, problem: Problem, z, fd: FitData, stage1, n: int, seed: int) -> np.ndarray:
    """Refit on ``n`` resamples of the points (with replacement), all at once, warm-started at the
    estimate; in a two-stage fit both stages are refitted on each resample. Returns [n, k] public."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(fd.loss), np.full(len(fd.loss), 1.0 / len(fd.loss)), size=n).astype(float)
    base = np.repeat(problem.base[None, :], n, axis=0)
    if stage1 is not None:
        p1, mask = stage1["problem"], stage1["mask"]
        b1 = Problem(p1.law, p1.data, p1.y, p1.base, p1.M, p1.free, counts[:, mask], p1.delta, p1.bound_overrides)
        z1, _ = local_batch(b1, np.repeat(stage1["z"][None, :], n, axis=0))
        theta1 = b1.theta(z1)                                   # [n, 5] chinchilla fit space
        index = [law.fit_names.index(name) for name in p1.law.fit_names]
        base[:, index] = theta1
    bp = Problem(law, problem.data, problem.y, base, problem.M, problem.free, counts, problem.delta,
                 problem.bound_overrides)
    zb, fb = local_batch(bp, np.repeat(z[None, :], n, axis=0))
    theta = bp.theta(zb, np.arange(n))
    out = np.array([list(law.to_public(t).values()) for t in theta])
    out[~np.isfinite(fb)] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _parser():
    p = ArgumentParser(
        prog="python -m scaling.fit",
        description="Fit a scaling law (Huber on log-loss, global multi-start) to runs in a store, CSV or Parquet "
                    "(Approach 3), or estimate compute-optimal exponents from isoFLOP minima (Approach 2) or the "
                    "envelope of training curves (Approach 1).",
        epilog="examples:\n"
               "  python -m scaling.fit results/\n"
               "  python -m scaling.fit dataset:epoch-chinchilla --column params='Model Size' "
               "--column flops='Training FLOP' --exclude-top 5 --variant free --bootstrap 1000 --out fit.json\n"
               "  python -m scaling.fit dataset:llama3-isoflops --where experiment=llama_3__raw_loss --approach 2 --no-profiles\n"
               "  python -m scaling.fit --approach 1 --checkpoints dataset:misfitting-checkpoints "
               "--column params=N_no_emb --column flops=C_no_emb\n"
               "  python -m scaling.fit results/ --flops-convention 6N_ne+head+attn --approach 2\n"
               "  python -m scaling.fit runs.parquet --law data-constrained --base fits/muennighoff2023_c4.json "
               "--start rd_star=13.3 rn_star=6.67")
    add_store_argument(p, positional=True, required=False, help="store directory, CSV or Parquet file, or dataset:NAME")
    p.add_argument("--law", choices=["chinchilla", "data-constrained"], default=None,
                   help="default: data-constrained when unique_tokens varies and some run repeats data")
    p.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS",
                   help="map a column, e.g. --column params='Model Size'")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep only rows with this value (repeatable), e.g. --where experiment=llama_3__raw_loss")
    p.add_argument("--exclude-top", type=int, default=0, metavar="K", help="drop the K highest losses")
    p.add_argument("--fix", nargs="+", action="extend", default=[], metavar="NAME=VALUE")
    p.add_argument("--tie", action="append", default=[], metavar="alpha=beta")
    p.add_argument("--variant", choices=list(VARIANTS), default=None,
                   help="force an Approach 3 variant (default: chosen by a backtest on the data and the interval at the target; "
                        "see scaling.variants)")
    p.add_argument("--target-params", metavar="N", default=None,
                   help="where you will predict (with --target-tokens): the variant choice weighs each variant's "
                        "interval there (default: 10x the largest compute at the runs' median tokens per parameter)")
    p.add_argument("--target-tokens", metavar="D", default=None, help="training tokens of the target (with --target-params)")
    p.add_argument("--base", metavar="FIT.json", help="hold E, A, B, alpha, beta at this fit's values")
    p.add_argument("--start", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                   help="one local optimisation from this point instead of the multi-start search")
    p.add_argument("--bootstrap", type=bootstrap_count, default=None, metavar="N",
                   help="bootstrap resamples for 95%% CIs (default: 0 for Approach 3, 200 for Approaches 1 and 2)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--no-profiles", action="store_true", help="skip the identifiability profiles")
    p.add_argument("--untie", action="store_true",
                   help="two-stage data-constrained fits: fit alpha and beta separately in stage 1")
    p.add_argument("--flops-convention", choices=list(FLOP_CONVENTIONS), default=None,
                   help="count FLOPs (and size, N = C/6D) in this convention; default: the one the runs were "
                        "planned in (their flops_convention, e.g. the tiny preset's), else the data's flops "
                        "column, else 6ND over all parameters (see scaling.accounting.flops_per_token)")
    p.add_argument("--approach", type=int, choices=[1, 2, 3], default=3,
                   help="3: the parametric law (default); 2: isoFLOP minima, shown beside Approach 3; "
                        "1: lower envelope of training curves")
    p.add_argument("--estimator", choices=list(ESTIMATORS), default=None,
                   help=f"Approach 2: how each budget's minimum is found (default {DEFAULT_ESTIMATOR})")
    p.add_argument("--checkpoints", metavar="TABLE",
                   help="Approach 1: a table of checkpoints (run, params, tokens so far, loss[, flops]); "
                        "default: the store's _curves/")
    p.add_argument("--min-progress", type=float, default=0.0, metavar="F",
                   help="Approach 1: keep checkpoints at least this far into their run's schedule")
    p.add_argument("--out", metavar="FIT.json", help="write the fit here")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


def main(argv=None) -> int:
    import json
    args = _parser().parse_args(argv)
    if args.bootstrap is not None and args.bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    if args.estimator is not None and args.approach != 2:
        raise UsageError("--estimator is for --approach 2")
    if (args.checkpoints or args.min_progress) and args.approach != 1:
        raise UsageError("--checkpoints and --min-progress are for --approach 1")
    if not 0.0 <= args.min_progress <= 1.0:
        raise UsageError("--min-progress must be in [0, 1]")
    if args.variant and (args.tie or args.untie):
        raise UsageError("--variant cannot be combined with --tie or --untie")
    if args.tie and args.untie:
        raise UsageError("--tie and --untie contradict each other")
    mapping = cols.parse_mapping(args.column)
    target = _target(args.target_params, args.target_tokens)
    if args.approach == 1:
        from scaling.approach1 import approach1, checkpoints_from_store
        if args.checkpoints:
            ckpts = cols.canonicalise(cols.where(read_table(args.checkpoints), args.where), mapping)
        elif args.source and Path(args.source).is_dir():
            ckpts = cols.canonicalise(cols.where(checkpoints_from_store(args.source), args.where), mapping)
        else:
            raise UsageError("--approach 1 needs a store (its _curves/) or --checkpoints TABLE")
        if "run" not in ckpts.columns:
            raise UsageError("checkpoints have no run column (rows are run, tokens so far, loss); "
                             "map one with --column run=THEIRS")
        ckpts, _ = cols.in_convention(ckpts, args.flops_convention)
        a1 = approach1(ckpts, bootstrap=200 if args.bootstrap is None else args.bootstrap, seed=args.seed,
                       min_progress=args.min_progress)
        if args.out:
            a1.save(args.out)
        print(json.dumps({"approach1": a1.to_dict()}, indent=1) if args.json else a1.summary())
        return 0
    if not args.source:
        raise UsageError("a SOURCE (store, table or dataset:NAME) is required")
    table = cols.canonicalise(cols.where(read_table(args.source), args.where), mapping)
    table, convention = cols.in_convention(table, args.flops_convention)
    base = FitResult.load(args.base) if args.base else None
    a2 = None
    if args.approach == 2:
        from scaling.approach2 import approach2
        a2 = approach2(cols.ok_runs(table, ("params", "tokens", "loss")), args.estimator or DEFAULT_ESTIMATOR,
                       bootstrap=200 if args.bootstrap is None else args.bootstrap, seed=args.seed)
    result = fit(table, args.law, fix=_parse_assignments(args.fix, "--fix"), tie=args.tie, base=base,
                 exclude_top=args.exclude_top, start=_parse_assignments(args.start, "--start") or None,
                 bootstrap=(args.bootstrap or 0) if args.approach == 3 else 0, seed=args.seed, source=args.source,
                 want_profiles=not args.no_profiles, paper_tie=not args.untie, variant=args.variant,
                 target=target)
    if convention:
        result.settings["flops_convention"] = convention
    if a2 is not None:
        result.settings["approach2"] = a2.to_dict()
    if args.out:
        result.save(args.out)
    if a2 is not None:
        print_approach2(a2, result, args.json)
        return 0
    print(result.to_json() if args.json else result.summary())
    return 0


def _target(params, tokens) -> tuple[float, float] | None:
    """``--target-params N --target-tokens D`` as (N, D): both or neither, positive and finite."""
    if (params is None) != (tokens is None):
        raise UsageError("give --target-params and --target-tokens together")
    if params is None:
        return None
    from scaling.accounting import parse_size
    return parse_size(params), parse_size(tokens)


def print_approach2(a2, result: FitResult, as_json: bool) -> None:
    """Approach 2 beside Approach 3: N_opt exponents and N_opt at each budget from both."""
    import json
    from scaling.predict import chinchilla_allocation
    p = result.params
    a3_exponent = p["beta"] / (p["alpha"] + p["beta"])
    rows = [{"flops": b.flops, "approach2_params": b.params_opt, "approach2_params_ci": b.params_opt_ci,
             "approach3_params": float(chinchilla_allocation(p, b.flops)["params"])} for b in a2.budgets]
    out = {"approach2": a2.to_dict(), "approach3": result.to_dict(),
           "comparison": {"params_exponent_approach2": a2.params_exponent,
                          "params_exponent_approach3": a3_exponent,
                          "difference": a2.params_exponent - a3_exponent, "budgets": rows}}
    if as_json:
        out["approach3"]["settings"].pop("approach2", None)
        print(json.dumps(out, indent=1))
        return
    print(a2.summary())
    print()
    print(result.summary())
    print()
    print(f"N_opt exponent: Approach 2 {a2.params_exponent:.4f} (se {a2.params_exponent_se:.3g}) vs "
          f"Approach 3 beta/(alpha+beta) = {a3_exponent:.4f}")
    for r in rows:
        print(f"  C={r['flops']:.3g}: N_opt {r['approach2_params']:.4g} (Approach 2) vs "
              f"{r['approach3_params']:.4g} (Approach 3)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
