"""``python -m runners.evaluate``: lm-eval scores for the store's runs; the command lives in ``runners.eval.evaluate``."""

import sys

from scaling.cli import run_cli
from runners.eval.evaluate import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
