"""``python -m scaling.fit``."""

import sys

from scaling.cli import run_cli
from scaling.fit.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
