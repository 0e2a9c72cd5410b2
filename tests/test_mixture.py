"""Data mixing laws (Ye et al. 2024) fitted directly and nested over scaling laws, mixtures under
repetition (Muennighoff et al. 2023), and small-to-large transfer of mixture rankings.

Synthetic truth: per domain i, L_i(N, D, r) = E_i + (A_i / N^alpha_i + B_i / D^beta_i) exp(t_i . r).
At any fixed (N, D) that is exactly Ye et al.'s law, and per mixture exactly a Chinchilla law, so
the nested pipeline can recover it; the domains' exponents differ, so the optimum moves with scale.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from scaling.cli import UsageError, run_cli
from scaling.laws.data_constrained import effective_data
from scaling.laws.mixture import MixingLaw, Proportions, effective_mixture, normalise, simplex_grid
from scaling.mixture import (MixtureFit, fit_mixture, main, optimize_mixture, rank_agreement, read_mixtures,
                             transfer)
from scaling.store import write_run

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("text", "code")
TRUTH = {"text": dict(E=1.6, A=300.0, alpha=0.34, B=400.0, beta=0.30, t=(-1.2, 0.0)),
         "code": dict(E=0.8, A=20.0, alpha=0.18, B=100.0, beta=0.18, t=(-0.3, -2.0))}
CODE_SHARES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def true_loss(domain, N, D, code):
    p = TRUTH[domain]
    code = np.asarray(code, float)
    r = np.stack([1 - code, code], axis=-1)
    return p["E"] + (p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]) * np.exp(r @ np.array(p["t"]))


def true_optimum(N, D):
    """Dense grid search (step 1e-5) of the equal-weight mean loss over the code share."""
    code = np.linspace(0, 1, 100_001)
    return code[np.argmin(true_loss("text", N, D, code) + true_loss("code", N, D, code))]


def runs_table(sizes, tokens_per_size, shares=CODE_SHARES) -> pd.DataFrame:
    rows = []
    for c in shares:
        for n in sizes:
            for d in tokens_per_size(n):
                rows.append({"run_id": f"c{c}-n{n:.3g}-d{d:.3g}", "params": n, "tokens": d, "status": "ok",
                             "mix.text": 1 - c, "mix.code": c,
                             **{f"loss.{k}": float(true_loss(k, n, d, c)) for k in DOMAINS},
                             "loss": float((1 - c) * true_loss("text", n, d, c) + c * true_loss("code", n, d, c))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def nested_fit() -> MixtureFit:
    """Six mixtures x 3 sizes x 3 token counts: enough for a Chinchilla law per mixture."""
    table = runs_table(np.geomspace(1e6, 1e7, 3), lambda n: np.geomspace(2e7, 2e8, 3))
    return fit_mixture(table)


# --- the law ---------------------------------------------------------------------------------------
def test_mixing_law_gradient_matches_finite_differences():
    law = MixingLaw(("text", "code", "math"))
    rng = np.random.default_rng(0)
    r = rng.dirichlet(np.ones(3), size=7)
    theta = np.array([[0.3, -0.5, 1.0, -2.0, 0.7]])
    _, grads = law.log_predict(theta, Proportions(r), grad=True)
    for j in range(theta.shape[1]):
        h = np.zeros_like(theta)
        h[0, j] = 1e-6
        fd = (law.log_predict(theta + h, Proportions(r)) - law.log_predict(theta - h, Proportions(r))) / 2e-6
        assert np.allclose(grads[j], fd, atol=1e-8)


def test_a_shift_of_t_is_the_same_law_so_fits_report_sum_zero_t():
    """sum_j r_j = 1, so (k, t) and (k e^-s, t + s) predict the same losses (Ye et al.'s form)."""
    law = MixingLaw(("text", "code"))
    r = simplex_grid(2)[::50]
    k, t = normalise(0.7, [0.4, 2.4])
    assert sum(t) == pytest.approx(0.0)
    assert np.allclose(law.loss({"c": 1.0, "k": 0.7, "t": [0.4, 2.4]}, r), law.loss({"c": 1.0, "k": k, "t": t}, r))


def test_direct_fit_recovers_c_k_t_on_noise_free_data():
    """Three components, ten mixtures, losses exactly from Ye et al.'s law: c, k, t come back."""
    domains = ("text", "code", "math")
    truth = {"text": (1.5, 0.9, [-1.5, 0.5, 0.2]), "code": (0.6, 1.4, [0.3, -2.5, -0.4]),
             "math": (0.9, 0.5, [0.0, -0.8, -3.0])}
    r = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [.6, .2, .2],
                  [.2, .6, .2], [.2, .2, .6], [1 / 3, 1 / 3, 1 / 3]])
    law = MixingLaw(domains)
    table = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    for d, (c, k, t) in truth.items():
        table[f"loss.{d}"] = law.loss({"c": c, "k": k, "t": t}, r)
    fit = fit_mixture(table)
    assert fit.kind == "direct" and fit.domains == list(domains)
    for d, (c, k, t) in truth.items():
        k_canon, t_canon = normalise(k, t)
        got = fit.params[d]
        assert got["c"] == pytest.approx(c, rel=1e-4)
        assert got["k"] == pytest.approx(k_canon, rel=1e-4)
        assert np.allclose(got["t"], t_canon, atol=1e-3)
        assert fit.r2[d] == pytest.approx(1.0, abs=1e-9)


