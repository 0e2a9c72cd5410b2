"""Tables in and out of a store: ``import`` of a CSV or Parquet table (validated whole before the
first write), ``--out`` tables in the format their name says, and the summary ``show`` prints."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.cli import UsageError
from scaling.errors import BadValue, DataError
from scaling import columns as cols
from scaling.store.files import _clean, _writer_lock, atomic_write_bytes, check_run_id
from scaling.store.runs import _write_run, read_run


#: ``--out`` suffixes a table is written as: the format follows the name, never a guess
TABLE_SUFFIXES = {".csv": "csv", ".txt": "csv", "": "csv", ".parquet": "parquet", ".pq": "parquet",
                  ".json": "json", ".jsonl": "jsonl"}


def table_format(path) -> str:
    """The format ``write_table_file`` writes ``path`` in, or a ``UsageError`` for a suffix it does
    not write (so that ``--out x.xlsx`` is refused, not written as CSV)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise BadValue("path", f"{{arg}} {path}: cannot write a table as {suffix} (use .csv, .parquet, .json or .jsonl)", flag="--out")
    return TABLE_SUFFIXES[suffix]


def write_table_file(frame: pd.DataFrame, path) -> Path:
    """A table as CSV, Parquet (``.parquet``/``.pq``), JSON records (``.json``) or JSON lines
    (``.jsonl``), written atomically (``--out`` of the CLIs); an unwritable path or an unknown
    suffix is a ``UsageError``, and nothing is left half-written."""
    out = Path(path)
    if out.is_dir():
        raise BadValue("path", f"{{arg}} {out} is a directory", flag="--out")
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


def read_table_file(path) -> pd.DataFrame:
    """A table file as a DataFrame, in every format ``write_table_file`` writes: Parquet
    (``.parquet``/``.pq``), JSON records (``.json``), JSON lines (``.jsonl``), else CSV; unreadable
    or empty is one ``DataError``. What ``import`` and the runners' ``--plan`` read, and
    ``scaling.sources.read_table`` for a file."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pd.read_parquet(p)
        elif suffix in (".json", ".jsonl"):
            text = p.read_text(errors="replace")
            if suffix == ".json" and text.lstrip()[:1] != "[":
                raise ValueError("a JSON table is a list of records (a command's --out TABLE.json); this is "
                                 "an object (a design result from --json? its plan is written with --out)")
            table = pd.read_json(io.StringIO(text), orient="records", lines=suffix == ".jsonl", dtype=False)
        else:
            table = pd.read_csv(p)
    except Exception as exc:  # unreadable / malformed file: one line for the user
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if table.empty:
        raise DataError(f"{path}: no rows")
    return table


def import_table(path, store, mapping: dict[str, str] | None = None) -> int:
    """Import a CSV/Parquet table into a store, one run per row; returns rows written."""
    if not Path(path).is_file():       # a shipped dataset is exported first: scaling.datasets export NAME --out FILE
        raise DataError(f"{path}: no such file (import reads a CSV or Parquet table)")
    table = read_table_file(path)
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
    loss a positive finite number where given (a cross-entropy; every fit takes its log) and given
    somewhere (a row without one imports as failed)."""
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
            bad = values.notna() & ~(np.isfinite(values) & (values > 0))
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
