"""Fits as values (issue 24, item 2): ``scaling.load_fit`` returns every kind of fit file as its
Results object, whose ``predict`` gives what the CLIs print and whose ``conf_int`` is statsmodels'
(a DataFrame indexed by parameter, columns ``lower`` and ``upper``, from the bootstrap draws)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from scaling import load_fit
from scaling.cli import run_cli
from scaling.errors import DataError
from scaling.results import FitResult, format_number


@pytest.fixture(scope="module")
def boot_fit(tmp_path_factory):
    from scaling.fit import main
    out = tmp_path_factory.mktemp("boot") / "epoch.json"
    assert run_cli(main, ["dataset:epoch-chinchilla", "--bootstrap", "40", "--out", str(out)]) == 0
    return out


def test_a_preset_predicts_what_the_cli_prints(capsys):
    from scaling.predict import main
    f = load_fit("hoffmann2022")
    assert isinstance(f, FitResult)
    got = f.predict(params=[7e10, 1e9], tokens=[1.4e12, 2e10])
    capsys.readouterr()
    assert run_cli(main, ["loss", "--fit", "hoffmann2022", "--params", "7e10,1e9", "--tokens", "1.4e12,2e10",
                          "--json"]) == 0
    assert got.tolist() == json.loads(capsys.readouterr().out)["loss"]
    # Hoffmann et al.'s Approach 3 law at Chinchilla's own size: E + A/N^a + B/D^b by hand
    assert got[0] == pytest.approx(1.69 + 406.4 / 7e10 ** 0.34 + 410.7 / 1.4e12 ** 0.28, rel=1e-12)


def test_a_data_constrained_fit_predicts_with_unique_tokens():
    f = load_fit("muennighoff2023_c4")
    fresh, repeated = f.predict(params=1e9, tokens=1e11, unique_tokens=[1e11, 1e10])
    assert repeated > fresh                              # ten epochs of 1e10 lose against 1e11 unique tokens
    with pytest.raises(ValueError, match="data-constrained"):
        load_fit("hoffmann2022").predict(params=1e9, tokens=1e10, unique_tokens=1e9)


def test_conf_int_is_the_bootstrap_percentile_interval(boot_fit):
    f = load_fit(boot_fit)
    ci = f.conf_int()
    assert list(ci.columns) == ["lower", "upper"] and list(ci.index) == list(f.params) and ci.index.name == "parameter"
    names = f.settings["bootstrap"]["names"]
    draws = np.asarray(f.settings["bootstrap"]["draws"], float)
    for n in f.params:
        col = draws[:, names.index(n)]
        assert ci.loc[n, "lower"] == pytest.approx(np.percentile(col, 2.5))
        assert ci.loc[n, "upper"] == pytest.approx(np.percentile(col, 97.5))
        assert ci.loc[n].tolist() == pytest.approx(f.ci[n])           # the same interval the file stores
    narrow = f.conf_int(alpha=0.5)
    assert ((narrow["lower"] >= ci["lower"]) & (narrow["upper"] <= ci["upper"])).all()
    assert (narrow["upper"] - narrow["lower"] < ci["upper"] - ci["lower"]).any()


def test_conf_int_without_draws_is_nan_and_says_why():
    with pytest.warns(UserWarning, match="--bootstrap"):
        ci = load_fit("hoffmann2022").conf_int()
    assert ci.isna().all().all() and len(ci) == 5


def test_a_downstream_fit_gives_its_intervals_as_one_frame(tmp_path):
    from scaling.downstream.synthetic import ladder
    from scaling.downstream import fit_downstream
    fit = fit_downstream(ladder(seed=3), task="synth", via="bpb", form="sigmoid", bootstrap=20, seed=0)
    fit.save(tmp_path / "down.json")
    g = load_fit(tmp_path / "down.json")
    ci = g.conf_int()
    assert {"step1.alpha", "step1.E", "step2.x0", "step2.k"} <= set(ci.index)
    assert (ci["lower"] <= ci["upper"]).all() and ci.notna().all().all()
    assert f"[{format_number(ci.loc['step2.x0', 'lower'])}," in g.summary()   # the summary prints them


def test_a_mixture_fit_predicts_like_the_cli(tmp_path, capsys):
    from scaling.mixture import main
    out = tmp_path / "mix.json"
    assert run_cli(main, ["fit", "dataset:example-mixtures", "--model", "law", "--bootstrap", "0", "--out", str(out)]) == 0
    f = load_fit(out)
    mixes = pd.DataFrame({"mix.code": [0.0, 0.5], "mix.text": [1.0, 0.5]})
    mixes.to_csv(tmp_path / "m.csv", index=False)
    frame = f.predict([[0.0, 1.0], [0.5, 0.5]], params=1e6, tokens=1e8)
    capsys.readouterr()
    assert run_cli(main, ["predict", "--fit", str(out), "--mixtures", str(tmp_path / "m.csv"), "--params", "1e6",
                          "--tokens", "1e8", "--out", str(tmp_path / "p.csv")]) == 0
    cli = pd.read_csv(tmp_path / "p.csv")
    for d in f.loss_domains:
        assert frame[f"pred.{d}"].tolist() == pytest.approx(cli[f"pred.{d}"].tolist(), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = f.conf_int()
    assert set(ci.index) >= {f"{d}.c" for d in f.loss_domains} and list(ci.columns) == ["lower", "upper"]


def test_load_fit_refuses_what_is_not_a_fit(tmp_path):
    (tmp_path / "bt.json").write_text(json.dumps({"law": "chinchilla", "mape": 1.0, "runs": [{"loss": 3, "predicted": 3}]}))
    with pytest.raises(DataError, match="a backtest file, not a fit"):
        load_fit(tmp_path / "bt.json")
    with pytest.raises(DataError, match="no such"):
        load_fit(tmp_path / "missing.json")


def test_an_approach2_result_saves_loads_and_predicts(tmp_path):
    """Llama 3's isoFLOP sweeps (raw loss): the saved result loads back equal, through ``load_fit``
    too, and predicts the allocation its line gives (b near the report's 0.53)."""
    from scaling import columns as cols, datasets
    from scaling.fit.approach2 import Approach2Result, approach2
    t = datasets.load("llama3-isoflops")
    t = cols.ok_runs(t[t["experiment"] == "llama_3__raw_loss"], ("params", "tokens", "loss"))
    a = approach2(t, bootstrap=20, seed=0)
    a.save(tmp_path / "a2.json")
    b = load_fit(tmp_path / "a2.json")
    assert isinstance(b, Approach2Result) and b.to_dict() == a.to_dict()
    out = b.predict([1e22, 1e24])
    assert out["tokens"][0] == pytest.approx(a.tokens_coefficient * 1e22 ** a.tokens_exponent)
    assert abs(b.tokens_exponent - 0.53) < 0.02
    ci = b.conf_int()
    assert ci.loc["tokens_exponent", "lower"] < b.tokens_exponent < ci.loc["tokens_exponent", "upper"]
    bad = a.to_dict()
    bad["params_coefficient"] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="params_coefficient"):
        load_fit(tmp_path / "bad.json")


def test_settings_read_as_typed_values(boot_fit):
    from scaling.results import Bootstrap, FitSettings, VariantChoice
    f = load_fit(boot_fit)
    s = f.fit_settings
    assert isinstance(s, FitSettings) and isinstance(s.variant, VariantChoice) and isinstance(s.bootstrap, Bootstrap)
    assert s.variant.chosen == f.settings["variant"]["chosen"] and set(s.variant.candidates) >= {"tied", "free"}
    assert s.bootstrap.draws.shape == (40, 5) and s.bootstrap.names == ("A", "B", "E", "alpha", "beta")
    assert s.diagnostics.residuals["std"] == f.settings["diagnostics"]["residuals"]["std"]
    assert s.objective.startswith("sum of Huber") and s.delta == 1e-3
    preset = load_fit("hoffmann2022").fit_settings
    assert preset.bootstrap is None and preset.variant is None and preset.extra["source"] == "published"
