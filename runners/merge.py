"""``python -m runners.merge``: the merging proxy for mixture ablations; the command lives in ``runners.studies.merge``."""

import sys

from scaling.cli import run_cli
from runners.studies.merge import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
