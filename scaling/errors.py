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
