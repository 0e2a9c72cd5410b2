"""The points each step of the downstream law is fitted on, from a table of scored checkpoints.

A SOURCE for ``scaling.downstream`` has ``run_id``, ``params``, ``tokens`` (seen at that row) and
``eval.<TASK>.<metric>`` columns; several rows of one ``run_id`` are its checkpoints, the row with
the most tokens its final point. A store gives its ``_evals/`` table (evaluation along training)
when it has one, else one row per run.

* Step 1 (the intermediate from N and D) is fitted on each run's final point.
* Step 2 (the metric from the intermediate) on every checkpoint of every run, the first
  ``SKIP_FRACTION`` of each run left out and a trailing moving average over ``SMOOTH`` checkpoints
  taken (Bhagia et al. 2024's procedure: early checkpoints sit off the curve, single evaluations are
  noisy); a run with one row enters as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.errors import BadValue, DataError, UsageError

SKIP_FRACTION = 0.1
SMOOTH = 5
#: ``--via`` shorthands and the column each names (``{task}`` filled in); anything else is a column
VIAS = {"bpb": "eval.{task}.bpb", "ce": "eval.{task}.ce", "loss": "loss"}
#: the intermediates ``--via auto`` tries, in order of preference when they predict equally well
AUTO_VIAS = ("bpb", "ce", "loss")


def read_checkpoints(source) -> pd.DataFrame:
    """The table a downstream fit reads: a store's scored checkpoints (``_evals/``) when it has
    any, else its runs; any other SOURCE as ``scaling.sources.read_table`` reads it."""
    from scaling.sources import read_table
    from scaling.store import read_checkpoint_evals
    if isinstance(source, (str, Path)) and Path(source).is_dir() and not str(source).startswith("dataset:"):
        table = read_checkpoint_evals(source)
        if len(table):
            return table
    return read_table(source)


def tasks_in(table: pd.DataFrame) -> dict[str, list[str]]:
    """task -> its metrics, from the ``eval.<task>.<metric>`` columns."""
    out: dict[str, list[str]] = {}
    for c in map(str, table.columns):
        if c.startswith("eval.") and c.count(".") >= 2:
            task, _, metric = c[5:].rpartition(".")
            out.setdefault(task, []).append(metric)
    return out


def lower_is_better(metric: str) -> bool:
    """Error rates (``err``, ``error``, ``err_*``) fall as models improve; accuracies rise."""
    return metric.lower().startswith("err")


@dataclass
class TaskData:
    """One task's table, ready for both steps."""

    task: str
    metric: str
    metric_column: str
    table: pd.DataFrame          #: rows with a finite metric, numeric params and tokens
    lower_is_better: bool
    chance: float | None         #: chance accuracy (``eval.<task>.chance``), when known
    source: str = "data"         #: where the rows came from (for error messages)

    def score(self, values) -> np.ndarray:
        """The metric as an accuracy-like score (1 - error for error rates)."""
        v = np.asarray(values, dtype=float)
        return 1.0 - v if self.lower_is_better else v

    def metric_of(self, score) -> np.ndarray:
        s = np.asarray(score, dtype=float)
        return 1.0 - s if self.lower_is_better else s

    def via_column(self, via: str) -> str:
        """The intermediate's column (a loss or bits per byte: positive where present; text or
        impossible values are one error)."""
        column = VIAS.get(via, via).format(task=self.task)
        if column not in self.table.columns:
            raise BadValue("via", f"{{arg}} {via}: no column {column!r} in the data (intermediates here: "
                             f"{', '.join(self.available_vias()) or 'none'}; or name a column)")
        cols.numbers_or_missing(self.table[column], column, self.source)
        return column

    def available_vias(self) -> list[str]:
        """``AUTO_VIAS`` whose column has a finite value on every run's final point."""
        finals = final_rows(self.table)
        out = []
        for via in AUTO_VIAS:
            column = VIAS[via].format(task=self.task)
            if column in finals.columns and np.isfinite(pd.to_numeric(finals[column], errors="coerce")).all():
                out.append(via)
        return out


