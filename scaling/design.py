"""Plan the next runs: the ones that most narrow the 95% interval of the prediction a user cares
about, per FLOP spent (issue 25; optimal design of experiments, c-optimality, applied to a scaling law).

The law's log-loss is linearised around the fit (``phi`` = log A, log B, log E, alpha, beta[, log
R_D*, log R_N*]): each run contributes J_i^T J_i / sigma^2 to the Fisher information, sigma the
scatter of the fit's log-loss residuals, and the target's variance is g^T I^-1 g with g the gradient
of the target quantity (the log-loss at (N, D), or log N_opt at C). A candidate run's gain is the
fall of that variance it brings, per FLOP; runs are chosen greedily (each pick conditions the next),
which for this criterion is within (1 - 1/e) of the best set. The current interval is reported
twice: from the fit's bootstrap draws and from the linearisation, so the user sees whether the
approximation holds for their fit.

    python -m scaling.design results/ --fit fit.json --target-flops 1e22 --budget 1e13 --k 6 --json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.accounting import parse_size
from scaling.cli import FLOPS, ArgumentParser, UsageError, add_store_argument, bounded_int, run_cli
from scaling.errors import BadValue, DataError
from scaling.laws import get_law
from scaling.optimal_design import OBJECTIVES, SELECTION, budgeted_greedy, target_variance
from scaling.results import FitResult
from scaling.intervals import Z95, log_sd
from scaling.sources import read_table

#: sizes tried around each budget's compute-optimal N (isoflop candidates)
SIZE_FACTORS = (0.25, 0.4, 0.63, 1.0, 1.6, 2.5, 4.0)
#: relative step of the finite differences of the log-loss in phi
STEP = 1e-5


#: coefficients linearised in their logs (positive, spanning decades); exponents as they are
LOGGED = {"A", "B", "E", "rd_star", "rn_star", "N_c", "D_c"}


class Coordinates:
    """The fit's free parameters as ``phi`` (logs of the coefficients, exponents as they are): a
    parameter the fit fixed stays at its value, one it tied follows its leader (``alpha=beta``), so
    the linearisation has the fit's own degrees of freedom."""

    def __init__(self, fit: FitResult):
        self.law = fit.law
        self.names = list(get_law(fit.law).public_names)
        self.values = {n: float(fit.params[n]) for n in self.names}
        fixed = set((fit.settings.get("fixed") or {}))
        self.follow = {}
        for tie in fit.settings.get("tie") or []:
            leader, _, follower = str(tie).partition("=")
            if leader in self.names and follower in self.names:
                self.follow[follower] = leader
        self.free = [n for n in self.names if n not in fixed and n not in self.follow]

    def phi(self) -> np.ndarray:
        return np.array([np.log(self.values[n]) if n in LOGGED else self.values[n] for n in self.free], dtype=float)

    def params(self, phi) -> dict:
        p = dict(self.values)
        p.update({n: float(np.exp(v)) if n in LOGGED else float(v) for n, v in zip(self.free, phi)})
        for follower, leader in self.follow.items():
            p[follower] = p[leader]
        return p

    def phi_of(self, params: dict) -> np.ndarray | None:
        """A bootstrap draw's coordinates (None when one is not positive where it must be)."""
        try:
            return np.array([np.log(params[n]) if n in LOGGED else params[n] for n in self.free], dtype=float)
        except (KeyError, ValueError, FloatingPointError):
            return None


def _log_quantity(fit: FitResult, quantity: str, target: dict, coords: Coordinates):
    """phi -> log of the target quantity: the loss at (N, D), or N_opt at C."""
    law = get_law(fit.law)

    def f(phi):
        p = coords.params(phi)
        if quantity == "n_opt":
            n, _ = law.optimal(p, target["flops"])
            return np.log(np.atleast_1d(n))
        args = [np.atleast_1d(target["params"]), np.atleast_1d(target["tokens"])]
        if fit.law == "data-constrained":
            args.append(np.atleast_1d(target["tokens"]))
        return np.log(law.predict(p, *args))
    return f


def _log_loss(fit: FitResult, coords: Coordinates):
    law = get_law(fit.law)

    def f(phi, n, d):
        args = [n, d] + ([d] if fit.law == "data-constrained" else [])
        return np.log(law.predict(coords.params(phi), *args))
    return f


