"""The one place that turns a usage error into ``error: ...`` on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ``UsageError``s, so ``run_cli`` prints one ``error:`` line
    (subparsers inherit it). Help text is formatted raw so that epilog examples keep their lines."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message)


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
