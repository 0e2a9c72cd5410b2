"""Backtest a law: fit without the largest-compute runs, predict them, and score the predictions.

    python -m scaling.backtest results/ [--law chinchilla] [--holdout largest-compute | largest-model | K] [--bootstrap 200]
    python -m scaling.backtest results/ --approach 2     # the isoFLOP minima's line, largest budget held out

The predictive interval of a held-out run is ``scaling.predict``'s: the fit's uncertainty (bootstrap
draws of the parameters) and a new run's log-normal scatter about the law, the larger of the fitted
runs' scatter and the fit's rolling-backtest error one budget beyond its data
(``scaling.intervals.predictive_sd``), so "inside the interval" asks whether the run is as close as
runs beyond the data have been.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.sources import read_table
from scaling.fit.approach2 import budget_groups, run_flops
from scaling.cli import ArgumentParser, UsageError, run_cli, add_store_argument, nonnegative_int, bootstrap_count
from scaling.errors import DataError
from scaling.fit import fit, prepare
from scaling.laws import get_law
from scaling.intervals import Z95, decades_beyond, log_sd, prediction_interval, predictive_sd


#: ``--holdout`` values besides a number of runs
HOLDOUTS = ("largest-compute", "largest-model")


def split_holdout(table: pd.DataFrame, holdout: str) -> np.ndarray:
    """Boolean mask of held-out runs: the largest compute budget (a step in compute), the runs of the
    largest model (within 1% of the largest N: a step in N at compute the fit has seen, issue 26's
    protocol for the public ladders), or the K largest-compute runs."""
    flops = run_flops(table)
    if holdout == "largest-compute":
        groups = budget_groups(flops)
        return groups == groups.max()
    if holdout == "largest-model":
        params = table["params"].to_numpy(float)
        return params >= 0.99 * params.max()
    try:
        k = int(holdout)
    except ValueError:
        raise UsageError(f"--holdout must be {', '.join(HOLDOUTS)} or a number of runs, got {holdout!r}") from None
    if not 0 < k < len(table):
        raise UsageError(f"--holdout {k}: must be between 1 and {len(table) - 1} (have {len(table)} runs)")
    mask = np.zeros(len(table), bool)
    mask[np.argsort(flops)[-k:]] = True
    return mask


def backtest(table: pd.DataFrame, law: str | None = None, holdout: str = "largest-compute",
             bootstrap: int = 200, seed: int = 0, **fit_options) -> dict:
    law_name, fd = prepare(table, law)
    runs = fd.frame
    held = split_holdout(runs, holdout)
    if (~held).sum() < 3:
        raise UsageError(f"too few runs would remain to fit after holding out {holdout}")
    test = runs[held]
    # the variant is chosen for the extrapolation asked for: the farthest held-out run
    far = test.sort_values(["params", "tokens"]).iloc[-1]
    fit_options.setdefault("target", (float(far["params"]), float(far["tokens"])))
    # without --law the fit may choose Kaplan's law on the training runs, as the fit would
    result = fit(runs[~held], law_name, bootstrap=bootstrap, seed=seed, want_profiles=False,
                 choose_law=law is None, **fit_options)
    law_name = result.law
    the_law = get_law(law_name)
    u = test["unique_tokens"].values if "unique_tokens" in the_law.required else None
    args = (test["params"].values, test["tokens"].values) + ((u,) if u is not None else ())
    pred = the_law.predict(result.params, *args)
    draws = result.bootstrap_draws
    names = (result.settings.get("bootstrap") or {}).get("names", [])
    intervals, beyond = None, decades_beyond(result, test["params"].values, test["tokens"].values)
    if beyond is None:                  # (every fit records its range; a stub fit in a test may not)
        beyond = np.zeros(len(test))
    scatter = predictive_sd(result, beyond)
    if draws is not None and len(draws) and scatter is not None:
        # scaling.predict's predictive interval: the bootstrap draws and a new run's scatter about the
        # law, as far off as the backtest inside the data erred at that distance
        at = np.array([the_law.predict(dict(zip(names, d)), *args) for d in draws])
        intervals = prediction_interval(pred, at, scatter[0], seed=seed)
    rows = []
    for i, (_, r) in enumerate(test.iterrows()):
        row = {"params": float(r["params"]), "tokens": float(r["tokens"]), "loss": float(r["loss"]),
               "predicted": float(pred[i]), "error": float(pred[i] - r["loss"]),
               "percentage_error": float(100 * (pred[i] - r["loss"]) / r["loss"])}
        if u is not None:
            row["unique_tokens"] = float(r["unique_tokens"])
        if intervals is not None:
            row["interval"] = [float(intervals[i, 0]), float(intervals[i, 1])]
            row["inside"] = bool(intervals[i, 0] <= r["loss"] <= intervals[i, 1])
            row["interval_sd"] = float(scatter[0][i])
            row["decades_beyond"] = float(beyond[i])
        rows.append(row)
    out = {"law": law_name, "holdout": holdout, "n_train": int((~held).sum()), "n_test": int(held.sum()),
           "mape": float(np.mean([abs(r["percentage_error"]) for r in rows])), "runs": rows,
           "fit": result.to_dict()}
    if intervals is not None:
        out["coverage"] = float(np.mean([r["inside"] for r in rows]))
        out["interval_sd"] = {"sd": float(np.max(scatter[0])), "from": scatter[1]}
    out["fit"]["settings"].pop("bootstrap", None)      # draws are bulky; the intervals say it
    return out


def backtest_approach2(table: pd.DataFrame, bootstrap: int = 200, seed: int = 0, **options) -> dict:
    """Approach 2 backtested: the lines through the isoFLOP minima of every budget but the largest,
    asked for the largest's compute-optimal size, against that budget's own minimum. ``ci`` is the
    line's interval (``Approach2Result.allocation_interval``); ``predictive`` adds what a budget's
    minimum scatters by (tau, and its own bootstrap error), and ``inside`` is judged against it. On Llama 3's sweeps the line without 1e22 says 10.3B where 1e22's
    minimum is 7.0B (+48%); Marin's within 3-6% (docs/benchmarks.md)."""
    from scaling.fit.approach2 import approach2, budgets_of
    runs = cols.ok_runs(table, ("params", "tokens", "loss")).reset_index(drop=True)
    ids, values = budgets_of(runs)              # the budgets as Approach 2 groups them (nominal ones too)
    held = ids == int(np.argmax(values))
    every = approach2(runs, bootstrap=bootstrap, seed=seed, **options)
    top = float(np.max(values))
    kept = [b for b in every.budgets if abs(np.log(b.flops / top)) < 1e-6]
    if not kept:
        raise DataError(f"the held-out budget ({top:.3g} FLOPs) has no interior minimum to compare with: "
                        f"its lowest loss is at an end of its sizes")
    minimum = kept[0]
    train = approach2(runs[~held], bootstrap=bootstrap, seed=seed, **options)
    predicted = float(train.optimal_params(minimum.flops))
    # the line carried from the smallest budget to the held-out one with its two bands (what
    # scaling.plot backtest draws); its last point is the held-out budget's
    band = []
    if train.allocation_interval(minimum.flops):
        for c in np.geomspace(min(b.flops for b in train.budgets), minimum.flops, 25):
            line, pred = train.allocation_interval(c), train.allocation_interval(c, predictive=True)
            band.append({"flops": float(c), "params": float(train.optimal_params(c)), "ci": line["params"],
                         "predictive": pred["params"]})
    ci = band[-1]["ci"] if band else None
    predictive = None
    if band and minimum.params_opt_ci:
        # what the held-out minimum may read: the line's uncertainty, the budgets' scatter about the
        # line (tau) and the minimum's own bootstrap error, independent, in log N
        se = np.sqrt(log_sd(band[-1]["predictive"]) ** 2 + log_sd(minimum.params_opt_ci) ** 2)
        predictive = [float(predicted * np.exp(-Z95 * se)), float(predicted * np.exp(Z95 * se))]
    budgets = [{"flops": float(b.flops), "params": float(b.params_opt), "ci": b.params_opt_ci, "held_out": False}
               for b in train.budgets] + [{"flops": float(minimum.flops), "params": float(minimum.params_opt),
                                           "ci": minimum.params_opt_ci, "held_out": True}]
    out = {"approach": 2, "holdout": "largest-compute", "budget": float(minimum.flops),
           "n_train_budgets": len(train.budgets), "estimator": train.estimator,
           "minimum": {"params": float(minimum.params_opt), "ci": minimum.params_opt_ci},
           "predicted": {"params": predicted, "ci": ci, "predictive": predictive},
           "percentage_error": float(100 * (predicted / minimum.params_opt - 1)),
           "params_exponent": {"without": train.params_exponent, "with": every.params_exponent,
                               "without_ci": train.params_exponent_ci},
           "budgets": budgets, "band": band}
    if predictive:
        out["inside"] = bool(predictive[0] <= minimum.params_opt <= predictive[1])
    return out


