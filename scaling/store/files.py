"""A store's files: run ids and the paths built from them, atomic writes, the listing and inspection
of run files (links, FIFOs, torn files), the store lock, and run claims."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.errors import DataError


def _as_dir(store) -> Path:
    return Path(store)


#: A run id: 1-128 characters, letters, digits and ``. _ - + = ,``, starting with a letter or a
#: digit. Every path the store builds from a run id (run file, side files, claims, models) is one
#: file name inside the store: no ``/``, no ``..``, no hidden or ``_``-prefixed names that would
#: overwrite the store's own files (``_schema``, ``_index``) or be skipped by readers (``.tmp-*``).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,-]{0,127}")


def check_run_id(run_id) -> str:
    """``run_id`` as text when it is a valid run id (``RUN_ID``), else one ``DataError`` saying why."""
    text = str(run_id)
    if not RUN_ID.fullmatch(text):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise DataError(f"invalid run_id {shown!r}: a run id is 1-128 letters, digits or . _ - + = , starting "
                        f"with a letter or digit (no '/', no leading '.' or '_')")
    return text


def run_path(store, run_id: str) -> Path:
    return _as_dir(store) / f"{check_run_id(run_id)}.parquet"


def _file_mode() -> int:
    """The mode ``open()`` would give a new file under this process's umask (``mkstemp`` always
    gives 0600, which would keep colleagues out of a shared ``results/``)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def dir_mode() -> int:
    """The mode ``mkdir`` would give under the umask (``mkdtemp`` always gives 0700)."""
    return _file_mode() | ((_file_mode() & 0o444) >> 2)


