"""Kaplan et al. 2020's law, L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (``--law kaplan``): a
synthetic isoFLOP grid drawn from it is recovered, its closed-form compute optimum is the brute-force
one, and the fit file round-trips through the CLIs (fit, backtest, predict, plot)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling.cli import run_cli
from scaling.fit import fit
from scaling.laws import get_law

#: the law the demo's tiny runs follow (docs/benchmarks.md), in N = C/6D of their convention
TRUTH = {"N_c": 5.0e5, "D_c": 3.0e7, "alpha_N": 0.19, "alpha_D": 0.18}


def grid(noise=0.005, seed=0):
    rng = np.random.default_rng(seed)
    law = get_law("kaplan")
    rows = []
    for c in (3e10, 1e11, 3e11, 1e12):
        n_opt = law.optimal(TRUTH, c)[0]
        for n in n_opt * np.geomspace(1 / 3, 3, 5):
            d = c / (6 * n)
            rows.append({"params": n, "tokens": d, "loss": float(law.predict(TRUTH, n, d)) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


def test_the_closed_form_optimum_is_the_brute_force_one():
    law = get_law("kaplan")
    n_opt, d_opt = law.optimal(TRUTH, 1e13)
    n = np.geomspace(1e3, 1e8, 400_001)
    assert n_opt == pytest.approx(n[np.argmin(law.predict(TRUTH, n, 1e13 / (6 * n)))], rel=1e-3)
    assert 6 * n_opt * d_opt == pytest.approx(1e13)
    ratio = law.optimal(TRUTH, 1e15)[0] / law.optimal(TRUTH, 1e13)[0]
    assert np.log(ratio) / np.log(100) == pytest.approx(law.params_exponent(TRUTH), abs=1e-9)
    assert law.params_exponent(TRUTH) == pytest.approx(0.18 / 0.37)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_synthetic_kaplan_grid_is_recovered(seed):
    f = fit(grid(seed=seed), "kaplan", want_profiles=False)
    law = get_law("kaplan")
    assert f.params["alpha_N"] == pytest.approx(0.19, abs=0.03) and f.params["alpha_D"] == pytest.approx(0.18, abs=0.03)
    assert law.params_exponent(f.params) == pytest.approx(law.params_exponent(TRUTH), abs=0.03)
    # one decade beyond the grid, the fitted law is within 1% of the truth at the optimum
    n, d = law.optimal(TRUTH, 1e13)
    assert float(law.predict(f.params, n, d)) == pytest.approx(float(law.predict(TRUTH, n, d)), rel=0.01)
    assert f.r2 > 0.99
    # the same runs under Chinchilla's additive form fit worse: the N x D interaction is Kaplan's
    assert fit(grid(seed=seed), "chinchilla", want_profiles=False, variant="free").r2 < f.r2


def test_the_clis_take_a_kaplan_fit(tmp_path, capsys):
    from scaling.backtest import main as backtest_main
    from scaling.fit import main as fit_main
    from scaling.plot import main as plot_main
    from scaling.predict import main as predict_main
    grid(seed=2).to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "fit.json"
    assert run_cli(fit_main, [str(tmp_path / "runs.csv"), "--law", "kaplan", "--approach", "2", "--bootstrap", "20",
                              "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "law: kaplan" in text and "alpha_D/(alpha_N+alpha_D)" in text
    saved = json.loads(out.read_text())
    assert saved["law"] == "kaplan" and set(saved["params"]) == {"N_c", "D_c", "alpha_N", "alpha_D"}
    assert run_cli(predict_main, ["allocate", "--fit", str(out), "--flops", "1e13"]) == 0
    alloc = json.loads(capsys.readouterr().out)
    assert alloc["params"] == pytest.approx(get_law("kaplan").optimal(TRUTH, 1e13)[0], rel=0.15)
    assert alloc["ci"]["params"][0] < alloc["params"] < alloc["ci"]["params"][1]      # from the law's bootstrap
    assert run_cli(backtest_main, [str(tmp_path / "runs.csv"), "--law", "kaplan", "--bootstrap", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mape"] < 2.0
    assert run_cli(plot_main, ["isoflop", str(tmp_path / "runs.csv"), "--fit", str(out), "--out",
                               str(tmp_path / "iso.png")]) == 0
    assert (tmp_path / "iso.png").stat().st_size > 10_000
    capsys.readouterr()
    assert run_cli(fit_main, [str(tmp_path / "runs.csv"), "--law", "kaplan", "--variant", "tied"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--variant is for the chinchilla" in err[0]


def test_a_kaplan_fit_is_planned_like_any_law(tmp_path, capsys):
    """``scaling.design`` linearises Kaplan's law in (log N_c, log D_c, alpha_N, alpha_D): the plan fits
    the budget and narrows the interval of the loss at 10x the grid's compute, and of N_opt there."""
    from scaling.design import candidates, design
    runs = grid(noise=0.01, seed=4)
    f = fit(runs, "kaplan", want_profiles=False, bootstrap=60, seed=0)
    law = get_law("kaplan")
    n, d = law.optimal(f.params, 1e13)
    for quantity in ("loss", "n_opt"):
        out = design(runs, f, quantity=quantity, target={"flops": 1e13, "params": float(n), "tokens": float(d)},
                     budget=3e12, k=4, cands=candidates(runs, f))
        lo, hi = out["current_interval_linearised"]
        elo, ehi = out["expected_interval"]
        assert lo < out["prediction"] < hi and (ehi - elo) < (hi - lo)
        assert out["current_interval"][0] < out["prediction"] < out["current_interval"][1]
        assert 0 < sum(r["flops"] for r in out["runs"]) <= 3e12 * (1 + 1e-9)
    assert out["prediction"] == pytest.approx(float(n), rel=1e-6)


def test_a_partial_start_fills_the_rest_from_kaplans_own_fit():
    """``--start`` with some parameters given took the others from a table that had no Kaplan names
    (a KeyError traceback); they now come from Kaplan et al.'s eq. 1.5 fit, and a start near the
    optimum recovers it with one local optimisation."""
    runs = grid(seed=0)
    best = fit(runs, "kaplan", want_profiles=False)
    local = fit(runs, "kaplan", want_profiles=False, start={"N_c": 4e5, "D_c": 2.5e7, "alpha_N": 0.2})
    assert local.settings["starts"] == 1 and local.objective == pytest.approx(best.objective, rel=1e-6)
    assert local.params["alpha_D"] == pytest.approx(best.params["alpha_D"], rel=1e-4)
