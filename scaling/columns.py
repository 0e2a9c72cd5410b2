"""Reading run tables (a store directory, CSV or Parquet) and mapping their columns to ours.

Canonical names match case-insensitively, with the papers' one-letter aliases
(N = params, D = tokens, U = unique_tokens, C = flops, L = loss); ``--column CANON=THEIRS`` maps any
other name. When ``tokens`` is absent and ``flops`` present, tokens = flops / (6 params).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.cli import UsageError

ALIASES = {
    "params": ("params", "n", "parameters", "n_params", "model size", "model_size"),
    "tokens": ("tokens", "d", "training tokens", "train_tokens", "n_tokens"),
    "unique_tokens": ("unique_tokens", "u", "u_d", "unique tokens", "unique"),
    "flops": ("flops", "c", "compute", "training flop", "training flops", "flop"),
    "loss": ("loss", "l", "val_loss", "validation loss", "final_loss"),
}


def parse_mapping(items) -> dict[str, str]:
    """``["params=Model Size", ...]`` -> ``{"params": "Model Size"}``; malformed -> UsageError."""
    mapping = {}
    for item in items or []:
        canon, sep, theirs = str(item).partition("=")
        canon, theirs = canon.strip(), theirs.strip().strip("'\"")
        if not sep or not canon or not theirs:
            raise UsageError(f"malformed --column {item!r} (expected CANON=THEIRS, e.g. params='Model Size')")
        mapping[canon] = theirs
    return mapping


def canonicalise(table: pd.DataFrame, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Rename columns to canonical names; derive tokens from flops where needed."""
    mapping = dict(mapping or {})
    lower = {str(c).lower().strip(): c for c in table.columns}
    rename = {}
    for canon, theirs in mapping.items():
        if theirs not in table.columns:
            hit = lower.get(theirs.lower())
            if hit is None:
                raise UsageError(f"--column {canon}={theirs}: no column {theirs!r} (have: {', '.join(map(str, table.columns))})")
            theirs = hit
        rename[theirs] = canon
    for canon, names in ALIASES.items():
        if canon in mapping or canon in table.columns:
            continue
        for name in names:
            if name in lower and lower[name] not in rename:
                rename[lower[name]] = canon
                break
    table = table.rename(columns=rename)
    if "tokens" not in table.columns and {"flops", "params"} <= set(table.columns):
        table["tokens"] = pd.to_numeric(table["flops"], errors="coerce") / (
            6.0 * pd.to_numeric(table["params"], errors="coerce"))
    return table


def numeric_columns(table: pd.DataFrame, names, source="table") -> tuple[pd.DataFrame, int]:
    """Coerce ``names`` to positive finite floats. Rows with NaN are dropped (count returned);
    non-numeric, infinite or non-positive values are errors."""
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise UsageError(f"{source}: missing required column(s) {', '.join(missing)} "
                         f"(have: {', '.join(map(str, table.columns))}; map with --column CANON=THEIRS)")
    out = table.copy()
    for n in names:
        raw = out[n]
        vals = pd.to_numeric(raw, errors="coerce")
        bad = vals.isna() & raw.notna() & ~raw.astype(str).str.lower().isin(["nan", ""])
        if bad.any():
            raise UsageError(f"{source}: column {n} has non-numeric value {raw[bad].iloc[0]!r}")
        if np.isinf(vals).any():
            raise UsageError(f"{source}: column {n} has infinite values")
        if (vals <= 0).any():
            raise UsageError(f"{source}: column {n} has non-positive values (e.g. {vals[vals <= 0].iloc[0]})")
        out[n] = vals.astype(float)
    keep = out[list(names)].notna().all(axis=1)
    return out[keep].reset_index(drop=True), int((~keep).sum())


def ok_runs(table: pd.DataFrame, names=("params", "tokens", "loss"), source="data") -> pd.DataFrame:
    """Canonical columns, only ``status == ok`` runs, ``names`` numeric (NaN rows dropped)."""
    table = canonicalise(table)
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "ok"]
    return numeric_columns(table, list(names), source)[0]
