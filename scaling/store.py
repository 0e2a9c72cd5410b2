"""The results store: a directory of Parquet files, one per run (``<run_id>.parquet``).

This module is the only code that reads or writes a store. Writes go to a temporary file in the
same directory and are ``os.replace``d into place (atomic on POSIX), so a reader never sees a torn
file and a killed writer leaves at most a hidden ``.tmp-*`` file, which readers ignore.
Keyed by ``run_id``, writing a run twice replaces it. ``pandas.read_parquet(DIR)`` returns all
runs: per-run side data (loss curves, checkpoints) lives under ``_curves/`` and ``_checkpoints/``,
which pyarrow's dataset discovery skips (names starting with ``_`` or ``.``).

CLI::

    python -m scaling.store import runs.csv results/ [--column params="Model Size"]
    python -m scaling.store show results/ [--json]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
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


def run_path(store, run_id: str) -> Path:
    return _as_dir(store) / f"{run_id}.parquet"


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


def run_files(store) -> list[Path]:
    """The store's run files; hidden temporaries (``.tmp-*``) and side folders are not runs."""
    path = _as_dir(store)
    if not path.is_dir():
        return []
    return sorted(f for f in path.glob("*.parquet") if not f.name.startswith((".", "_")))


#: The store's union schema, as an empty Parquet file (pyarrow's discovery skips ``_`` names):
#: a write reads it instead of every run file's schema, so writing is O(1) in the store's size.
SCHEMA_FILE = "_schema.parquet"
_warned: set[str] = set()


def _warn_once(path: Path, why: str) -> None:
    key = str(path)
    if key not in _warned:
        _warned.add(key)
        print(f"warning: skipping {path}: {why} (python -m scaling.store check {path.parent})", file=sys.stderr)


