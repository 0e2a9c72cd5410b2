"""Mixtures at real width (scaling.mixture, scaling.mixture.models): many domains, predictors chosen
by cross-validation, predict / evaluate, the constrained optimum search, and the 5-domain
experiment of Ye et al. 2024 (shipped as scaling.datasets mixing-laws-5domain)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scaling import datasets
from scaling.mixture import models as mm
from scaling.cli import UsageError
from scaling.mixture import (MixtureFit, evaluate_fit, fit_mixture, make_constraints, optimize_mixture,
                             predict_frame, predict_table)


def law_table(m, n, n_loss=2, noise=0.005, seed=0, rounded=False):
    """Runs on Dirichlet mixtures over m domains; loss domain i follows Ye et al.'s law with
    t_i = -3 on its own component and small cross terms."""
    rng = np.random.default_rng(seed)
    r = rng.dirichlet(np.ones(m), size=n)
    if rounded:
        r = np.round(r, 3)
    t = rng.normal(0, 0.3, (n_loss, m))
    for i in range(n_loss):
        t[i, i] = -3.0
    rows = {f"mix.d{j}": r[:, j] for j in range(m)}
    for i in range(n_loss):
        rows[f"loss.d{i}"] = (1.5 + 0.8 * np.exp(r @ t[i])) * np.exp(rng.normal(0, noise, n))
    rows["run_id"] = [f"r{k}" for k in range(n)]
    return pd.DataFrame(rows), t


@pytest.mark.parametrize("m", [2, 5, 17, 32])
def test_any_number_of_domains_fits(m):
    n = max(40, 3 * m)
    t, _ = law_table(m, n, n_loss=1)
    fit = fit_mixture(t, kind="direct", model="law", cv_folds=3)
    assert fit.domains == [f"d{j}" for j in range(m)]
    assert fit.r2["d0"] > 0.95
    assert set(fit.cv["d0"]) == {"law"} and np.isfinite(fit.cv["d0"]["law"]["spearman"])


def test_rounded_weights_are_renormalised_with_one_warning_and_far_ones_refused():
    t, _ = law_table(17, 60, n_loss=1, rounded=True)
    fit = fit_mixture(t, kind="direct", model="law", cv_folds=3)
    notes = [w for w in fit.warnings if "renormalised" in w]
    assert len(notes) == 1 and "row(s)" in notes[0]
    bad = t.copy()
    bad.loc[3, "mix.d0"] += 0.05
    with pytest.raises(UsageError, match="sum to"):
        fit_mixture(bad, kind="direct", model="law")


def test_24_domain_law_optimum_is_recovered():
    """A known 24-domain law where one loss domain is the target: the optimum found by the search
    on the fitted law matches the optimum of the true law (same objective within 0.3%)."""
    m = 24
    t, truth = law_table(m, 200, n_loss=2, noise=0.002, seed=3)
    fit = fit_mixture(t, kind="direct", model="law", cv_folds=3)
    out = optimize_mixture(fit, 1e6, 1e9, weights={"d0": 1.0, "d1": 1.0}, constraints=make_constraints(fit, "uniform"))
    r = np.array([out["mixture"][f"d{j}"] for j in range(m)])

    def true_objective(R):
        R = np.atleast_2d(R)
        return 0.5 * sum(1.5 + 0.8 * np.exp(R @ truth[i]) for i in range(2))
    from scaling.mixture import Constraints, search_simplex
    cons = Constraints(np.full(m, 1 / m), np.zeros(m), np.ones(m))
    r_true, _ = search_simplex(true_objective, cons, True, np.random.default_rng(0))
    assert true_objective(r)[0] <= true_objective(r_true)[0] * 1.003
    assert r[0] + r[1] > 0.8          # both targets' own components dominate, as in the truth


def _tree_table(m=4, n=200, seed=0):
    """A loss that jumps at thresholds (no smooth law): trees' home ground."""
    rng = np.random.default_rng(seed)
    r = rng.dirichlet(np.ones(m), size=n)
    loss = 2.0 + 0.3 * (r[:, 0] > 0.3) + 0.2 * (r[:, 1] > 0.25) - 0.25 * ((r[:, 2] > 0.2) & (r[:, 3] < 0.3))
    loss = loss + rng.normal(0, 0.01, n)
    return pd.DataFrame({**{f"mix.d{j}": r[:, j] for j in range(m)}, "loss.target": loss})