def _jacobian(f, phi: np.ndarray, *args) -> np.ndarray:
    """[m, k] central differences of ``f(phi, *args)`` (m outputs)."""
    cols_ = []
    for j in range(len(phi)):
        h = STEP * max(1.0, abs(phi[j]))
        up, down = phi.copy(), phi.copy()
        up[j] += h
        down[j] -= h
        cols_.append((np.asarray(f(up, *args)) - np.asarray(f(down, *args))) / (2 * h))
    return np.stack(cols_, axis=-1)


def candidates(runs: pd.DataFrame, fit: FitResult, kind: str = "isoflop", path=None) -> pd.DataFrame:
    """Candidate runs: ``isoflop``: sizes ``SIZE_FACTORS`` x the fitted N_opt at each budget of the
    data and at 3x and 10x the largest; ``ladder``: the largest size x2, x4 and x8 at the runs'
    median tokens per parameter; ``path``: a user's table with ``params`` and ``tokens``."""
    if path is not None:
        t = cols.canonicalise(read_table(path))
        t, _ = cols.numeric_columns(t, ["params", "tokens"], str(path))
        out = t[["params", "tokens"]].copy()
    elif kind == "ladder":
        n_max = float(runs["params"].max())
        ratio = float(np.median(runs["tokens"] / runs["params"]))
        n = n_max * np.array([2.0, 4.0, 8.0])
        out = pd.DataFrame({"params": n, "tokens": n * ratio})
    else:
        c = 6.0 * runs["params"].to_numpy(float) * runs["tokens"].to_numpy(float)
        budgets = np.unique(np.round(np.log10(c), 1))
        budgets = np.unique(np.concatenate([10 ** budgets, [3 * 10 ** budgets.max(), 10 * 10 ** budgets.max()]]))
        p = fit.params
        rows = []
        for b in budgets:
            n_opt, _ = get_law(fit.law).optimal(p, b)
            for f in SIZE_FACTORS:
                n = float(n_opt) * f
                rows.append({"params": n, "tokens": b / (6.0 * n)})
        out = pd.DataFrame(rows)
    out["flops"] = 6.0 * out["params"] * out["tokens"]
    return out.reset_index(drop=True)


