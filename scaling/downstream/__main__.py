"""``python -m scaling.downstream``."""

import sys

from scaling.cli import run_cli
from scaling.downstream.cli import main

sys.exit(run_cli(main))
