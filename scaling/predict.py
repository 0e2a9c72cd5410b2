"""Predictions from a fit: compute-optimal and data-constrained allocations, losses, and the return
on repeated data, with 95% intervals when the fit carries bootstrap draws.

    python -m scaling.predict allocate --fit fits/muennighoff2023_c4.json --flops 1e22 --unique-tokens 25e9
    python -m scaling.predict loss --fit fit.json --params 6.34e9 --tokens 242e9 --unique-tokens 25e9
    python -m scaling.predict repetition --fit fits/muennighoff2023_c4.json --unique-tokens 25e9 --epochs 1,2,4,16,40

Every argument takes a comma list, so sweeps and contours are one call.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy.optimize import minimize_scalar

from scaling.accounting import chinchilla_optimal, parse_size, tokens_for
from scaling.cli import ArgumentParser, UsageError, run_cli
from scaling.errors import DataError
from scaling.laws import get_law
from scaling.laws.data_constrained import effective_data
from scaling.results import FitResult
from scaling.intervals import (checked_decades, decades_beyond, interval, interval_list, out_of_fold_rms,
                               prediction_interval, predictive_sd, residual_sd)

BASE = ("A", "B", "E", "alpha", "beta")
#: search range for the data-constrained optimum (parameters)
N_RANGE = (1e3, 1e15)


def _base(params: dict) -> dict:
    return {k: params[k] for k in BASE}


def chinchilla_allocation(params: dict, flops) -> dict:
    """Hoffmann et al. 2022 closed form: N_opt, D_opt and the loss there."""
    n, d = chinchilla_optimal(flops, params["E"], params["A"], params["B"], params["alpha"], params["beta"])
    loss = get_law("chinchilla").predict(_base(params), n, d)
    return {"params": n, "tokens": d, "loss": loss}


def law_allocation(law_name: str, params: dict, flops) -> dict:
    """N_opt, D_opt and the loss there without a limit on unique data: Kaplan et al. 2020's law by its
    own closed form (``Law.optimal``), the Chinchilla and data-constrained laws by Hoffmann et al.'s."""
    if law_name != "kaplan":
        return chinchilla_allocation(params, flops)
    law = get_law(law_name)
    n, d = law.optimal(params, flops)
    return {"params": n, "tokens": d, "loss": law.predict(params, n, d)}