def atomic_write_bytes(path: Path, writer) -> None:
    """``writer(tmp)`` fills a temporary file beside ``path``, then ``os.replace``: readers see
    the old file or the new one, never a torn one; the file gets the mode the user's umask gives.
    Run files, curves, checkpoints, fit files, plots and the runners' JSON files all use it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_with_abandoned_writes(path: Path) -> None:
    """Remove ``path`` and the temporaries of ``atomic_write_bytes(path, ...)`` that killed writers
    left beside it (``.tmp-NAME-*``: a checkpoint's are as large as the checkpoint). Only where
    nothing else is writing ``path`` now: a finished run, or one the caller has claimed."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for tmp in path.parent.glob(f".tmp-{glob.escape(path.stem)}-*{glob.escape(path.suffix)}"):
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` for a text file."""
    atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(text))


def _clean(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, sort_keys=True)
    return value


def _parquet_files(path: Path) -> list[Path]:
    """The ``.parquet`` files of one folder, sorted; hidden temporaries (``.tmp-*``) and the
    store's own files (``_schema``, ``_index``) are not data, and neither is anything that is not a
    regular file (a directory, a FIFO, a dangling link, a link loop: ``odd_files``), which readers
    skip with one warning instead of hanging on it or giving up on the whole store."""
    regular, odd = _listing(path)
    for f, what in odd:
        _warn_once(f, what)
    return regular


def _listing(path: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(regular ``*.parquet`` files, [(other entry, what it is)]) of one folder."""
    if not path.is_dir():
        return [], []
    regular, odd = [], []
    for f in sorted(path.glob("*.parquet")):
        if f.name.startswith((".", "_")):
            continue
        if f.is_file():                      # follows a link to a regular file; False for loops
            regular.append(f)
        else:
            odd.append((f, _what_is(f)))
    return regular, odd


def _what_is(f: Path) -> str:
    import stat
    try:
        if f.is_symlink():
            try:
                os.stat(f)
            except OSError as exc:
                return "a symbolic link loop" if exc.errno == 40 else "a dangling symbolic link"
        mode = os.stat(f).st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "a directory, not a run file"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a run file"
    return "not a regular file"


def run_files(store) -> list[Path]:
    """The store's run files; hidden temporaries (``.tmp-*``) and side folders are not runs."""
    return _parquet_files(_as_dir(store))


_warned: set[str] = set()


def _warn_once(path: Path, why: str) -> None:
    key = str(path)
    if key not in _warned:
        _warned.add(key)
        print(f"warning: skipping {path}: {why} (python -m scaling.store check {path.parent})", file=sys.stderr)


def _inspect(path: Path, many: bool = False) -> tuple[pa.Table | None, str | None]:
    """(the file as an Arrow table, None), or (None, what is wrong with it): torn, empty, not
    Parquet, or not a run file (one row with a run_id; a segment, ``many``, has any number of
    rows). What readers skip and ``check`` reports. A file that vanished since it was listed
    (a concurrent ``compact`` or ``check --repair``) raises ``_Vanished``."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise _Vanished(path) from None
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"
    if "run_id" not in table.column_names or (table.num_rows != 1 and not many):
        return None, "not a run file (needs one row with a run_id)"
    return table, None


class _Vanished(Exception):
    """A file listed a moment ago is gone: the reader starts again from a fresh listing."""


def _read_file(path: Path, many: bool = False) -> pa.Table | None:
    """A run file (or segment) as an Arrow table, or None (one warning) when it is torn, empty or not a run."""
    table, problem = _inspect(path, many)
    if problem:
        _warn_once(path, problem)
    return table


#: Stores whose lock this thread holds (so that a reader inside a write, e.g. ``compact`` reading the
#: runs it merges, does not wait for itself: flock locks of two descriptors conflict even in one process).
_held = threading.local()


@contextlib.contextmanager
def _store_lock(store, exclusive: bool):
    """``flock`` on the store directory itself (no lock file to see): exclusive for writers, shared
    for readers. One writer at a time: a write may rewrite other runs' files to the store's union
    schema, so two concurrent writers could otherwise put back a file the other had just replaced.
    Readers wait for a writer: a directory being changed under a listing may be listed without an
    entry that was removed and without the one that replaced it (POSIX readdir), which would lose
    runs for a moment during ``compact``. Re-entrant within a thread; where flock is missing, unguarded."""
    path = _as_dir(store)
    held = getattr(_held, "stores", None)
    if held is None:
        held = _held.stores = set()
    key = os.path.abspath(path)
    if key in held:
        yield
        return
    if exclusive:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.is_dir():
        yield
        return
    try:
        import fcntl
        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):      # no flock (another OS): unguarded
        yield
        return
    held.add(key)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:                 # some network filesystems refuse flock
            pass
        yield
    finally:
        held.discard(key)
        os.close(fd)


def _writer_lock(store):
    return _store_lock(store, exclusive=True)


def _reader_lock(store):
    return _store_lock(store, exclusive=False)


#: The status a trainer reports for a run another process holds (or has just finished).
CLAIMED_ELSEWHERE = "elsewhere"


@contextlib.contextmanager
def claim_run(store, run_id: str):
    """Yield True when this process now holds ``run_id``'s claim, False when another process does
    (two grids on one store then split the work instead of training every run twice). The claim
    is an ``flock`` on ``_claims/RUN_ID.lock``: the kernel drops it when its holder exits, so a
    killed launcher leaves no stale claim. The holder writes its pid, host and start time into the
    lock file (``claim_owner``), so a user can see who holds a run, and removes the file (and an
    emptied ``_claims``) when it lets go. Where flock is missing, every claim succeeds."""
    d = _as_dir(store) / "_claims"
    check_run_id(run_id)
    path = d / f"{run_id}.lock"
    try:
        import fcntl
    except ImportError:
        yield True
        return
    fd = _locked(d, path, fcntl)
    if fd is None:
        yield True
        return
    if fd is False:
        yield False
        return
    try:
        try:
            import socket
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
        except OSError:
            pass
        yield True
    finally:
        # unlinked while still locked: a claimant that opened the old file sees that its inode is
        # no longer the path's (``_locked``) and starts again on a new one
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        with contextlib.suppress(OSError):
            d.rmdir()                    # only when empty; a racing claimant re-makes it (_locked)


def _locked(d: Path, path: Path, fcntl):
    """A descriptor of ``path`` flocked by this process, False when another holds it, None when
    the filesystem cannot lock (unguarded). The lock counts only while ``path`` is still the file
    locked: its holder unlinks it on release, so a claimant that locked the unlinked inode retries."""
    for _ in range(100):
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, _file_mode())
        except FileNotFoundError:        # _claims removed between mkdir and open: again
            continue
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:                  # a filesystem without flock: unguarded
            return fd
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)                     # locked a file its holder had just unlinked
    return None


def remove_if_empty(store) -> bool:
    """Remove ``store`` when it holds nothing but empty folders (what a grid that failed before
    its first run leaves); a checkpoint, a run or any other file keeps it. True when removed."""
    root = _as_dir(store)
    if not root.is_dir() or root.is_symlink():
        return False
    for folder, dirs, files in os.walk(root, topdown=False):
        if files:
            return False
        for name in dirs:
            with contextlib.suppress(OSError):
                (Path(folder) / name).rmdir()
    try:
        root.rmdir()
    except OSError:
        return False
    return True


def claim_owner(store, run_id: str) -> dict | None:
    """Who last claimed ``run_id`` ({pid, host, since}), or None: what ``claim_run`` wrote."""
    try:
        return json.loads((_as_dir(store) / "_claims" / f"{run_id}.lock").read_text() or "null")
    except (OSError, ValueError):
        return None
