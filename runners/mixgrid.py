"""``python -m runners.mixgrid``: a grid over data mixtures; the command lives in ``runners.grid.mixgrid``."""

import sys

from scaling.cli import run_cli
from runners.grid.mixgrid import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
