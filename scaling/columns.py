"""Reading run tables (a store directory, CSV or Parquet) and mapping their columns to ours.

Canonical names match case-insensitively, with the papers' one-letter aliases
(N = params, D = tokens, U = unique_tokens, C = flops, L = loss); ``--column CANON=THEIRS`` maps any
other name. When ``tokens`` is absent and ``flops`` present, tokens = flops / (6 params).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scaling.cli import UsageError
from scaling.errors import BadValue, DataError

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
                raise BadValue("column", f"{{arg}} {canon}={theirs}: no column {theirs!r} (have: {', '.join(map(str, table.columns))})")
            theirs = hit
        rename[theirs] = canon
    for canon, names in ALIASES.items():
        if canon in mapping or canon in table.columns:
            continue
        for name in names:
            if name in lower and lower[name] not in rename:
                rename[lower[name]] = canon
                break
    # a mapped column takes the place of a column of that name already there (``--column
    # params=params_nonembedding`` on a store); the runs' planned FLOP convention described the
    # columns replaced, so it no longer applies to them
    replaced = [canon for theirs, canon in rename.items() if canon in table.columns and canon != theirs
                and canon not in rename]
    if replaced:
        table = table.drop(columns=replaced + (["flops_convention"] if {"params", "flops", "tokens"} & set(replaced)
                                               and "flops_convention" in table.columns else []))
    table = table.rename(columns=rename)
    if "tokens" not in table.columns and {"flops", "params"} <= set(table.columns):
        from scaling.accounting import tokens_for
        table["tokens"] = tokens_for(pd.to_numeric(table["flops"], errors="coerce"),
                                     pd.to_numeric(table["params"], errors="coerce"))
    return table


def _float_or_inf(value):
    """``value`` as a float where it can be one, a too-large number as infinity (refused as such)."""
    try:
        return float(value)
    except OverflowError:
        return -math.inf if isinstance(value, int) and value < 0 else math.inf
    except (TypeError, ValueError):
        return value


def numeric_columns(table: pd.DataFrame, names, source="table") -> tuple[pd.DataFrame, int]:
    """Coerce ``names`` to positive finite floats. Rows with NaN are dropped (count returned);
    non-numeric, infinite or non-positive values are errors."""
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {', '.join(missing)} "
                         f"(have: {', '.join(map(str, table.columns))}; map with --column CANON=THEIRS)")
    out = table.copy()
    for n in names:
        out[n] = numbers_or_missing(out[n], n, source)
    keep = out[list(names)].notna().all(axis=1)
    return out[keep].reset_index(drop=True), int((~keep).sum())


def numbers_or_missing(raw: pd.Series, name: str, source="table", lowest: str | None = "positive") -> pd.Series:
    """A column as finite floats, NaN where a cell is empty; ``lowest``: "positive" (> 0, sizes and
    losses), "nonnegative" (>= 0) or None (any sign). One ``DataError`` names the first non-numeric,
    infinite or out-of-range value."""
    try:
        vals = pd.to_numeric(raw, errors="coerce")
    except OverflowError:                     # a whole number beyond a float (a 400-digit cell)
        raw = pd.Series([_float_or_inf(v) for v in raw], index=raw.index, dtype=object)
        vals = pd.to_numeric(raw, errors="coerce")
    bad = vals.isna() & raw.notna() & ~raw.astype(str).str.lower().isin(["nan", ""])
    if bad.any():
        raise DataError(f"{source}: column {name} has non-numeric value {raw[bad].iloc[0]!r}")
    if np.isinf(vals).any():
        raise DataError(f"{source}: column {name} has infinite values")
    below = {"positive": vals <= 0, "nonnegative": vals < 0}.get(lowest) if lowest else None
    if below is not None and below.any():
        raise DataError(f"{source}: column {name} has {'non-positive' if lowest == 'positive' else 'negative'} "
                        f"values (e.g. {vals[below].iloc[0]})")
    return vals.astype(float)


def ok_runs(table: pd.DataFrame, names=("params", "tokens", "loss"), source="data") -> pd.DataFrame:
    """Canonical columns, only ``status == ok`` runs, ``names`` numeric (NaN rows dropped)."""
    table = canonicalise(table)
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "ok"]
    return numeric_columns(table, list(names), source)[0]


SHAPE_COLUMNS = ("d_model", "ffw_size", "n_layers", "vocab_size", "seq_len")

#: Store columns that say what kind of run a row is, beside its size and tokens. A plan written
#: from runs (``scaling.design --out``) carries the ones its runs share, so that ``runners.isoflop
#: --plan`` and ``runners.mixgrid --plan`` train the kind of run the fit was made on (the same
#: corpus, code share, tokenizer, FLOP convention), not the runners' defaults.
RUN_KIND_COLUMNS = ("data", "code_fraction", "filter", "tokenizer", "text_column", "domain_column",
                    "flops_convention", "arch", "activation")


def shared_run_kind(table: pd.DataFrame) -> dict:
    """The ``RUN_KIND_COLUMNS`` on which every row of ``table`` agrees (one non-missing value), as
    plain Python values; a column with several values, or none (missing or empty), is left out."""
    out = {}
    for c in RUN_KIND_COLUMNS:
        if c not in table.columns:
            continue
        values = [v for v in table[c].dropna().unique() if str(v) != ""]
        if len(values) == 1 and table[c].notna().all():
            v = values[0]
            out[c] = v.item() if hasattr(v, "item") else v
    return out


#: validation tokens per domain of rows written before ``eval_tokens_cap`` was recorded (stop 34)
LEGACY_EVAL_TOKENS_CAP = 65_536


def validation_windows(table: pd.DataFrame) -> str | None:
    """A note when the runs' ``loss`` was measured on different validation windows
    (``eval_tokens_cap``, tokens per domain; a store's rows without it were written before it was
    recorded, on ``LEGACY_EVAL_TOKENS_CAP``): on the CPU demo's tiny models the window alone moves a
    loss by up to ~0.03 nats, as much as a seed. None with one window, or no such column."""
    if "eval_tokens_cap" not in table.columns or table.empty:
        return None
    caps = pd.to_numeric(table["eval_tokens_cap"], errors="coerce")
    legacy = int(caps.isna().sum())
    counts = caps.fillna(LEGACY_EVAL_TOKENS_CAP).astype(int).value_counts().sort_index()
    if len(counts) < 2:
        return None
    parts = ", ".join(f"{n} on {cap:,}" + (f" ({legacy} written before the window was recorded)"
                                           if legacy and cap == LEGACY_EVAL_TOKENS_CAP else "")
                      for cap, n in counts.items())
    return (f"runs scored on different validation windows ({parts} tokens per domain): their losses are "
            f"two measurements (up to ~0.03 nats apart on tiny models); keep one "
            f"(--where eval_tokens_cap={int(counts.index.max())}) or retrain the others")


def convention_flops(table: pd.DataFrame, convention: str) -> np.ndarray:
    """Each run's training FLOPs in ``convention`` (``scaling.accounting.FLOP_CONVENTIONS``): the
    run's ``flops.<convention>`` column (what the runners store), else computed from the shape
    columns (``d_model, ffw_size, n_layers, vocab_size, seq_len``), else, for ``6N``, 6 N D."""
    from scaling import accounting
    accounting.check_convention(convention)
    col = f"flops.{convention}"
    tokens = pd.to_numeric(table["tokens"], errors="coerce").values.astype(float)
    if col in table.columns:
        f = pd.to_numeric(table[col], errors="coerce").values.astype(float)
        if np.isfinite(f).all():
            return f
    if set(SHAPE_COLUMNS) <= set(table.columns):
        kw = {k: pd.to_numeric(table[k], errors="coerce").values.astype(float) for k in SHAPE_COLUMNS}
        if all(np.isfinite(v).all() for v in kw.values()):
            arch = {k: table[k].values for k in ("arch", "activation") if k in table.columns}
            return accounting.flops_per_token(convention, d_model=kw["d_model"], ffw_size=kw["ffw_size"],
                                              n_layers=kw["n_layers"], vocab=kw["vocab_size"],
                                              seq_len=kw["seq_len"], **arch) * tokens
    if convention == "6N":
        return accounting.flops(pd.to_numeric(table["params"], errors="coerce").values.astype(float), tokens)
    raise BadValue("flops_convention", f"{{arg}} {convention}: the data have no flops.{convention} column and no shape "
                     f"columns ({', '.join(SHAPE_COLUMNS)}) to compute it from; map a FLOP column of that "
                     f"convention with --column flops=THEIRS instead")


def planned_convention(table: pd.DataFrame) -> str | None:
    """The FLOP convention the runs were planned in (their ``flops_convention`` column), when all
    agree and it is not the plain ``6N``: a grid spent in ``6N_ne+head+attn`` (the ``tiny`` preset)
    is then fitted in it by default, so that its isoFLOP curves are the ones it was planned on."""
    if "flops_convention" not in table.columns:
        return None
    values = set(table["flops_convention"].dropna().astype(str)) - {""}
    return values.pop() if len(values) == 1 and values != {"6N"} else None


def in_convention(table: pd.DataFrame, convention: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """``with_convention`` with ``convention`` or, when None, the runs' ``planned_convention``;
    returns the table and the convention applied (None: the table as it was)."""
    convention = convention or planned_convention(table)
    return with_convention(table, convention), convention


def with_convention(table: pd.DataFrame, convention: str | None) -> pd.DataFrame:
    """The table in a FLOP convention: ``flops`` becomes the runs' FLOPs in it, and ``params``
    the size that convention counts, N = C / (6 D) (non-embedding N for ``6N_ne``, N plus the
    head for ``6N_ne+head``, ...), so that Approach 1, 2 and 3 all measure size as the convention
    does (Porian et al. 2024, Table 1). The original count is kept as ``params_all``. ``None``
    leaves the table as it is (its own ``flops`` column, or 6 N D)."""
    if convention is None:
        return table
    t = table.copy()
    f = convention_flops(t, convention)
    t["params_all"] = t["params"]
    t["flops"] = f
    from scaling.accounting import tokens_for
    t["params"] = tokens_for(f, pd.to_numeric(t["tokens"], errors="coerce").values.astype(float))  # N = C / 6D
    return t


def where(table: pd.DataFrame, items) -> pd.DataFrame:
    """Rows matching every ``COL=VALUE`` of ``items`` (``--where``; values compared as text, so
    ``--where experiment=llama_3__raw_loss`` and ``--where seed=0`` both work)."""
    for item in items or []:
        col, sep, value = str(item).partition("=")
        col, value = col.strip(), value.strip().strip("'\"")
        if not sep or not col:
            raise UsageError(f"malformed --where {item!r} (expected COL=VALUE, e.g. experiment=llama_3__raw_loss)")
        if col not in table.columns:
            raise BadValue("where", f"{{arg}} {item}: no column {col!r} (have: {', '.join(map(str, table.columns))})")
        text = table[col].astype(str)
        mask = text == value
        if not mask.any():
            try:
                mask = pd.to_numeric(table[col], errors="coerce") == float(value)
            except ValueError:
                pass
        if not mask.any():
            shown = ", ".join(map(str, text.unique()[:8]))
            raise BadValue("where", f"{{arg}} {item}: no row has {col} = {value!r} (values: {shown})")
        table = table[mask]
    return table.reset_index(drop=True)