def bootstrap_interval(fit: FitResult, quantity: str, target: dict) -> list[float] | None:
    """The target quantity's 95% interval over the fit's bootstrap draws (percentiles)."""
    boot = fit.fit_settings.bootstrap
    coords = Coordinates(fit)
    q = _log_quantity(fit, quantity, target, coords)
    order = list(boot.names or coords.names)
    values = []
    with np.errstate(all="ignore"):
        for row in boot.draws:
            draw = coords.phi_of({**coords.values, **dict(zip(order, row))})
            if draw is not None and np.isfinite(draw).all():
                values.append(q(draw)[0])
    values = np.exp(np.asarray(values, float))
    values = values[np.isfinite(values)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else None


def refit_check(runs: pd.DataFrame, fit: FitResult, planned: list[dict], *, quantity: str, target: dict,
                sigma: float, draws: int, bootstrap: int = 60, seed: int = 0) -> dict:
    """The plan's expected interval by simulation instead of linearisation: ``draws`` times, the
    planned runs' losses are drawn from the fit (log-normal noise of the residuals' scatter), the law
    is refitted on all the runs (the fit's own variant, ``bootstrap`` resamples) and the target's
    bootstrap interval taken; the median bounds. What the issue calls checking one against the other:
    the linearisation is cheap and assumes the law is locally linear and the bootstrap normal."""
    from scaling.fit import fit as refit
    law = get_law(fit.law)
    variant = (fit.settings.get("variant") or {}).get("chosen")
    keep = [c for c in ("params", "tokens", "unique_tokens", "loss") if c in runs.columns]
    rng = np.random.default_rng(seed)
    n = np.array([r["params"] for r in planned], float)
    d = np.array([r["tokens"] for r in planned], float)
    args = [n, d] + ([d] if fit.law == "data-constrained" else [])
    how = {"variant": variant} if variant else {"fix": fit.settings.get("fixed") or None,
                                                 "tie": fit.settings.get("tie") or None}
    predicted = law.predict(fit.params, *args)
    bounds = []
    for i in range(draws):
        new = pd.DataFrame({"params": n, "tokens": d})
        if "unique_tokens" in keep:
            new["unique_tokens"] = d
        new["loss"] = predicted * np.exp(rng.normal(0.0, sigma, len(n)))
        f = refit(pd.concat([runs[keep], new], ignore_index=True), fit.law, bootstrap=bootstrap, seed=seed + i,
                  want_profiles=False, select_variant=False, **how)
        iv = bootstrap_interval(f, quantity, target)
        if iv is not None:
            bounds.append(iv)
    if not bounds:
        return {"expected_interval_refit": None, "refit_draws": 0}
    lo, hi = np.median(np.asarray(bounds), axis=0)
    return {"expected_interval_refit": [float(lo), float(hi)], "refit_draws": len(bounds),
            "refit_intervals": [[float(a), float(b)] for a, b in bounds]}


def _nearest_shape(n: float, tokens: float, convention: str, layers=None) -> tuple[float, float, str]:
    """(N in the convention, real parameter count, name) of the shape a runner would train for a run whose
    size ``n`` is in a FLOP convention (N = C / 6D, what a fit in that convention sees): the shape,
    among those of the run's compute (``accounting.planned_pool``, as ``runners.isoflop --plan``) and
    of the depths ``layers`` the fitted runs had (when any such shape exists; a law fitted on
    one-layer models says nothing of a two-layer one), whose N in the convention is nearest ``n``."""
    from scaling import accounting as acc
    budget, pool = acc.planned_pool(n, tokens)
    same_depth = {k: sh for k, sh in pool.items() if layers and sh.n_layers in layers}
    pool = same_depth or pool

    def n_in_convention(sh):
        return acc.flops_per_token(convention, d_model=sh.d_model, ffw_size=sh.ffw_size, n_layers=sh.n_layers,
                                   vocab=budget.vocab, seq_len=budget.seq_len) / 6.0

    best = min(pool.values(), key=lambda sh: abs(np.log(n_in_convention(sh) / n)))
    return float(n_in_convention(best)), float(best.params(budget.vocab, budget.seq_len)), best.name


def real_params(n: float, tokens: float, convention: str, layers=None) -> float:
    """The parameter count of the shape a runner trains for a planned N in a FLOP convention."""
    return _nearest_shape(n, tokens, convention, layers)[1]


def fitted_depths(runs: pd.DataFrame) -> set[int] | None:
    """The numbers of layers of the fitted runs (None when the table does not say)."""
    if "n_layers" not in runs.columns:
        return None
    layers = pd.to_numeric(runs["n_layers"], errors="coerce").dropna()
    return {int(v) for v in layers} or None


def trained_by_runners(runs: pd.DataFrame) -> bool:
    """Whether every fitted run names a shape of ``accounting.SHAPES`` (a store our runners wrote):
    its plan is then snapped to those shapes, whatever the FLOP convention."""
    from scaling.accounting import SHAPES
    return "shape" in runs.columns and len(runs) > 0 and runs["shape"].isin(list(SHAPES)).all()


def write_plan(runs: list[dict], runs_fitted: pd.DataFrame, path, columns: list[str]) -> None:
    """The plan file ``runners.isoflop --plan`` / ``runners.mixgrid --plan`` train: ``columns`` of each
    planned run (with ``shape`` when the design named one), then the kind of run every fitted run
    shares (``columns.shared_run_kind``: corpus, code share, tokenizer, FLOP convention, ...), so the
    runner trains runs like those the fit was made on rather than its own defaults."""
    from scaling.store import write_table_file
    table = pd.DataFrame(runs)
    keep = columns + (["shape"] if "shape" in table.columns else [])
    table = table.reindex(columns=keep)
    for c, v in cols.shared_run_kind(runs_fitted).items():
        if c not in table.columns:
            table[c] = v
    write_table_file(table, path)


def snap_to_shapes(cands: pd.DataFrame, convention: str, layers=None) -> pd.DataFrame:
    """Candidates a runner can train: each size moved to the nearest shape's N in the convention (of
    the fitted runs' depths, ``layers``), its tokens to keep its compute (C = 6 N D in the convention);
    duplicates dropped."""
    rows = []
    for n, d, c in zip(cands["params"], cands["tokens"], cands["flops"]):
        n2, _, _ = _nearest_shape(float(n), float(d), convention, layers)
        rows.append({"params": n2, "tokens": float(c) / (6.0 * n2), "flops": float(c)})
    out = pd.DataFrame(rows)
    key = np.round(np.log(out[["params", "tokens"]].to_numpy(float)), 6)
    return out[~pd.DataFrame(key).duplicated().to_numpy()].reset_index(drop=True)


def open_budgets(runs: pd.DataFrame) -> list[dict]:
    """Budgets (runs grouped by their ``budget`` column, else by 6ND to 0.1 decade; 3 or more sizes) whose lowest measured loss is at
    their smallest or largest size: Approach 2 has no interior minimum there, and the sizes a person
    would add are beyond that edge (``missing``: 1.6x and 2.5x further out, at the same compute)."""
    c = 6.0 * runs["params"].to_numpy(float) * runs["tokens"].to_numpy(float)
    key = np.round(np.log10(c), 1)
    if "budget" in runs.columns and runs["budget"].notna().all() and runs["budget"].astype(str).str.len().gt(0).all():
        # a grid's own budgets: its runs share a compute in the grid's FLOP convention, which 6ND
        # splits (attention and head FLOPs are a different share at each size)
        key = runs["budget"].astype(str).to_numpy()
    out = []
    for b in pd.unique(key):
        g = runs[key == b].sort_values("params")
        if g["params"].nunique() < 3:
            continue
        best = g["loss"].to_numpy(float).argmin()
        side = "small" if best == 0 else "large" if best == len(g) - 1 else None
        if side is None:
            continue
        edge = float(g["params"].iloc[best])
        flops = float(np.median(6.0 * g["params"] * g["tokens"]))
        sizes = [edge / 1.6, edge / 2.5] if side == "small" else [edge * 1.6, edge * 2.5]
        out.append({"flops": flops, "side": side, "best_params": edge,
                    "missing": [{"params": n, "tokens": flops / (6.0 * n)} for n in sizes]})
    return sorted(out, key=lambda b: b["flops"])


def design(runs: pd.DataFrame, fit: FitResult, *, quantity: str, target: dict, budget: float, k: int,
           cands: pd.DataFrame, close_edges: bool = True, check_refit: int = 0, objective: str = "width") -> dict:
    """The plan (see the module docstring): current interval (bootstrap and linearised), the expected
    interval after the proposed runs, and the runs in the order chosen with their expected gain.

    ``close_edges``: first, for each budget whose lowest loss is at an edge (``open_budgets``), the
    run just beyond that edge (1.6x further out at the same compute), while the budget and ``k``
    allow: Approach 2 has no minimum there until it is trained, a value the law's linearisation
    does not see (``reason`` says why each run is in the plan); then the greedy.

    ``check_refit``: also the expected interval by ``refit_check`` with that many simulations."""
    if fit.law not in ("chinchilla", "data-constrained", "kaplan"):
        raise DataError(f"a design needs a Chinchilla, data-constrained or Kaplan fit; this one is {fit.law}")
    boot = fit.fit_settings.bootstrap
    if boot is None:
        raise DataError("the fit has no bootstrap draws: refit it with --bootstrap 200 (python -m scaling.fit "
                        "SOURCE --bootstrap 200 --out FIT.json)")
    coords = Coordinates(fit)
    phi = coords.phi()
    loss = _log_loss(fit, coords)
    n, d = runs["params"].to_numpy(float), runs["tokens"].to_numpy(float)
    resid = np.log(runs["loss"].to_numpy(float)) - loss(phi, n, d)
    sigma = float(np.std(resid, ddof=len(phi))) if len(resid) > len(phi) else float(np.std(resid))
    sigma = max(sigma, 1e-6)
    J = _jacobian(loss, phi, n, d)                               # [runs, k]
    info = J.T @ J / sigma ** 2
    q = _log_quantity(fit, quantity, target, coords)
    g = _jacobian(lambda ph: q(ph)[:1], phi)[0]                  # [k]
    centre = float(q(phi)[0])

    def variance(I):
        return target_variance(g, I)

    def interval_of(var):
        half = Z95 * np.sqrt(max(var, 0.0))
        return [float(np.exp(centre - half)), float(np.exp(centre + half))]

    boot_interval = bootstrap_interval(fit, quantity, target)
    # a candidate the store already holds (same N and D within 1%) is a run the runner skips
    held = np.log(np.c_[n, d])
    cn = np.log(cands[["params", "tokens"]].to_numpy(float))
    trained = (np.abs(cn[:, None, :] - held[None, :, :]).max(axis=2) < 0.01).any(axis=1)
    cands = cands[~trained].reset_index(drop=True)
    if cands.empty:
        raise DataError("every candidate run is already in the store: give --candidates FILE with new runs")
    cheapest = float(cands["flops"].min())
    if budget < cheapest:
        raise BadValue("budget", f"{{arg}} {budget:.3g} FLOPs buys none of the candidates (the cheapest costs {cheapest:.3g})")
    Jc = _jacobian(loss, phi, cands["params"].to_numpy(float), cands["tokens"].to_numpy(float))
    costs = cands["flops"].to_numpy(float)
    var0 = variance(info)

    edges = open_budgets(runs)
    start, left0, forced = info.copy(), budget, []
    musts = [(b["missing"][0], f"closes the edge minimum at {b['flops']:.3g} FLOPs (Approach 2)")
             for b in (edges if close_edges else [])]
    for m, why in musts:
        cost = 6.0 * m["params"] * m["tokens"]
        if len(forced) >= k or cost > left0:
            continue
        j = _jacobian(loss, phi, np.array([m["params"]]), np.array([m["tokens"]]))[0]
        var_before = variance(start)
        start = start + np.outer(j, j) / sigma ** 2
        left0 -= cost
        forced.append({"params": float(m["params"]), "tokens": float(m["tokens"]), "flops": float(cost),
                       "expected_gain": (var_before - variance(start)) / var0 if var0 > 0 else 0.0, "reason": why})

    rows = Jc[:, None, :] / sigma
    current, left, picks = budgeted_greedy(variance, start, rows, costs, left0, k - len(forced), var0, objective)
    chosen = forced + [{"params": float(cands["params"].iloc[i]), "tokens": float(cands["tokens"].iloc[i]),
                        "flops": float(costs[i]), "expected_gain": float(gain), "reason": "greedy"}
                       for i, gain in picks]
    checked = refit_check(runs, fit, chosen, quantity=quantity, target=target, sigma=sigma,
                          draws=check_refit) if check_refit and chosen else {}
    return {"quantity": quantity, "target": target, "law": fit.law,
            "current_interval": boot_interval, "current_interval_linearised": interval_of(var0),
            "expected_interval": interval_of(variance(current)), **checked, "prediction": float(np.exp(centre)),
            "residual_sd": sigma, "budget": float(budget), "flops_used": float(budget - left),
            "open_budgets": edges, "objective": objective,
            "selection": SELECTION,
            "runs": chosen}


def accuracy_design(runs: pd.DataFrame, down, *, target: dict, budget: float, k: int, kind: str = "isoflop",
                    path=None, close_edges: bool = True, objective: str = "width") -> dict:
    """``--quantity accuracy``: the runs that most narrow a downstream fit's predicted metric at the
    target (``scaling.downstream``: metric = step 2 of the intermediate x = step 1 at (N, D)).

    New runs inform step 1 (each adds a final point to its law); step 2 is fitted on every
    checkpoint and is taken as fixed by the plan. By the delta method the metric's variance is
    slope^2 var(log x) + var_2, slope = d metric / d log x at the predicted x and var_2 step 2's
    bootstrap variance there: the runs that narrow log x at the target narrow the metric, in the same
    order (the loss design on the intermediate), and no plan goes below step 2's own interval
    (``step2_floor_interval``), which says when more final runs cannot help and more checkpoints
    near the target's x would. ``runs``: step 1's table, each run's final intermediate
    (``scaling.downstream.step1_table``)."""
    from scaling.laws.downstream import FORMS

    law = down.law
    base = design(runs, law, quantity="loss", target=target, budget=budget, k=k,
                  cands=candidates(runs, law, kind, path), close_edges=close_edges, objective=objective)
    n, d = target["params"], target["tokens"]
    x = float(np.ravel(down.intermediate(n, d))[0])
    h = 1e-4
    slope = float(np.ravel(down.metric_at(x * np.exp(h)) - down.metric_at(x * np.exp(-h)))[0]) / (2 * h)
    draws = down.step2.get("draws")
    var2 = 0.0
    if draws:
        s2 = FORMS[down.form].predict_many(np.asarray(draws, float), np.array([x]))[:, 0]
        var2 = float(np.var(1.0 - s2 if down.lower_is_better else s2, ddof=1))

    v_now, v_after = log_sd(base["current_interval_linearised"]) ** 2, log_sd(base["expected_interval"]) ** 2
    total_now, total_after = slope ** 2 * v_now + var2, slope ** 2 * v_after + var2
    m = float(np.ravel(down.metric_at(x))[0])

    def interval_of(var):
        half = Z95 * np.sqrt(max(var, 0.0))
        return [m - half, m + half]

    share = slope ** 2 * v_now / total_now if total_now > 0 else 0.0
    runs_out = [{**r, "expected_gain": r["expected_gain"] * share} for r in base["runs"]]
    predicted = down.predict(n, d)
    return {**base, "quantity": "accuracy", "task": down.task, "metric": down.metric, "via": down.via,
            "prediction": m, "current_interval": predicted["interval"][0] if predicted["interval"] else None,
            "current_interval_linearised": interval_of(total_now), "expected_interval": interval_of(total_after),
            "step2_floor_interval": interval_of(var2), "intermediate": x,
            "intermediate_interval_now": base["current_interval_linearised"],
            "intermediate_interval_after": base["expected_interval"], "runs": runs_out}


def _parser():
    p = ArgumentParser(prog="python -m scaling.design", description=__doc__.split("\n")[0],
                       epilog="examples:\n  python -m scaling.design results/ --fit fit.json --target-flops 1e22 "
                              "--budget 1e13 --k 6 --json\n  python -m scaling.design mix-runs/ --fit mix.json "
                              "--budget 2e14 --k 4 --out plan.csv   # a mixture fit: which mixtures next")
    add_store_argument(p, positional=True, help="the runs the fit was made on: store, CSV/Parquet or dataset:NAME")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep only rows with this value (repeatable), as the fit was made: e.g. "
                        "--where experiment=llama_3__raw_loss")
    p.add_argument("--fit", required=True, help="fit file with bootstrap draws (scaling.fit --bootstrap N --out F; "
                                               "for --quantity accuracy a scaling.downstream fit)")
    p.add_argument("--target-flops", type=FLOPS, help="the compute of the prediction that matters")
    p.add_argument("--target-params", help="the target's N (with --target-tokens; default: the optimum at C)")
    p.add_argument("--target-tokens", help="the target's D")
    p.add_argument("--quantity", choices=["loss", "n_opt", "accuracy", "mixture"], default=None,
                   help="loss at the target (default), N_opt at its compute, with a downstream fit (scaling.downstream "
                        "fit --out) the task metric at the target, with a mixture fit (scaling.mixture fit --out, "
                        "direct or joint) the loss of the best mixture (the default for such a fit)")
    p.add_argument("--weights", action="append", metavar="D1=W1,...",
                   help="--quantity mixture: weights of the loss domains in the optimum's loss (default equal)")
    p.add_argument("--budget", type=FLOPS, required=True, help="FLOPs to spend on the new runs (6ND each)")
    p.add_argument("--candidates", default="isoflop",
                   help="isoflop, ladder, or a CSV/Parquet of params,tokens (a mixture fit: of mix.<domain> shares, the "
                        "mixtures you could train; default: Dirichlet draws around the runs' mean mixture)")
    p.add_argument("--k", type=bounded_int(1000, "runs proposed at most", minimum=1), default=8)
    p.add_argument("--no-close-edges", dest="close_edges", action="store_false",
                   help="do not put first the runs that give an edge budget its Approach 2 minimum")
    p.add_argument("--objective", choices=OBJECTIVES, default="width",
                   help="width: the narrowest interval the budget buys (default); per-flop: the largest fall of the "
                        "interval per FLOP, cheap runs first (often far less than --budget spent)")
    p.add_argument("--check-refit", type=bounded_int(100, "simulations", minimum=0), default=0, metavar="R",
                   help="also the expected interval by simulation: R times, draw the planned runs from the fit, refit "
                        "with 60 bootstrap resamples (a few seconds each); checks the linearisation")
    p.add_argument("--out", help="the plan as a table (params, tokens, flops, expected_gain; shape, in a FLOP "
                                 "convention; the kind of run every fitted run shares: data, code_fraction, tokenizer, "
                                 "flops_convention, ...), for runners.isoflop --plan / runners.mixgrid --plan")
    p.add_argument("--json", action="store_true")
    return p


