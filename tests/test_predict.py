"""Predictions reproduce the datablations paper and agree with closed forms."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling import predict as P
from scaling.laws import get_law
from scaling.results import FitResult

FITS = Path(__file__).resolve().parents[1] / "fits"
C4 = FitResult.load(FITS / "muennighoff2023_c4.json")
HOFFMANN = FitResult.load(FITS / "hoffmann2022.json")


def test_c4_allocation_is_the_papers():
    """Muennighoff et al. 2023: C = 1e22, U_D = 25e9 -> N ~ 7.03e9, D ~ 2.372e11, 9.49 epochs."""
    out = P.allocate(C4, 1e22, 25e9)
    assert out["params"] == pytest.approx(7.03e9, rel=0.01)
    assert out["tokens"] == pytest.approx(2.372e11, rel=0.01)
    assert out["epochs"] == pytest.approx(9.49, rel=0.01)
    # with less data than Chinchilla wants, the constrained optimum is smaller and worse
    assert out["params"] < out["chinchilla"]["params"] and out["loss"] > out["chinchilla"]["loss"]


def test_allocate_labels_the_unconstrained_optimum_by_its_law():
    """``compute_optimal`` is the fit's own law's optimum with unlimited data, for every law; the
    ``chinchilla`` key is kept where the law is Chinchilla's (or a data-constrained fit's stage 1),
    and a Kaplan fit's optimum is not labelled Chinchilla's."""
    kaplan = FitResult(law="kaplan", params=dict(N_c=4.9e5, D_c=3.0e7, alpha_N=0.18, alpha_D=0.19),
                       objective=0.0, n_points=0, r2=1.0)
    k = P.allocate(kaplan, 1e13)
    assert "chinchilla" not in k and k["compute_optimal"]["params"] == pytest.approx(k["params"])
    h = P.allocate(HOFFMANN, 1e22)
    assert h["chinchilla"] == h["compute_optimal"] and h["compute_optimal"]["params"] == pytest.approx(h["params"])
    c4 = P.allocate(C4, 1e22, 25e9)
    assert c4["chinchilla"] == c4["compute_optimal"] and c4["compute_optimal"]["params"] > c4["params"]


def test_c4_loss_is_the_papers():
    assert P.predict_loss(C4, [6.34e9], [242e9], [25e9])["loss"][0] == pytest.approx(2.22564, abs=2e-5)


def test_closed_form_matches_numeric_optimum_on_chinchilla():
    """With unlimited unique data the data-constrained optimum is Chinchilla's closed form."""
    law = get_law("chinchilla")
    base = {k: C4.params[k] for k in P.BASE}
    for c in (1e20, 1e22, 1e24):
        closed = P.chinchilla_allocation(base, c)
        n = np.geomspace(closed["params"] / 10, closed["params"] * 10, 20001)
        numeric = n[np.argmin(law.predict(base, n, c / (6 * n)))]
        assert numeric == pytest.approx(closed["params"], rel=1e-3)
        unconstrained = P.data_constrained_allocation(C4.params, c, 1e30)
        assert unconstrained["params"] == pytest.approx(closed["params"], rel=1e-4)


def test_repeated_tokens_lose_value_as_the_paper_says():
    """Up to ~4 epochs repeated data is almost as good as unique; by ~40 it is worth little."""
    out = P.repetition(C4, 25e9, [1, 4, 40])
    assert out["marginal_value"][0] == 1.0
    assert out["average_value"][1] > 0.9
    assert out["marginal_value"][2] < 0.1
    assert out["effective_tokens"][1] < out["tokens"][1]
    assert out["loss"][1] == pytest.approx(out["loss_if_unique"][1], rel=0.005)


def test_allocate_shows_the_isoflop_minima_beside_the_law_on_llama3(tmp_path):
    """Llama 3's report extrapolates its isoFLOP minima (6e18-1e22) to 3.8e25 FLOPs: 402B parameters
    on 16.55T tokens. A fit made with --approach 2 on the digitised sweep carries the lines through
    the minima; allocate shows their answer beside the law's, with an interval that grows with the
    3.6 decades of extrapolation. The law's variant (tied: N_opt ~ C^0.5 by construction) is named."""
    out_file = tmp_path / "fit.json"
    subprocess.run([sys.executable, "-m", "scaling.fit", "dataset:llama3-isoflops", "--where",
                    "experiment=llama_3__raw_loss", "--approach", "2", "--bootstrap", "100", "--out", str(out_file)],
                   check=True, capture_output=True, text=True)
    out = P.allocate(FitResult.load(out_file), 3.8e25)
    a2 = out["approach2"]
    assert a2["params"] == pytest.approx(402e9, rel=0.05) and a2["tokens"] == pytest.approx(16.55e12, rel=0.05)
    lo, hi = a2["ci"]["params"]
    assert lo < 402e9 < hi and 1.5 < hi / lo < 4 and a2["decades_beyond_the_largest_budget"] == pytest.approx(3.58, abs=0.01)
    assert "C^0.5" in out["note"]
    near = P.allocate(FitResult.load(out_file), 1e22)["approach2"]["ci"]["params"]
    assert near[1] / near[0] < hi / lo                     # narrower inside the data


