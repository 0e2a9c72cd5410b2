"""Reading mixture runs from a store or table: proportions (mix.<domain>), per-domain losses, scales."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling import columns as cols
from scaling.cli import DataError, UsageError


#: proportions must sum to 1 within this ...
SUM_TOL = 1e-6


#: ... or within this, and are then renormalised with a warning (weights published to 3 decimals)
RENORM_TOL = 1e-2


#: params within this relative distance of --small-params / --large-params are that size
SIZE_TOL = 0.05


@dataclass
class MixtureRuns:
    frame: pd.DataFrame
    domains: list[str]          #: mixture components (order of r and t)
    loss_domains: list[str]     #: domains whose loss.<d> is modelled
    r: np.ndarray               #: [n, M] proportions
    mixture: np.ndarray         #: [n] index into ``mixtures``
    mixtures: np.ndarray        #: [n_mix, M] distinct proportions
    notes: list[str]

    def loss(self, domain) -> np.ndarray:
        return self.frame[f"loss.{domain}"].to_numpy(float)


def _row_name(frame, i) -> str:
    return f"run {frame['run_id'].iloc[i]}" if "run_id" in frame.columns else f"row {i + 1}"


def read_mixtures(table: pd.DataFrame, loss_domains=None, need_scale=True, source="data",
                  loss_columns=True) -> MixtureRuns:
    """ok-status runs with their proportions (validated) and losses; ``loss_domains`` None = every
    ``loss.<d>`` column. Components never used by any run are dropped (their t is undetermined)."""
    notes = []
    table = cols.canonicalise(table).reset_index(drop=True)
    if "status" in table.columns:
        bad = table["status"].astype(str) != "ok"
        if bad.any():
            notes.append(f"excluded {int(bad.sum())} run(s) whose status is not ok")
            table = table[~bad].reset_index(drop=True)
    window = cols.validation_windows(table)
    if window:
        notes.append(window)
    mix_cols = [c for c in table.columns if str(c).startswith("mix.")]
    if not mix_cols:
        if "code_fraction" not in table.columns:
            raise DataError(f"{source}: no mixture columns (expected mix.<domain> proportions or code_fraction)")
        table["mix.text"], table["mix.code"] = np.nan, np.nan
        mix_cols = ["mix.text", "mix.code"]
    mix = table[mix_cols].apply(pd.to_numeric, errors="coerce")
    absent = mix.isna().all(axis=1)
    if absent.any() and "code_fraction" in table.columns:   # runs that only say --code-fraction x
        cf = pd.to_numeric(table["code_fraction"], errors="coerce")
        derive = absent & cf.notna()
        for name, value in (("mix.text", 1.0 - cf), ("mix.code", cf)):
            if name not in mix.columns:
                mix[name] = np.nan
            mix.loc[derive, name] = value[derive]
        absent = mix.isna().all(axis=1)
    if absent.any():
        notes.append(f"dropped {int(absent.sum())} run(s) without mixture proportions")
        table, mix = table[~absent].reset_index(drop=True), mix[~absent].reset_index(drop=True)
    mix = mix.fillna(0.0)
    values = mix.to_numpy(float)
    if (values < 0).any() or not np.isfinite(values).all():
        i = int(np.flatnonzero((values < 0).any(axis=1) | ~np.isfinite(values).all(axis=1))[0])
        raise DataError(f"{source}: {_row_name(table, i)} has a negative or non-finite mixture proportion")
    sums = values.sum(axis=1)
    far = np.abs(sums - 1.0) > RENORM_TOL
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise DataError(f"{source}: {_row_name(table, i)}: mixture proportions sum to {sums[i]:.9g}, "
                         f"not 1 (rows within {RENORM_TOL:g} of 1 are renormalised)")
    off = np.abs(sums - 1.0) > SUM_TOL
    if off.any():       # published weights rounded to a few decimals: renormalise, say so once
        notes.append(f"renormalised the mixture proportions of {int(off.sum())} row(s) whose sum was off 1 "
                     f"by up to {np.abs(sums - 1.0).max():.3g} (rounded weights)")
        mix = mix.div(sums, axis=0)
        values = mix.to_numpy(float)
    names = [str(c)[4:] for c in mix.columns]
    used = values.max(axis=0) > 0
    if not used.all():
        unused = ", ".join(n for n, u in zip(names, used) if not u)
        notes.append(f"dropped mixture component(s) no run uses: {unused}")
    first = list(loss_domains or [])    # --domains order first, then the table's column order
    order = sorted((n for n, u in zip(names, used) if u), key=lambda n: first.index(n) if n in first else 99)
    if len(order) < 2:
        raise DataError(f"{source}: a mixture needs at least two components with non-zero proportions "
                         f"(have: {', '.join(order) or 'none'})")
    r = mix[[f"mix.{d}" for d in order]].to_numpy(float)
    available = [str(c)[5:] for c in table.columns if str(c).startswith("loss.") and table[c].notna().any()]
    if loss_domains:
        unknown = [d for d in loss_domains if d not in available]
        if unknown:
            raise UsageError(f"{source}: unknown domain(s) {', '.join(unknown)} (runs have losses for: "
                             f"{', '.join(available) or 'none'})")
        chosen = list(loss_domains)
    else:
        chosen = sorted(available, key=lambda d: order.index(d) if d in order else 99)
    if loss_columns and not chosen:
        raise DataError(f"{source}: no loss.<domain> columns")
    needed = (["params", "tokens"] if need_scale else []) + [f"loss.{d}" for d in chosen]
    table["_row"] = np.arange(len(table))
    table, dropped = cols.numeric_columns(table, needed, source)
    if dropped:
        notes.append(f"dropped {dropped} row(s) with missing values")
    if table.empty:
        raise DataError(f"{source}: no usable rows")
    r = r[table["_row"].to_numpy()]
    mixtures, inverse = np.unique(np.round(r, 6), axis=0, return_inverse=True)
    return MixtureRuns(table, order, chosen, r, inverse.ravel(), mixtures, notes)