def _parser():
    p = ArgumentParser(prog="python -m scaling.backtest", description="Fit without the largest-compute runs and predict them.",
                       epilog="example:\n  python -m scaling.backtest results/ --holdout largest-compute --bootstrap 200 --out backtest.json\n"
                              "  python -m scaling.plot backtest --result backtest.json --out backtest.png\n"
                              "  python -m scaling.backtest dataset:llama3-isoflops --where experiment=llama_3__raw_loss --approach 2 --out a2.json\n"
                              "  python -m scaling.plot backtest --result a2.json --out a2.png")
    add_store_argument(p, positional=True, help="store directory, CSV or Parquet file, or dataset:NAME")
    p.add_argument("--approach", type=int, choices=[2, 3], default=3,
                   help="3 (default): the law's loss on the held-out runs; 2: the isoFLOP minima's line "
                        "asked for the largest budget's compute-optimal size")
    p.add_argument("--law", choices=["chinchilla", "data-constrained", "kaplan"],
                   help="default: chosen on the training runs as scaling.fit chooses it")
    p.add_argument("--holdout", default="largest-compute",
                   help="largest-compute (default: the largest budget), largest-model (the runs of the largest N), "
                        "or K (the K largest-compute runs)")
    p.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep only rows with this value (repeatable), e.g. --where experiment=llama_3__raw_loss")
    p.add_argument("--bootstrap", type=bootstrap_count, default=200)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", metavar="BACKTEST.json",
                   help="also write the result as JSON (what python -m scaling.plot backtest --result draws; "
                        "either approach)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.approach == 2 and (args.law or args.holdout != "largest-compute"):
        raise UsageError("--approach 2 holds out the largest budget and fits no law: --law and --holdout are "
                         "for --approach 3")
    table, _ = cols.in_convention(cols.canonicalise(cols.where(read_table(args.source), args.where),
                                                    cols.parse_mapping(args.column)))
    if args.approach == 2:
        out = backtest_approach2(table, args.bootstrap, args.seed)
        if args.out:
            from scaling.store import atomic_write_text
            atomic_write_text(Path(args.out), json.dumps(out, indent=1))
        if args.json:
            print(json.dumps(out, indent=1))
            return 0
        lo, hi = out["predicted"]["predictive"] or (float("nan"), float("nan"))
        m = out["minimum"]
        print(f"Approach 2 on {out['n_train_budgets']} budgets, asked for the held-out {out['budget']:.3g} FLOPs: "
              f"N_opt {out['predicted']['params']:.4g} [{lo:.4g}, {hi:.4g}] (95% predictive) against its minimum {m['params']:.4g}"
              + (f" [{m['ci'][0]:.4g}, {m['ci'][1]:.4g}]" if m["ci"] else "")
              + f" ({out['percentage_error']:+.1f}%{'' if out.get('inside', True) else ', outside the interval'})")
        e = out["params_exponent"]
        print(f"  N_opt exponent without it {e['without']:.4f}, with it {e['with']:.4f}")
        return 0
    out = backtest(table, args.law, args.holdout, args.bootstrap, args.seed)
    if args.out:
        from scaling.store import atomic_write_text
        atomic_write_text(Path(args.out), json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['law']} fitted on {out['n_train']} runs, predicting {out['n_test']} held-out runs "
          f"({out['holdout']}): MAPE {out['mape']:.3g}%"
          + (f", {100 * out['coverage']:.0f}% inside the 95% predictive interval" if "coverage" in out else ""))
    for r in out["runs"]:
        band = f"  [{r['interval'][0]:.4g}, {r['interval'][1]:.4g}]{'' if r['inside'] else '  outside'}" if "interval" in r else ""
        print(f"  N={r['params']:.3g} D={r['tokens']:.3g}: loss {r['loss']:.4g}, predicted {r['predicted']:.4g} "
              f"({r['percentage_error']:+.2f}%){band}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
