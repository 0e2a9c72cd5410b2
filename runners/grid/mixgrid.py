"""A RegMix-style grid of mixtures (Liu et al. 2024, "RegMix: Data Mixture as Regression for
Language Model Pre-training"): K mixtures of a corpus's domains drawn from a Dirichlet around a
prior (the corpus's token distribution by default), each trained once at one small shape and token
count, so that ``python -m scaling.mixture fit`` can regress per-domain losses on the mixture.

Runs are ordinary ``RunSpec``s (``mix`` set), stored one row each with ``mix.<d>`` and
``loss.<d>`` for every domain, run through the same launchers as the other grids, resumable
(rerunning trains only what is missing) and shown by ``--dry-run``. The draw is a pure function of
``--mix-seed``, so the same command always plans the same mixtures.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from scaling import accounting
from scaling.cli import bounded_int, UsageError, run_cli, nonnegative_int
from runners.grid import command as common
from runners.grid import plan
from runners.grid.spec import format_mix

EXAMPLE = """\
examples:
  python -m runners.mixgrid --n-mixtures 64 --prior tokens --shape t32 --tokens 1M --dry-run
  python -m runners.mixgrid --n-mixtures 16 --shape t24 --tokens 200K results-mix
  python -m runners.mixgrid --n-mixtures 32 --data corpus.jsonl --domain-column source --prior uniform
  python -m runners.mixgrid --plan plan.csv results-mix   # the mixtures scaling.design proposed
