"""Approach 2 (isoFLOP parabolas) agrees with Approach 3 on data generated from a known law."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scaling.approach2 import approach2, budget_groups
from scaling.cli import UsageError
from scaling.laws import get_law
from scaling.predict import chinchilla_allocation

TRUTH = dict(A=482.01, B=2085.43, E=1.82, alpha=0.3478, beta=0.3658)   # Besiroglu et al. 2024


def isoflop_table(noise=0.002, spread=4.0):
    law = get_law("chinchilla")
    rng = np.random.default_rng(0)
    rows = []
    for c in (1e18, 1e19, 1e20, 1e21):
        n_opt = chinchilla_allocation(TRUTH, c)["params"]
        for n in n_opt * np.geomspace(1 / spread, spread, 7):
            rows.append((n, c / (6 * n), float(law.predict(TRUTH, n, c / (6 * n))) * np.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows, columns=["params", "tokens", "loss"])


def test_parabola_minima_follow_the_true_optimum():
    """Exponent of N_opt(C) is beta / (alpha + beta) = 0.5126 for the truth (Hoffmann et al. 2022)."""
    r = approach2(isoflop_table())
    assert len(r.budgets) == 4
    assert r.params_exponent == pytest.approx(TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"]), abs=0.02)
    for b in r.budgets:
        assert b.params_opt == pytest.approx(chinchilla_allocation(TRUTH, b.flops)["params"], rel=0.1)


def test_cli_shows_both_approaches(tmp_path):
    path = tmp_path / "iso.csv"
    isoflop_table().to_csv(path, index=False)
    proc = subprocess.run([sys.executable, "-m", "scaling.fit", str(path), "--approach", "2", "--no-profiles"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Approach 2" in proc.stdout and "Approach 3" in proc.stdout


def test_one_budget_is_not_enough():
    t = isoflop_table()
    with pytest.raises(UsageError):
        approach2(t[np.isclose(6 * t.params * t.tokens, 1e18)])


def test_budget_groups():
    assert list(budget_groups([1e18, 1.05e18, 1e19, 0.98e19, 1e20])) == [0, 0, 1, 1, 2]
