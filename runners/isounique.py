"""``python -m runners.isounique``: an isoUniqueData grid: sizes x epochs at fixed unique data; the command lives in ``runners.grid.isounique``."""

import sys

from scaling.cli import run_cli
from runners.grid.isounique import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