def task_data(table: pd.DataFrame, task: str, metric: str = "acc", source: str = "data") -> TaskData:
    """The rows of ``table`` usable for ``task``'s ``metric``; one ``error:`` for a task or metric the
    data lack, naming what they have."""
    table = cols.canonicalise(table)
    tasks = tasks_in(table)
    if task not in tasks:
        raise UsageError(f"no eval.{task}.* column in {source} (tasks here: "
                         f"{', '.join(sorted(tasks)[:30]) or 'none; score runs with runners.evaluate or --eval'})")
    column = f"eval.{task}.{metric}"
    if metric not in tasks[task]:
        raise UsageError(f"no column {column} in {source} (metrics of {task}: {', '.join(sorted(tasks[task]))})")
    missing = [c for c in ("run_id", "params", "tokens") if c not in table.columns]
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(missing)} (a downstream fit needs run_id, params, "
                        f"tokens and eval.<task>.<metric>; map others with --column CANON=THEIRS)")
    if "status" in table.columns:                   # runs of a store: the finished ones
        table = table[table["status"].isna() | (table["status"].astype(str) == "ok")]
    table = table.copy()
    # text, infinities and impossible values are errors (as in scaling.fit); empty cells drop the row
    table["params"] = cols.numbers_or_missing(table["params"], "params", source)
    table["tokens"] = cols.numbers_or_missing(table["tokens"], "tokens", source, lowest="nonnegative")
    table[column] = cols.numbers_or_missing(table[column], column, source, lowest=None)  # fit_both checks its range
    table = table[table[["params", "tokens", column]].notna().all(axis=1)]
    if table.empty:
        raise DataError(f"{source}: no row has a finite {column} with positive params")
    table["run_id"] = table["run_id"].astype(str)
    chance = None
    chance_col = f"eval.{task}.chance"
    if chance_col in table.columns:
        values = _fraction_or_missing(table[chance_col], chance_col, source).dropna()
        if len(values):
            chance = float(values.median())
    return TaskData(task, metric, column, table.reset_index(drop=True), lower_is_better(metric), chance, source)


def _fraction_or_missing(raw: pd.Series, name: str, source: str) -> pd.Series:
    """A chance level: a number in [0, 1], or NaN where the cell is empty."""
    vals = cols.numbers_or_missing(raw, name, source, lowest="nonnegative")
    if (vals > 1).any():
        raise DataError(f"{source}: column {name} has values above 1 (e.g. {vals[vals > 1].iloc[0]}); "
                        f"a chance level is a fraction in [0, 1]")
    return vals


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's final point: its row with the most tokens."""
    order = table.sort_values(["run_id", "tokens"], kind="stable")
    return order.groupby("run_id", sort=True).tail(1).reset_index(drop=True)


def step1_table(data: TaskData, x_column: str) -> pd.DataFrame:
    """(run_id, params, tokens, loss = the intermediate) at each run's final point, the table
    ``scaling.fit`` fits; ``unique_tokens`` kept so that runs repeating data are left out as the
    Chinchilla law requires. One error when fewer than 3 distinct sizes remain."""
    finals = final_rows(data.table)
    if {"run_tokens", "unique_tokens"} <= set(finals.columns):
        # checkpoint tables: whether a run repeats data is a property of the run (its planned tokens;
        # the last checkpoint may overshoot them by part of a batch)
        repeats = pd.to_numeric(finals["run_tokens"], errors="coerce") > \
            pd.to_numeric(finals["unique_tokens"], errors="coerce") * (1 + 1e-9)
        finals = finals[~repeats.to_numpy()]
        keep = ["run_id", "params", "tokens"]
    else:
        keep = ["run_id", "params", "tokens"] + [c for c in ("unique_tokens",) if c in finals.columns]
    out = finals[keep].copy()
    out["loss"] = pd.to_numeric(finals[x_column], errors="coerce")
    out = out[np.isfinite(out["loss"]) & (out["loss"] > 0) & (out["tokens"] > 0)].reset_index(drop=True)
    sizes = out["params"].nunique()
    if sizes < 3:
        raise DataError(f"step 1 needs runs of at least 3 distinct sizes with a positive {x_column}; "
                        f"the data have {sizes}")
    return out


def step2_points(data: TaskData, x_column: str, skip: float = SKIP_FRACTION, window: int = SMOOTH) -> pd.DataFrame:
    """(run_id, params, x, s) for step 2: every run's checkpoints after the first ``skip`` of its
    tokens, x and the score s smoothed by a trailing mean over ``window`` checkpoints; a run with
    one row as it is. One error when fewer than 5 points remain."""
    rows = []
    for run_id, run in data.table.sort_values(["run_id", "tokens"], kind="stable").groupby("run_id", sort=True):
        x = pd.to_numeric(run[x_column], errors="coerce").to_numpy(dtype=float)
        s = data.score(run[data.metric_column].to_numpy(dtype=float))
        tokens = run["tokens"].to_numpy(dtype=float)
        if len(run) > 1:
            late = tokens >= skip * tokens.max()
            late &= tokens > 0
            x, s, tokens = x[late], s[late], tokens[late]
            ok = np.isfinite(x) & np.isfinite(s)
            x, s, tokens = x[ok], s[ok], tokens[ok]
            if len(x) == 0:
                continue
            x = pd.Series(x).rolling(window, min_periods=1).mean().to_numpy()
            s = pd.Series(s).rolling(window, min_periods=1).mean().to_numpy()
        for xi, si, ti in zip(x, s, tokens):
            if np.isfinite(xi) and np.isfinite(si):
                rows.append((run_id, float(run["params"].iloc[0]), ti, xi, si))
    points = pd.DataFrame(rows, columns=["run_id", "params", "tokens", "x", "s"])
    if len(points) < 5:
        raise DataError(f"step 2 needs at least 5 points (checkpoints after the first {100 * skip:.0f}% of each run, "
                        f"with a finite {x_column} and {data.metric_column}); the data have {len(points)}")
    return points
