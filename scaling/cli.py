"""The one place that turns a one-line error into ``error: ...`` on stderr and its exit code (``scaling.errors``)."""

from __future__ import annotations

import argparse
import math
import sys


from scaling.errors import BadValue, DataError, FitError, UsageError  # noqa: F401  (re-exported)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ``UsageError``s, so ``run_cli`` prints one ``error:`` line
    (subparsers inherit it). Help text is formatted raw so that epilog examples keep their lines."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message)

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        _merge_store(ns)
        if isinstance(getattr(ns, "out", None), str):
            check_writable(ns.out, "--out")
        return ns, rest


def check_writable(path, flag: str) -> None:
    """Before any work: ``path`` (a file when it has a suffix, else a directory) can be created
    where it is asked for: not an existing directory in a file's place (or the reverse), under a
    directory that exists or can be made, and writable (probed with a temporary file, which also
    catches read-only mounts and /proc). A ``UsageError`` naming ``flag`` otherwise."""
    import os
    import tempfile
    from pathlib import Path
    p = Path(path)
    if str(path).strip() == "":
        raise UsageError(f"{flag}: empty path")
    broken = broken_link(p)
    if broken is not None:
        raise UsageError(f"{flag} {path}: {broken}")
    if p.suffix and p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory (expected a file)")
    if not p.suffix and p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    parent = p if (not p.suffix and p.is_dir()) else p.parent
    base = parent
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write under {base} ({exc.strerror or exc})") from None


def broken_link(path) -> str | None:
    """Why ``path`` or a folder above it is a symbolic link that leads nowhere (a loop, a missing
    target), or None: such a path would be replaced by a write, or fail deep inside one."""
    import os
    from pathlib import Path
    p = Path(path)
    for q in (p, *p.parents):
        if q.is_symlink():
            try:
                os.stat(q)
            except OSError as exc:
                what = "a link loop" if exc.errno == 40 else "a link to a missing target"
                return f"{q} is {what}" if q != p else f"is {what}"
    return None


import re as _re

#: a plain decimal number as a user types one: no ``1_000`` (Python's own float() takes it), no
#: hex, no words (``inf``, ``nan``)
_NUMBER = _re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_number(text, what: str = "value") -> float:
    """``text`` as a finite float, or a ``UsageError`` naming ``what``: one rule for every number a
    command reads from its arguments."""
    t = str(text).strip()
    if not _NUMBER.fullmatch(t):
        raise UsageError(f"{what}: {text!r} is not a number (e.g. 3, 0.5, 1e9)")
    value = float(t)
    if not math.isfinite(value):
        raise UsageError(f"{what}: {text!r} is beyond a float's range")
    return value