"""


def build_parser():
    p = common.make_parser("python -m runners.mixgrid", __doc__.split("\n\n")[0], EXAMPLE)
    g = p.add_argument_group("mixture grid")
    g.add_argument("--n-mixtures", type=bounded_int(100_000, "each mixture is a training run", minimum=1),
                   metavar="K", help="mixtures to draw and train")
    g.add_argument("--plan", metavar="PLAN.csv",
                   help="instead of --n-mixtures: the runs of a mixture plan (mix.<domain> shares, params, tokens), "
                        "e.g. python -m scaling.design RUNS --fit MIX.json --out PLAN.csv; each run at the shape "
                        "nearest its params")
    g.add_argument("--prior", default="tokens", metavar="tokens|uniform|D1=S1,...",
                   help="centre of the Dirichlet: the corpus's token distribution (default), uniform, or shares")
    g.add_argument("--shape", default="t32", help="model shape of every run (default t32)")
    g.add_argument("--tokens", default="1M", help="training tokens per run, one epoch of unique data (default 1M)")
    g.add_argument("--mix-seed", type=nonnegative_int, default=0, help="seed of the mixture draw (default 0)")
    common.add_common_args(p)
    p.set_defaults(data="embedded-domains")
    return p


def domain_tokens(data: str, text_column: str, domain_column: str, tokenizer: str) -> dict[str, int]:
    """Train tokens per domain of the corpus (what ``--prior tokens`` is)."""
    from runners import data as rdata
    corpus = rdata.load_corpus(data, text_column=text_column, domain_column=domain_column or None)
    tok = rdata.get_tokenizer(tokenizer, corpus)
    return {d: rdata.corpus_tokens_available(corpus, tok, d) for d in corpus.domains}


def prior_of(text: str, sizes: dict[str, int]) -> dict[str, float]:
    domains = sorted(sizes)
    if text == "tokens":
        total = sum(sizes.values())
        return {d: sizes[d] / total for d in domains}
    if text == "uniform":
        return {d: 1.0 / len(domains) for d in domains}
    from runners.grid.spec import parse_mix
    given = parse_mix(text)
    unknown = [d for d in given if d not in sizes]
    if unknown:
        raise UsageError(f"unknown domain(s) {', '.join(unknown)} in --prior (corpus has: {', '.join(domains)})")
    return {d: given.get(d, 0.0) for d in domains}


def draw_mixtures(prior: dict[str, float], k: int, seed: int) -> list[dict[str, float]]:
    """``k`` distinct mixtures around ``prior`` (``scaling.mixture.dirichlet_samples``), shares
    rounded to ``SHARE_STEP`` and renormalised (the rounding remainder goes to the largest share)."""
    from scaling.mixture import SHARE_STEP, dirichlet_samples, round_shares
    domains = list(prior)
    p = np.maximum(np.array([prior[d] for d in domains]), 1e-6)
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for _ in range(100):
        for q in round_shares(dirichlet_samples(p / p.sum(), 4 * k, rng)):
            key = tuple(np.round(q, 6))
            if q.min() >= 0 and key not in seen:
                seen.add(key)
                out.append({d: float(v) for d, v in zip(domains, q) if v > 0})
            if len(out) == k:
                return out
    raise UsageError(f"could not draw {k} distinct mixtures at a share step of {SHARE_STEP:g}")


def read_mixture_plan(path):
    from scaling import columns as cols
    from scaling.sources import read_table
    return cols.canonicalise(read_table(path))


def plan_runs(table, sizes: dict[str, int], path) -> list[tuple]:
    """(shape, tokens, mixture, budget label) of each row of a mixture plan: shares from its ``mix.<domain>``
    columns (renormalised from the plan's rounding), the shape the plan names or the one nearest its
    ``params`` (CPU shapes below 1e17 FLOPs, as ``runners.isoflop --plan``)."""
    from scaling import columns as cols
    from scaling.errors import DataError
    from scaling.mixture import SHARE_STEP
    mix_cols = [c for c in table.columns if str(c).startswith("mix.")]
    unknown = [c[4:] for c in mix_cols if c[4:] not in sizes]
    if not mix_cols or unknown:
        raise DataError(f"{path}: " + (f"domain(s) {', '.join(unknown)} are not in the corpus (it has: "
                                        f"{', '.join(sorted(sizes))})" if unknown else
                                        "no mix.<domain> columns; a mixture plan comes from python -m scaling.design "
                                        "with a mixture fit"))
    table, dropped = cols.numeric_columns(table, ["params", "tokens"], str(path))
    shares_ok = table[mix_cols].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    if dropped or not shares_ok.all() or table.empty:
        raise DataError(f"{path}: {dropped + int((~shares_ok).sum())} row(s) without params, tokens or shares; a "
                        f"mixture plan needs them all")
    out = []
    for _, row in table.iterrows():
        shares = {c[4:]: float(row[c]) for c in mix_cols}
        total = sum(shares.values())
        if min(shares.values()) < 0 or not 0 < total < float("inf"):
            raise DataError(f"{path}: a row's shares are negative, all zero or not finite")
        mix = {d: v / total for d, v in shares.items() if v / total >= SHARE_STEP}
        mix = {d: v / sum(mix.values()) for d, v in mix.items()}
        n, d = float(row["params"]), float(row["tokens"])
        budget, pool = accounting.planned_pool(n, d)
        shape = plan.planned_shape(row["shape"] if "shape" in table.columns else None, n, budget, pool)
        out.append((shape, d, mix, f"mix-{shape.name}-{d:.4g}"))
    return out


def build_plan(args) -> list:
    for flag in ("unique", "epochs", "code_fraction", "mix"):
        if getattr(args, flag, None) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} does not apply to a mixture grid (it draws its own mixtures)")
    if (args.n_mixtures is None) == (args.plan is None):
        raise UsageError("give --n-mixtures K (a draw) or --plan PLAN.csv (the runs of a plan), one of them")
    if args.n_mixtures is not None and args.n_mixtures < 1:
        raise UsageError("--n-mixtures must be >= 1")
    if args.mix_seed < 0:
        raise UsageError("--mix-seed must be >= 0")
    shape = accounting.shape(args.shape)
    tokens = accounting.parse_size(args.tokens)
    kw = common.axes(args)
    table = None
    if args.plan is not None:
        table = read_mixture_plan(args.plan)
        kw = common.with_plan_kind(kw, table.drop(columns="code_fraction", errors="ignore"), args.plan)
    data, domain_column = kw["data"], kw["domain_column"]
    tokenizer = kw["tokenizer"] or "byte"
    sizes = domain_tokens(data, kw["text_column"], domain_column, tokenizer)
    if len(sizes) < 2:
        raise UsageError(f"--data {data!r} has {len(sizes)} domain(s); a mixture grid needs 2 or more "
                         f"(label rows with --domain-column)")
    if args.plan is not None:
        runs = plan_runs(table, sizes, args.plan)
    else:
        runs = [(shape, tokens, mix, f"mix-{args.shape}-{args.tokens}")
                for mix in draw_mixtures(prior_of(args.prior, sizes), args.n_mixtures, args.mix_seed)]
    specs = []
    for shape, tokens, mix, label in runs:
        cpu = shape.name in accounting.TINY_SHAPES or shape.name in accounting.MICRO_SHAPES
        V, S = (accounting.CPU_VOCAB, accounting.CPU_SEQ_LEN) if cpu else (accounting.PAPER_VOCAB, accounting.PAPER_SEQ_LEN)
        for seed in kw["seeds"]:
            for f in kw["filters"]:
                specs.append(plan._spec(shape, vocab=V, seq_len=S, tokens=tokens, unique=tokens, grid="mixgrid",
                                        budget=label, code_fraction=float(mix.get("code", 0.0)),
                                        filter=f, seed=seed, data=data, tokenizer=tokenizer,
                                        text_column=kw["text_column"], flops_convention=kw["flops_convention"] or "6N",
                                        mix=format_mix(mix), domain_column=domain_column, arch=kw["arch"],
                                        activation=kw["activation"]))
    return specs


def main(argv=None) -> int:
    return common.run(build_parser, build_plan, argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
