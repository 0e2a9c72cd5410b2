"""A store's runs: one schema for every file, run files and segments, side files of columns added
later, the index cache, reading every run once, ``compact`` and ``absorb_updates``."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.cli import UsageError
from scaling.errors import DataError
from scaling.store.files import (_Vanished, _as_dir, _clean, _parquet_files, _read_file, _reader_lock,
    _warn_once, _writer_lock, atomic_write_bytes, check_run_id, dir_mode, run_files, run_path)


CANONICAL = ("run_id", "params", "tokens", "unique_tokens", "flops", "loss", "status", "created_at")


#: stored as float64 whatever the caller passes, so that every file agrees on their type
FLOAT_COLUMNS = ("params", "tokens", "unique_tokens", "flops", "loss")


#: The store's union schema, as an empty Parquet file (pyarrow's discovery skips ``_`` names):
#: a write reads it instead of every run file's schema, so writing is O(1) in the store's size.
SCHEMA_FILE = "_schema.parquet"


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
        _spread_schema(store, schema, skip={path})
    return path


def _spread_schema(store, schema: pa.Schema, skip=()) -> None:
    """Every run file and segment but ``skip`` rewritten to ``schema`` where it differs, then the
    schema saved: the store's one schema after a write brought a new column."""
    for f in (f for f in [*run_files(store), *segment_files(store)] if f not in skip):
        t = _read_file(f, many=f.parent.name == SEGMENTS)
        if t is not None and not t.schema.equals(schema):
            _write_table(f, _conform(t, schema))
    _save_schema(store, schema)


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
            _spread_schema(store, schema, skip=set(touched))
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

    def summary(self) -> str:
        """The first column whose type differs between files, with the types and a file of each."""
        seen: dict[str, dict[str, str]] = {}
        for t in self.blocks:
            name = t.column("_file")[0].as_py() if "_file" in t.column_names and t.num_rows else "?"
            for field in t.schema:
                if field.name not in _INDEX_KEYS:
                    seen.setdefault(field.name, {}).setdefault(str(field.type), name)
        for col, types in seen.items():
            if len(types) > 1:
                return f"column {col!r} is " + ", ".join(f"{k} in {v}" for k, v in types.items())
        return "the files' columns do not agree"


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
        try:
            table = _runs_table(d)
        except _Conflicting as exc:      # files written by hand with another type: one segment cannot hold both
            raise DataError(f"{d}: cannot compact files of conflicting types ({exc.summary()}); "
                            f"fix or remove the odd file (python -m scaling.store check {d} lists them)") from None
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


def completed_run_ids(store) -> set[str]:
    runs = read_runs(store)
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"] == "ok", "run_id"].astype(str))