def test_cross_validation_picks_the_generating_model_class():
    pytest.importorskip("lightgbm")
    law_fit = fit_mixture(law_table(4, 120, n_loss=1, seed=1)[0], kind="direct")
    assert law_fit.model["d0"] in ("law", "log-linear"), law_fit.cv
    tree_fit = fit_mixture(_tree_table(), kind="direct")
    assert "gbdt" in tree_fit.model["target"], tree_fit.cv
    for fit in (law_fit, tree_fit):
        d = fit.loss_domains[0]
        assert set(fit.cv[d]) == set(mm.CANDIDATES)
        for c in fit.cv[d].values():
            assert {"spearman", "mae", "pearson", "n"} <= set(c)
    assert "cross-validation" in tree_fit.summary()


def test_predict_and_evaluate_round_trip(tmp_path):
    pytest.importorskip("lightgbm")
    t, _ = law_table(5, 160, n_loss=2, seed=2)
    train, test = t.iloc[:120], t.iloc[120:]
    fit = fit_mixture(train, kind="direct")
    path = tmp_path / "mix.json"
    fit.save(path)
    loaded = MixtureFit.load(path)
    frame = predict_frame(loaded, test.iloc[::-1])
    assert list(frame["run_id"]) == list(test["run_id"][::-1])          # order kept
    for d in ("d0", "d1"):
        assert (frame[f"pred.{d}.lo"] <= frame[f"pred.{d}"]).all() and (frame[f"pred.{d}"] <= frame[f"pred.{d}.hi"]).all()
        direct = predict_table(fit, test[[f"mix.d{j}" for j in range(5)]].to_numpy())[d][0]
        assert np.allclose(frame[f"pred.{d}"].to_numpy()[::-1], direct)
    ev = evaluate_fit(loaded, test)
    assert ev["domains"]["d0"]["n"] == 40 and ev["domains"]["d0"]["spearman"] > 0.8
    # the held-out runs fall inside the CV residual intervals about 95% of the time
    inside = np.mean([(frame[f"pred.{d}.lo"] <= test[f"loss.{d}"][::-1].to_numpy()).mean() *
                      0 + ((frame[f"pred.{d}.lo"].to_numpy() <= test[f"loss.{d}"][::-1].to_numpy()) &
                           (test[f"loss.{d}"][::-1].to_numpy() <= frame[f"pred.{d}.hi"].to_numpy())).mean()
                      for d in ("d0", "d1")])
    assert inside >= 0.8


def test_dirichlet_search_for_trees_lands_near_a_known_optimum():
    pytest.importorskip("lightgbm")
    rng = np.random.default_rng(4)
    m = 5
    best = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    r = rng.dirichlet(np.ones(m) * 2, size=400)
    loss = 2.0 + 3.0 * np.sum((r - best) ** 2, axis=1) + rng.normal(0, 0.002, 400)
    t = pd.DataFrame({**{f"mix.d{j}": r[:, j] for j in range(m)}, "loss.target": loss})
    fit = fit_mixture(t, kind="direct", model="gbdt")
    out = optimize_mixture(fit, 1e6, 1e9, constraints=make_constraints(fit, "uniform"))
    found = np.array([out["mixture"][f"d{j}"] for j in range(m)])
    assert "RegMix" in out["search"]
    assert np.abs(found - best).max() < 0.1
    assert out["kl_to_prior"] == pytest.approx(float(np.sum(found * np.log(found * m))), rel=1e-6)


def test_constraints_hold_and_are_reported():
    t, _ = law_table(4, 80, n_loss=1, seed=5)
    fit = fit_mixture(t, kind="direct", model="law", cv_folds=3)
    cons = make_constraints(fit, "uniform", minimum={"d0": 0.0}, maximum={"d0": 0.3}, kl_max=0.2)
    out = optimize_mixture(fit, 1e6, 1e9, constraints=cons)
    r = np.array([out["mixture"][f"d{j}"] for j in range(4)])
    assert r[0] <= 0.3 + 1e-6 and out["kl_to_prior"] <= 0.2 + 1e-6
    assert any("constraint" in w for w in out["warnings"])
    with pytest.raises(UsageError, match="sum"):
        make_constraints(fit, {"d0": 0.5, "d1": 0.2, "d2": 0.1, "d3": 0.1})
    with pytest.raises(UsageError, match="unknown domain"):
        make_constraints(fit, {"zz": 1.0})


