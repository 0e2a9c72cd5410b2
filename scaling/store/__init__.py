"""The results store: a directory of Parquet files, one per run (``<run_id>.parquet``), and after
``compact`` segment files of many runs (``segments/part-*.parquet``).

This package is the only code that reads or writes a store: ``files`` (run ids, atomic writes,
listings, the lock, claims), ``runs`` (one schema, run files, segments, side files, the index,
``compact``, ``absorb_updates``), ``side`` (curves, checkpoint scores), ``check``, ``tables`` (import,
``--out`` tables) and ``cli``; everything is importable from ``scaling.store`` as before. Writes go to a temporary file in the
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

from scaling.errors import DataError, UsageError  # noqa: F401  (the errors its functions raise)
from scaling.store.files import (  # noqa: F401  (the store's API, as one module had it)
    RUN_ID, check_run_id, run_path, dir_mode, atomic_write_bytes, remove_with_abandoned_writes, atomic_write_text, _clean, run_files,
    _warned, CLAIMED_ELSEWHERE, claim_run, remove_if_empty, claim_owner)
from scaling.store.runs import (  # noqa: F401  (the store's API, as one module had it)
    CANONICAL, FLOAT_COLUMNS, SCHEMA_FILE, write_run, SEGMENTS, UPDATES, segment_files, update_path,
    update_files, read_run, update_run, absorb_updates, INDEX_FILE, read_runs, compact,
    completed_run_ids)
from scaling.store.side import (  # noqa: F401  (the store's API, as one module had it)
    side_path, checkpoint_path, write_curve, read_curve, EVALS, write_checkpoint_evals, read_checkpoint_evals,
    is_checkpoint_table)
from scaling.store.check import (  # noqa: F401  (the store's API, as one module had it)
    odd_files, QUARANTINE, quarantine, check)
from scaling.store.tables import (  # noqa: F401  (the store's API, as one module had it)
    TABLE_SUFFIXES, table_format, write_table_file, read_table_file, row_id, import_table, summarise)
from scaling.store.cli import (  # noqa: F401  (the store's API, as one module had it)
    main)


__all__ = ["RUN_ID", "check_run_id", "run_path", "dir_mode", "atomic_write_bytes", "remove_with_abandoned_writes", "atomic_write_text", "_clean", "run_files", "_warned", "CLAIMED_ELSEWHERE", "claim_run", "remove_if_empty", "claim_owner", "CANONICAL", "FLOAT_COLUMNS", "SCHEMA_FILE", "write_run", "SEGMENTS", "UPDATES", "segment_files", "update_path", "update_files", "read_run", "update_run", "absorb_updates", "INDEX_FILE", "read_runs", "compact", "completed_run_ids", "side_path", "checkpoint_path", "write_curve", "read_curve", "EVALS", "write_checkpoint_evals", "read_checkpoint_evals", "is_checkpoint_table", "odd_files", "QUARANTINE", "quarantine", "check", "TABLE_SUFFIXES", "table_format", "write_table_file", "read_table_file", "row_id", "import_table", "summarise", "main", "DataError", "UsageError"]
