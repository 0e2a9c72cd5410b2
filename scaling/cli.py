"""The one place that turns a usage error into ``error: ...`` on stderr and exit code 2."""

from __future__ import annotations

import sys


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2, no traceback."""


def run_cli(main, argv=None) -> int:
    try:
        return main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:          # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
