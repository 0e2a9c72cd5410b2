"""The one interval this toolkit reports: the central percentile interval of bootstrap (or
resampled) draws, 95% unless asked (the 2.5th and 97.5th percentiles; Efron & Tibshirani 1993,
the percentile method, as Hoffmann et al. 2022 and Besiroglu et al. 2024 report their fits)."""

from __future__ import annotations

import numpy as np

LEVEL = 0.95


def interval(draws, level: float = LEVEL, axis=None):
    """(lo, hi): the central ``level`` percentile interval of ``draws`` (arrays along ``axis``)."""
    q = 50.0 * (1.0 - level)
    lo, hi = np.percentile(np.asarray(draws, dtype=float), [q, 100.0 - q], axis=axis)
    return lo, hi


def interval_list(draws, level: float = LEVEL) -> list[float]:
    """``interval`` of a 1-d sample as two plain floats (what JSON files and Results carry)."""
    lo, hi = interval(draws, level)
    return [float(lo), float(hi)]
