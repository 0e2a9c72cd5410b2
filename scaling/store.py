"""The results store: a directory of Parquet files, one per run (``<run_id>.parquet``), and after
``compact`` segment files of many runs (``segments/part-*.parquet``).

This module is the only code that reads or writes a store. Writes go to a temporary file in the
same directory and are ``os.replace``d into place (atomic on POSIX), so a reader never sees a torn
file and a killed writer leaves at most a hidden ``.tmp-*`` file, which readers ignore.
Keyed by ``run_id``, writing a run twice replaces it. ``pandas.read_parquet(DIR)`` returns all
runs (run files and segments; every file carries the store's one schema): per-run side data (loss
curves, checkpoints, columns added later such as evaluations, scores along training) lives under
``_curves/``, ``_checkpoints/``, ``_updates/``, ``_evals/``, which pyarrow's dataset discovery skips
(names starting with ``_`` or ``.``). This module's readers join ``_updates/``; ``absorb_updates``
(which the commands that update runs, e.g. ``runners.evaluate``, call when they finish) and
``compact`` fold it into the run files and segments, after which ``pandas.read_parquet(DIR)``,
pyarrow and duckdb see those columns too. Layout, costs and what the locks rely
on: README, "The results store".

CLI::

    python -m scaling.store import runs.csv results/ [--column params="Model Size"]
    python -m scaling.store show results/ [--json]
    python -m scaling.store check results/ [--repair]
    python -m scaling.store compact results/
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.cli import ArgumentParser, UsageError, run_cli, add_store_argument
from scaling.errors import DataError
from scaling import columns as cols

CANONICAL = ("run_id", "params", "tokens", "unique_tokens", "flops", "loss", "status", "created_at")
#: stored as float64 whatever the caller passes, so that every file agrees on their type
FLOAT_COLUMNS = ("params", "tokens", "unique_tokens", "flops", "loss")


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
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
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


def odd_files(store) -> list[tuple[Path, str]]:
    """Entries named like run files, segments or side files that are not regular files."""
    d = _as_dir(store)
    return [x for folder in (d, d / SEGMENTS, d / UPDATES) for x in _listing(folder)[1]]


def run_files(store) -> list[Path]:
    """The store's run files; hidden temporaries (``.tmp-*``) and side folders are not runs."""
    return _parquet_files(_as_dir(store))


#: The store's union schema, as an empty Parquet file (pyarrow's discovery skips ``_`` names):
#: a write reads it instead of every run file's schema, so writing is O(1) in the store's size.
SCHEMA_FILE = "_schema.parquet"
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


def _store_schema(store, others: list[Path]) -> pa.Schema | None:
    """The union schema of the readable files of a store that has no SCHEMA_FILE (written before
    it existed, or the file was deleted), which is then saved."""
    schemas = []
    for f in others:
        try:
            schemas.append(pq.read_schema(f))
        except (OSError, pa.ArrowException):
            _warn_once(f, "unreadable")
    schema = _unified_schema(schemas) if schemas else None
    if schema is not None:
        _save_schema(store, schema)
    return schema


def _save_schema(store, schema: pa.Schema) -> None:
    _write_table(_as_dir(store) / SCHEMA_FILE, schema.empty_table())


def _unified_schema(schemas) -> pa.Schema | None:
    try:
        return pa.unify_schemas(list(schemas), promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order: missing ones null, types cast."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(len(table), type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _write_table(path: Path, table: pa.Table) -> None:
    atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))


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


def _as_floats(row: dict) -> None:
    """FLOAT_COLUMNS as float64 in place; a value that is not a number is a DataError naming it."""
    for key in FLOAT_COLUMNS:
        if row.get(key) is not None:
            try:
                row[key] = float(row[key])
            except (TypeError, ValueError):
                raise DataError(f"run {row.get('run_id')}: {key} = {row[key]!r} is not a number; nothing written") from None


def write_run(store, row: dict) -> Path:
    with _writer_lock(store):
        return _write_run(store, row)


