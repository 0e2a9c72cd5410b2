"""``python -m runners.diversity``: data diversity against loss; the command lives in ``runners.studies.diversity``."""

import sys

from scaling.cli import run_cli
from runners.studies.diversity import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