def test_direct_fit_bootstrap_gives_intervals_and_cannot_price_repetition():
    """Runs at one scale with 1% noise: intervals from resampled runs; a direct fit has no token
    dimension, so unique-token limits need a nested fit."""
    rng = np.random.default_rng(3)
    shares = np.repeat(np.linspace(0, 1, 6), 2)
    table = pd.DataFrame({"params": 1e7, "tokens": 2e8, "mix.text": 1 - shares, "mix.code": shares,
                          **{f"loss.{d}": true_loss(d, 1e7, 2e8, shares) * np.exp(rng.normal(0, 0.01, len(shares)))
                             for d in DOMAINS}})
    fit = fit_mixture(table, bootstrap=40, seed=1)
    assert fit.kind == "direct" and fit.settings["bootstrap"]["n"] == 40
    lo, hi = fit.ci["code"]["t"][1]
    assert lo < fit.params["code"]["t"][1] < hi
    out = optimize_mixture(fit, 1e7, 2e8)
    lo, hi = out["ci"]["mixture"]["code"]
    assert out["warnings"] == [] and lo <= out["mixture"]["code"] <= hi
    assert abs(out["mixture"]["code"] - true_optimum(1e7, 2e8)) < 0.05
    assert any("does not model scale" in w for w in optimize_mixture(fit, 1e8, 2e9)["warnings"])
    with pytest.raises(UsageError, match="needs a nested fit"):
        optimize_mixture(fit, 1e7, 2e8, unique_tokens={"code": 1e6})


# --- nested: the optimum at a larger scale ---------------------------------------------------------
def test_nested_fit_recovers_the_optimal_mixture_at_10x_scale(nested_fit):
    """Ye et al. 2024's pipeline (scaling law per mixture -> predictions at the target -> mixing law)
    finds the true optimum at 10x the largest run, where the optimum at the largest run is wrong."""
    assert nested_fit.kind == "nested" and nested_fit.scaling_law == "chinchilla"
    N, D = 1e8, 2e9
    out = optimize_mixture(nested_fit, N, D)
    truth = true_optimum(N, D)
    assert abs(out["mixture"]["code"] - truth) < 0.02
    assert abs(true_optimum(1e7, 2e8) - truth) > 0.05          # the scale matters here
    assert sum(out["mixture"].values()) == pytest.approx(1.0, abs=1e-12)
    best = (true_loss("text", N, D, truth) + true_loss("code", N, D, truth)) / 2
    assert out["loss"] == pytest.approx(best, rel=1e-3)
    assert any("outside the fitted range" in w for w in out["warnings"])
    assert out["ci"] is None