def _write_run(store, row: dict) -> Path:
    """Write (or replace) one run atomically. ``row`` needs ``run_id``; ``status`` defaults to ok.

    Every run file and segment of a store carries one schema (the union of all columns, nulls where
    a run has none), so ``pandas.read_parquet(DIR)`` returns every column: a write that brings a new
    column re-writes the others (each atomically) with that column empty, once per new column.
    Columns added to one run later go to a side file instead (``update_run``). A run written again
    supersedes its side file and its row in a segment.
    """
    if not row.get("run_id"):
        raise UsageError("a store row needs a run_id")
    row = {k: _clean(v) for k, v in row.items()}
    row.setdefault("status", "ok")
    row.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if row.get("flops") is None and row.get("params") and row.get("tokens"):
        from scaling.accounting import flops
        row["flops"] = flops(row["params"], row["tokens"])
    _as_floats(row)
    run_id = str(row["run_id"])
    path = run_path(store, run_id)
    try:                         # the usual case: no directory listing at all
        old = pq.read_schema(_as_dir(store) / SCHEMA_FILE)
    except (OSError, pa.ArrowException):
        others = [f for f in [*run_files(store), *segment_files(store)] if f != path]
        old = _store_schema(store, others) if others else None
    if old is not None and set(row) <= set(old.names):
        try:                     # the usual case: the row fits the store's schema as it is
            fitted = pa.Table.from_pylist([row], schema=old)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
            fitted = None        # a wider type or a conflict: the general path says which
        if fitted is not None:
            _write_table(path, fitted)
            _supersede(store, run_id)
            return path
    table = pa.Table.from_pylist([row])
    if old is None:              # the first run
        _write_table(path, table)
        _save_schema(store, table.schema)
        return path
    schema = _unified_schema([old, table.schema])
    if schema is None:
        clash = [f.name for f in table.schema if f.name in old.names and old.field(f.name).type != f.type]
        raise DataError(f"run {run_id}: column(s) {', '.join(clash) or '?'} have types that conflict with "
                        f"the store's ({', '.join(f'{n}: {old.field(n).type}' for n in clash)}); nothing written")
    _write_table(path, _conform(table, schema))
    _supersede(store, run_id)
    if not schema.equals(old):   # a new column (or a wider type): the other files take it too
        for f in (f for f in [*run_files(store), *segment_files(store)] if f != path):
            t = _read_file(f, many=f.parent.name == SEGMENTS)
            if t is not None and not t.schema.equals(schema):
                _write_table(f, _conform(t, schema))
        _save_schema(store, schema)
    return path


#: ``compact`` moves run files into segment files here; pyarrow's discovery reads them with the rest.
SEGMENTS = "segments"
#: Columns added to one run after it was written (``update_run``: evaluations), one file per run,
#: joined on read; ``compact`` folds them into the segment.
UPDATES = "_updates"


def segment_files(store) -> list[Path]:
    return _parquet_files(_as_dir(store) / SEGMENTS)


def update_path(store, run_id: str) -> Path:
    return _as_dir(store) / UPDATES / f"{check_run_id(run_id)}.parquet"


def update_files(store) -> list[Path]:
    return _parquet_files(_as_dir(store) / UPDATES)


def _supersede(store, run_id: str) -> None:
    """What a run written again replaces beside its run file: its side file (the evaluations of
    the model it was) and its row in a segment."""
    update = update_path(store, run_id)
    if update.exists():
        update.unlink()
    _drop_from_segments(store, run_id)


def _drop_from_segments(store, run_id: str) -> None:
    """A run written again leaves the segment that held it (rewritten without the row), so that
    ``pandas.read_parquet(DIR)`` sees it once. Costs a read of each segment's run_id column."""
    for seg in segment_files(store):
        try:
            ids = pq.read_table(seg, columns=["run_id"]).column(0).to_pylist()
        except (OSError, pa.ArrowException):
            continue
        if run_id in ids:
            t = pq.read_table(seg)
            keep = [i for i, r in enumerate(ids) if r != run_id]
            if keep:
                _write_table(seg, t.take(keep))
            else:
                seg.unlink()


def _segment_row(store, run_id: str) -> dict | None:
    for seg in reversed(segment_files(store)):
        try:
            t = pq.read_table(seg, filters=[("run_id", "=", run_id)])
        except (OSError, pa.ArrowException):
            continue
        if t.num_rows:
            return t.slice(t.num_rows - 1).to_pandas().iloc[0].to_dict()
    return None


def read_run(store, run_id: str) -> dict | None:
    """One run's row (its run file, or its segment row after ``compact``), with its updates."""
    with _reader_lock(store):
        return _read_run(store, run_id)


