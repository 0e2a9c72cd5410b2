"""The fit CLI: every bad input is one ``error:`` line and exit code 2, and a good fit is a value.

Synthetic tables are drawn exactly from the Chinchilla law with the Besiroglu et al. 2024
replication's parameters (E = 1.82, A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658;
Besiroglu et al. 2024) on 5 model sizes x 5 token counts, so a fit must give them back.
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

from scaling.cli import run_cli
from scaling.fit import main
from scaling.results import FIT_KEYS

ROOT = Path(__file__).resolve().parents[1]
BESIROGLU = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
SIZES = np.geomspace(1e7, 1e9, 5)
TOKENS = np.geomspace(1e9, 1e11, 5)


def chinchilla_table(params=BESIROGLU) -> pd.DataFrame:
    N, D = (a.ravel() for a in np.meshgrid(SIZES, TOKENS, indexing="ij"))
    loss = params["E"] + params["A"] / N ** params["alpha"] + params["B"] / D ** params["beta"]
    return pd.DataFrame({"params": N, "tokens": D, "loss": loss})


def fit_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "scaling.fit", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def fit_main(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_cli(main, [str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fit-data") / "chinchilla_grid.csv"
    chinchilla_table().to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------
# Bad inputs: each a table (or no table) and the extra arguments that make it bad
# ------------------------------------------------------------------------------------------
def _with(edit):
    def make(tmp: Path) -> Path:
        table = chinchilla_table().astype(object)
        table = edit(table)
        path = tmp / "bad.csv"
        table.to_csv(path, index=False)
        return path
    return make


def _set(column, value):
    def edit(table):
        table.loc[7, column] = value
        return table
    return edit


def _raw(name: str, data: bytes):
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path
    return make


def _missing(tmp: Path) -> Path:
    return tmp / "no-such-runs.csv"


def _good(tmp: Path) -> Path:
    path = tmp / "good.csv"
    chinchilla_table().to_csv(path, index=False)
    return path


GARBAGE = bytes(range(256)) * 40

BAD_INPUTS = [
    pytest.param(_missing, [], id="missing-file"),
    pytest.param(_raw("garbage.csv", GARBAGE), [], id="garbage-csv"),
    pytest.param(_raw("garbage.parquet", b"PAR1" + GARBAGE), [], id="garbage-parquet"),
    pytest.param(_raw("empty.csv", b""), [], id="empty-file"),
    pytest.param(_raw("header_only.csv", b"params,tokens,loss\n"), [], id="header-only-csv"),
    pytest.param(_with(lambda t: t.drop(columns="tokens")), [], id="missing-tokens-column"),
    pytest.param(_with(lambda t: t.drop(columns="loss")), [], id="missing-loss-column"),
    pytest.param(_with(_set("loss", "abc")), [], id="non-numeric-loss"),
    pytest.param(_with(_set("params", "1e9 params")), [], id="non-numeric-params"),
    pytest.param(_with(_set("loss", "inf")), [], id="infinite-loss"),
    pytest.param(_with(_set("tokens", 0.0)), [], id="zero-tokens"),
    pytest.param(_with(_set("loss", -1.0)), [], id="negative-loss"),
    pytest.param(_with(lambda t: t.iloc[:3]), [], id="3-points-for-5-parameters"),
    pytest.param(_good, ["--law", "foo"], id="unknown-law"),
    pytest.param(_good, ["--fix", "gamma=1"], id="unknown-fixed-parameter"),
    pytest.param(_good, ["--fix", "alpha"], id="fix-without-value"),
    pytest.param(_good, ["--fix", "alpha=abc"], id="fix-non-numeric"),
    pytest.param(_good, ["--fix", "A=-5"], id="fix-negative-A"),
    pytest.param(_good, ["--column", "params"], id="column-without-equals"),
    pytest.param(_good, ["--column", "params=Model Size"], id="column-not-in-file"),
    pytest.param(_good, ["--base", "{tmp}/no-such-fit.json"], id="missing-base-fit"),
    pytest.param(_good, ["--exclude-top", "25"], id="exclude-everything"),
    pytest.param(_good, ["--bootstrap", "-1"], id="negative-bootstrap"),
]


@pytest.mark.parametrize("make, extra", BAD_INPUTS)
def test_bad_input_is_one_error_line_exit_2_and_no_output_file(make, extra, tmp_path):
    source = make(tmp_path)
    out = tmp_path / "fit.json"
    args = [source, *[a.format(tmp=tmp_path) for a in extra], "--no-profiles", "--out", out]
    res = fit_cli(*args)
    assert res.returncode in (1, 2), res.stderr   # 1: unreadable or invalid data, 2: usage (scaling.errors)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    assert not out.exists()


def test_the_error_names_the_problem(tmp_path):
    """Error lines say what is wrong, not just that something is."""
    cases = {
        "missing required column": (_with(lambda t: t.drop(columns="loss")), []),
        "non-numeric value 'abc'": (_with(_set("loss", "abc")), []),
        "infinite": (_with(_set("loss", "inf")), []),
        "non-positive": (_with(_set("tokens", 0.0)), []),
        "3 point(s) for 5 free parameter(s)": (_with(lambda t: t.iloc[:3]), []),
        "unknown parameter 'gamma'": (_good, ["--fix", "gamma=1"]),
    }
    for expected, (make, extra) in cases.items():
        code, _, err = fit_main(make(tmp_path), *extra, "--no-profiles")
        assert code in (1, 2) and expected in err, (expected, err)


# ------------------------------------------------------------------------------------------
# Good inputs
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def json_fit(good_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit-out") / "fit.json"
    res = fit_cli(good_csv, "--json", "--no-profiles", "--out", out)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), out


def test_json_output_has_exactly_the_fit_keys(json_fit):
    printed, _ = json_fit
    assert set(printed) == {"law", "params", "objective", "n_points", "r2", "ci", "warnings", "settings",
                            "data_sha256", "version"}
    assert set(printed) == set(FIT_KEYS)
    assert printed["law"] == "chinchilla" and printed["n_points"] == 25


def test_the_fit_gives_back_the_replication_parameters(json_fit):
    """Noise-free data from Besiroglu et al. 2024's parameters: the global fit must recover them."""
    printed, _ = json_fit
    for name, value in BESIROGLU.items():
        assert printed["params"][name] == pytest.approx(value, rel=1e-4), name
    assert printed["r2"] == pytest.approx(1.0, abs=1e-9)
    assert printed["settings"]["starts"] == 4500        # the replication's initialisation grid