def test_tight_unique_code_moves_the_optimum_towards_text_and_repeats_code(nested_fit):
    """With 2M unique code tokens for a 2B-token run, code is repeated (Muennighoff et al. 2023):
    its repeats soon lose their worth, so the optimum holds far less code than without the limit."""
    free = optimize_mixture(nested_fit, 1e8, 2e9)
    limited = optimize_mixture(nested_fit, 1e8, 2e9, unique_tokens={"code": 2e6})
    assert limited["mixture"]["code"] < free["mixture"]["code"] - 0.05
    assert limited["epochs"]["code"] > 1 and limited["epochs"]["text"] == 1.0
    assert limited["epochs"]["code"] == pytest.approx(limited["mixture"]["code"] * 2e9 / 2e6)
    assert limited["effective_mixture"]["code"] < limited["mixture"]["code"]
    assert limited["loss"] > free["loss"]
    # a limit that is never reached changes nothing
    loose = optimize_mixture(nested_fit, 1e8, 2e9, unique_tokens={"code": 1e10})
    assert loose["mixture"]["code"] == pytest.approx(free["mixture"]["code"], abs=1e-6)


def test_effective_mixture_follows_the_data_constrained_law():
    r = np.array([[0.9, 0.1], [0.5, 0.5], [1.0, 0.0]])
    eff = effective_mixture(r, 1e9, [np.inf, 2e7], 15.4)
    assert np.allclose(eff.effective_tokens[:, 0], r[:, 0] * 1e9)
    assert np.allclose(eff.effective_tokens[:2, 1], effective_data(r[:2, 1] * 1e9, 2e7, 15.4))
    assert eff.effective_tokens[2, 1] == 0 and eff.epochs[2, 1] == 0
    assert np.allclose(eff.epochs[:2, 1], r[:2, 1] * 1e9 / 2e7)
    assert np.allclose(eff.proportions.sum(axis=1), 1.0)


# --- transfer --------------------------------------------------------------------------------------
def transfer_table(small, large, shares=None):
    shares = shares if shares is not None else np.linspace(0, 1, len(small))
    rows = []
    for n, losses in ((1e6, small), (1e7, large)):
        for c, value in zip(shares, losses):
            rows.append({"params": n, "mix.text": 1 - c, "mix.code": c, "loss.text": value,
                         "loss.code": 10 - value, "loss": value + 1})
    return pd.DataFrame(rows)


def test_transfer_statistics_equal_scipy():
    small = [3.1, 2.9, 3.3, 3.0, 2.8, 3.5, 3.2]
    large = [2.6, 2.5, 2.9, 2.4, 2.45, 2.95, 2.7]
    out = transfer(transfer_table(small, large), 1e6, 1.02e7, bootstrap=200)
    s = out["domains"]["text"]
    assert out["n_mixtures"] == 7
    assert s["spearman"] == pytest.approx(spearmanr(small, large).statistic, abs=1e-12)
    assert s["kendall"] == pytest.approx(kendalltau(small, large).statistic, abs=1e-12)
    assert out["overall"]["spearman"] == pytest.approx(s["spearman"])
    assert s["ci"]["spearman"][0] <= s["spearman"] <= s["ci"]["spearman"][1]
    with_ties = rank_agreement([[1, 1, 2, 3, 3]], [[1, 2, 2, 5, 4]])
    assert with_ties["spearman"][0] == pytest.approx(spearmanr([1, 1, 2, 3, 3], [1, 2, 2, 5, 4]).statistic)
    assert with_ties["kendall"][0] == pytest.approx(kendalltau([1, 1, 2, 3, 3], [1, 2, 2, 5, 4]).statistic)


def test_decision_accuracy_counts_pairs_ordered_the_same():
    """Small [1, 2, 3, 4] vs large [1, 3, 2, 4]: of 6 pairs only (2nd, 3rd) flips -> 5/6."""
    out = transfer(transfer_table([1, 2, 3, 4], [1, 3, 2, 4]), 1e6, 1e7, bootstrap=0)
    assert out["domains"]["text"]["decision_accuracy"] == pytest.approx(5 / 6)
    assert out["domains"]["code"]["decision_accuracy"] == pytest.approx(5 / 6)
    assert rank_agreement([[1, 1, 2]], [[1, 2, 3]])["decision_accuracy"][0] == pytest.approx(2.5 / 3)


