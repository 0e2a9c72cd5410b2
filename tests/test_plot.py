"""Each plot kind writes a non-empty image; bad input writes nothing."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling import fit as F
from scaling import store
from scaling.laws import get_law
from scaling.plot import main

ROOT = Path(__file__).resolve().parents[1]
TRUTH = dict(A=482.01, B=2085.43, E=1.82, alpha=0.3478, beta=0.3658)


@pytest.fixture(scope="module")
def store_and_fit(tmp_path_factory):
    """An isoFLOP store generated from Besiroglu et al.'s fit: 3 budgets x 6 sizes."""
    d = tmp_path_factory.mktemp("plot")
    law = get_law("chinchilla")
    for c in (1e18, 1e19, 1e20):
        for n in np.geomspace(3e7, 3e9, 6):
            tokens = c / (6 * n)
            store.write_run(d / "store", dict(run_id=f"r{c:.0e}-{n:.0f}", params=n, tokens=tokens,
                                              unique_tokens=tokens, loss=float(law.predict(TRUTH, n, tokens))))
    fit = F.fit(store.read_runs(d / "store"), want_profiles=False)
    fit.save(d / "fit.json")
    return d


@pytest.mark.parametrize("argv", [
    ["isoflop", "{d}/store", "--fit", "{d}/fit.json", "--out", "{d}/iso.png"],
    ["isoflop", "{d}/store", "--out", "{d}/iso_nofit.svg"],
    ["residuals", "{d}/store", "--fit", "{d}/fit.json", "--out", "{d}/res.png"],
    ["return-on-repetition", "--fit", str(ROOT / "fits/muennighoff2023_c4.json"), "--out", "{d}/ror.png"],
    ["contour", "--fit", str(ROOT / "fits/muennighoff2023_c4.json"), "--flops", "1e22", "--unique-tokens", "25e9",
     "--out", "{d}/contour.png"],
    ["backtest", "--result", "{d}/backtest.json", "--out", "{d}/backtest.png"],
])
def test_each_plot_kind_writes_an_image(store_and_fit, argv):
    argv = [a.format(d=store_and_fit) for a in argv]
    if argv[0] == "backtest":                     # the result a plot draws: scaling.backtest --out
        from scaling import backtest
        assert backtest.main([str(store_and_fit / "store"), "--bootstrap", "20", "--out", argv[2]]) == 0
    assert main(argv) == 0
    out = Path(argv[-1])
    assert out.stat().st_size > 5000



