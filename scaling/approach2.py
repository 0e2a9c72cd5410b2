"""Approach 2 of Hoffmann et al. 2022: isoFLOP parabolas.

For each compute budget, fit loss as a quadratic in log N (statsmodels OLS, with standard errors),
take its minimum N*(C) (standard error by the delta method), then fit N_opt(C) = k C^a by least
squares in log space. Tokens follow from D_opt = C / (6 N_opt). Compared with Approach 3 (the
parametric law, whose exponent is beta / (alpha + beta)) so that disagreement is visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from scaling.cli import UsageError


@dataclass
class Parabola:
    flops: float
    n_points: int
    params_opt: float
    log_params_opt_se: float
    loss_opt: float
    curvature: float


@dataclass
class Approach2Result:
    budgets: list[Parabola]
    params_exponent: float          #: a in N_opt = k C^a
    params_exponent_se: float
    params_coefficient: float       #: k
    tokens_exponent: float          #: 1 - a
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["approach"] = 2
        return d

    def optimal_params(self, flops):
        return self.params_coefficient * np.asarray(flops, float) ** self.params_exponent

    def summary(self) -> str:
        lines = ["Approach 2 (isoFLOP parabolas, Hoffmann et al. 2022)",
                 f"{'FLOPs':>10} {'runs':>5} {'N_opt':>12} {'se(log N)':>10} {'loss at N_opt':>14}"]
        for b in self.budgets:
            lines.append(f"{b.flops:>10.3g} {b.n_points:>5} {b.params_opt:>12.4g} {b.log_params_opt_se:>10.3g} "
                         f"{b.loss_opt:>14.5g}")
        lines.append(f"N_opt = {self.params_coefficient:.4g} * C^{self.params_exponent:.4f} "
                     f"(se {self.params_exponent_se:.3g});  D_opt ~ C^{self.tokens_exponent:.4f}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def budget_groups(flops, gap_decades: float = 0.1) -> np.ndarray:
    """Group runs into compute budgets: sorted log10 C split wherever the gap exceeds ``gap_decades``."""
    logc = np.log10(np.asarray(flops, float))
    order = np.argsort(logc)
    ids = np.zeros(len(logc), int)
    ids[order] = np.concatenate([[0], np.cumsum(np.diff(logc[order]) > gap_decades)])
    return ids


def fit_parabola(log_n, loss):
    """loss = c0 + c1 x + c2 x^2 in x = log N; minimum at x* = -c1 / (2 c2)."""
    import statsmodels.api as sm
    X = np.column_stack([np.ones_like(log_n), log_n, log_n ** 2])
    res = sm.OLS(loss, X).fit()
    c0, c1, c2 = res.params
    x_star = -c1 / (2 * c2)
    # delta method: grad of x* w.r.t. (c1, c2)
    grad = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2 ** 2)])
    cov = res.cov_params() if len(loss) > 3 else np.zeros((3, 3))
    se = float(np.sqrt(max(grad @ np.asarray(cov) @ grad, 0.0)))
    return x_star, se, c0 + c1 * x_star + c2 * x_star ** 2, c2


def approach2(table: pd.DataFrame, min_points: int = 3) -> Approach2Result:
    """``table`` has canonical ``params``, ``tokens``, ``loss`` (and optionally ``flops``,
    ``unique_tokens``); only single-epoch runs enter (repetition would bias the parabolas)."""
    t = table.copy()
    if "unique_tokens" in t.columns:
        t = t[~(t["tokens"] > t["unique_tokens"] * (1 + 1e-9))]
    flops = 6.0 * t["params"].values * t["tokens"].values
    groups = budget_groups(flops)
    budgets, warnings = [], []
    for g in np.unique(groups):
        sel = groups == g
        if sel.sum() < min_points:
            continue
        log_n = np.log(t["params"].values[sel])
        loss = t["loss"].values[sel]
        if len(np.unique(np.round(log_n, 6))) < 3:
            continue
        x_star, se, loss_opt, c2 = fit_parabola(log_n - log_n.mean(), loss)
        x_star += log_n.mean()
        c = float(np.median(flops[sel]))
        if c2 <= 0:
            warnings.append(f"budget {c:.3g}: the parabola opens downwards (no minimum); budget skipped")
            continue
        if not (log_n.min() <= x_star <= log_n.max()):
            warnings.append(f"budget {c:.3g}: the minimum N={np.exp(x_star):.3g} lies outside the sizes trained "
                            f"({np.exp(log_n.min()):.3g} to {np.exp(log_n.max()):.3g}); it is an extrapolation")
        budgets.append(Parabola(c, int(sel.sum()), float(np.exp(x_star)), se, float(loss_opt), float(c2)))
    if len(budgets) < 2:
        raise UsageError(f"Approach 2 needs at least 2 budgets with >= {min_points} single-epoch runs of "
                         f">= 3 distinct sizes; found {len(budgets)}")
    import statsmodels.api as sm
    logc = np.log([b.flops for b in budgets])
    logn = np.log([b.params_opt for b in budgets])
    res = sm.OLS(logn, sm.add_constant(logc)).fit()
    a = float(res.params[1])
    se = float(res.bse[1]) if len(budgets) > 2 else float("nan")
    return Approach2Result(budgets, a, se, float(np.exp(res.params[0])), 1.0 - a, warnings)
