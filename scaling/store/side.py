"""Per-run side data beside the runs: loss curves (``_curves/``) and the scores of checkpoints
evaluated along training (``_evals/``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from scaling.store.files import _as_dir, _parquet_files, _warn_once, atomic_write_bytes, check_run_id


def side_path(store, kind: str, run_id: str, suffix: str = "") -> Path:
    """Where per-run side data lives (``_curves``, ``_checkpoints``): invisible to read_parquet(DIR)."""
    return _as_dir(store) / f"_{kind}" / f"{check_run_id(run_id)}{suffix}"


def checkpoint_path(store, run_id: str) -> Path:
    """A run's training checkpoint (``_checkpoints/RUN_ID.pt``: the local and stacked engines';
    DeepSpeed keeps a directory ``_checkpoints/RUN_ID/``)."""
    return side_path(store, "checkpoints", run_id, ".pt")


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