def _inspect(path: Path) -> tuple[pa.Table | None, str | None]:
    """(the run file as an Arrow table, None), or (None, what is wrong with it): torn, empty, not
    Parquet, or not a run. What readers skip and ``check`` reports."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"
    if "run_id" not in table.column_names or table.num_rows != 1:
        return None, "not a run file (needs one row with a run_id)"
    return table, None


def _read_file(path: Path) -> pa.Table | None:
    """A run file as an Arrow table, or None (one warning) when it is torn, empty or not a run."""
    table, problem = _inspect(path)
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


@contextlib.contextmanager
def _writer_lock(store):
    """One writer at a time per store: ``flock`` on the store directory itself (no lock file to
    see). A write may rewrite other runs' files to the store's union schema, so two concurrent
    writers (parallel workers, two grids) could otherwise put back a file the other had just replaced."""
    path = _as_dir(store)
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):      # no flock (another OS): unguarded
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:                 # some network filesystems refuse flock
            pass
        yield
    finally:
        os.close(fd)


#: The status a trainer reports for a run another process holds (or has just finished).
CLAIMED_ELSEWHERE = "elsewhere"


@contextlib.contextmanager
def claim_run(store, run_id: str):
    """Yield True when this process now holds ``run_id``'s claim, False when another process does
    (two grids on one store then split the work instead of training every run twice). The claim
    is an ``flock`` on ``_claims/RUN_ID.lock``: the kernel drops it when its holder exits, so a
    killed launcher leaves no stale claim. Where flock is missing, every claim succeeds."""
    d = _as_dir(store) / "_claims"
    try:
        import fcntl
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / f"{run_id}.lock", os.O_RDWR | os.O_CREAT, _file_mode())
    except (ImportError, OSError):
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:                 # a filesystem without flock: unguarded
            pass
        yield True
    finally:
        os.close(fd)


def write_run(store, row: dict) -> Path:
    with _writer_lock(store):
        return _write_run(store, row)


def _write_run(store, row: dict) -> Path:
    """Write (or replace) one run atomically. ``row`` needs ``run_id``; ``status`` defaults to ok.

    Every run file of a store carries one schema (the union of all columns, nulls where a run has
    none), so ``pandas.read_parquet(DIR)`` returns every column, including ones added later to a
    single run (``eval.<task>.<metric>``): a write that brings a new column re-writes the others
    (each atomically) with that column empty.
    """
    if not row.get("run_id"):
        raise UsageError("a store row needs a run_id")
    row = {k: _clean(v) for k, v in row.items()}
    row.setdefault("status", "ok")
    row.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if row.get("flops") is None and row.get("params") and row.get("tokens"):
        from scaling.accounting import flops
        row["flops"] = flops(row["params"], row["tokens"])
    for key in FLOAT_COLUMNS:
        if row.get(key) is not None:
            row[key] = float(row[key])
    path = run_path(store, str(row["run_id"]))
    table = pa.Table.from_pylist([row])
    try:                         # the usual case: no directory listing at all
        old = pq.read_schema(_as_dir(store) / SCHEMA_FILE)
    except (OSError, pa.ArrowException):
        others = [f for f in run_files(store) if f != path]
        old = _store_schema(store, others) if others else None
    if old is None:              # the first run
        _write_table(path, table)
        _save_schema(store, table.schema)
        return path
    schema = _unified_schema([old, table.schema])
    if schema is None:
        clash = [f.name for f in table.schema if f.name in old.names and old.field(f.name).type != f.type]
        raise DataError(f"run {row['run_id']}: column(s) {', '.join(clash) or '?'} have types that conflict with "
                         f"the store's ({', '.join(f'{n}: {old.field(n).type}' for n in clash)}); nothing written")
    _write_table(path, _conform(table, schema))
    if not schema.equals(old):   # a new column (or a wider type): the other files take it too
        for f in (f for f in run_files(store) if f != path):
            t = _read_file(f)
            if t is not None and not t.schema.equals(schema):
                _write_table(f, _conform(t, schema))
        _save_schema(store, schema)
    return path


def read_run(store, run_id: str) -> dict | None:
    path = run_path(store, run_id)
    if not path.exists():
        return None
    table = _read_file(path)
    return None if table is None else table.to_pandas().iloc[0].to_dict()


def update_run(store, run_id: str, **columns) -> Path:
    """Add or overwrite columns of one run (e.g. ``eval.corpus_cloze.acc``), atomically."""
    with _writer_lock(store):
        row = read_run(store, run_id)
        if row is None:
            raise UsageError(f"run {run_id!r} is not in store {store}")
        row.update(columns)
        return _write_run(store, row)


#: A cache of every run's row with the file's (inode, mtime, size) when it was read: ``read_runs``
#: re-reads only the files that changed since, so reading a store of thousands of runs costs a
#: directory listing and one file. Derived data: deleting it costs one slow read.
INDEX_FILE = "_index.parquet"
_INDEX_KEYS = ("_file", "_ino", "_mtime_ns", "_size")


def _stat_key(path: Path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_runs(store) -> pd.DataFrame:
    """All runs of a store as one DataFrame (empty with the canonical columns if none), in file
    name order; served from INDEX_FILE for every file unchanged since it was last read."""
    files = run_files(store)
    keys = {}
    for f in files:
        try:
            keys[f.name] = _stat_key(f)
        except OSError:
            pass
    index_path = _as_dir(store) / INDEX_FILE
    index = None
    try:
        index = pq.read_table(index_path)
        if not set(_INDEX_KEYS) <= set(index.column_names):
            index = None
    except (OSError, pa.ArrowException):
        index = None
    blocks, names = [], []
    cached = set()
    if index is not None:
        meta = index.select(list(_INDEX_KEYS)).to_pylist()
        keep = [i for i, m in enumerate(meta) if keys.get(m["_file"]) == (m["_ino"], m["_mtime_ns"], m["_size"])]
        if keep:
            blocks.append(index.drop_columns(list(_INDEX_KEYS)).take(keep))
            names += [meta[i]["_file"] for i in keep]
            cached = set(names)
    fresh = 0
    for f in files:
        if f.name in keys and f.name not in cached:
            t = _read_file(f)
            if t is not None:
                blocks.append(t)
                names.append(f.name)
                fresh += 1
    if not blocks:
        return pd.DataFrame(columns=list(CANONICAL))
    schema = _unified_schema(t.schema for t in blocks)
    if schema is None:           # files of conflicting types (written by hand): one frame each
        return pd.concat([t.to_pandas() for t in blocks], ignore_index=True, sort=False)
    order = sorted(range(len(names)), key=names.__getitem__)
    table = pa.concat_tables([_conform(t, schema) for t in blocks]).take(order)
    names = [names[i] for i in order]
    if fresh or index is None or len(cached) != index.num_rows:
        _save_index(index_path, table, [(n, *keys[n]) for n in names])
    return table.to_pandas()


def _save_index(path: Path, table: pa.Table, meta) -> None:
    """Best effort (a read-only store is still readable, just slower)."""
    cols = list(zip(*meta))
    full = table
    for name, values, kind in zip(_INDEX_KEYS, cols, (pa.string(), pa.int64(), pa.int64(), pa.int64())):
        full = full.append_column(name, pa.array(list(values), type=kind))
    try:
        _write_table(path, full)
    except OSError:
        pass


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
            if src.exists():
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
                os.replace(src, d / QUARANTINE / f"{name}.{stamp}")
                moved.append(name)
    return moved


def check(store) -> dict:
    """What ``python -m scaling.store check`` reports: run files that cannot be read (torn,
    zero bytes, not Parquet, not a run) and files whose columns conflict with the others' types."""
    files = run_files(store)
    bad, schemas = [], {}
    for f in files:
        t, problem = _inspect(f)
        if problem:
            bad.append({"file": f.name, "problem": problem})
        else:
            schemas[f.name] = t.schema
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
    return {"files": len(files), "readable": len(schemas), "bad": bad, "conflicts": conflicts}


