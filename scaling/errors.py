"""The kinds of failure a command reports, each as one ``error:`` line (``scaling.cli.run_cli``):

* ``UsageError`` (exit 2): bad flags or arguments — what ``--help`` would have told you;
* ``DataError`` (exit 1): input data or files that cannot be read or are invalid (a missing or
  torn table, a fit file with a NaN parameter, a corpus too small for the plan);
* ``FitError`` (exit 1): a fit that cannot converge on the data it was given.

``DataError`` and ``FitError`` are ``UsageError`` subclasses so that code catching the one-line
errors catches them all; only the exit code differs. Ctrl-C exits 130.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2, no traceback."""

    exit_code = 2


class DataError(UsageError):
    """Unreadable or invalid input data: one ``error:`` line, exit code 1."""

    exit_code = 1


class FitError(UsageError):
    """A fit that cannot converge: one ``error:`` line, exit code 1."""

    exit_code = 1


class BadValue(UsageError):
    """A bad value of one argument, named as its caller knows it: the Python parameter
    (``exclude_top must be >= 0``) from the library, the flag (``--exclude-top must be >= 0``) from a
    command (``scaling.cli.run_cli`` prints ``for_cli()``). ``message`` holds ``{arg}`` where the
    name goes; ``flag`` defaults to ``--`` + the parameter with dashes."""

    def __init__(self, param: str, message: str, flag: str | None = None):
        self.param, self.template = param, message
        self.flag = flag or "--" + param.replace("_", "-")
        super().__init__(message.replace("{arg}", param))

    def for_cli(self) -> str:
        return self.template.replace("{arg}", self.flag)