def _read_run(store, run_id: str) -> dict | None:
    path = run_path(store, run_id)
    row = None
    if path.exists():
        try:
            table = _read_file(path)
        except _Vanished:
            table = None
        row = None if table is None else table.to_pandas().iloc[0].to_dict()
    if row is None:
        row = _segment_row(store, run_id)
        if row is None:
            return None
    extra = _read_update(update_path(store, run_id))
    row.update({k: v for k, v in extra.items() if v is not None and k != "run_id"})
    return row


def _read_update(path: Path) -> dict:
    """A run's side-file columns ({} when it has none; one warning when it is unreadable)."""
    if not path.exists():
        return {}
    try:
        return pq.read_table(path).to_pylist()[0]
    except (OSError, pa.ArrowException, IndexError):
        _warn_once(path, "unreadable")
        return {}


def update_run(store, run_id: str, **columns) -> Path:
    """Add or overwrite columns of one run (e.g. ``eval.corpus_cloze.acc``), atomically, in the
    run's side file ``_updates/RUN.parquet``: no other run's file is rewritten. Store readers join
    it; ``pandas.read_parquet(DIR)`` sees the columns once ``absorb_updates`` (which the commands
    that update runs call when they finish) or ``compact`` has folded them in."""
    with _writer_lock(store):
        row = read_run(store, run_id)
        if row is None:
            raise UsageError(f"run {run_id!r} is not in store {store}")
        path = update_path(store, run_id)
        extra = _read_update(path)
        extra.update({k: _clean(v) for k, v in columns.items()})
        extra["run_id"] = run_id
        _as_floats(extra)
        table = pa.Table.from_pylist([extra])
        try:
            old = pq.read_schema(_as_dir(store) / SCHEMA_FILE)
        except (OSError, pa.ArrowException):
            old = None
        if old is not None:
            shared = [f for f in table.schema if f.name in old.names]
            if _unified_schema([pa.schema([old.field(f.name) for f in shared]), pa.schema(shared)]) is None:
                clash = [f.name for f in shared if _unified_schema([pa.schema([old.field(f.name)]), pa.schema([f])]) is None]
                raise DataError(f"run {run_id}: column(s) {', '.join(clash)} have types that conflict with the store's; nothing written")
        _write_table(path, table)
        return path


def absorb_updates(store) -> int:
    """Fold every side file into the file that holds its run (the run's own file, or its segment,
    each rewritten once, atomically), then remove the side files: after it, ``pandas.read_parquet``,
    pyarrow and duckdb see the evaluations as ordinary columns, as this module's readers always did.
    A new column reaches every file (the store's one schema), as in ``write_run``. Readers see the
    same rows before, during and after (a run in both its file and its side file reads once).
    Returns the number of runs absorbed. Commands that update runs call it when they finish."""
    d = _as_dir(store)
    with _writer_lock(store):
        files = update_files(d)
        if not files:
            return 0
        rows = [r for f in files for r in ([_read_update(f)] if f.exists() else []) if r.get("run_id")]
        if not rows:
            return 0
        keys = list(dict.fromkeys(k for r in rows for k in r))      # every side file's columns, not the first's
        updates = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
        ids = set(updates.column("run_id").to_pylist())
        touched = {}
        for f in [*run_files(d), *segment_files(d)]:
            many = f.parent.name == SEGMENTS
            if not many and f.stem not in ids:
                continue
            t = _read_file(f, many=many)
            if t is None or not ids & set(t.column("run_id").to_pylist()):
                continue
            touched[f] = _apply_updates(t, updates)
        try:
            old = pq.read_schema(d / SCHEMA_FILE)
        except (OSError, pa.ArrowException):
            old = None
        schema = _unified_schema([s for s in [old, *(t.schema for t in touched.values())] if s is not None])
        if schema is None:
            raise DataError(f"{store}: side-file columns conflict with the store's types; run "
                            f"python -m scaling.store check {store}")
        for f, t in touched.items():
            _write_table(f, _conform(t, schema))
        if old is None or not schema.equals(old):
            for f in (f for f in [*run_files(d), *segment_files(d)] if f not in touched):
                t = _read_file(f, many=f.parent.name == SEGMENTS)
                if t is not None and not t.schema.equals(schema):
                    _write_table(f, _conform(t, schema))
            _save_schema(store, schema)
        absorbed = {r for t in touched.values() for r in t.column("run_id").to_pylist()} & ids
        for f in files:
            if f.stem in absorbed:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        return len(absorbed)


