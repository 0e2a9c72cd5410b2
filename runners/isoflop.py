"""``python -m runners.isoflop``: an isoFLOP grid: sizes x tokens at fixed compute budgets; the command lives in ``runners.grid.isoflop``."""

import sys

from scaling.cli import run_cli
from runners.grid.isoflop import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