def test_out_writes_the_same_json_that_is_printed(json_fit):
    printed, out = json_fit
    assert json.loads(out.read_text()) == printed


def test_nan_loss_rows_are_dropped_and_the_warning_says_how_many(tmp_path):
    table = chinchilla_table()
    table.loc[[3, 11, 19], "loss"] = np.nan
    path = tmp_path / "with_nan.csv"
    table.to_csv(path, index=False)

    code, out, err = fit_main(path, "--json", "--no-profiles")

    assert code == 0, err
    result = json.loads(out)
    assert result["n_points"] == 22
    assert any("dropped 3 row(s)" in w for w in result["warnings"]), result["warnings"]
    for name, value in BESIROGLU.items():
        assert result["params"][name] == pytest.approx(value, rel=1e-4), name


def test_the_table_output_lists_every_parameter(good_csv):
    code, out, err = fit_main(good_csv, "--no-profiles")
    assert code == 0, err
    for name in BESIROGLU:
        assert any(line.split()[:1] == [name] for line in out.splitlines()), (name, out)


def test_help_exits_0_and_ends_with_an_example():
    res = fit_cli("--help")
    assert res.returncode == 0
    assert "example" in res.stdout
    assert "python -m scaling.fit" in res.stdout.split("example")[-1]


def test_tying_beta_to_a_fixed_alpha_holds_both_at_the_fixed_value(good_csv):
    """``--tie alpha=beta --fix alpha=0.3`` means alpha = beta = 0.3 (the data-constrained paper ties
    the exponents); beta must not silently fall to 0 or stay free."""
    code, out, err = fit_main(good_csv, "--tie", "alpha=beta", "--fix", "alpha=0.3", "--json", "--no-profiles")
    assert code == 0, err
    params = json.loads(out)["params"]
    assert params["alpha"] == pytest.approx(0.3)
    assert params["beta"] == pytest.approx(0.3)
