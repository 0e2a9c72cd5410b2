"""Approach 1 of Hoffmann et al. 2022: the lower envelope of the training curves.

Every run passes through many compute budgets on its way: at the checkpoint after D_t tokens it
has spent C_t FLOPs (6 N D_t, or the table's own FLOPs in any convention). At each budget C on a
log-spaced grid, the run with the lowest loss at C (each curve interpolated linearly in log-log,
only inside the range it covers) gives N_opt(C), and its tokens at C give D_opt(C). Power laws
N_opt = k C^a and D_opt = k' C^b are fitted to the envelope by least squares in log space, on the
budgets where the best run is neither the smallest nor the largest size (elsewhere the optimum may
lie beyond the sizes trained and the envelope flattens the exponent).

The envelope's points are not independent (neighbouring budgets share a run), so the standard
error of a regression through them means little; the 95% intervals are a bootstrap over runs
(runs resampled with replacement, the envelope rebuilt, the laws refitted), which asks how much the
exponent depends on which runs happen to exist.

Hoffmann et al. trained each size with several cosine lengths so that the envelope is made of
runs near the end of a schedule; an intermediate checkpoint of a long cosine run is above what a
run of that length would reach. ``min_progress`` keeps only checkpoints beyond that fraction of
their run (when the table says how far each is, ``portion_steps_elapsed`` or ``tokens / train_tokens``).

Input: a table of checkpoints with ``run`` (any id), ``params``, ``tokens`` (so far) and ``loss``,
optionally ``flops`` (so far); or a results store, whose ``_curves/`` give every run's training
curve (train loss, smoothed) and whose rows give N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from scaling.accounting import flops
from scaling.errors import BadValue
from scaling.cli import UsageError
from scaling.results import JsonFile, plain
from scaling.intervals import interval_list

GRID_POINTS = 400
#: a budget counts when at least this many runs of distinct sizes reach it
MIN_RUNS_AT_BUDGET = 2


@dataclass
class Approach1Result(JsonFile):
    params_exponent: float
    params_coefficient: float
    tokens_exponent: float
    tokens_coefficient: float
    params_exponent_ci: list[float] | None
    tokens_exponent_ci: list[float] | None
    n_runs: int
    n_checkpoints: int
    flops_range: list[float]
    envelope: dict = field(default_factory=dict)   #: flops, params, tokens, loss, run along the envelope
    n_bootstrap: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = plain(asdict(self))
        d["approach"] = 1
        return d

    def summary(self) -> str:
        def ci(c):
            return f", 95% CI [{c[0]:.4f}, {c[1]:.4f}]" if c else ""
        sizes = sorted(set(self.envelope.get("params", [])))
        lines = [f"Approach 1 (lower envelope of {self.n_runs} training curves, {self.n_checkpoints} checkpoints; "
                 f"Hoffmann et al. 2022)",
                 f"envelope over C = {self.flops_range[0]:.3g} .. {self.flops_range[1]:.3g} FLOPs, "
                 f"{len(sizes)} distinct sizes on it",
                 f"N_opt = {self.params_coefficient:.4g} * C^{self.params_exponent:.4f}{ci(self.params_exponent_ci)}",
                 f"D_opt = {self.tokens_coefficient:.4g} * C^{self.tokens_exponent:.4f}{ci(self.tokens_exponent_ci)}"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _curves(table: pd.DataFrame):
    """Per run: (N, sorted log C, log loss at those C, log tokens). Runs with a single checkpoint
    (a table of final losses only, or ``min_progress`` near 1) are pooled by size into one curve
    through their points, the lowest loss kept where two share a budget: the curve of that size
    over schedule lengths, as Hoffmann et al. read theirs from four cosine lengths."""
    out, singles = [], []
    for run, g in table.groupby("run", sort=False):
        g = g.sort_values("flops")
        n = g["params"].values
        if np.ptp(np.log(n)) > 1e-9:
            raise UsageError(f"checkpoints: run {run!r} has more than one parameter count")
        c = np.log(g["flops"].values)
        keep = np.concatenate([[True], np.diff(c) > 0])
        if keep.sum() >= 2:
            out.append((float(n[0]), c[keep], np.log(g["loss"].values[keep]), np.log(g["tokens"].values[keep])))
        else:
            singles.append(g.iloc[[int(np.argmin(g["loss"].values))]])
    if singles:
        pooled = pd.concat(singles)
        for n, g in pooled.groupby("params"):
            g = g.sort_values(["flops", "loss"]).drop_duplicates("flops", keep="first")
            if len(g) >= 2:
                out.append((float(n), np.log(g["flops"].values), np.log(g["loss"].values), np.log(g["tokens"].values)))
    return out


def envelope(curves, grid):
    """Index of the best run at each grid budget (-1 where fewer than 2 sizes reach it), the loss
    there, and the log tokens of that run at that budget."""
    P = len(curves)
    losses = np.full((P, len(grid)), np.inf)
    logd = np.full((P, len(grid)), np.nan)
    for i, (_, c, y, d) in enumerate(curves):
        inside = (grid >= c[0]) & (grid <= c[-1])
        losses[i, inside] = np.interp(grid[inside], c, y)
        logd[i, inside] = np.interp(grid[inside], c, d)
    sizes = np.array([cv[0] for cv in curves])
    best = np.argmin(losses, axis=0)
    reach = np.isfinite(losses)
    n_sizes = np.array([len(np.unique(sizes[reach[:, j]])) for j in range(len(grid))])
    best[n_sizes < MIN_RUNS_AT_BUDGET] = -1
    # interior only: where the smallest or the largest size is best, the optimum may lie beyond
    # the sizes trained, and the envelope would flatten the exponent (as for Approach 2's minima)
    edge = (sizes[best] <= sizes.min() * (1 + 1e-9)) | (sizes[best] >= sizes.max() * (1 - 1e-9))
    best[edge] = -1
    cols = np.arange(len(grid))
    return best, losses[best, cols], logd[best, cols]


def _fit(grid, best, curves, logd):
    ok = best >= 0
    if ok.sum() < 3:
        return None
    logn = np.log([curves[b][0] for b in best[ok]])
    x = grid[ok]
    if np.ptp(logn) == 0:
        return None
    a, ka = np.polyfit(x, logn, 1)
    b, kb = np.polyfit(x, logd[ok], 1)
    return a, ka, b, kb


def approach1(table: pd.DataFrame, bootstrap: int = 200, seed: int = 0, min_progress: float = 0.0,
              grid_points: int = GRID_POINTS) -> Approach1Result:
    """``table``: checkpoints with ``run``, ``params``, ``tokens``, ``loss`` and optionally
    ``flops`` (per checkpoint; default 6 N D)."""
    missing = [c for c in ("run", "params", "tokens", "loss") if c not in table.columns]
    if missing:
        raise UsageError(f"checkpoints: missing column(s) {', '.join(missing)} (rows are run, tokens so far, loss; "
                         f"map with --column run=THEIRS)")
    t = table.copy()
    for c in ("params", "tokens", "loss") + (("flops",) if "flops" in t.columns else ()):
        t[c] = pd.to_numeric(t[c], errors="coerce")
    t = t.replace([np.inf, -np.inf], np.nan).dropna(subset=["params", "tokens", "loss"])
    t = t[(t["params"] > 0) & (t["tokens"] > 0) & (t["loss"] > 0)]
    warnings = []
    if min_progress > 0:
        if "portion_steps_elapsed" in t.columns:
            prog = pd.to_numeric(t["portion_steps_elapsed"], errors="coerce")
        elif "train_tokens" in t.columns:
            prog = t["tokens"] / pd.to_numeric(t["train_tokens"], errors="coerce")
        else:
            raise BadValue("min_progress", "{arg} needs portion_steps_elapsed or train_tokens in the checkpoints")
        t = t[prog >= min_progress]
    if "flops" not in t.columns or not np.isfinite(t["flops"]).all() or not (t["flops"] > 0).all():
        t["flops"] = flops(t["params"].values, t["tokens"].values)
    curves = _curves(t)
    if len(curves) < 2 or len({cv[0] for cv in curves}) < 2:
        raise UsageError(f"Approach 1 needs curves of at least 2 model sizes with 2+ checkpoints each; "
                         f"found {len(curves)} usable run(s)")
    lo = min(cv[1][0] for cv in curves)
    hi = max(cv[1][-1] for cv in curves)
    grid = np.linspace(lo, hi, grid_points)
    best, loss, logd = envelope(curves, grid)
    fitted = _fit(grid, best, curves, logd)
    if fitted is None:
        raise UsageError("Approach 1: the envelope holds one model size only (the smallest or largest run is best "
                         "at every budget); add runs of other sizes")
    a, ka, b, kb = fitted
    ok = best >= 0
    on = sorted({curves[i][0] for i in best[ok]})
    if len(on) < 3:
        warnings.append(f"only {len(on)} distinct sizes lie on the envelope: the exponents rest on "
                        f"{len(on) - 1} step(s)")
    rng = np.random.default_rng(seed)
    boots_a, boots_b = [], []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(curves), len(curves))
        sub = [curves[i] for i in pick]
        if len({cv[0] for cv in sub}) < 2:
            continue
        bb, _, ld = envelope(sub, grid)
        f = _fit(grid, bb, sub, ld)
        if f is not None:
            boots_a.append(f[0])
            boots_b.append(f[2])
    ci_a = interval_list(boots_a) if len(boots_a) >= 10 else None
    ci_b = interval_list(boots_b) if len(boots_b) >= 10 else None
    env = {"flops": np.exp(grid[ok]).tolist(), "params": [curves[i][0] for i in best[ok]],
           "tokens": np.exp(logd[ok]).tolist(), "loss": np.exp(loss[ok]).tolist()}
    return Approach1Result(float(a), float(np.exp(ka)), float(b), float(np.exp(kb)), ci_a, ci_b,
                           len(curves), int(len(t)), [float(np.exp(grid[ok][0])), float(np.exp(grid[ok][-1]))],
                           env, int(bootstrap), warnings)


def checkpoints_from_store(store, smooth: float = 0.02) -> pd.DataFrame:
    """The checkpoint table of a results store: every ``ok`` run's training curve from
    ``_curves/`` (train loss, smoothed by a centred running mean over ``smooth`` of the run's
    steps), with the run's N and, when the store has them, its ``flops.<convention>`` columns
    scaled per checkpoint (FLOPs grow linearly with tokens)."""
    from scaling.store import read_curve, read_runs
    runs = read_runs(store)
    if runs.empty:
        raise UsageError(f"{store}: no runs")
    if "status" in runs.columns:
        runs = runs[runs["status"].astype(str) == "ok"]
    frames = []
    for _, r in runs.iterrows():
        try:
            curve = read_curve(store, r["run_id"])
        except Exception:          # a missing or unreadable curve: the run has no curve to offer
            continue
        if curve is None or curve.empty or "train_loss" not in curve.columns:
            continue
        loss = curve["train_loss"].astype(float)
        w = max(1, int(round(smooth * len(curve))))
        loss = np.exp(np.log(loss).rolling(w, center=True, min_periods=1).mean())
        f = pd.DataFrame({"run": r["run_id"], "params": float(r["params"]),
                          "tokens": curve["tokens"].astype(float).values, "loss": loss.values})
        for col in runs.columns:
            if str(col).startswith("flops.") and pd.notna(r[col]) and r["tokens"]:
                f[col] = float(r[col]) * f["tokens"] / float(r["tokens"])
        for col in ("d_model", "ffw_size", "n_layers", "vocab_size", "seq_len", "params_nonembedding"):
            if col in runs.columns:
                f[col] = r[col]
        frames.append(f)
    if not frames:
        raise UsageError(f"{store}: no stored loss curves (_curves/) of ok runs")
    return pd.concat(frames, ignore_index=True)
