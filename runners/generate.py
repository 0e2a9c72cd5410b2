"""``python -m runners.generate``: text sampled from a run's saved model; the command lives in ``runners.eval.generate``."""

import sys

from scaling.cli import run_cli
from runners.eval.generate import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
