"""The joint mixture-scale law (Shukor et al. 2025, additive; ``scaling.mixture fit --kind joint``):
its gradient, a synthetic joint truth recovered, Ye et al. 2024's runs predicted at 1B better than
the nested fit, and predict/optimize working on it unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling import datasets
from scaling.laws.mixture_scale import JointMixtureLaw, MixScaleData
from scaling.mixture import MixtureFit, evaluate_fit, fit_mixture, optimize_mixture, predict_losses
from scaling.mixture.cli import main as mixture_main

DOMAINS = ("web", "code", "books")
TRUTH = {"web": {"E": 1.6, "A": 60.0, "alpha": 0.3, "B": 900.0, "beta": 0.35,
                 "C": {"web": 3.0, "code": 0.5, "books": 1.0}, "gamma": {"web": 0.6, "code": 1.0, "books": 0.8}},
         "code": {"E": 0.9, "A": 40.0, "alpha": 0.28, "B": 600.0, "beta": 0.33,
                  "C": {"web": 0.4, "code": 4.0, "books": 0.3}, "gamma": {"web": 1.0, "code": 0.5, "books": 1.0}}}


def test_gradient_matches_finite_differences():
    law = JointMixtureLaw(DOMAINS)
    rng = np.random.default_rng(0)
    h = rng.dirichlet(np.ones(3), 9)
    h[0] = [0.0, 0.4, 0.6]                      # a component absent from a mixture adds nothing
    data = MixScaleData(10 ** rng.uniform(6, 9, 9), 10 ** rng.uniform(8, 11, 9), h)
    theta = np.array([[0.3, 4.0, 0.3, 5.0, 0.35, 0.5, -0.2, 1.0, 0.4, 0.8, 1.2]])
    _, grads = law.log_predict(theta, data, grad=True)
    for j in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[0, j] = 1e-6
        fd = (law.log_predict(theta + step, data) - law.log_predict(theta - step, data)) / 2e-6
        assert np.allclose(grads[j], fd, atol=1e-7), law.fit_names[j]


def synthetic_runs(noise=0.003, seed=0, sizes=(2e6, 5e6, 1.2e7), n_mix=20) -> pd.DataFrame:
    """``n_mix`` Dirichlet mixtures, each trained at every size to 20 tokens per parameter, scored at
    5 checkpoints; losses from the joint truth with multiplicative noise."""
    rng = np.random.default_rng(seed)
    law = JointMixtureLaw(DOMAINS)
    rows = []
    for m, h in enumerate(rng.dirichlet(np.ones(3), n_mix)):
        for n in sizes:
            for k in range(1, 6):
                d = 20 * n * k / 5
                row = {"run_id": f"m{m}-n{n:.0e}-k{k}", "params": n, "tokens": d, "status": "ok",
                       **{f"mix.{x}": v for x, v in zip(DOMAINS, h)}}
                for dom, p in TRUTH.items():
                    row[f"loss.{dom}"] = float(law.predict(p, n, d, h[None])[0]) * np.exp(rng.normal(0, noise))
                rows.append(row)
    return pd.DataFrame(rows)


def test_a_synthetic_joint_law_is_recovered_and_extrapolates_in_n():
    """20 mixtures x 3 sizes x 5 checkpoints, 0.3% noise: at 8x the largest size, on 200 mixtures
    never trained on (within the trained proportions), the fitted law is within 1% of the truth."""
    table = synthetic_runs()
    fit = fit_mixture(table, list(TRUTH), kind="joint")
    assert fit.kind == "joint" and fit.n_mixtures == 20
    law = JointMixtureLaw(DOMAINS)
    h = np.random.default_rng(5).dirichlet(np.ones(3), 200)
    r = table[[f"mix.{d}" for d in DOMAINS]].to_numpy()
    h = h[((h >= r.min(axis=0)) & (h <= r.max(axis=0))).all(axis=1)]
    for dom in TRUTH:
        assert fit.r2[dom] > 0.99
        want = law.predict(TRUTH[dom], 1e8, 2e9, h)
        got = law.predict(fit.params[dom], 1e8, 2e9, h)
        assert np.max(np.abs(got / want - 1)) < 0.01, (dom, np.max(np.abs(got / want - 1)))


def test_on_ye_et_al_runs_the_joint_law_beats_the_nested_fit_at_1b():
    """Data Mixing Laws' 5-domain experiment: fit on 70M-410M (every checkpoint), predict the four
    1B runs. Shown for the two domains where the nested fit misses most (docs/benchmarks.md has
    all five: the joint law's MAE is lower on each)."""
    runs = datasets.load("mixing-laws-5domain")
    small, big = runs[runs["model"] != "1B"], runs[runs["model"] == "1B"]
    mae = {}
    for kind in ("nested", "joint"):
        fit = fit_mixture(small, ["academic", "symbolic"], kind=kind)
        ev = evaluate_fit(fit, big)
        mae[kind] = {d: v["mae"] for d, v in ev["domains"].items()}
    for d in ("academic", "symbolic"):
        assert mae["joint"][d] < mae["nested"][d], mae
        assert mae["joint"][d] < 0.03, mae


def test_predict_optimize_and_the_cli_work_on_a_joint_fit(tmp_path):
    table = synthetic_runs(seed=1)
    table.to_csv(tmp_path / "runs.csv", index=False)
    assert mixture_main(["fit", str(tmp_path / "runs.csv"), "--domains", ",".join(TRUTH), "--kind", "joint",
                         "--bootstrap", "20", "--out", str(tmp_path / "joint.json")]) == 0
    fit = MixtureFit.load(tmp_path / "joint.json")
    assert fit.kind == "joint" and set(fit.ci) == set(TRUTH)
    h = np.array([[0.5, 0.3, 0.2]])
    pred = predict_losses(fit, 3e7, 6e8, h)
    truth = JointMixtureLaw(DOMAINS)
    for dom in TRUTH:
        assert pred[dom][0] == pytest.approx(truth.predict(TRUTH[dom], 3e7, 6e8, h)[0], rel=0.01)
    out = optimize_mixture(fit, 3e7, 6e8, weights={"code": 1.0}, seed=0)
    assert out["mixture"]["code"] > 0.5 and out["ci"] is not None        # code helps code most
    (tmp_path / "mix.csv").write_text("mix.web,mix.code,mix.books\n0.5,0.3,0.2\n")
    assert mixture_main(["predict", "--fit", str(tmp_path / "joint.json"), "--mixtures", str(tmp_path / "mix.csv"),
                         "--params", "3e7", "--tokens", "6e8", "--out", str(tmp_path / "pred.csv")]) == 0
    p = pd.read_csv(tmp_path / "pred.csv")
    assert p["pred.code.lo"][0] < p["pred.code"][0] < p["pred.code.hi"][0]
    saved = json.loads((tmp_path / "joint.json").read_text())
    assert saved["params"]["code"]["C"]["code"] > saved["params"]["code"]["C"]["web"]
    # scaling.design plans mixtures for a joint fit at the target scale, at the runs' own scales
    from scaling.mixture.design import mixture_design
    plan = mixture_design(table, fit, target={"params": 3e7, "tokens": 6e8}, budget=1e17, k=3, weights={"code": 1.0})
    assert plan["kind"] == "joint" and plan["target"]["mixture"]["code"] == pytest.approx(out["mixture"]["code"], abs=0.02)
    scales = set(zip(table["params"], table["tokens"]))
    assert plan["runs"] and all((r["params"], r["tokens"]) in scales for r in plan["runs"])
    assert sum(r["flops"] for r in plan["runs"]) <= 1e17
    lo, hi = plan["expected_interval"]
    clo, chi = plan["current_interval_linearised"]
    assert clo < lo <= plan["prediction"] <= hi < chi


def test_the_joint_bootstrap_draws_runs_with_all_their_checkpoints():
    """A run (a mixture at one size) is resampled whole: checkpoints of one run are not independent
    draws of the law (rows resampled alone gave intervals about half as wide on Ye et al.'s runs)."""
    from scaling.mixture.fit import _run_counts
    from scaling.mixture.runs import read_mixtures
    table = synthetic_runs(seed=2)
    runs = read_mixtures(table, list(TRUTH), need_scale=True)
    counts = _run_counts(runs, np.random.default_rng(0), 50)
    key = pd.Series(list(zip(runs.mixture, runs.frame["params"])))
    for _, rows in key.groupby(key).groups.items():
        assert (counts[:, rows] == counts[:, rows[:1]]).all()           # one weight per run in every draw
    n_runs = key.nunique()
    firsts = key.drop_duplicates().index
    assert np.allclose(counts[:, firsts].sum(axis=1), n_runs)


def test_each_bootstrap_refit_reaches_its_resamples_optimum():
    """The joint law's bootstrap refits (``local_batch`` from the point estimate) end where a tight
    single fit from the same point ends: before stop 32 the batched L-BFGS ran out of iterations on
    this ~20-parameter law and left each resample 0.1-2% above its optimum (on Ye et al.'s runs the
    bootstrap interval of an extrapolated optimum came out ~8x narrower than the linearised one)."""
    from scaling.fit import Problem, fit_stage, local_batch
    from scaling.fit.solver import polish
    from scaling.mixture.fit import _run_counts
    from scaling.mixture.runs import read_mixtures
    runs = read_mixtures(synthetic_runs(seed=3, n_mix=10), list(TRUTH), need_scale=True)
    data = MixScaleData(runs.frame["params"].to_numpy(float), runs.frame["tokens"].to_numpy(float), runs.r)
    loss = runs.loss("web")
    law = JointMixtureLaw(runs.domains, loss_scale=float(np.median(loss)))
    stage = fit_stage(law, data, loss, want_profiles=False)
    B = 4
    counts = _run_counts(runs, np.random.default_rng(0), B)
    bp = Problem(law, data, stage.problem.y, np.repeat(stage.problem.base[None], B, 0), stage.problem.M,
                 stage.problem.free, counts)
    zb, fb = local_batch(bp, np.repeat(stage.z[None], B, 0))
    for b in range(B):
        one = Problem(law, data, stage.problem.y, stage.problem.base[None], stage.problem.M, stage.problem.free,
                      counts[b:b + 1])
        _, f_tight = polish(one.fun_grad_1d, zb[b], *one.bounds())
        assert fb[b] <= f_tight * (1 + 1e-6)
