"""Any SOURCE as a table: a store directory (its runs), a store's ``_evals`` (its scored checkpoints),
a CSV or Parquet file, or a shipped ``dataset:NAME``. The one module that knows both the store and
the datasets, so that neither imports the other."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling import datasets
from scaling.errors import DataError, UsageError
from scaling.store import is_checkpoint_table, read_checkpoint_evals, read_runs, read_table_file


def read_table(source) -> pd.DataFrame:
    """A store directory, a CSV or a Parquet file, or a shipped ``dataset:NAME``, as a DataFrame;
    a store's ``_evals`` folder (``results/_evals``) is its table of scored checkpoints."""
    if datasets.is_dataset(source):
        return datasets.load(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or directory")
    if not path.is_dir():
        return read_table_file(path)
    try:
        table = read_checkpoint_evals(path.parent) if is_checkpoint_table(path) else read_runs(path)
    except UsageError:
        raise
    except Exception as exc:  # unreadable / malformed file: one line for the user
        raise DataError(f"cannot read {source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if table.empty:
        raise DataError(f"{source}: no rows")
    return table


def store_or_example(store, example: str) -> tuple[pd.DataFrame, str]:
    """The runs of ``store``, or, when it has no ``ok`` run with a loss, the shipped ``example``
    dataset, saying so in one line: notebooks and examples run on a fresh clone with no store."""
    runs = read_runs(store)
    usable = 0
    if len(runs) and "loss" in runs.columns:
        ok = runs["status"].astype(str) == "ok" if "status" in runs.columns else True
        usable = int((pd.to_numeric(runs["loss"], errors="coerce").notna() & ok).sum())
    if usable:
        return runs, str(store)
    print(f"{store} has no finished runs: using the shipped example instead ({datasets.PREFIX}{example}: {datasets.get(example).description})")
    return datasets.load(example), f"{datasets.PREFIX}{example}"