def parse_count(text, what: str, maximum: int | None = None, why: str = "", minimum: int = 0) -> int:
    """A whole number in [minimum, maximum] (``why`` the bound is), or one ``UsageError``."""
    t = str(text).strip()
    if not _re.fullmatch(r"[+-]?\d+", t):
        raise UsageError(f"{what}: {text!r} is not a whole number")
    value = int(t)
    if value < minimum:
        raise UsageError(f"{what} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{what} must be at most {maximum:,}{f' ({why})' if why else ''}, got {value:,}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse ``type`` for seeds and resample counts: a whole number >= 0 (no ``1_000``, no
    ``1e3``), and below 2^63 (numpy's and torch's seeds)."""
    try:
        return parse_count(text, "value", maximum=2 ** 63 - 1, why="a 64-bit seed")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ").removeprefix("value ")) from None


def quantity(low: float, high: float, why: str):
    """argparse ``type``: a number in [low, high] (``why`` says what the range is)."""
    def parse(text: str) -> float:
        try:
            value = parse_number(text, "value")
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} ({why}), got {text}")
        return value
    parse.__name__ = "number"
    return parse


#: FLOPs and tokens a law can be asked about: beyond every training run (10^30 FLOPs is 10^5 times
#: the largest published ones), and where a float and the law's powers still hold
FLOPS = quantity(1.0, 1e30, "FLOPs from 1 to 1e30")
TOKENS = quantity(1.0, 1e20, "tokens from 1 to 1e20")

#: bootstrap resamples at most: every command keeps its draws (in memory, and in the fit file)
MAX_BOOTSTRAP = 100_000


def bootstrap_count(text: str) -> int:
    """argparse ``type`` of every ``--bootstrap``: 0 to ``MAX_BOOTSTRAP``."""
    return bounded_int(MAX_BOOTSTRAP, "each resample is a refit whose draws are kept")(text)


def whole_number(text: str) -> int:
    """argparse ``type`` for counts the command checks itself: digits only (no ``1_000``, no ``1e3``),
    within 64 bits."""
    return bounded_int(2 ** 63 - 1, "a 64-bit integer", minimum=-(2 ** 63))(text)


def bounded_int(maximum: int, why: str, minimum: int = 0):
    """argparse ``type``: a whole number in [minimum, maximum]; ``why`` says what the bound protects."""
    def parse(text: str) -> int:
        try:
            return parse_count(text, "value", maximum=maximum, why=why, minimum=minimum)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ").removeprefix("value ")) from None
    parse.__name__ = "whole number"
    return parse


#: Where each kind of CLI keeps the store: ``scaling`` commands call it ``source`` (a store
#: directory, CSV, Parquet or dataset:NAME), ``runners`` call it ``store`` (a store directory).
_STORE_FORMS = (("source", "store_flag"), ("store", "store_positional"))


def add_store_argument(p: argparse.ArgumentParser, *, positional: bool, required: bool = True,
                       default: str | None = None, help: str = "results store directory") -> None:
    """One store argument across all CLIs: positional ``STORE`` and ``--store STORE`` both work
    (giving two different ones is an error). ``positional=True`` (``scaling``) keeps it in
    ``args.source``; ``False`` (``runners``) in ``args.store``, ``default`` when neither is given."""
    if positional:
        p.add_argument("source", nargs="?", metavar="STORE", help=f"{help} (or --store STORE)")
        p.add_argument("--store", dest="store_flag", metavar="STORE", default=None, help=argparse.SUPPRESS)
        p.set_defaults(_store_required=required, _store_default=default)
    else:
        p.add_argument("store_positional", nargs="?", metavar="STORE", default=None, help=argparse.SUPPRESS)
        p.add_argument("--store", default=None, metavar="STORE",
                       help=f"{help} (default {default}; also accepted as the positional argument)")
        p.set_defaults(_store_required=required, _store_default=default)


def _merge_store(ns) -> None:
    for main, alt in _STORE_FORMS:
        if not hasattr(ns, alt):
            continue
        a, b = getattr(ns, main, None), getattr(ns, alt)
        if a is not None and b is not None and str(a) != str(b):
            raise UsageError(f"two stores given ({a} and {b}): give it once, as STORE or --store STORE")
        value = a if a is not None else b
        if value is not None and not str(value).strip():
            raise UsageError("the store is an empty path: name a directory (e.g. results/ or .)")
        if value is None:
            value = getattr(ns, "_store_default", None)
        if value is None and getattr(ns, "_store_required", False):
            raise UsageError("the following arguments are required: STORE (a store directory, CSV or "
                             "Parquet file; also --store STORE)")
        setattr(ns, main, value)
        delattr(ns, alt)
    for k in ("_store_required", "_store_default"):
        if hasattr(ns, k):
            delattr(ns, k)


def run_cli(main, argv=None) -> int:
    """``main(argv)``'s exit code; its one-line errors printed as ``error: ...``. An operating-system
    error that no command anticipated (a path that turned read-only or vanished mid-run) is one line
    too, naming the path, exit 1; ``SCALING_DEBUG=1`` lets it through with its traceback."""
    import os
    try:
        return main(argv)
    except UsageError as exc:          # DataError and FitError too, with their own exit codes
        print(f"error: {exc.for_cli() if hasattr(exc, 'for_cli') else exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:          # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:
        if os.environ.get("SCALING_DEBUG"):
            raise
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1


def os_error_line(exc: BaseException) -> str:
    """``exc`` in one line: the path(s) and the reason (``[Errno 13] Permission denied: 'x'`` becomes
    ``x: permission denied``)."""
    if isinstance(exc, MemoryError):
        return "out of memory (ask for fewer resamples, mixtures or runs at once)"
    reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip().splitlines()[0]
    paths = [str(p) for p in (getattr(exc, "filename", None), getattr(exc, "filename2", None)) if p is not None]
    return f"{' -> '.join(paths)}: {reason[0].lower() + reason[1:]}" if paths else reason
