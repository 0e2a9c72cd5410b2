"""``python -m runners.export``: a run's weights copied out of the store; the command lives in ``runners.eval.export``."""

import sys

from scaling.cli import run_cli
from runners.eval.export import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