# --- reading runs ----------------------------------------------------------------------------------
def test_code_fraction_gives_mix_columns_when_they_are_absent():
    table = pd.DataFrame({"code_fraction": [0.0, 0.3, 1.0], "loss.text": [2.0, 2.1, 3.0]})
    runs = read_mixtures(table, need_scale=False)
    assert runs.domains == ["text", "code"] and runs.loss_domains == ["text"]
    assert np.allclose(runs.r, [[1.0, 0.0], [0.7, 0.3], [0.0, 1.0]])


# --- CLI -------------------------------------------------------------------------------------------
def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_cli(main, [str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Five mixtures x three sizes at 20 tokens per parameter, written through the store."""
    path = tmp_path_factory.mktemp("mix") / "results"
    table = runs_table([1e6, 3e6, 1e7], lambda n: [20 * n], shares=(0.0, 0.25, 0.5, 0.75, 1.0))
    for row in table.to_dict("records"):
        write_run(path, row)
    write_run(path, {**row, "run_id": "failed", "status": "diverged", "mix.code": 0.5})
    return path


@pytest.fixture(scope="module")
def fit_file(store, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fit") / "mix.json"
    code, out, err = cli("fit", store, "--domains", "text,code", "--bootstrap", "20", "--out", path)
    assert code == 0, err
    assert "law: mixture" in out and "compute" in out
    return path


def test_cli_fit_then_optimize_gives_a_mixture(fit_file):
    fit_path = fit_file
    saved = json.loads(fit_path.read_text())
    assert saved["law"] == "mixture" and saved["kind"] == "nested" and saved["scaling_law"] == "compute"
    assert saved["domains"] == ["text", "code"] and set(saved["params"]["code"]) == {"c", "k", "t"}
    assert saved["n_points"] == 15 and len(saved["mixtures"]) == 5
    assert len(saved["settings"]["bootstrap"]["mixture_counts"]) == 20
    assert MixtureFit.load(fit_path).to_dict() == saved
    code, out, err = cli("optimize", "--fit", fit_path, "--params", "3e7", "--tokens", "6e8",
                         "--weights", "text=2,code=1", "--unique-tokens", "code=2M", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"mixture", "loss", "losses", "ci", "epochs"} <= set(result)
    assert sum(result["mixture"].values()) == pytest.approx(1.0)
    assert result["epochs"]["code"] > 1
    assert result["ci"]["draws"] > 10 and set(result["ci"]["mixture"]) == {"text", "code"}
    assert all(lo <= hi for lo, hi in result["ci"]["mixture"].values())
    assert err.startswith("warning:") and "outside the fitted range" in err
    code, out, _ = cli("optimize", "--fit", fit_path, "--params", "1e7", "--tokens", "2e8")
    assert code == 0 and "optimal mixture" in out


def test_cli_transfer_json(store):
    code, out, err = cli("transfer", store, "--small-params", "1M", "--large-params", "10M", "--json",
                         "--bootstrap", "50")
    assert code == 0, err
    result = json.loads(out)
    assert result["n_mixtures"] == 5 and set(result["domains"]) == {"text", "code"}
    assert result["overall"]["decision_accuracy"] is not None


def _bad_sum(tmp):
    path = tmp / "bad.csv"
    t = runs_table([1e6, 3e6, 1e7], lambda n: [20 * n])
    t.loc[4, "mix.code"] += 0.05          # beyond the 1e-2 that is renormalised
    t.to_csv(path, index=False)
    return path


def _two_mixtures(tmp):
    path = tmp / "two.csv"
    runs_table([1e6, 3e6], lambda n: [20 * n], shares=(0.2, 0.8)).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("make, args, message", [
    (_bad_sum, [], "sum to"),
    (_two_mixtures, [], "need at least 3 distinct mixtures"),
    (_two_mixtures, ["--domains", "text,wiki"], "unknown domain"),
    (lambda tmp: tmp / "missing.csv", [], "no such file"),
])
def test_cli_fit_errors_are_one_line_and_write_nothing(tmp_path, make, args, message):
    out_path = tmp_path / "fit.json"
    code, out, err = cli("fit", make(tmp_path), *args, "--out", out_path)
    assert code in (1, 2) and out == ""
    assert err.count("\n") == 1 and err.startswith("error:") and message in err
    assert not out_path.exists()


@pytest.mark.parametrize("args, message", [
    (["--weights", "text=1,wiki=1"], "unknown domain 'wiki' in --weights"),
    (["--unique-tokens", "math=1M"], "unknown domain 'math' in --unique-tokens"),
    (["--unique-tokens", "code"], "malformed --unique-tokens"),
    (["--params", "-3"], "size"),
])
def test_cli_optimize_errors_are_one_line(fit_file, args, message):
    fit_path = fit_file
    target = {"--params": "3e7", "--tokens": "6e8"}
    target.update(zip(args[::2], args[1::2]))
    code, out, err = cli("optimize", "--fit", fit_path, *[x for kv in target.items() for x in kv])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error:") and message in err


def test_cli_rejects_a_fit_that_is_not_a_mixture_fit():
    code, _, err = cli("optimize", "--fit", ROOT / "fits" / "hoffmann2022.json", "--params", "1e8",
                       "--tokens", "2e9")
    assert code == 1 and "is a scaling fit, not a mixture fit" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["fit", "optimize", "transfer"])
def test_help_ends_with_an_example(command):
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "example:\n  python -m scaling.mixture " + command in out.getvalue()


def test_module_entry_point_gives_no_tracebacks(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "scaling.mixture", "transfer", _two_mixtures(tmp_path),
                          "--small-params", "5M", "--large-params", "3M"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert "no runs within 5%" in bad.stderr


def test_mixture_plot_kind_draws_a_two_component_fit(nested_fit, tmp_path):
    from scaling.plot import main as plot_main
    path = tmp_path / "mix.json"
    nested_fit.save(path)
    out = tmp_path / "mixture.png"
    assert plot_main(["mixture", "--fit", str(path), "--params", "1e8", "--tokens", "2e9", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    # the optimum is drawn from what scaling.mixture optimize wrote: the plot never optimises
    from scaling.mixture import main as mixture_main
    from scaling.plot import mixture_plot
    opt = tmp_path / "opt.json"
    assert mixture_main(["optimize", "--fit", str(path), "--params", "1e8", "--tokens", "2e9", "--out", str(opt)]) == 0
    drawn = mixture_plot(nested_fit, 1e8, 2e9, tmp_path / "m2.png", optimum=opt)
    assert drawn["optimum"] == pytest.approx(json.loads(opt.read_text())["mixture"][nested_fit.domains[1]])
    assert mixture_plot(nested_fit, 1e8, 2e9, tmp_path / "m3.png")["optimum"] is None
    from scaling.errors import DataError
    with pytest.raises(DataError, match="the optimum is at params"):
        mixture_plot(nested_fit, 3e8, 2e9, tmp_path / "m4.png", optimum=opt)
    from scaling.cli import UsageError
    with pytest.raises(UsageError, match="--params and --tokens"):
        plot_main(["mixture", "--fit", str(path), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_per_mixture_warnings_are_one_line_per_kind_and_listed_in_full():
    """However many per-mixture fits warn, the fit's warnings hold one line per kind with its count;
    every message is kept in the diagnostics (what --verbose prints). 2% noise on 9 runs per
    mixture leaves E, A, B ill-determined in several of the 12 fits."""
    table = runs_table(np.geomspace(1e6, 1e7, 3), lambda n: np.geomspace(2e7, 2e8, 3))
    rng = np.random.default_rng(0)
    for c in [c for c in table.columns if c.startswith("loss")]:
        table[c] = table[c] * np.exp(rng.normal(0, 0.02, len(table)))
    fit = fit_mixture(table)
    every = fit.settings["diagnostics"]["per_mixture_warnings"]
    kinds = [w for w in fit.warnings if "per-mixture" in w]
    assert len(every) > len(kinds) >= 1
    assert all(w.endswith("of 12 per-mixture chinchilla fits (--verbose lists them)") for w in kinds)
    assert len(kinds) == len({w.split(" in ")[0] for w in kinds}) <= 4        # one line per kind
    assert all(w.startswith("mixture m") and ", loss." in w for w in every)
