"""isoUniqueData grids of the data-constrained paper (Muennighoff et al. 2023): unique data fixed
(the paper: 100M, 400M, 1.5B tokens), model sizes x epochs, tokens = unique x epochs.

Unique data below 1e8 tokens is CPU scale (tiny shapes, byte vocabulary, 128-token context);
at or above, the paper's shapes, GPT-2 vocabulary and 2048 context. Rerunning the same command
trains only the runs not yet ``ok`` in the store.
"""

from __future__ import annotations

import sys

from scaling.cli import run_cli
from runners.grid import command as common
from runners.grid import plan

EXAMPLE = """\
examples:
  python -m runners.isounique --unique 100M --dry-run       # the paper's 100M grid and its cost
  python -m runners.isounique --unique 1M --sizes t24,t64,t128 --epochs 1,4,16 results
"""


def build_parser():
    p = common.make_parser("python -m runners.isounique", __doc__.split("\n\n")[0], EXAMPLE)
    p.add_argument("--sizes", metavar="LIST",
                   help="shape names (e.g. 7M,44M,117M or t24,t64); default: a spread from the "
                        "smallest shape up to about the compute-optimal size for 40 epochs")
    common.add_common_args(p, unique_required=True,
                           unique_help="unique tokens, e.g. 100M (a comma list gives one grid each)")
    return p


def build_plan(args) -> list:
    uniques = common.parse_unique(args.unique)
    epochs = common.parse_epochs(args.epochs)
    sizes = common.parse_list(args.sizes, str, "size")
    kw = common.axes(args)
    specs = []
    for u in uniques:
        specs += plan.isounique_grid(u, shapes=sizes,
                                     epochs=epochs if epochs is not None else plan.ISOUNIQUE_EPOCHS, **kw)
    return specs


def main(argv=None) -> int:
    return common.run(build_parser, build_plan, argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
