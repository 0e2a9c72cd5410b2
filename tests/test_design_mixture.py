"""Planning which mixtures to train next (``scaling.design`` with a mixture fit, issue 25) on a
synthetic mixing law with a known optimum: following the plan narrows the best mixture's loss
interval more than drawing mixtures as ``runners.mixgrid`` does, near the true optimum's loss; the
plan is a JSON contract and a file ``runners.mixgrid --plan`` takes; bad requests are one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling.cli import run_cli
from scaling.design import main
from scaling.errors import DataError
from scaling.mixture import dirichlet_samples, fit_mixture, optimize_mixture
from scaling.mixture.design import mixture_design
from scaling.mixture.synthetic import DOMAINS, D, N, runs_at, true_optimum_loss

RUN_FLOPS = 6 * N * D


def state(table):
    f = fit_mixture(table, bootstrap=20, seed=1, model="law")
    o = optimize_mixture(f, N, D, seed=1)
    return f, o


@pytest.fixture(scope="module")
def start():
    rng = np.random.default_rng(1)
    return runs_at(dirichlet_samples(np.ones(3) / 3, 12, rng), rng)


def test_following_the_plan_narrows_the_optimum_more_than_mixgrid_draws(start):
    """Three rounds of 4 runs per arm (benchmarks/design_mixture_synthetic.py measures 10 draws)."""
    truth = true_optimum_loss()
    widths = {}
    for arm in ("design", "draws"):
        rng = np.random.default_rng(7)
        runs = start.copy()
        f, o = state(runs)
        for _ in range(3):
            if arm == "design":
                plan = mixture_design(runs, f, target=None, budget=4 * RUN_FLOPS, k=4)
                assert len(plan["runs"]) == 4 and plan["flops_used"] <= 4 * RUN_FLOPS * (1 + 1e-9)
                R = np.array([[r[f"mix.{d}"] for d in DOMAINS] for r in plan["runs"]])
            else:
                R = dirichlet_samples(np.ones(3) / 3, 4, rng)
            runs = pd.concat([runs, runs_at(R, rng)], ignore_index=True)
            f, o = state(runs)
        lo, hi = o["ci"]["loss"]
        widths[arm] = hi - lo
        if arm == "design":      # (coverage over repeated draws: 90% in the benchmark, not a one-draw test)
            assert abs(o["loss"] - truth) < 0.01 and hi - lo < 0.03
    assert widths["design"] < 0.8 * widths["draws"], widths


def test_the_plan_is_json_a_file_and_its_mixtures_are_distinct(start, tmp_path, capsys):
    src = tmp_path / "runs.csv"
    start.to_csv(src, index=False)
    fit = fit_mixture(start, bootstrap=30, seed=0, model="law")
    fit.save(tmp_path / "mix.json")
    plan_csv = tmp_path / "plan.csv"
    code = run_cli(main, [str(src), "--fit", str(tmp_path / "mix.json"), "--budget", str(3 * RUN_FLOPS), "--k", "5",
                          "--weights", "a=1,b=1,c=2", "--out", str(plan_csv), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quantity"] == "mixture" and out["target"]["weights"]["c"] == pytest.approx(0.5)
    lo, hi = out["expected_interval"]
    clo, chi = out["current_interval_linearised"]
    assert lo <= out["prediction"] <= hi and hi - lo < chi - clo
    assert len(out["runs"]) == 3 and out["flops_used"] <= 3 * RUN_FLOPS * (1 + 1e-9)     # the budget, not --k
    plan = pd.read_csv(plan_csv)
    mix = plan[[f"mix.{d}" for d in DOMAINS]].to_numpy()
    assert np.allclose(mix.sum(axis=1), 1) and len(np.unique(mix.round(6), axis=0)) == len(mix)
    assert np.allclose(mix * 1000, np.round(mix * 1000))                        # shares as mixgrid rounds them
    (tmp_path / "plan.json").write_text(json.dumps(out))
    from scaling.plot import design_plot
    drawn = design_plot(tmp_path / "plan.json", tmp_path / "plan.png")
    assert [m["name"] for m in drawn["mixtures"]] == ["best now", "run 1", "run 2", "run 3"]
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    # a user's own candidate mixtures: the plan takes only from them
    cands = pd.DataFrame({"mix.a": [0.2, 0.5, 0.9], "mix.b": [0.7, 0.5, 0.05], "mix.c": [0.1, 0.0, 0.05]})
    cands.to_csv(tmp_path / "cands.csv", index=False)
    assert run_cli(main, [str(src), "--fit", str(tmp_path / "mix.json"), "--budget", str(2 * RUN_FLOPS),
                          "--candidates", str(tmp_path / "cands.csv"), "--json"]) == 0
    picked = [[r[f"mix.{d}"] for d in DOMAINS] for r in json.loads(capsys.readouterr().out)["runs"]]
    assert len(picked) == 2 and all(any(np.allclose(p, c) for c in cands.to_numpy()) for p in picked)


@pytest.fixture(scope="module")
def files(start, tmp_path_factory):
    where = tmp_path_factory.mktemp("mixdesign")
    start.to_csv(where / "runs.csv", index=False)
    fit_mixture(start, bootstrap=10, seed=0, model="law").save(where / "mix.json")
    return where / "runs.csv", where / "mix.json"


@pytest.mark.parametrize("extra, message", [
    (["--target-params", "1e9", "--target-tokens", "2e10"], "a direct mixture fit is at one scale"),
    (["--weights", "z=1"], "unknown domain 'z'"),
    (["--quantity", "n_opt"], "its quantity is mixture"),
    (["--target-flops", "1e22"], "are for scaling-law fits"),
    (["--budget", "1e3"], "buys none of the candidates"),
])
def test_bad_mixture_requests_are_one_line(files, capsys, extra, message):
    src, fit = files
    args = [str(src), "--fit", str(fit), "--budget", str(RUN_FLOPS)]
    if "--budget" in extra:
        args = args[:-2]
    assert run_cli(main, args + extra) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_a_fit_without_bootstrap_or_a_nested_fit_says_what_to_do(start):
    with pytest.raises(DataError, match="--bootstrap 100"):
        mixture_design(start, fit_mixture(start, model="law"), target=None, budget=RUN_FLOPS, k=1)
