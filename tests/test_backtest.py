"""Backtests on data with known truth: small errors, honest intervals."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scaling.backtest import backtest, split_holdout
from scaling.laws import get_law
from scaling.predict import chinchilla_allocation

TRUTH = dict(A=482.01, B=2085.43, E=1.82, alpha=0.3478, beta=0.3658)


def isoflop_table(noise):
    law = get_law("chinchilla")
    rng = np.random.default_rng(1)
    rows = []
    for c in (1e18, 3e18, 1e19, 3e19, 1e20):
        n_opt = chinchilla_allocation(TRUTH, c)["params"]
        for n in n_opt * np.geomspace(0.25, 4, 7):
            d = c / (6 * n)
            rows.append((n, d, float(law.predict(TRUTH, n, d)) * np.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows, columns=["params", "tokens", "loss"])


def test_held_out_budget_is_predicted_within_noise():
    """With 0.5% noise the largest budget (7 runs, 3x beyond the fitted compute) is predicted to
    ~1% and the 95% predictive intervals hold most of the runs."""
    out = backtest(isoflop_table(0.005), "chinchilla", bootstrap=100)
    assert out["n_test"] == 7 and out["n_train"] == 28
    assert out["mape"] < 1.5
    assert out["coverage"] >= 4 / 7


def test_a_law_that_cannot_extrapolate_shows_it():
    """A fit that holds alpha far from the truth extrapolates worse than a free fit."""
    table = isoflop_table(0.002)
    free = backtest(table, "chinchilla", bootstrap=0)
    wrong = backtest(table, "chinchilla", bootstrap=0, fix={"alpha": 0.15})
    assert wrong["mape"] > 2 * free["mape"]


def test_holdout_by_count():
    t = isoflop_table(0.0)
    mask = split_holdout(t, "3")
    flops = 6 * t.params * t.tokens
    assert mask.sum() == 3 and flops[mask].min() >= flops[~mask].max() * (1 - 1e-12)


def test_holdout_by_model_holds_out_the_largest_size_at_every_budget():
    """Issue 26's protocol: the runs of the largest model go, the rest of its budgets stay."""
    t = isoflop_table(0.0)
    mask = split_holdout(t, "largest-model")
    assert mask.sum() == (t["params"] == t["params"].max()).sum() > 0
    assert t["params"][mask].min() > t["params"][~mask].max()
    flops = 6 * t.params * t.tokens
    top = np.isclose(flops, flops.max(), rtol=1e-6)
    assert (top & ~mask).sum() == top.sum() - mask.sum() > 0     # the top budget's other sizes are fitted


def test_cli_bad_holdout_is_one_error_line(tmp_path):
    path = tmp_path / "t.csv"
    isoflop_table(0.0).to_csv(path, index=False)
    proc = subprocess.run([sys.executable, "-m", "scaling.backtest", str(path), "--holdout", "many"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
