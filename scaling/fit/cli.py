"""``python -m scaling.fit``: Approaches 1, 2 and 3 from the command line."""

from __future__ import annotations

from pathlib import Path

from scaling import columns as cols
from scaling.sources import read_table
from scaling.cli import ArgumentParser, UsageError, add_store_argument, bootstrap_count, nonnegative_int
from scaling.results import FitResult
from scaling.fit.variants import VARIANTS
from scaling.accounting import FLOP_CONVENTIONS
from scaling.fit.approach2 import DEFAULT_ESTIMATOR, ESTIMATORS
from scaling.fit.approach3 import _parse_assignments, fit


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
    p.add_argument("--law", choices=["chinchilla", "data-constrained", "kaplan"], default=None,
                   help="default: data-constrained when unique_tokens varies and some run repeats data, else chinchilla, "
                        "or kaplan where its rolling backtest beats chinchilla's chosen variant by >5%% (with no fold to "
                        "backtest on: where its BIC is lower by >10) (settings.law_choice); "
                        "kaplan: Kaplan et al. 2020's L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (no floor)")
    p.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS",
                   help="map a column, e.g. --column params='Model Size'")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep only rows with this value (repeatable), e.g. --where experiment=llama_3__raw_loss")
    p.add_argument("--exclude-top", type=int, default=0, metavar="K", help="drop the K highest losses")
    p.add_argument("--fix", nargs="+", action="extend", default=[], metavar="NAME=VALUE")
    p.add_argument("--tie", action="append", default=[], metavar="alpha=beta")
    p.add_argument("--variant", choices=list(VARIANTS), default=None,
                   help="force an Approach 3 variant (default: chosen by a backtest on the data and the interval at the target; "
                        "see scaling.fit.variants)")
    p.add_argument("--target-params", metavar="N", default=None,
                   help="where you will predict (with --target-tokens): the variant choice weighs each variant's "
                        "interval there (default: 10x the largest compute at the runs' median tokens per parameter)")
    p.add_argument("--target-tokens", metavar="D", default=None, help="training tokens of the target (with --target-params)")
    p.add_argument("--base", metavar="FIT.json", help="hold E, A, B, alpha, beta at this fit's values")
    p.add_argument("--start", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                   help="one local optimisation from this point instead of the multi-start search")
    p.add_argument("--bootstrap", type=bootstrap_count, default=None, metavar="N",
                   help="bootstrap resamples for 95%% CIs (default: 0 for Approach 3, 200 for Approaches 1 and 2; given "
                        "with --approach 2, Approach 3's law beside it is bootstrapped too, as scaling.design needs)")
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
    p.add_argument("--resample", choices=["noise", "cases"], default=None,
                   help="Approach 2's bootstrap: noise (default) keeps each budget's sizes and adds the sweeps' "
                        "noise to each loss; cases also resamples the runs with replacement (wider)")
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
    if args.resample is not None and args.approach != 2:
        raise UsageError("--resample is for --approach 2")
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
        from scaling.fit.approach1 import approach1, checkpoints_from_store
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
        from scaling.fit.approach2 import approach2
        a2 = approach2(cols.ok_runs(table, ("params", "tokens", "loss")), args.estimator or DEFAULT_ESTIMATOR,
                       bootstrap=200 if args.bootstrap is None else args.bootstrap, seed=args.seed,
                       resample=args.resample or "noise")
    result = fit(table, args.law, fix=_parse_assignments(args.fix, "--fix"), tie=args.tie, base=base,
                 exclude_top=args.exclude_top, start=_parse_assignments(args.start, "--start") or None,
                 bootstrap=args.bootstrap or 0, seed=args.seed, source=args.source,
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
    from scaling.predict import law_allocation
    p = result.params
    from scaling.laws import get_law
    a3_exponent = get_law(result.law).params_exponent(p)
    rows = [{"flops": b.flops, "approach2_params": b.params_opt, "approach2_params_ci": b.params_opt_ci,
             "approach3_params": float(law_allocation(result.law, p, b.flops)["params"])} for b in a2.budgets]
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
          f"Approach 3 {'alpha_D/(alpha_N+alpha_D)' if result.law == 'kaplan' else 'beta/(alpha+beta)'} = {a3_exponent:.4f}"
          + (" (alpha = beta: 0.5 by construction; --variant free lets it move)"
             if "alpha=beta" in result.settings.get("tie", []) and result.law == "chinchilla" else ""))
    for r in rows:
        print(f"  C={r['flops']:.3g}: N_opt {r['approach2_params']:.4g} (Approach 2) vs "
              f"{r['approach3_params']:.4g} (Approach 3)")
