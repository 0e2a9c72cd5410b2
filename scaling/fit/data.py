"""The runs a law is fitted on: canonical columns, ok runs, degenerate data refused (``FitData``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.errors import BadValue, DataError
from scaling.laws import get_law
from scaling.laws.base import LawData


# --------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------
@dataclass
class FitData:
    data: LawData
    loss: np.ndarray
    frame: pd.DataFrame
    notes: list[str]


def prepare(table: pd.DataFrame, law_name: str | None, exclude_top: int = 0, source="data"):
    """Canonical columns, ok-status rows, NaN rows dropped (noted), ``exclude_top`` highest losses
    removed; returns the law name (chosen when None) and FitData."""
    notes = []
    table = cols.canonicalise(table)
    if "status" in table.columns:
        bad = table["status"].astype(str) != "ok"
        if bad.any():
            notes.append(f"excluded {int(bad.sum())} run(s) whose status is not ok")
            table = table[~bad]
    window = cols.validation_windows(table)
    if window:
        notes.append(window)
    if law_name is None:
        law_name = default_law(table)
    law = get_law(law_name)
    table, dropped = cols.numeric_columns(table, [*law.required, "loss"], source)
    if dropped:
        notes.append(f"dropped {dropped} row(s) with missing values")
    if law_name == "chinchilla" and "unique_tokens" in table.columns:
        repeats = table["tokens"] > pd.to_numeric(table["unique_tokens"], errors="coerce") * (1 + 1e-9)
        if repeats.any():   # the Chinchilla law's D is unique data (Hoffmann et al. 2022)
            notes.append(f"excluded {int(repeats.sum())} run(s) that repeat data: the Chinchilla law assumes "
                         f"unique tokens (fit them with --law data-constrained)")
            table = table[~repeats].reset_index(drop=True)
    if exclude_top < 0:
        raise BadValue("exclude_top", "{arg} must be >= 0")
    if exclude_top:
        if exclude_top >= len(table):
            raise BadValue("exclude_top", f"{{arg}} {exclude_top} leaves no points (have {len(table)})")
        table = table.sort_values("loss", kind="stable").iloc[:-exclude_top].reset_index(drop=True)
    if table.empty:
        raise DataError(f"{source}: no usable rows")
    loss = table["loss"].to_numpy(float)
    if np.ptp(loss) <= 1e-12 * max(abs(loss.max()), 1.0):
        raise DataError(f"{source}: every run has the same loss ({loss[0]:.6g}): nothing to fit a scaling law to")
    distinct = len(np.unique(np.round(np.log(table[list(law.required)].to_numpy(float)), 9), axis=0))
    if distinct < 3:
        raise DataError(f"{source}: {distinct} distinct ({', '.join(law.required)}) point(s): a scaling law needs runs "
                        f"at several sizes and token counts")
    data = LawData(table["params"].values, table["tokens"].values,
                   table["unique_tokens"].values if "unique_tokens" in law.required else None)
    return law_name, FitData(data, table["loss"].values.astype(float), table, notes)


def default_law(table: pd.DataFrame) -> str:
    """Data-constrained when unique_tokens varies and some run repeats data, else Chinchilla."""
    if {"unique_tokens", "tokens"} <= set(table.columns):
        u = pd.to_numeric(table["unique_tokens"], errors="coerce")
        d = pd.to_numeric(table["tokens"], errors="coerce")
        if u.nunique(dropna=True) > 1 and (d > u * (1 + 1e-9)).any():
            return "data-constrained"
    return "chinchilla"


def data_sha256(fd: FitData) -> str:
    cols_used = [c for c in ("params", "tokens", "unique_tokens", "loss") if c in fd.frame.columns]
    payload = fd.frame[cols_used].to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(payload.encode()).hexdigest()