def test_allocate_warns_when_the_minima_and_a_forced_tie_exclude_each_other(tmp_path):
    """Hoffmann et al.'s own law (alpha 0.34, beta 0.28: N_opt ~ C^0.4516) on isoFLOP sweeps at
    1e18-1e21, fitted with alpha = beta forced: at 1e25 the tie's N_opt ~ C^0.5 and the minima's
    line exclude each other; the warning says so, and the minima hold the truth."""
    from scaling.laws import get_law as law_of
    truth = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    rng = np.random.default_rng(0)
    rows = []
    for c in np.logspace(18, 21, 7):
        n_opt = P.chinchilla_allocation(truth, c)["params"]
        for n in n_opt * np.geomspace(1 / 8, 8, 10):
            loss = float(law_of("chinchilla").predict(truth, n, c / (6 * n))) * float(np.exp(rng.normal(0, 0.003)))
            rows.append((float(n), float(c / (6 * n)), loss))
    table = tmp_path / "sweeps.csv"
    table.write_text("params,tokens,loss\n" + "\n".join(",".join(map(repr, r)) for r in rows))
    fit_file = tmp_path / "fit.json"
    subprocess.run([sys.executable, "-m", "scaling.fit", str(table), "--approach", "2", "--variant", "tied",
                    "--bootstrap", "50", "--out", str(fit_file)], check=True, capture_output=True)
    out = P.allocate(FitResult.load(fit_file), 1e25)
    lo, hi = out["approach2"]["ci"]["params"]
    assert lo < P.chinchilla_allocation(truth, 1e25)["params"] < hi < out["ci"]["params"][0]
    assert len(out["warnings"]) == 1 and "disagree" in out["warnings"][0] and "C^0.5" in out["warnings"][0]


def test_bootstrap_draws_give_intervals(tmp_path):
    fit = FitResult.from_dict({**HOFFMANN.to_dict(), "settings": {"bootstrap": {
        "names": ["A", "B", "E", "alpha", "beta"],
        "draws": [[406.4 * f, 410.7, 1.69, 0.34 * f ** 0.01, 0.28] for f in np.linspace(0.9, 1.1, 50)]}}})
    out = P.allocate(fit, 1e22)
    lo, hi = out["ci"]["params"]
    assert lo < out["params"] < hi


@pytest.mark.parametrize("argv", [
    ["allocate", "--fit", str(FITS / "hoffmann2022.json"), "--flops", "1e22", "--unique-tokens", "25e9"],
    ["allocate", "--fit", str(FITS / "hoffmann2022.json"), "--flops", "-1"],
    ["loss", "--fit", "missing.json", "--params", "1e9", "--tokens", "2e10"],
    ["repetition", "--fit", str(FITS / "hoffmann2022.json"), "--unique-tokens", "1e9"],
    ["loss", "--fit", str(FITS / "muennighoff2023_c4.json"), "--params", "1e9,2e9", "--tokens", "1e10,2e10,3e10"],
])
def test_bad_input_is_one_error_line(argv):
    proc = subprocess.run([sys.executable, "-m", "scaling.predict", *argv], capture_output=True, text=True)
    assert proc.returncode in (1, 2), proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_cli_lists_are_vectorised():
    proc = subprocess.run([sys.executable, "-m", "scaling.predict", "allocate", "--fit", str(FITS / "muennighoff2023_c4.json"),
                           "--flops", "1e21,1e22", "--unique-tokens", "25e9", "--json"], capture_output=True, text=True)
    out = json.loads(proc.stdout)
    assert len(out) == 2 and out[1]["params"] == pytest.approx(7.03e9, rel=0.01)


def test_repetition_answers_every_size_asked_for():
    """``--params 1e8,2e8`` gives one answer per (unique data, size) pair, not the first size's."""
    proc = subprocess.run([sys.executable, "-m", "scaling.predict", "repetition", "--fit", str(FITS / "muennighoff2023_c4.json"),
                           "--unique-tokens", "1e9,2e9", "--params", "1e8,2e8", "--epochs", "1,4", "--json"],
                          capture_output=True, text=True)
    out = json.loads(proc.stdout)
    assert [(o["unique_tokens"], o["params"]) for o in out] == [(1e9, 1e8), (1e9, 2e8), (2e9, 1e8), (2e9, 2e8)]
    one = P.repetition(C4, 1e9, [1, 4], params=2e8)
    assert out[1]["loss"] == pytest.approx(one["loss"])
    assert out[1]["loss"][0] < out[0]["loss"][0]                 # the larger model, the lower loss
