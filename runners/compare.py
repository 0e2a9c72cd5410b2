"""``python -m runners.compare``: datasets compared at equal compute; the command lives in ``runners.studies.compare``."""

import sys

from scaling.cli import run_cli
from runners.studies.compare import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
