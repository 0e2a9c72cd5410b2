"""isoFLOP grids of the data-constrained paper (Muennighoff et al. 2023): at each budget, the
compute-optimal model at several unique-data levels plus other model sizes on the same budget.

Rerunning the same command trains only the runs not yet ``ok`` in the store.
"""

from __future__ import annotations

import sys

from scaling import accounting
from scaling.cli import UsageError, bounded_int, run_cli
from scaling.errors import DataError
from runners.grid import command as common
from runners.grid import plan

EXAMPLE = """\
examples:
  python -m runners.isoflop --budget 2b8 --dry-run          # the paper's 2b8 grid and its cost
  python -m runners.isoflop --budget smoke results  # train a CPU grid (a few minutes)
  python -m runners.isoflop --budget tiny --epochs 1,4,16 --seeds 0,1 --dry-run --json
  python -m runners.isoflop --plan plan.csv results   # the runs scaling.design proposed
"""


def build_parser():
    p = common.make_parser("python -m runners.isoflop", __doc__.split("\n\n")[0], EXAMPLE)
    p.add_argument("--budget",
                   help="named budget (1b1, 2b8, 4b2, 8b7), FLOP count (3e13), CPU preset "
                        "(smoke, tiny) or a comma list of them")
    p.add_argument("--plan", metavar="PLAN.csv",
                   help="instead of --budget: the runs of a plan (params, tokens[, unique_tokens, shape] and the kind "
                        "of run: data, code_fraction, tokenizer, flops_convention, ...), e.g. "
                        "python -m scaling.design ... --out PLAN.csv")
    p.add_argument("--n-sizes", type=bounded_int(64, "distinct model sizes along one budget", minimum=1), default=None,
                   help="model sizes along the budget at full data (default 5; the CPU presets set their own)")
    common.add_common_args(p, unique_help="unique-data levels in tokens, replacing the budget's "
                                          "(e.g. 55B,4B,1.25B)")
    return p


def read_plan(path):
    """A plan table, canonical columns, every row with numeric params and tokens."""
    from scaling import columns as cols
    from scaling.sources import read_table
    table = cols.canonicalise(read_table(path))
    names = ["params", "tokens"] + (["unique_tokens"] if "unique_tokens" in table.columns else [])
    table, dropped = cols.numeric_columns(table, names, str(path))
    if dropped or table.empty:
        raise DataError(f"{path}: {dropped} row(s) without params or tokens; a plan needs both in every row")
    return table


def plan_points(table) -> list[tuple[float, float, float]]:
    """(params, tokens, unique tokens) of each row of a plan table; unique = tokens when absent."""
    u = table["unique_tokens"] if "unique_tokens" in table.columns else table["tokens"]
    return list(zip(table["params"].astype(float), table["tokens"].astype(float), u.astype(float)))


def build_plan(args) -> list:
    if (args.budget is None) == (args.plan is None):
        raise UsageError("give --budget (a grid) or --plan PLAN.csv (the runs of a plan), one of them")
    if args.plan is not None:
        if args.unique or args.epochs or args.n_sizes:
            raise UsageError("--plan fixes every run's size and tokens: --unique, --epochs and --n-sizes "
                                    "are for --budget")
        table = read_plan(args.plan)
        shapes = list(table["shape"]) if "shape" in table.columns else None
        return plan.planned_grid(plan_points(table), shapes=shapes,
                                 **common.with_plan_kind(common.axes(args), table, args.plan))
    budgets = accounting.parse_budgets(args.budget)
    unique, epochs = common.parse_unique(args.unique), common.parse_epochs(args.epochs)
    kw = common.axes(args)
    specs = []
    for b in budgets:
        specs += plan.isoflop_grid(b, unique=unique, epochs=epochs, n_sizes=args.n_sizes, **kw)
    return specs


def main(argv=None) -> int:
    return common.run(build_parser, build_plan, argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