def test_ye_et_al_5_domain_explicit_law():
    """Ye et al. 2024, 5-domain experiment at 70M, step 30,000: the explicit law (one law per domain
    group, combined with the validation weights) fitted on all 26 mixtures as their notebook does
    has MAE 0.0086 on 6 of them; ours 0.0106 averaged over 10 random choices of the 6 (the same
    magnitude). Fitted on 20 and scored on the other 6, it is ~0.028: held out, the law is 3x worse
    than the paper's figure."""
    t = datasets.load("mixing-laws-5domain")
    x = t[(t["model"] == "70M") & (t["step"] == 30000)].reset_index(drop=True)
    assert len(x) == 26
    groups = list(datasets.FIVE_GROUPS)
    w = {g: sum(datasets.PILE_VALID_WEIGHTS[s] for s in datasets.FIVE_GROUPS[g]) for g in groups}
    cols = ["run_id", *(f"mix.{g}" for g in groups), *(f"loss.{g}" for g in groups)]
    all26 = fit_mixture(x[cols], kind="direct", model="law")
    in_sample, held_out = [], []
    for seed in range(2):
        perm = np.random.default_rng(seed).permutation(26)
        train, test = x.iloc[perm[:20]], x.iloc[perm[20:]]
        r = test[[f"mix.{g}" for g in groups]].to_numpy()
        for fit, sink in ((all26, in_sample), (fit_mixture(train[cols], kind="direct", model="law"), held_out)):
            pred = predict_table(fit, r)
            overall = sum(w[g] * pred[g][0] for g in groups)
            sink.append(np.mean(np.abs(overall - test["loss.overall"].to_numpy())))
    assert 0.004 < np.mean(in_sample) < 0.02
    assert np.mean(held_out) < 0.05