def data_constrained_allocation(params: dict, flops: float, unique_tokens: float) -> dict:
    """Loss-minimising N for a budget C when only U_D unique tokens exist (Muennighoff et al. 2023):
    minimise L(N, D = C/6N, U_D) over log N."""
    law = get_law("data-constrained")

    def loss_at(log_n):
        n = np.exp(log_n)
        return float(law.predict(params, n, tokens_for(flops, n), unique_tokens))

    grid = np.linspace(np.log(N_RANGE[0]), np.log(N_RANGE[1]), 400)
    with np.errstate(all="ignore"):
        losses = np.array([loss_at(x) for x in grid])
    if not np.isfinite(losses).any():
        raise DataError(f"this fit gives no finite loss at {flops:g} FLOPs with {unique_tokens:g} unique tokens "
                        f"for any model size from {N_RANGE[0]:g} to {N_RANGE[1]:g}")
    i = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(loss_at, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    n = float(np.exp(res.x))
    d = tokens_for(flops, n)
    return {"params": n, "tokens": d, "epochs": d / unique_tokens, "loss": float(res.fun)}


def _draw_params(fit: FitResult) -> list[dict]:
    draws = fit.bootstrap_draws
    if draws is None:
        return []
    names = fit.settings["bootstrap"]["names"]
    return [dict(zip(names, row)) for row in draws]


def _interval(values) -> list[float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return interval_list(v) if len(v) else [None, None]


def _finite(out: dict, what: str) -> dict:
    """``out`` when its params, tokens and loss are finite numbers; a ``DataError`` otherwise (a fit
    whose law leaves a float's range there would print Infinity or NaN with a straight face)."""
    for key in ("params", "tokens", "loss"):
        if key in out and not np.isfinite(np.asarray(out[key], float)).all():
            raise DataError(f"this fit gives a non-finite {key} for {what}: its parameters (or the request) "
                            f"lie beyond where its law can be evaluated in floating point")
    return out


def _or_nan(allocation, params: dict) -> dict:
    """One bootstrap draw's allocation, or NaNs (left out of the interval) where the draw's law
    gives no finite loss at the request."""
    try:
        return allocation(params)
    except DataError:
        return {"params": np.nan, "tokens": np.nan, "loss": np.nan, "epochs": np.nan}


def allocate(fit: FitResult, flops: float, unique_tokens: float | None = None) -> dict:
    if not flops > 0:
        raise UsageError(f"--flops must be positive, got {flops:g}")
    chin = {k: float(v) for k, v in law_allocation(fit.law, fit.params, flops).items()}
    if unique_tokens is None:
        out = {**chin, "epochs": 1.0}
        one = lambda p: law_allocation(fit.law, p, flops)            # noqa: E731
    else:
        _need_law(fit, "data-constrained", "--unique-tokens")
        if not unique_tokens > 0:
            raise UsageError(f"--unique-tokens must be positive, got {unique_tokens:g}")
        out = data_constrained_allocation(fit.params, flops, unique_tokens)
        one = lambda p: data_constrained_allocation(p, flops, unique_tokens)   # noqa: E731
        if chin["tokens"] <= unique_tokens:
            out["note"] = ("the unique data covers the compute-optimal token count: the data-constrained "
                           "optimum is the Chinchilla one up to excess-parameter effects")
    _finite(chin, f"{flops:g} FLOPs")
    _finite(out, f"{flops:g} FLOPs")
    out["flops"] = float(flops)
    # the fit's own law's optimum with unlimited unique data; ``chinchilla`` only where that law is
    # Chinchilla's (a data-constrained fit's stage 1), not for Kaplan's, whose optimum it is not
    out["compute_optimal"] = chin
    if fit.law in ("chinchilla", "data-constrained"):
        out["chinchilla"] = chin
    draws = _draw_params(fit)
    if draws:
        results = [_or_nan(one, p) for p in draws]
        out["ci"] = {k: _interval([r[k] for r in results]) for k in ("params", "tokens", "loss")}
        if unique_tokens is not None:
            out["ci"]["epochs"] = _interval([r["epochs"] for r in results])
    if fit.law == "chinchilla" and "alpha=beta" in fit.settings.get("tie", []):
        out["note"] = ("alpha = beta (the fit's variant) fixes N_opt ~ C^0.5, a choice no interval here carries; "
                       + ("'approach2' is the isoFLOP minima's answer" if fit.settings.get("approach2") else
                          "a fit with --approach 2 gives the isoFLOP minima's answer beside it"))
    if fit.settings.get("approach2") and unique_tokens is None:
        out.update(_beside_approach2(fit, flops, out))
    return out


def _beside_approach2(fit: FitResult, flops: float, out: dict) -> dict:
    """Approach 2's allocation at ``flops`` beside the law's, for a fit made with ``--approach 2``:
    the lines through the isoFLOP minima (what Llama 3's report extrapolated) with their interval,
    and a warning when the two answers exclude each other. A tied variant (alpha = beta) fixes the
    law's N_opt ~ C^0.5, so its interval carries no uncertainty in that exponent; on Llama 3's
    sweeps at the report's 3.8e25 FLOPs it says 611B [580B, 645B] parameters where the minima say
    398B [250B, 634B] (the report: 402B). ``predictive``: where a sweep at ``flops`` would find its
    own minimum, which scatters about the line by tau (``Approach2Result.allocation_interval``)."""
    from scaling.fit.approach2 import Approach2Result
    a2 = Approach2Result.from_dict(fit.settings["approach2"], "the fit's approach2")
    block = {"params": float(a2.optimal_params(flops)), "tokens": float(a2.optimal_tokens(flops)),
             "params_exponent": a2.params_exponent,
             "decades_beyond_the_largest_budget": float(np.log10(flops / max(b.flops for b in a2.budgets)))}
    ci = a2.allocation_interval(flops)
    if ci:
        block["ci"] = ci
        # where a sweep at this budget would find its own minimum: the line's interval and the
        # budgets' scatter about it (tau)
        block["predictive"] = a2.allocation_interval(flops, predictive=True)
    extra = {"approach2": block}
    law_ci = (out.get("ci") or {}).get("params")
    a2_in_law = law_ci is None or law_ci[0] is None or law_ci[0] <= block["params"] <= law_ci[1]
    law_in_a2 = ci is None or ci["params"][0] <= out["params"] <= ci["params"][1]
    if not (a2_in_law or law_in_a2):
        tied = "alpha=beta" in fit.settings.get("tie", [])
        extra["warnings"] = [f"Approaches 2 and 3 disagree at {flops:.3g} FLOPs: N_opt {block['params']:.3g} "
                             f"[{ci['params'][0]:.3g}, {ci['params'][1]:.3g}] from the isoFLOP minima vs "
                             f"{out['params']:.3g} [{law_ci[0]:.3g}, {law_ci[1]:.3g}] from the {fit.law} law"
                             + (" (alpha = beta fixes its N_opt ~ C^0.5)" if tied else "")]
    return extra


def predict_loss(fit: FitResult, params, tokens, unique_tokens=None) -> dict:
    law = get_law(fit.law)
    n, d = np.asarray(params, float), np.asarray(tokens, float)
    if (n <= 0).any() or (d <= 0).any():
        raise UsageError("--params and --tokens must be positive")
    if fit.law == "data-constrained":
        u = d if unique_tokens is None else np.asarray(unique_tokens, float)
        if (u <= 0).any():
            raise UsageError("--unique-tokens must be positive")
        loss = law.predict(fit.params, n, d, u)
        draws = [law.predict(p, n, d, u) for p in _draw_params(fit)]
    else:
        if unique_tokens is not None:
            raise UsageError("--unique-tokens needs a data-constrained fit; this fit's law is chinchilla")
        loss = law.predict(fit.params, n, d)
        draws = [law.predict(p, n, d) for p in _draw_params(fit)]
    out = _finite({"loss": loss.tolist()}, "these sizes and token counts")
    if draws:
        stack = np.array(draws)
        out["ci"] = {"loss": np.stack(interval(stack, axis=0), axis=-1).tolist()}
    beyond = decades_beyond(fit, n, d)
    if beyond is not None:
        out["decades_beyond"] = beyond.tolist()
        checked = checked_decades(fit)
        far = beyond > checked if checked is not None else np.zeros(beyond.shape, bool)
        if far.any():
            out["warnings"] = [f"{int(far.sum())} of {far.size} target(s) lie up to {beyond.max():.2g} decades of compute "
                               f"beyond the fitted runs, where the backtest checked {checked:.2g}: the prediction "
                               f"interval's out-of-fold error was measured nearer than that"]
    scatter = predictive_sd(fit)
    if scatter is not None:
        sd, how = scatter
        at_target = predictive_sd(fit, beyond) if beyond is not None else (np.full(loss.shape, sd), how)
        out["prediction_interval"] = {"loss": prediction_interval(loss, np.array(draws) if draws else None,
                                                                  at_target[0]).tolist(),
                                      "residual_sd": residual_sd(fit), "out_of_fold_rms": out_of_fold_rms(fit),
                                      "out_of_fold_rms_farther": out_of_fold_rms(fit, farther=True),
                                      "sd": sd, "target_sd": at_target[0].tolist(),
                                      "from": ("bootstrap draws and " if draws else
                                               "(fit without --bootstrap) ") + at_target[1]}
    return out


def repetition(fit: FitResult, unique_tokens: float, epochs, params: float | None = None) -> dict:
    """Effective data D' (Muennighoff et al. 2023, eq. 5), the loss, and what a repeated token is
    worth relative to a fresh one: marginally, dD'/dD = exp(-R_D / R_D*), and on average over the
    repeats, (D' - U_D) / (D - U_D). ``params`` defaults to the size compute-optimal for U_D."""
    _need_law(fit, "data-constrained", "repetition")
    epochs = np.asarray(epochs, float)
    if (epochs < 1).any():
        raise UsageError("--epochs must be >= 1")
    if not unique_tokens > 0:
        raise UsageError("--unique-tokens must be positive")
    p = fit.params
    if params is None:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            g = np.float64(p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
            params = float(g * (unique_tokens * g) ** (p["beta"] / p["alpha"]))
    tokens = unique_tokens * epochs
    d_eff = effective_data(tokens, unique_tokens, p["rd_star"])
    repeats = epochs - 1.0
    marginal = np.exp(-repeats / p["rd_star"])
    with np.errstate(invalid="ignore", divide="ignore"):
        average = np.where(repeats > 0, (d_eff - unique_tokens) / (tokens - unique_tokens), 1.0)
    law = get_law("data-constrained")
    _finite({"params": params}, f"{unique_tokens:g} unique tokens")
    return {"unique_tokens": float(unique_tokens), "params": float(params), "epochs": epochs.tolist(),
            "tokens": tokens.tolist(), "effective_tokens": d_eff.tolist(),
            "loss": law.predict(p, params, tokens, unique_tokens).tolist(),
            "loss_if_unique": law.predict(p, params, tokens, tokens).tolist(),
            "marginal_value": marginal.tolist(), "average_value": average.tolist()}


def _need_law(fit: FitResult, law: str, what: str) -> None:
    if fit.law != law:
        raise UsageError(f"{what} needs a {law} fit; this fit's law is {fit.law}")
    missing = [n for n in get_law(law).public_names if n not in fit.params]
    if missing:
        raise UsageError(f"fit file lacks parameter(s) {', '.join(missing)}")


def _sizes(text: str | None) -> list[float] | None:
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",")]
    if any(not t for t in items):
        raise UsageError(f"malformed list {text!r}: an empty item")
    try:
        return [parse_size(t) for t in items]
    except UsageError:
        raise
    except Exception:
        raise UsageError(f"malformed list {text!r}") from None


def _parser():
    p = ArgumentParser(prog="python -m scaling.predict", description=__doc__.split("\n")[0],
                                epilog="examples:\n" + "\n".join(l for l in __doc__.splitlines() if "python -m" in l))
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("allocate", help="loss-minimising params/tokens for a budget")
    a.add_argument("--flops", required=True)
    a.add_argument("--unique-tokens")
    lo = sub.add_parser("loss", help="predicted loss")
    lo.add_argument("--params", required=True)
    lo.add_argument("--tokens", required=True)
    lo.add_argument("--unique-tokens")
    r = sub.add_parser("repetition", help="effective data and the value of repeated tokens")
    r.add_argument("--unique-tokens", required=True)
    r.add_argument("--epochs", default="1,2,4,8,16,40,100")
    r.add_argument("--params")
    for s in (a, lo, r):
        s.add_argument("--fit", required=True)
        s.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    fit = FitResult.load(args.fit)
    if args.command == "allocate":
        uniques = _sizes(args.unique_tokens) or [None]
        out = [allocate(fit, c, u) for c in _sizes(args.flops) for u in uniques]
    elif args.command == "loss":
        n, d = _sizes(args.params), _sizes(args.tokens)
        u = _sizes(args.unique_tokens)
        try:
            n, d, *rest = np.broadcast_arrays(n, d, *([u] if u else []))
        except ValueError:
            raise UsageError("--params, --tokens and --unique-tokens lists must have equal lengths (or one value)") from None
        out = predict_loss(fit, n, d, rest[0] if rest else None)
    else:
        sizes = _sizes(args.params) or [None]           # every (unique data, size) pair, as allocate does
        out = [repetition(fit, u, _sizes(args.epochs), n) for u in _sizes(args.unique_tokens) for n in sizes]
    if isinstance(out, list) and len(out) == 1:
        out = out[0]
    print(json.dumps(out, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
