"""Numbers for people: one way to print a count and a duration, used by every table and message."""

from __future__ import annotations


def count(x: float) -> str:
    """1234567 -> '1.23M' (K, M, B, T; three significant digits)."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def seconds(s: float) -> str:
    """74 -> '74 s', 171 -> '2.85 min', 5e5 -> '5.79 d'."""
    for div, suffix in ((365.25 * 86400, "y"), (86400, "d"), (3600, "h"), (60, "min")):
        if s >= div:
            return f"{s / div:.3g} {suffix}"
    return f"{s:.2g} s"
