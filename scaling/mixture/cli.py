"""``python -m scaling.mixture``: fit, predict, evaluate, optimize, transfer."""

from __future__ import annotations

import json
import sys

from scaling import columns as cols
from scaling.mixture import models as mm
from scaling.accounting import parse_size
from scaling.cli import ArgumentParser, UsageError, add_store_argument, bootstrap_count, nonnegative_int, quantity, \
    run_cli
from scaling.results import format_number, plain
from scaling.sources import read_table
from scaling.store import table_format, write_table_file
from scaling.mixture.result import MixtureFit, SCALING_FORMS
from scaling.mixture.fit import fit_mixture
from scaling.mixture.predict import evaluate_fit, predict_frame
from scaling.mixture.optimize import RD_STAR, _parse_domain_values, make_constraints, optimize_mixture
from scaling.mixture.transfer import transfer


def _parser():
    doc = sys.modules[__package__].__doc__         # the package's docstring (loaded before this module)
    p = ArgumentParser(prog="python -m scaling.mixture", description=doc.split("\n")[0],
                       epilog="examples:\n" + "\n".join(l for l in doc.splitlines() if "python -m" in l))
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit the data mixing law (Ye et al. 2024), nested over scaling laws",
                       epilog="example:\n  python -m scaling.mixture fit results/ --domains text,code "
                              "--out mix.json")
    add_store_argument(f, positional=True, help="store directory, CSV or Parquet file")
    f.add_argument("--domains", help="loss domains to model, e.g. text,code (default: every loss.<d>)")
    f.add_argument("--kind", choices=["auto", "nested", "direct", "joint"], default="auto",
                   help="direct (one scale), nested (a scaling law per mixture, then the mixing law at the target; "
                        "Ye et al. 2024), joint (one law in N, D and the mixture on every run and checkpoint; "
                        "Shukor et al. 2025); auto: direct at one scale, else nested or joint by holding out the "
                        "largest model size")
    f.add_argument("--scaling-law", choices=["auto", *SCALING_FORMS], default="auto",
                   help="per-mixture law of a nested fit (auto: the richest every mixture supports)")
    f.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep only rows with this value (repeatable), e.g. --where model=70M --where step=30000")
    f.add_argument("--model", choices=["auto", *mm.CANDIDATES], default="auto",
                   help="predictor per domain (direct fits): auto = the best k-fold cross-validated Spearman "
                        "among law, log-linear, gbdt and their ensembles (default)")
    f.add_argument("--cv-folds", type=int, default=mm.CV_FOLDS, metavar="K",
                   help=f"folds (by mixture) of the cross-validation (default {mm.CV_FOLDS})")
    f.add_argument("--bootstrap", type=bootstrap_count, default=0, metavar="B", help="bootstrap resamples for intervals")
    f.add_argument("--seed", type=nonnegative_int, default=0)
    f.add_argument("--out", metavar="FIT.json")
    f.add_argument("--json", action="store_true")
    f.add_argument("--verbose", action="store_true",
                   help="list every per-mixture fit's warnings (by default counted by kind, one line each)")
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
    o.add_argument("--rd-star", type=quantity(1e-3, 1e6, "R_D*, in repetitions of the unique data"), default=RD_STAR,
                   help=f"R_D* of the data-constrained law (default {RD_STAR}, Muennighoff et al. 2023 on C4)")
    o.add_argument("--prior", default="tokens", metavar="tokens|uniform|FILE",
                   help="centre of the search and of --kl-max: tokens (the fitted runs' mean mixture, default), "
                        "uniform, or a JSON/CSV of domain weights")
    o.add_argument("--min", nargs="+", action="extend", default=[], metavar="DOMAIN=SHARE")
    o.add_argument("--max", nargs="+", action="extend", default=[], metavar="DOMAIN=SHARE")
    o.add_argument("--kl-max", type=float, default=None, metavar="X", help="KL(mixture || prior) <= X (Olmix)")
    o.add_argument("--seed", type=nonnegative_int, default=0)
    o.add_argument("--json", action="store_true")
    o.add_argument("--out", metavar="OPT.json",
                   help="also write the optimum as JSON (what python -m scaling.plot mixture --optimum draws)")
    t = sub.add_parser("transfer", help="do small runs rank mixtures as large runs do?",
                       epilog="example:\n  python -m scaling.mixture transfer results/ --small-params 1M "
                              "--large-params 10M --json")
    add_store_argument(t, positional=True, help="store directory, CSV or Parquet file")
    t.add_argument("--small-params", required=True)
    t.add_argument("--large-params", required=True)
    t.add_argument("--bootstrap", type=bootstrap_count, default=1000, metavar="B")
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
        if args.verbose and not args.json:
            for line in (result.settings.get("diagnostics") or {}).get("per_mixture_warnings", []):
                print(f"  {line}")
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
        if args.out:
            from pathlib import Path
            from scaling.store import atomic_write_text
            atomic_write_text(Path(args.out), json.dumps(plain(out), indent=1))
        if args.json:
            print(json.dumps(plain(out), indent=1))
        else:
            _print_optimum(out)
        return 0
    if args.command == "predict":
        if args.out:
            table_format(args.out)                     # an unwritable format is refused before any work
        fit = MixtureFit.load(args.fit)
        n = parse_size(args.params) if args.params else None
        d = parse_size(args.tokens) if args.tokens else None
        if (n is None) != (d is None):
            raise UsageError("--params and --tokens go together")
        frame = predict_frame(fit, read_table(args.mixtures), n, d, source=args.mixtures)
        if "outside_trained" in frame and frame["outside_trained"].any():
            print(f"warning: {int(frame['outside_trained'].sum())} mixture(s) lie outside the proportions the fit was "
                  f"trained on (outside_trained): their predictions are extrapolated, held within the band of "
                  f"plausible losses", file=sys.stderr)
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