def completed_run_ids(store) -> set[str]:
    runs = read_runs(store)
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"] == "ok", "run_id"].astype(str))


def side_path(store, kind: str, run_id: str, suffix: str = "") -> Path:
    """Where per-run side data lives (``_curves``, ``_checkpoints``): invisible to read_parquet(DIR)."""
    return _as_dir(store) / f"_{kind}" / f"{run_id}{suffix}"


def write_curve(store, run_id: str, curve: pd.DataFrame) -> Path:
    path = side_path(store, "curves", run_id, ".parquet")
    atomic_write_bytes(path, lambda tmp: curve.to_parquet(tmp, index=False))
    return path


def read_curve(store, run_id: str) -> pd.DataFrame:
    return pd.read_parquet(side_path(store, "curves", run_id, ".parquet"))


def read_table(source) -> pd.DataFrame:
    """A store directory, a CSV or a Parquet file, or a shipped ``dataset:NAME``, as a DataFrame."""
    from scaling import datasets
    if datasets.is_dataset(source):
        return datasets.load(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or directory")
    try:
        if path.is_dir():
            table = read_runs(path)
        elif path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path)
    except UsageError:
        raise
    except Exception as exc:  # unreadable / malformed file: one line for the user
        raise DataError(f"cannot read {source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if table.empty:
        raise DataError(f"{source}: no rows")
    return table


def write_table_file(frame: pd.DataFrame, path) -> Path:
    """A table as CSV, or Parquet for ``.parquet``/``.pq``, written atomically (``--out`` of the
    CLIs); an unwritable path is a ``UsageError``, and nothing is left half-written."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    try:
        if out.suffix.lower() in (".parquet", ".pq"):
            atomic_write_bytes(out, lambda tmp: frame.to_parquet(tmp, index=False))
        else:
            atomic_write_bytes(out, lambda tmp: frame.to_csv(tmp, index=False))
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def row_id(row: dict) -> str:
    """Deterministic id of an imported row: a hash of its values, so re-imports add nothing."""
    payload = json.dumps({k: _clean(v) for k, v in sorted(row.items())}, default=str, sort_keys=True)
    return "imp-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def import_table(path, store, mapping: dict[str, str] | None = None) -> int:
    """Import a CSV/Parquet table into a store, one run per row; returns rows written."""
    table = read_table(path)
    table = _validated_import(cols.canonicalise(table, mapping or {}), path)
    rows = []
    for raw in table.to_dict("records"):
        row = {k: v for k, v in raw.items() if not (isinstance(v, float) and math.isnan(v))}
        row.setdefault("run_id", row_id(raw))
        row["run_id"] = str(row["run_id"])
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
               "  python -m scaling.store check results/ --repair")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a CSV or Parquet table, one run per row")
    imp.add_argument("file")
    add_store_argument(imp, positional=False, default="results")
    imp.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS")
    show = sub.add_parser("show", help="summarise a store")
    add_store_argument(show, positional=True, help="store directory")
    show.add_argument("--json", action="store_true")
    chk = sub.add_parser("check", help="list unreadable run files (torn, empty, foreign) and type conflicts")
    add_store_argument(chk, positional=True, help="store directory")
    chk.add_argument("--json", action="store_true")
    chk.add_argument("--repair", action="store_true",
                     help="move the unreadable files into _quarantine/ (kept, out of every reader's way)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "import":
        n = import_table(args.file, args.store, cols.parse_mapping(args.column))
        print(f"imported {n} new run(s) into {args.store}")
        return 0
    args.store = args.source
    if not Path(args.store).is_dir():
        raise UsageError(f"store {args.store!r} is not a directory")
    if args.command == "check":
        report = check(args.store)
        if args.repair and report["bad"]:
            report["quarantined"] = quarantine(args.store, [b["file"] for b in report["bad"]])
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(f"{args.store}: {report['files']} run file(s), {report['readable']} readable")
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