def cli(*args):
    p = subprocess.run([sys.executable, "-m", "scaling.mixture", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixw")
    t, _ = law_table(3, 60, n_loss=2, seed=6)
    t.to_csv(d / "runs.csv", index=False)
    code, out, err = cli("fit", d / "runs.csv", "--model", "law", "--out", d / "mix.json")
    assert code == 0, err
    return d


@pytest.mark.parametrize("args, message", [
    (["optimize", "--fit", "{d}/mix.json", "--params", "1e6", "--tokens", "1e9", "--min", "zz=0.1"], "unknown domain"),
    (["optimize", "--fit", "{d}/mix.json", "--params", "1e6", "--tokens", "1e9", "--max", "zz=0.1"], "unknown domain"),
    (["optimize", "--fit", "{d}/mix.json", "--params", "1e6", "--tokens", "1e9", "--unique-tokens", "zz=1M"], "unknown domain"),
    (["optimize", "--fit", "{d}/mix.json", "--params", "1e6", "--tokens", "1e9", "--prior", "{d}/prior.json"], "sum"),
    (["fit", "{d}/runs.csv", "--domains", "d0,zz"], "unknown domain"),
    (["fit", "{d}/nomix.csv"], "no mixture columns"),
    (["fit", "{d}/negative.csv"], "negative"),
    (["fit", "{d}/few.csv", "--model", "log-linear"], "at least"),
    (["predict", "--fit", "{d}/other.json", "--mixtures", "{d}/runs.csv"], "not a mixture fit"),
    (["evaluate", "--fit", "{d}/other.json", "{d}/runs.csv"], "not a mixture fit"),
    (["predict", "--fit", "{d}/mix.json", "--mixtures", "{d}/nomix.csv"], "no mix.<domain> columns"),
])
def test_cli_bad_input_is_one_error_line(small_fit, args, message):
    d = small_fit
    (d / "prior.json").write_text(json.dumps({"d0": 0.5, "d1": 0.2, "d2": 0.1}))
    (d / "other.json").write_text(json.dumps({"law": "chinchilla", "params": {"A": 1}}))
    t = pd.read_csv(d / "runs.csv")
    t.drop(columns=[c for c in t if c.startswith("mix.")]).to_csv(d / "nomix.csv", index=False)
    neg = t.copy()
    neg.loc[0, "mix.d0"], neg.loc[0, "mix.d1"] = -0.1, neg.loc[0, "mix.d1"] + 0.1
    neg.to_csv(d / "negative.csv", index=False)
    t.iloc[:2].to_csv(d / "few.csv", index=False)
    out_path = d / "should_not_exist.csv"
    code, out, err = cli(*[a.format(d=d) for a in args], *(["--out", out_path] if args[0] in ("predict", "fit") else []))
    # what is wrong with a file (a fit of another kind, a table without mixtures, too few of them) is a data
    # error (exit 1); a flag naming what the data lacks is a usage error (exit 2)
    data_errors = ("not a mixture fit", "no mixture columns", "negative", "at least", "no mix.<domain> columns")
    assert code == (1 if message in data_errors else 2) and err.startswith("error:") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out_path.exists()


def test_missing_lightgbm_is_one_error_line(small_fit):
    code = ("import sys; sys.modules['lightgbm'] = None\n"
            "from scaling.cli import run_cli\nfrom scaling.mixture import main\n"
            f"sys.exit(run_cli(main, ['fit', '{small_fit}/runs.csv', '--model', 'gbdt']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 2 and "needs LightGBM" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_cli_predict_evaluate_and_optimize(small_fit):
    d = small_fit
    code, out, err = cli("predict", "--fit", d / "mix.json", "--mixtures", d / "runs.csv", "--out", d / "pred.parquet")
    assert code == 0, err
    pred = pd.read_parquet(d / "pred.parquet")
    assert {"run_id", "mix.d0", "pred.d0", "pred.d0.lo", "pred.d0.hi"} <= set(pred.columns) and len(pred) == 60
    code, out, err = cli("evaluate", "--fit", d / "mix.json", d / "runs.csv", "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["domains"]["d0"]["spearman"] > 0.9 and ev["domains"]["d0"]["n"] == 60
    code, out, err = cli("optimize", "--fit", d / "mix.json", "--params", "1e6", "--tokens", "1e9", "--kl-max", "0.1",
                         "--prior", "uniform", "--json")
    assert code == 0, err
    opt = json.loads(out)
    assert opt["kl_to_prior"] <= 0.1 + 1e-6 and set(opt["losses_interval"]) == {"d0", "d1"}



def test_a_predictor_worse_than_the_mean_is_never_chosen_and_predictions_stay_in_band():
    """Selection scores calibration as well as rank: a candidate that ranks best but misses by more
    than the losses' own spread loses to a calibrated one; stored predictors hold their predictions
    within the band of plausible losses, and flag mixtures outside the trained proportions."""
    from scaling.mixture import models as mm
    y = np.array([3.0, 3.2, 3.4, 3.1, 3.3])
    cv = {"law": {"spearman": 0.6, "mae": 0.08}, "law+log-linear+gbdt": {"spearman": 0.83, "mae": 1.4e4},
          "log-linear": {"spearman": 0.5, "mae": 0.09}}
    assert mm.choose(cv) == "law+log-linear+gbdt"            # rank alone (the old rule)
    assert mm.choose(cv, y) == "law" and mm.calibrated(cv, y) == ["law", "log-linear"]   # spread 0.12
    cv["mean"] = {"spearman": float("nan"), "mae": 0.085}     # the yardstick, cross-validated
    assert mm.calibrated(cv) == ["law", "mean"] and mm.choose(cv) == "law"
    assert mm.choose({"gbdt": {"spearman": 0.9, "mae": 5.0}, "law": {"spearman": 0.1, "mae": 3.0},
                      "mean": {"spearman": float("nan"), "mae": 0.1}}) == "mean"
    r = np.array([[0.2, 0.8], [0.5, 0.5], [0.7, 0.3], [0.4, 0.6], [0.6, 0.4]])
    cand = mm.with_bounds({"model": "log-linear", "state": {"beta": [40.0, -40.0]}}, r, y)
    pred = mm.predict(cand, np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert pred.tolist() == pytest.approx([2.6, 3.8])      # exp(0) = 1 and exp(40): held in [3.0 - 0.4, 3.4 + 0.4]
    assert mm.outside(cand, np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == [False, True]
