"""Do small runs rank mixtures as large runs do? Rank agreement with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.cli import DataError, UsageError
from scaling.mixture.runs import MixtureRuns, SIZE_TOL, read_mixtures
from scaling.mixture.result import _interval


def rank_agreement(x, y) -> dict[str, np.ndarray]:
    """Spearman rho, Kendall tau-b and pairwise decision accuracy between rows of x and y [B, n].

    Decision accuracy: over pairs the large runs (``y``) order strictly, the fraction the small
    runs (``x``) order the same way; a tie in ``x`` counts one half. Average ranks for ties, from
    pandas (``scipy.stats.rankdata`` gives the same; importing it costs ~0.7 s a command)."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    rx, ry = (pd.DataFrame(v).rank(axis=1).to_numpy() for v in (x, y))
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        spearman = (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
        iu = np.triu_indices(x.shape[1], 1)
        sx = np.sign(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]
        sy = np.sign(y[:, :, None] - y[:, None, :])[:, iu[0], iu[1]]
        kendall = (sx * sy).sum(1) / np.sqrt((sx ** 2).sum(1) * (sy ** 2).sum(1))
        decided = sy != 0
        score = np.where(sx == 0, 0.5, (sx == sy).astype(float))
        accuracy = (score * decided).sum(1) / decided.sum(1)
    return {"spearman": spearman, "kendall": kendall, "decision_accuracy": accuracy}


def _at_size(runs: MixtureRuns, target: float, what: str):
    n = runs.frame["params"].to_numpy(float)
    hit = np.abs(n / target - 1.0) <= SIZE_TOL
    if not hit.any():
        sizes = ", ".join(f"{v:.4g}" for v in np.unique(n))
        raise DataError(f"no runs within {SIZE_TOL:.0%} of {what} {target:.4g} (sizes: {sizes})")
    return hit


def transfer(table: pd.DataFrame, small_params: float, large_params: float, *, bootstrap=1000, seed=0,
             source="data") -> dict:
    """Rank agreement of mixtures between two model sizes, per domain (loss.<d>) and overall (loss),
    with percentile intervals from resampling mixtures. Seeds (several runs of one mixture and
    size) are averaged."""
    if bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    runs = read_mixtures(table, None, need_scale=False, source=source)
    frame = runs.frame
    if "params" not in frame.columns:
        raise DataError(f"{source}: missing required column params")
    frame["params"] = pd.to_numeric(frame["params"], errors="coerce")
    small, large = _at_size(runs, small_params, "--small-params"), _at_size(runs, large_params, "--large-params")
    if (small & large).any():
        raise UsageError("--small-params and --large-params select the same runs")
    metrics = [f"loss.{d}" for d in runs.loss_domains] + (["loss"] if "loss" in frame.columns else [])
    values = frame[metrics].apply(pd.to_numeric, errors="coerce")
    mean_s = values[small].groupby(runs.mixture[small]).mean()
    mean_l = values[large].groupby(runs.mixture[large]).mean()
    common = sorted(set(mean_s.index) & set(mean_l.index))
    if len(common) < 3:
        raise DataError(f"{len(common)} mixture(s) were trained at both sizes: "
                         f"need at least 3 to compare rankings")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(bootstrap, len(common))) if bootstrap else None
    out = {"small_params": float(small_params), "large_params": float(large_params), "n_mixtures": len(common),
           "mixtures": [{"mix": dict(zip(runs.domains, runs.mixtures[m].tolist())),
                         "small": mean_s.loc[m].to_dict(), "large": mean_l.loc[m].to_dict()} for m in common],
           "domains": {}, "overall": None, "bootstrap": {"n": int(bootstrap), "seed": int(seed)}}
    for metric in metrics:
        x, y = mean_s.loc[common, metric].to_numpy(float), mean_l.loc[common, metric].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        stats = {k: float(v[0]) for k, v in rank_agreement(x[ok], y[ok]).items()}
        if idx is not None:
            xb, yb = x[idx], y[idx]
            good = np.isfinite(xb).all(1) & np.isfinite(yb).all(1)
            boot = rank_agreement(xb[good], yb[good])
            stats["ci"] = {k: _interval(v) for k, v in boot.items()}
        if metric == "loss":
            out["overall"] = stats
        else:
            out["domains"][metric[5:]] = stats
    return out
