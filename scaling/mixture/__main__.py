"""``python -m scaling.mixture``."""

import sys

from scaling.cli import run_cli
from scaling.mixture.cli import main

sys.exit(run_cli(main))