def _source(args) -> pd.DataFrame:
    """SOURCE's rows as the fit saw them: ``--where`` as ``scaling.fit --where`` kept them."""
    return cols.where(read_table(args.source), args.where)


def _mixture_main(args, fit_kind) -> int:
    """``--quantity mixture``: the mixtures that most narrow the best mixture's loss (``scaling.mixture.design``)."""
    from scaling.mixture import MixtureFit
    from scaling.mixture.design import mixture_design
    from scaling.mixture.optimize import _parse_domain_values
    if fit_kind != "mixture-fit":
        raise UsageError(f"--quantity mixture needs a mixture fit (python -m scaling.mixture fit SOURCE --bootstrap 100 "
                         f"--out FIT.json); {args.fit} is not one")
    if args.quantity not in (None, "mixture"):
        raise UsageError(f"{args.fit} is a mixture fit: its quantity is mixture (the loss of the best mixture), "
                         f"not {args.quantity}")
    if args.candidates == "ladder" or args.target_flops is not None or not args.close_edges:
        raise UsageError("--candidates ladder, --target-flops and --no-close-edges are for scaling-law fits; a "
                         "mixture design proposes mixtures at the runs' scales")
    if (args.target_params is None) != (args.target_tokens is None):
        raise UsageError("--target-params and --target-tokens go together")
    if args.check_refit:
        raise UsageError("--check-refit is for --quantity loss and n_opt (a scaling-law fit)")
    fit = MixtureFit.load(args.fit)
    target = None
    if args.target_params is not None:
        target = {"params": parse_size(args.target_params), "tokens": parse_size(args.target_tokens)}
    weights = _parse_domain_values(args.weights, "--weights", fit.loss_domains, positive=False) or None
    mixtures = None
    if args.candidates != "isoflop":
        table = cols.canonicalise(read_table(args.candidates))
        missing = [d for d in fit.domains if f"mix.{d}" not in table.columns]
        if missing:
            raise DataError(f"{args.candidates}: candidate mixtures need a mix.<domain> column per component of the "
                            f"fit; missing {', '.join(f'mix.{d}' for d in missing)}")
        mixtures = table[[f"mix.{d}" for d in fit.domains]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        if not np.isfinite(mixtures).all():
            raise DataError(f"{args.candidates}: a candidate mixture has a missing or non-numeric share")
    source = _source(args)
    out = mixture_design(source, fit, target=target, budget=args.budget, k=args.k, weights=weights,
                         source=str(args.source), mixtures=mixtures, objective=args.objective)
    mix_cols = [f"mix.{d}" for d in fit.domains]
    if args.out:     # the code share of a mixture plan is its mix.code
        write_plan(out["runs"], source.drop(columns="code_fraction", errors="ignore"), args.out,
                   ["params", "tokens", "flops", "expected_gain", *mix_cols])
    if args.json:
        print(json.dumps(out))
        return 0
    lo, hi = out["current_interval"] or [float("nan")] * 2
    elo, ehi = out["expected_interval"]
    best = ", ".join(f"{d} {v:.3g}" for d, v in out["target"]["mixture"].items() if v > 5e-4)
    print(f"best mixture at N={out['target']['params']:.4g}, D={out['target']['tokens']:.4g}: {best}; its loss "
          f"{out['prediction']:.4g}, 95% interval now [{lo:.4g}, {hi:.4g}] (bootstrap, the optimum re-found per draw; "
          f"linearised [{out['current_interval_linearised'][0]:.4g}, {out['current_interval_linearised'][1]:.4g}]), "
          f"after the plan [{elo:.4g}, {ehi:.4g}]")
    print(f"{'params':>12} {'tokens':>12} {'flops':>10} {'gain':>8}  mixture")
    for r in out["runs"]:
        mix = ", ".join(f"{c[4:]} {r[c]:.3g}" for c in mix_cols if r[c] > 5e-4)
        print(f"{r['params']:>12.4g} {r['tokens']:>12.4g} {r['flops']:>10.3g} {r['expected_gain']:>8.3f}  {mix}")
    print(f"{len(out['runs'])} run(s), {out['flops_used']:.3g} of {out['budget']:.3g} FLOPs ({out['selection']}); "
          f"train them with python -m runners.mixgrid --plan PLAN.csv")
    for w in out["warnings"]:
        print(f"warning: {w}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from scaling.schemas import kind_of, read_json
    fit_kind = kind_of(read_json(args.fit))
    if fit_kind == "mixture-fit" or args.quantity == "mixture":
        return _mixture_main(args, fit_kind)
    if args.weights:
        raise UsageError("--weights is for --quantity mixture (the loss domains of a mixture fit)")
    if args.check_refit and args.quantity == "accuracy":
        raise UsageError("--check-refit is for --quantity loss and n_opt (a scaling-law fit)")
    args.quantity = args.quantity or "loss"
    down = None
    if args.quantity == "accuracy":
        from scaling.downstream import DownstreamFit
        if fit_kind != "downstream-fit":
            raise UsageError(f"--quantity accuracy needs a downstream fit (python -m scaling.downstream fit SOURCE "
                             f"--task T --out FIT.json); {args.fit} is not one")
        down = DownstreamFit.load(args.fit)
        fit = down.law
        from scaling.downstream import data as ddata
        runs = ddata.step1_table(ddata.task_data(_source(args), down.task, down.metric, str(args.source)),
                                 down.via_column)
    else:
        fit = FitResult.load(args.fit)
        runs = cols.ok_runs(_source(args), source=str(args.source))
        # the runs as the fit saw them: N = C / 6D in the fit's FLOP convention, when it had one
        runs = cols.with_convention(runs, (fit.settings or {}).get("flops_convention"))
    convention = (fit.settings or {}).get("flops_convention")
    # plans name shapes when the fit counts in a convention or the runs came from our runners
    shapes_in = convention or ("6N" if down is None and trained_by_runners(runs) else None)
    depths = fitted_depths(runs)
    if (args.target_params is None) != (args.target_tokens is None):
        raise UsageError("--target-params and --target-tokens go together")
    p = fit.params
    if args.target_params is not None:
        target = {"params": parse_size(args.target_params), "tokens": parse_size(args.target_tokens)}
        target["flops"] = 6.0 * target["params"] * target["tokens"]
    elif args.target_flops is not None:
        n, d = get_law(fit.law).optimal(p, args.target_flops)
        target = {"flops": float(args.target_flops), "params": float(n), "tokens": float(d)}
    else:
        raise UsageError("give the target: --target-flops C, or --target-params N --target-tokens D")
    largest = float((6.0 * runs["params"] * runs["tokens"]).max())
    if target["flops"] <= largest:
        raise UsageError(f"the target ({target['flops']:.3g} FLOPs) lies inside the data (up to {largest:.3g}): "
                         f"a design narrows an extrapolation")
    kind = args.candidates if args.candidates in ("isoflop", "ladder") else None
    if down is not None:
        out = accuracy_design(runs, down, target=target, budget=args.budget, k=args.k, kind=kind or "isoflop",
                              path=None if kind else args.candidates, close_edges=args.close_edges,
                              objective=args.objective)
    else:
        cands = candidates(runs, fit, kind or "isoflop", None if kind else args.candidates)
        if shapes_in and kind:
            cands = snap_to_shapes(cands, shapes_in, depths)
        out = design(runs, fit, quantity=args.quantity, target=target, budget=args.budget, k=args.k, cands=cands,
                     close_edges=args.close_edges, check_refit=args.check_refit, objective=args.objective)
    if shapes_in:           # the shape a runner trains for each planned N (of the fitted runs' depth)
        for r in out["runs"]:
            if convention:
                r["params_in_convention"] = r["params"]
            _, r["params"], r["shape"] = _nearest_shape(r["params"], r["tokens"], shapes_in, depths)
    if convention:
        out["flops_convention"] = convention
    if args.out:
        write_plan(out["runs"], runs, args.out, ["params", "tokens", "flops", "expected_gain"])
    if args.json:
        print(json.dumps(out))
        return 0
    lo, hi = out["current_interval"] or [float("nan")] * 2
    elo, ehi = out["expected_interval"]
    print(f"{out.get('metric', out['quantity'])} at {target['flops']:.3g} FLOPs: {out['prediction']:.4g}, 95% interval now "
          f"[{lo:.4g}, {hi:.4g}] (bootstrap; linearised [{out['current_interval_linearised'][0]:.4g}, "
          f"{out['current_interval_linearised'][1]:.4g}]), after the plan [{elo:.4g}, {ehi:.4g}]")
    if out.get("expected_interval_refit"):
        rlo, rhi = out["expected_interval_refit"]
        print(f"after the plan by simulation ({out['refit_draws']} refits of the runs drawn from the fit): "
              f"[{rlo:.4g}, {rhi:.4g}] (median bounds)")
    if "step2_floor_interval" in out:
        flo, fhi = out["step2_floor_interval"]
        print(f"step 2 alone ({out['metric']} from {out['via']}, fitted on the checkpoints) leaves [{flo:.4g}, {fhi:.4g}]: "
              f"no plan of final runs narrows the prediction below it")
    print(f"{'params':>12} {'tokens':>12} {'flops':>10} {'gain':>8}")
    for r in out["runs"]:
        why = "" if r.get("reason", "greedy") == "greedy" else f"  {r['reason']}"
        print(f"{r['params']:>12.4g} {r['tokens']:>12.4g} {r['flops']:>10.3g} {r['expected_gain']:>8.3f}{why}")
    print(f"{len(out['runs'])} run(s), {out['flops_used']:.3g} of {out['budget']:.3g} FLOPs ({out['selection']})")
    if convention:
        print(f"note: FLOPs and the law's N in {convention} (the fit's convention); params are the count of the shape "
              f"a runner trains for that N")
    for b in out["open_budgets"]:
        sizes = ", ".join(f"{m['params']:.3g}" for m in b["missing"])
        which = "smallest" if b["side"] == "small" else "largest"
        print(f"note: at {b['flops']:.3g} FLOPs the {which} size ({b['best_params']:.3g}) has the lowest loss: "
              f"Approach 2 has no interior minimum there; sizes {sizes} would close it")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
