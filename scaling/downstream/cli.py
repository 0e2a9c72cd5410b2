"""``python -m scaling.downstream fit|predict``: the two-step downstream law from the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.accounting import parse_size
from scaling.cli import ArgumentParser, UsageError, add_store_argument, nonnegative_int
from scaling.downstream.data import read_checkpoints
from scaling.downstream.fit import fit_downstream
from scaling.downstream.result import DownstreamFit
from scaling.laws.downstream import FORMS
from scaling.fit.variants import VARIANTS

#: bootstrap resamples at most (each refits step 2: ~10 ms on a few hundred points)
MAX_BOOTSTRAP = 10_000


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m scaling.downstream",
        description="Predict a task's accuracy at a larger scale: an intermediate (task bpb, task CE or validation "
                    "loss) from N and D, then the metric from the intermediate (sigmoid or exponential), fitted on "
                    "runs scored along training (runners --eval TASKS --eval-every STEPS).",
        epilog="examples:\n"
               "  python -m scaling.downstream fit results/ --task corpus_cloze --out down.json\n"
               "  python -m scaling.downstream predict --fit down.json --params 7e9 --tokens 4e12 --json\n"
               "  python -m scaling.downstream fit dataset:gadre2024 --task avg17_subset --metric err --via loss "
               "--where dataset=c4_original --max-params 1e9 --out gadre.json")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit both steps on a store's scored checkpoints, a table or dataset:NAME",
                       epilog="example: python -m scaling.downstream fit results/ --task corpus_cloze --out down.json")
    add_store_argument(f, positional=True, help="store directory (its _evals/ checkpoints), CSV/Parquet or dataset:NAME")
    f.add_argument("--task", required=True, help="the task: its columns are eval.<TASK>.<metric>")
    f.add_argument("--metric", default="acc", help="the metric to predict (default acc; err* columns are error rates)")
    f.add_argument("--via", default="auto", metavar="auto|bpb|ce|loss|COLUMN",
                   help="the intermediate: the task's bits per byte (bpb), mean NLL per token (ce), the validation "
                        "loss, or any column; auto (default) chooses by holding out the largest model size")
    f.add_argument("--form", default="auto", choices=["auto", *FORMS],
                   help="step 2: sigmoid (Bhagia et al. 2024), exponential (Gadre et al. 2024) or auto (default)")
    f.add_argument("--where", action="append", default=[], metavar="COL=VALUE", help="keep only these rows (repeatable)")
    f.add_argument("--max-params", default=None, metavar="N",
                   help="fit only runs with at most N parameters (e.g. 1e9: predict the larger ones)")
    f.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS",
                   help="map a column, e.g. --column params=N")
    f.add_argument("--variant", choices=list(VARIANTS), default=None,
                   help="step 1's Chinchilla variant (default: chosen as scaling.fit chooses it)")
    f.add_argument("--target-params", metavar="N", default=None,
                   help="where you will predict (with --target-tokens): step 1's variant choice weighs each "
                        "variant's interval there (default: 10x the largest compute of the runs)")
    f.add_argument("--target-tokens", metavar="D", default=None, help="training tokens of the target")
    f.add_argument("--bootstrap", type=nonnegative_int, default=200, metavar="B",
                   help=f"bootstrap resamples of runs for the intervals (default 200, at most {MAX_BOOTSTRAP}; 0: none)")
    f.add_argument("--seed", type=nonnegative_int, default=0)
    f.add_argument("--out", metavar="FIT.json", help="write the fit here")
    f.add_argument("--json", action="store_true", help="print the fit as JSON (bootstrap draws left out)")
    pr = sub.add_parser("predict", help="the metric at target sizes and token counts, with 95%% intervals",
                        epilog="example: python -m scaling.downstream predict --fit down.json --params 7e9,13e9 "
                               "--tokens 4e12,5e12 --json")
    pr.add_argument("--fit", required=True, metavar="FIT.json", help="a downstream fit (fit --out)")
    pr.add_argument("--params", required=True, metavar="N[,N...]", help="target model sizes, e.g. 7e9 or 7B")
    pr.add_argument("--tokens", required=True, metavar="D[,D...]", help="target training tokens, e.g. 4e12 or 4T")
    pr.add_argument("--json", action="store_true")
    return p


def _sizes(text: str, flag: str) -> list[float]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = parse_size(part)
        except (UsageError, ValueError):
            raise UsageError(f"{flag}: cannot read {part!r} as a number (e.g. 7e9 or 7B)") from None
        if not (np.isfinite(value) and value > 0):
            raise UsageError(f"{flag}: {part!r} must be a positive finite number")
        out.append(float(value))
    return out


def _without_draws(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    d["step2"].pop("draws", None)
    ((d["step1"].get("settings") or {}).get("bootstrap") or {}).pop("draws", None)
    return d


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "predict":
        fit = DownstreamFit.load(args.fit)
        params, tokens = _sizes(args.params, "--params"), _sizes(args.tokens, "--tokens")
        if len(params) != len(tokens) and 1 not in (len(params), len(tokens)):
            raise UsageError(f"--params gives {len(params)} values and --tokens {len(tokens)}: give as many of each, "
                             f"or one of either")
        out = fit.predict(params, tokens)
        if args.json:
            print(json.dumps(out, indent=1))
            return 0
        for i, (n, d) in enumerate(zip(out["params"], out["tokens"])):
            ci = out["interval"][i] if out["interval"] else None
            print(f"N={n:.4g} D={d:.4g}: {fit.task} {fit.metric} {out['prediction'][i]:.4f}"
                  + (f" (95% interval {ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
                  + f"; {fit.via} {out['intermediate'][i]:.4f}")
        for w in out["warnings"]:
            print(f"warning: {w}")
        return 0
    if not args.source:
        raise UsageError("a SOURCE (store, table or dataset:NAME) is required")
    if args.bootstrap > MAX_BOOTSTRAP:
        raise UsageError(f"--bootstrap {args.bootstrap}: at most {MAX_BOOTSTRAP} (time grows with it)")
    table = cols.canonicalise(read_checkpoints(args.source), cols.parse_mapping(args.column))
    table = cols.where(table, args.where)
    limit = None
    if args.max_params is not None:
        limit = _sizes(args.max_params, "--max-params")[0]
        table = table[pd.to_numeric(table.get("params"), errors="coerce") <= limit].reset_index(drop=True)
        if table.empty:
            raise UsageError(f"--max-params {args.max_params}: no run is that small")
    if (args.target_params is None) != (args.target_tokens is None):
        raise UsageError("give --target-params and --target-tokens together")
    target = None
    if args.target_params is not None:
        target = (_sizes(args.target_params, "--target-params")[0], _sizes(args.target_tokens, "--target-tokens")[0])
    fit = fit_downstream(table, args.task, args.metric, via=args.via, form=args.form, bootstrap=args.bootstrap,
                         seed=args.seed, variant=args.variant, source=str(args.source), target=target)
    fit.settings.update(where=list(args.where), max_params=limit, column=list(args.column))
    if args.out:
        fit.save(args.out)
    print(json.dumps(_without_draws(fit.to_dict()), indent=1) if args.json else fit.summary())
    return 0