#: A cache of every run's row with the file's (inode, mtime, size) when it was read: ``read_runs``
#: re-reads only the files that changed since, so reading a store of thousands of runs costs a
#: directory listing and one file. Derived data: deleting it costs one slow read.
INDEX_FILE = "_index.parquet"
_INDEX_KEYS = ("_file", "_ino", "_mtime_ns", "_size")


def _stat_key(path: Path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _cached_rows(root: Path, index_path: Path, files: list[Path]) -> pa.Table | None:
    """The rows of ``files`` (paths under ``root``) in one table with a ``_file`` column (the path
    relative to root), served from ``index_path`` for each file unchanged since it was cached."""
    keys = {}
    for f in files:
        try:
            keys[f.relative_to(root).as_posix()] = _stat_key(f)
        except FileNotFoundError:
            raise _Vanished(f) from None
    index = None
    try:
        index = pq.read_table(index_path)
        if not set(_INDEX_KEYS) <= set(index.column_names):
            index = None
    except (OSError, pa.ArrowException):
        index = None
    blocks, cached, fresh = [], set(), 0
    if index is not None:
        meta = index.select(list(_INDEX_KEYS)).to_pylist()
        keep = [i for i, m in enumerate(meta) if keys.get(m["_file"]) == (m["_ino"], m["_mtime_ns"], m["_size"])]
        if keep:
            blocks.append(index.take(keep))
            cached = {meta[i]["_file"] for i in keep}
    for f in files:
        name = f.relative_to(root).as_posix()
        if name in cached:
            continue
        t = _read_file(f, many=f.parent.name == SEGMENTS)
        if t is not None:
            key = keys[name]
            for col, value, kind in zip(_INDEX_KEYS, (name, *key), (pa.string(), pa.int64(), pa.int64(), pa.int64())):
                t = t.append_column(col, pa.array([value] * t.num_rows, type=kind))
            blocks.append(t)
            fresh += 1
    if not blocks:
        return None
    schema = _unified_schema(t.schema for t in blocks)
    if schema is None:           # files of conflicting types (written by hand)
        raise _Conflicting(blocks)
    table = pa.concat_tables([_conform(t, schema) for t in blocks])
    if fresh or index is None or index.num_rows != table.num_rows:
        try:                     # best effort: a read-only store is still readable, just slower
            _write_table(index_path, table)
        except OSError:
            pass
    return table


class _Conflicting(Exception):
    def __init__(self, blocks):
        self.blocks = blocks


def _latest_rows(table: pa.Table) -> pa.Table:
    """One row per run_id, sorted by run_id: a run file's row over a segment's, a later segment's
    over an earlier one's (during ``compact`` a run is briefly in both)."""
    ids = table.column("run_id").to_pylist()
    files = table.column("_file").to_pylist()
    rank = {}
    for i, (rid, f) in enumerate(zip(ids, files)):
        key = (not f.startswith(SEGMENTS + "/"), f)
        if rid not in rank or key >= rank[rid][0]:
            rank[rid] = (key, i)
    order = [rank[r][1] for r in sorted(rank, key=str)]
    return table.take(order).drop_columns(list(_INDEX_KEYS))


def _apply_updates(table: pa.Table, updates: pa.Table) -> pa.Table:
    """``table`` with each run's side-file columns over its own (a null in a side file changes nothing)."""
    pos = {r: i for i, r in enumerate(table.column("run_id").to_pylist())}
    upd_ids = updates.column("run_id").to_pylist()
    for name in updates.column_names:
        if name == "run_id" or name in _INDEX_KEYS:
            continue
        new = updates.column(name)
        values = table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
        for rid, v in zip(upd_ids, new.to_pylist()):
            if v is not None and rid in pos:
                values[pos[rid]] = v
        kind = new.type
        if name in table.column_names:
            merged = _unified_schema([pa.schema([table.schema.field(name)]), pa.schema([pa.field(name, kind)])])
            kind = merged.field(name).type if merged is not None else pa.string()
        try:
            array = pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table


def _runs_table(store) -> pa.Table | None:
    d = _as_dir(store)
    for attempt in range(20):    # a file vanished under us (compact, repair): list again
        try:
            # run files, segments, run files again: a compaction (run files gone) or a rerun of a
            # compacted run (new run file, then its segment rewritten) in between is seen and retried
            listed, segments = run_files(d), segment_files(d)
            if run_files(d) != listed:
                continue
            main = _cached_rows(d, d / INDEX_FILE, [*segments, *listed])
            if main is None:
                return None
            table = _latest_rows(main)
            upd_files = update_files(d)
            if upd_files:
                updates = _cached_rows(d, d / UPDATES / "_index.parquet", upd_files)
                if updates is not None:
                    table = _apply_updates(table, updates)
            return table
        except _Vanished:
            continue
    raise DataError(f"{store}: files keep vanishing while reading (another process is rewriting the store?)")


def read_runs(store) -> pd.DataFrame:
    """All runs of a store as one DataFrame (empty with the canonical columns if none), one row per
    run sorted by run_id: run files, segments, and their side-file columns. Served from INDEX_FILE
    for every file unchanged since it was last read; a concurrent ``compact`` is seen as before or after."""
    try:
        with _reader_lock(store):
            table = _runs_table(store)
    except _Conflicting as exc:  # files of conflicting types (written by hand): one frame each
        frames = [t.drop_columns([c for c in _INDEX_KEYS if c in t.column_names]).to_pandas() for t in exc.blocks]
        return pd.concat(frames, ignore_index=True, sort=False)
    if table is None:
        return pd.DataFrame(columns=list(CANONICAL))
    return table.to_pandas()


def compact(store) -> dict:
    """Merge every run file, segment and side file into one new segment ``segments/part-TIME.parquet``
    (written atomically, then the absorbed files removed), so that a store of 10,000 runs is one
    file for ``pandas.read_parquet(DIR)``, pyarrow and duckdb, and the side-file columns
    (evaluations) become ordinary columns. Store readers see every run once throughout: a run in
    both the new segment and a not-yet-removed file is read once. Writers wait (the store lock)."""
    d = _as_dir(store)
    with _writer_lock(store):
        before = {"run_files": run_files(d), "segments": segment_files(d), "updates": update_files(d)}
        table = _runs_table(d)
        if table is None:
            return {"runs": 0, "segment": None, **{k: len(v) for k, v in before.items()}}
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        segment = d / SEGMENTS / f"part-{stamp}.parquet"
        (d / SEGMENTS).mkdir(exist_ok=True, mode=dir_mode())
        _write_table(segment, table)
        _save_schema(store, table.schema)
        for f in [*before["run_files"], *before["updates"], *before["segments"]]:
            if f != segment:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
    return {"runs": table.num_rows, "segment": segment.relative_to(d).as_posix(),
            **{k: len(v) for k, v in before.items()}}


QUARANTINE = "_quarantine"


def quarantine(store, names) -> list[str]:
    """Move run files out of the store into ``_quarantine/`` (renamed, so a later run file of the
    same name is never confused with them); returns the names moved."""
    d = _as_dir(store)
    (d / QUARANTINE).mkdir(exist_ok=True)
    moved = []
    with _writer_lock(store):
        for name in names:
            src = d / name
            if os.path.lexists(src):               # a dangling link or a loop is moved too
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
                os.replace(src, d / QUARANTINE / f"{name.replace('/', '__')}.{stamp}")
                moved.append(name)
    return moved


def check(store) -> dict:
    """What ``python -m scaling.store check`` reports: run files that cannot be read (torn,
    zero bytes, not Parquet, not a run) and files whose columns conflict with the others' types."""
    d = _as_dir(store)
    with _reader_lock(store):
        kinds = {"run_files": run_files(store), "segments": segment_files(store), "updates": update_files(store)}
    files = [f for fs in kinds.values() for f in fs]
    bad, schemas = [], {}
    odd = odd_files(store)
    for f, what in odd:
        bad.append({"file": f.relative_to(d).as_posix(), "problem": what})
    for f in files:
        name = f.relative_to(d).as_posix()
        try:
            t, problem = _inspect(f, many=f.parent.name == SEGMENTS)
        except _Vanished:
            continue
        if problem:
            bad.append({"file": name, "problem": problem})
        elif f.parent.name != UPDATES:
            schemas[name] = t.schema
    conflicts = []
    if schemas and _unified_schema(schemas.values()) is None:
        types: dict[str, dict[str, tuple]] = {}
        for name, sch in schemas.items():
            for field in sch:
                entry = types.setdefault(field.name, {}).setdefault(str(field.type), (field.type, []))
                entry[1].append(name)
        for col, by_type in types.items():
            if _unified_schema([pa.schema([pa.field(col, t)]) for t, _ in by_type.values()]) is None:
                conflicts.append({"column": col, "types": {k: sorted(v)[:5] for k, (_, v) in by_type.items()}})
    return {"files": len(files) + len(odd), **{k: len(v) for k, v in kinds.items()},
            "readable": len(files) - (len(bad) - len(odd)), "bad": bad, "conflicts": conflicts}


def completed_run_ids(store) -> set[str]:
    runs = read_runs(store)
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"] == "ok", "run_id"].astype(str))


def side_path(store, kind: str, run_id: str, suffix: str = "") -> Path:
    """Where per-run side data lives (``_curves``, ``_checkpoints``): invisible to read_parquet(DIR)."""
    return _as_dir(store) / f"_{kind}" / f"{check_run_id(run_id)}{suffix}"


def write_curve(store, run_id: str, curve: pd.DataFrame) -> Path:
    path = side_path(store, "curves", run_id, ".parquet")
    atomic_write_bytes(path, lambda tmp: curve.to_parquet(tmp, index=False))
    return path


def read_curve(store, run_id: str) -> pd.DataFrame:
    return pd.read_parquet(side_path(store, "curves", run_id, ".parquet"))


#: Side folder of evaluations along training: one file per run, one row per scored checkpoint
EVALS = "evals"


def write_checkpoint_evals(store, run_id: str, rows) -> Path:
    """The scored checkpoints of one run (``_evals/<run_id>.parquet``: ``run_id``, ``step``,
    ``tokens`` seen so far, ``params``, the validation ``loss`` at that step and ``eval.<task>.<metric>``
    columns), rewritten whole and atomically after each checkpoint, so a killed run keeps what it
    had scored."""
    frame = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    path = side_path(store, EVALS, run_id, ".parquet")
    atomic_write_bytes(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def read_checkpoint_evals(store, run_id: str | None = None) -> pd.DataFrame:
    """One run's scored checkpoints, or every run's (ordered by run and step); an unreadable file
    is skipped with one warning. Empty frame when there are none."""
    folder = _as_dir(store) / f"_{EVALS}"
    files = [folder / f"{run_id}.parquet"] if run_id is not None else _parquet_files(folder)
    frames = []
    for f in files:
        if not f.exists():
            continue
        try:
            frames.append(pd.read_parquet(f))
        except (OSError, ValueError, pa.ArrowException) as exc:
            _warn_once(f, f"unreadable: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}")
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True, sort=False)
    if {"run_id", "step"} <= set(table.columns):
        table = table.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    return table


def is_checkpoint_table(path) -> bool:
    """A store's ``_evals`` folder given as a SOURCE: read as the checkpoint table."""
    p = Path(path)
    return p.name == f"_{EVALS}" and p.is_dir()


#: ``--out`` suffixes a table is written as: the format follows the name, never a guess
TABLE_SUFFIXES = {".csv": "csv", ".txt": "csv", "": "csv", ".parquet": "parquet", ".pq": "parquet",
                  ".json": "json", ".jsonl": "jsonl"}


def table_format(path) -> str:
    """The format ``write_table_file`` writes ``path`` in, or a ``UsageError`` for a suffix it does
    not write (so that ``--out x.xlsx`` is refused, not written as CSV)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UsageError(f"--out {path}: cannot write a table as {suffix} (use .csv, .parquet, .json or .jsonl)")
    return TABLE_SUFFIXES[suffix]


def write_table_file(frame: pd.DataFrame, path) -> Path:
    """A table as CSV, Parquet (``.parquet``/``.pq``), JSON records (``.json``) or JSON lines
    (``.jsonl``), written atomically (``--out`` of the CLIs); an unwritable path or an unknown
    suffix is a ``UsageError``, and nothing is left half-written."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    kind = table_format(out)
    writers = {"parquet": lambda tmp: frame.to_parquet(tmp, index=False),
               "csv": lambda tmp: frame.to_csv(tmp, index=False),
               "json": lambda tmp: frame.to_json(tmp, orient="records", indent=1),
               "jsonl": lambda tmp: frame.to_json(tmp, orient="records", lines=True)}
    try:
        atomic_write_bytes(out, writers[kind])
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def row_id(row: dict) -> str:
    """Deterministic id of an imported row: a hash of its values, so re-imports add nothing."""
    payload = json.dumps({k: _clean(v) for k, v in sorted(row.items())}, default=str, sort_keys=True)
    return "imp-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def _read_import(path) -> pd.DataFrame:
    """The CSV or Parquet table ``scaling.store import`` reads (a shipped dataset is exported first:
    ``python -m scaling.datasets export NAME --out FILE``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file (import reads a CSV or Parquet table)")
    try:
        table = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as exc:  # unreadable / malformed file: one line for the user
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if table.empty:
        raise DataError(f"{path}: no rows")
    return table


def import_table(path, store, mapping: dict[str, str] | None = None) -> int:
    """Import a CSV/Parquet table into a store, one run per row; returns rows written."""
    table = _read_import(path)
    table = _validated_import(cols.canonicalise(table, mapping or {}), path)
    rows, first = [], {}
    for i, raw in enumerate(table.to_dict("records")):
        row = {k: v for k, v in raw.items() if not (isinstance(v, float) and math.isnan(v))}
        row.setdefault("run_id", row_id(raw))
        try:
            row["run_id"] = check_run_id(row["run_id"])
        except DataError as exc:
            raise DataError(f"{path}: row {i + 1}: {exc}; nothing imported") from None
        if row["run_id"] in first:
            raise DataError(f"{path}: rows {first[row['run_id']] + 1} and {i + 1} have the same run_id "
                            f"{row['run_id']!r}; nothing imported")
        first[row["run_id"]] = i
        row.setdefault("status", "ok" if "loss" in row else "failed")
        row.setdefault("source", str(Path(path).name))
        rows.append(row)
    written = 0
    with _writer_lock(store):            # check-then-write under the lock: concurrent imports agree
        for row in rows:
            if read_run(store, row["run_id"]) is not None:
                continue
            _write_run(store, row)
            written += 1
    return written


def _validated_import(table: pd.DataFrame, path) -> pd.DataFrame:
    """The whole table checked before the first row is written: params, tokens and loss present;
    params, tokens (and unique_tokens, flops when given) positive finite numbers in every row;
    loss a finite number where given and given somewhere (a row without one imports as failed)."""
    need = [c for c in ("params", "tokens", "loss") if c not in table.columns]
    if need:
        raise DataError(f"{path}: no {', '.join(need)} column (map one with --column CANON=THEIRS; "
                         f"have: {', '.join(map(str, table.columns))})")
    table = table.copy()
    for col in ("params", "tokens", "unique_tokens", "flops", "loss"):
        if col not in table.columns:
            continue
        values = pd.to_numeric(table[col], errors="coerce")
        bad_text = table[col].notna() & values.isna()
        if bad_text.any():
            i = int(bad_text.idxmax())
            raise DataError(f"{path}: row {i + 1}: {col} {table[col][i]!r} is not a number; nothing imported")
        if col == "loss":
            if values.isna().all():
                raise DataError(f"{path}: no row has a loss; nothing imported")
            bad = values.notna() & ~np.isfinite(values)
        else:
            bad = ~(np.isfinite(values) & (values > 0)) if col in ("params", "tokens") else values.notna() & ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(bad.idxmax())
            raise DataError(f"{path}: row {i + 1}: {col} = {values[i]!r} (must be a positive finite number); nothing imported")
        table[col] = values
    return table


def summarise(runs: pd.DataFrame) -> dict:
    status = runs["status"].value_counts().to_dict() if "status" in runs and len(runs) else {}
    out = {"runs": int(len(runs)), "status": {str(k): int(v) for k, v in status.items()},
           "columns": list(map(str, runs.columns))}
    for key in ("params", "tokens", "flops", "loss"):
        if key in runs and len(runs):
            vals = pd.to_numeric(runs[key], errors="coerce").dropna()
            if len(vals):
                out[key] = {"min": float(vals.min()), "max": float(vals.max()), "distinct": int(vals.nunique())}
    return out


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m scaling.store", description="Import into and inspect a results store.",
        epilog="example:\n  python -m scaling.store import runs.csv results/ "
               "--column params='Model Size' --column flops='Training FLOP'\n"
               "  python -m scaling.store show results/ --json\n"
               "  python -m scaling.store show results/ --checkpoints\n"
               "  python -m scaling.store check results/ --repair\n"
               "  python -m scaling.store compact results/")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a CSV or Parquet table, one run per row")
    imp.add_argument("file")
    add_store_argument(imp, positional=False, default="results")
    imp.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS")
    show = sub.add_parser("show", help="summarise a store")
    add_store_argument(show, positional=True, help="store directory")
    show.add_argument("--json", action="store_true")
    show.add_argument("--checkpoints", action="store_true",
                      help="the runs' scored checkpoints (evaluation along training: --eval-every) instead of the runs")
    chk = sub.add_parser("check", help="list unreadable run files (torn, empty, foreign) and type conflicts")
    add_store_argument(chk, positional=True, help="store directory")
    chk.add_argument("--json", action="store_true")
    chk.add_argument("--repair", action="store_true",
                     help="move the unreadable files into _quarantine/ (kept, out of every reader's way)")
    cmp = sub.add_parser("compact", help="merge run files and side files into one segment file (fast reads at 10k+ runs)")
    add_store_argument(cmp, positional=True, help="store directory")
    cmp.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "import":
        from scaling.cli import check_writable
        check_writable(args.store, "store")          # a file, a link loop or a read-only place: one line, first
        n = import_table(args.file, args.store, cols.parse_mapping(args.column))
        print(f"imported {n} new run(s) into {args.store}")
        return 0
    args.store = args.source
    if not Path(args.store).is_dir():
        raise UsageError(f"store {args.store!r} is not a directory")
    if args.command == "compact":
        report = compact(args.store)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"{args.store}: {report['runs']} run(s) in {report['segment']} (absorbed {report['run_files']} run "
                  f"file(s), {report['segments']} segment(s), {report['updates']} side file(s))")
        return 0
    if args.command == "check":
        report = check(args.store)
        if args.repair and report["bad"]:
            report["quarantined"] = quarantine(args.store, [b["file"] for b in report["bad"]])
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(f"{args.store}: {report['files']} file(s) ({report['run_files']} run file(s), {report['segments']} "
                  f"segment(s), {report['updates']} side file(s)), {report['readable']} readable")
            for b in report["bad"]:
                print(f"  {b['file']}: {b['problem']}")
            for c in report["conflicts"]:
                print(f"  column {c['column']}: conflicting types " + "; ".join(f"{t} in {', '.join(v)}" for t, v in c["types"].items()))
            if report.get("quarantined"):
                print(f"  moved {len(report['quarantined'])} file(s) into {Path(args.store) / QUARANTINE}/")
            if not report["bad"] and not report["conflicts"]:
                print("  all run files readable, one schema")
        left = [b for b in report["bad"] if b["file"] not in set(report.get("quarantined", []))]
        return 1 if left or report["conflicts"] else 0
    if args.checkpoints:
        table = read_checkpoint_evals(args.store)
        if args.json:
            print(json.dumps(json.loads(table.to_json(orient="records")), indent=1))
            return 0
        print(f"{len(table)} scored checkpoint(s) of {table['run_id'].nunique() if len(table) else 0} run(s) in {args.store}")
        if len(table):
            shown = [c for c in table.columns if c in ("run_id", "step", "tokens", "params", "loss")
                     or (c.startswith("eval.") and c.endswith((".acc", ".bpb")))]
            with pd.option_context("display.width", 160, "display.max_rows", 200):
                print(table[shown].to_string(index=False))
        return 0
    runs = read_runs(args.store)
    if args.json:
        print(json.dumps(json.loads(runs.to_json(orient="records")), indent=1))
        return 0
    s = summarise(runs)
    print(f"{s['runs']} run(s) in {args.store}: " + ", ".join(f"{k}={v}" for k, v in s["status"].items()))
    show = [c for c in ("run_id", "params", "tokens", "unique_tokens", "flops", "loss", "status") if c in runs]
    if len(runs):
        with pd.option_context("display.width", 160, "display.max_rows", 200):
            print(runs[show].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))


def __getattr__(name):
    """``scaling.store.read_table`` as it was: it now lives in ``scaling.sources`` (which reads
    datasets too), re-exported here for callers of the old name."""
    if name == "read_table":
        from scaling.sources import read_table
        return read_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