@pytest.mark.parametrize("argv", [
    ["bogus", "--out", "x.png"],
    ["return-on-repetition", "--fit", str(ROOT / "fits/hoffmann2022.json"), "--out", "x.png"],
    ["isoflop", "missing-dir", "--out", "x.png"],
    ["residuals", "missing-dir", "--out", "x.png"],
    ["backtest", "missing-dir", "--out", "x.png"],
    ["contour", "--fit", str(ROOT / "fits/muennighoff2023_c4.json"), "--flops", "-1", "--unique-tokens", "1e9",
     "--out", "x.png"],
])
def test_bad_input_is_one_error_line_and_no_file(tmp_path, argv):
    proc = subprocess.run([sys.executable, "-m", "scaling.plot", *argv], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode in (1, 2)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# golden tests: the arrays each line and marker is drawn from, against known truth

def test_isoflop_draws_the_runs_the_law_and_both_optima(store_and_fit):
    from scaling.fit.approach2 import approach2
    from scaling.accounting import chinchilla_optimal
    from scaling.plot import isoflop
    from scaling.results import FitResult
    d = store_and_fit
    fit = FitResult.load(d / "fit.json")
    fit.settings["approach2"] = approach2(store.read_runs(d / "store"), bootstrap=50).to_dict()
    drawn = isoflop(d / "store", fit, d / "golden_iso.png")
    assert [round(np.log10(b["flops"])) for b in drawn["budgets"]] == [18, 19, 20]
    for b in drawn["budgets"]:
        assert b["params"] == sorted(b["params"]) and len(b["params"]) == 6
        truth = get_law("chinchilla").predict(TRUTH, np.array(b["params"]), b["flops"] / (6 * np.array(b["params"])))
        assert np.allclose(b["loss"], truth)                 # the points are the runs
        n_true = float(chinchilla_optimal(b["flops"], TRUTH["E"], TRUTH["A"], TRUTH["B"], TRUTH["alpha"], TRUTH["beta"])[0])
        assert b["fitted_opt"][0] == pytest.approx(n_true, rel=0.02)      # star: the law's optimum
        assert b["approach2_ci"][0] <= b["approach2_opt"][0] <= b["approach2_ci"][1]
        assert b["approach2_opt"][0] == pytest.approx(n_true, rel=0.25)   # diamond: the sweep's minimum
        i = int(np.argmin(b["curve_loss"]))
        assert b["curve_params"][i] == pytest.approx(n_true, rel=0.05)    # the curve bottoms out there


def test_return_on_repetition_draws_the_papers_figure():
    """Muennighoff et al. 2023 with their C4 fit: 4 epochs almost as good as unique data, 40 epochs
    close to the plateau; D'/U_D is one curve, 1 + R_D* (1 - exp(-(e - 1) / R_D*))."""
    from scaling.plot import return_on_repetition
    from scaling.results import FitResult
    import tempfile
    fit = FitResult.load("muennighoff2023_c4")
    with tempfile.TemporaryDirectory() as tmp:
        drawn = return_on_repetition(fit, Path(tmp) / "ror.png")
    rd = fit.params["rd_star"]
    eff = drawn["effective"]
    e = np.array(eff["epochs"])
    assert np.allclose(eff["ratio"], 1 + rd * (1 - np.exp(-(e - 1) / rd)))
    uline = drawn["unique_line"]
    for m in drawn["marks"]:
        unique_loss = np.interp(np.log(m["tokens"]), np.log(uline["tokens"]), uline["loss"])
        curve = next(c for c in drawn["curves"] if c["unique"] == m["unique"])
        plateau = curve["loss"][-1]
        if m["epochs"] == 4 and m["unique"] >= 20 * drawn["params"]:
            # a model not too large for its unique data, repeating it 4 times: within 1% of the loss
            # of as many unique tokens (the paper's "almost as good as unique data")
            assert 0 <= m["loss"] / unique_loss - 1 < 0.01
        elif m["epochs"] == 4:
            assert m["loss"] > unique_loss
        else:                     # 40 epochs: most of the way to what infinite repetition gives
            first = curve["loss"][0]
            assert (first - m["loss"]) / (first - plateau) > 0.9
    assert len(drawn["curves"]) == 3 and len(drawn["marks"]) == 6


def test_contour_marks_the_papers_allocation():
    from scaling.plot import contour
    from scaling.predict import allocate
    from scaling.results import FitResult
    import tempfile
    fit = FitResult.load("muennighoff2023_c4")
    with tempfile.TemporaryDirectory() as tmp:
        drawn = contour(fit, 1e22, 25e9, Path(tmp) / "c.png")
    best = allocate(fit, 1e22, 25e9)
    assert drawn["optimum"] == [best["epochs"], best["params"]]
    loss = np.array(drawn["loss"])
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    assert loss.shape == (len(drawn["epochs"]), len(drawn["params"]))
    # the isoFLOP line passes through the optimum: D = C / 6N at N_opt gives its epochs
    k = int(np.argmin(np.abs(np.log(np.array(drawn["params"]) / best["params"]))))
    assert drawn["isoflop_epochs"][k] == pytest.approx(best["epochs"], rel=0.05)


def test_residuals_and_backtest_draw_the_fit_on_exact_data(store_and_fit):
    from scaling.plot import backtest_plot, residuals
    from scaling.results import FitResult
    d = store_and_fit
    res = residuals(d / "store", FitResult.load(d / "fit.json"), d / "golden_res.png")
    assert len(res["residual"]) == 18 and np.max(np.abs(res["residual"])) < 2e-3
    from scaling import backtest, columns as cols
    from scaling.sources import read_table
    result = backtest.backtest(cols.in_convention(cols.canonicalise(read_table(d / "store")))[0], None,
                               "largest-compute", bootstrap=200)
    bt = backtest_plot(result, d / "golden_bt.png")
    assert len(bt["observed"]) == 6 and bt["mape"] < 0.5
    assert np.allclose(bt["observed"], bt["predicted"], rtol=5e-3)


def test_an_approach2_backtest_is_drawn_from_its_file(tmp_path, capsys):
    """``scaling.backtest --approach 2 --out`` writes a file of its own kind; ``scaling.plot backtest``
    draws it (the minima, the line carried to the held-out budget, its bands, the held-out minimum)
    and a file of another kind is one error line."""
    from scaling import backtest
    from scaling.cli import run_cli
    from scaling.plot import backtest_plot, main
    from scaling.schemas import kind_of, read_json
    result = tmp_path / "a2.json"
    assert run_cli(backtest.main, ["dataset:llama3-isoflops", "--where", "experiment=llama_3__raw_loss",
                                   "--approach", "2", "--bootstrap", "50", "--out", str(result)]) == 0
    assert kind_of(read_json(result)) == "backtest-approach2"
    drawn = backtest_plot(result, tmp_path / "a2.png")
    assert (tmp_path / "a2.png").stat().st_size > 10_000 and len(drawn["budgets"]) == 10
    assert drawn["predicted"] > 1.35 * drawn["minimum"]            # Llama 3 at 1e22: +48%
    capsys.readouterr()
    fit_file = Path(__file__).resolve().parents[1] / "fits" / "hoffmann2022.json"       # a scaling fit
    assert run_cli(main, ["backtest", "--result", str(fit_file), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a backtest" in err[0], err
