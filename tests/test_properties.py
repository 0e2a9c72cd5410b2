"""Property-based tests (Hypothesis) of the boundaries where input enters (issue 23): the argument
types, the run-id rule, the fit-file loaders and the table reader. Each property is the contract
itself: whatever the input, the answer is either a valid value or one of the toolkit's one-line
errors (``UsageError``/``DataError``), never another exception; and what is accepted is usable
(a loaded fit predicts finite numbers, an accepted run id stays inside the store).

The profile (``conftest.py``) is derandomised, so CI sees the same examples every time;
``HYPOTHESIS_PROFILE=explore`` draws new ones (more of them) for a sweep.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from scaling import cli, store
from scaling.errors import DataError, UsageError

ROOT = Path(__file__).resolve().parents[1]
HOFFMANN = json.loads((ROOT / "fits" / "hoffmann2022.json").read_text())
C4 = json.loads((ROOT / "fits" / "muennighoff2023_c4.json").read_text())

#: JSON values of every shape, the junk a hand-edited or truncated file holds
JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-10 ** 400, max_value=10 ** 400)
                    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
#: numbers as users and files hold them, the degenerate ones included
NUMBERS = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-10 ** 400, max_value=10 ** 400)
           | st.sampled_from([0, -0.0, 1e-320, 1e308, -1.0, 0.5]))


def _write(tmp_path: Path, value, name="f.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(value, allow_nan=True))
    return path


# -- argument types ---------------------------------------------------------------------------

@given(st.text(max_size=30) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
       | st.integers(min_value=-10 ** 400, max_value=10 ** 400).map(str))
def test_a_number_argument_is_a_finite_float_or_one_usage_error(text):
    try:
        value = cli.parse_number(text, "--x")
    except UsageError as exc:
        assert str(exc).startswith("--x") and "\n" not in str(exc)
        return
    assert math.isfinite(value) and value == float(text.strip())
    assert "_" not in text and not any(w in text.lower() for w in ("inf", "nan", "0x"))


@given(st.text(max_size=25) | st.integers(min_value=-10 ** 30, max_value=10 ** 30).map(str),
       st.integers(min_value=0, max_value=10), st.integers(min_value=10, max_value=10 ** 6))
def test_a_count_argument_is_within_its_bounds_or_refused(text, low, high):
    parse = cli.bounded_int(high, "memory", minimum=low)
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(value, int) and low <= value <= high and value == int(text.strip())


@given(st.text(max_size=25) | st.floats(allow_nan=True, allow_infinity=True).map(repr))
def test_flops_and_tokens_arguments_stay_where_a_law_holds(text):
    for parse, high in ((cli.FLOPS, 1e30), (cli.TOKENS, 1e20)):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            continue
        assert 1.0 <= value <= high


# -- run ids and store paths ------------------------------------------------------------------

@given(st.text(max_size=140) | st.sampled_from(["..", "../x", "_schema", ".tmp-x", "a/b", "a\x00b", "x" * 129]))
def test_an_accepted_run_id_names_one_file_inside_the_store(tmp_path_factory, run_id):
    root = tmp_path_factory.getbasetemp() / "ids-store"
    try:
        path = store.run_path(root, run_id)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert path.parent.resolve() == root.resolve()
    assert path.name == f"{run_id}.parquet" and not run_id.startswith((".", "_"))


# -- fit files --------------------------------------------------------------------------------

def _mutated(base: dict, draw) -> dict:
    """``base`` with a few fields replaced by junk: a parameter, settings, the bootstrap draws."""
    d = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["param", "param", "settings", "draws", "top", "drop"]))
        if where == "param" and isinstance(d.get("params"), dict) and d["params"]:
            d["params"][draw(st.sampled_from(sorted(d["params"])))] = draw(NUMBERS | JSON)
        elif where == "settings":
            d["settings"] = draw(JSON)
        elif where in ("param", "draws"):
            continue
        elif where == "draws" and isinstance(d.get("params"), dict):
            names = list(d["params"])
            d.setdefault("settings", {})["bootstrap"] = {
                "names": names, "draws": draw(st.lists(st.lists(NUMBERS, min_size=len(names) - 1,
                                                                max_size=len(names) + 1), max_size=3))}
        elif where == "top":
            d[draw(st.sampled_from(["law", "params", "ci", "n_points", "r2"]))] = draw(JSON)
        else:
            d.pop(draw(st.sampled_from(sorted(d))), None)
    return d


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_fit_file_loads_whole_and_usable_or_is_one_data_error(tmp_path, data):
    from scaling import predict
    from scaling.results import FitResult
    d = _mutated(data.draw(st.sampled_from([HOFFMANN, C4])), data.draw)
    try:
        fit = FitResult.load(_write(tmp_path, d))
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert all(math.isfinite(v) and v > 0 for v in fit.params.values())
    try:                          # a valid fit predicts finite numbers, or says in one line that it cannot
        out = predict.predict_loss(fit, [1e8, 1e10], [2e9, 2e11], [1e9, 1e11] if fit.law == "data-constrained" else None)
        assert np.isfinite(out["loss"]).all()
        alloc = predict.allocate(fit, 1e21, 1e10 if fit.law == "data-constrained" else None)
        assert all(math.isfinite(alloc[k]) and alloc[k] > 0 for k in ("params", "tokens", "loss"))
    except DataError as exc:
        assert "non-finite" in str(exc)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSON, st.sampled_from(["scaling-fit", "downstream-fit", "mixture-fit", "backtest", "optimum", "approach2"]))
def test_any_json_is_a_valid_file_of_its_kind_or_one_data_error(tmp_path, value, kind):
    from scaling import schemas
    try:
        out = schemas.load(_write(tmp_path, value), kind)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(out, dict)


@pytest.fixture(scope="module")
def mixture_fit_dict(tmp_path_factory):
    from scaling.mixture import main
    out = tmp_path_factory.mktemp("mixfit") / "mix.json"
    assert cli.run_cli(main, ["fit", "dataset:example-mixtures", "--model", "law", "--bootstrap", "0",
                              "--out", str(out)]) == 0
    return json.loads(out.read_text())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_mixture_fit_loads_and_predicts_or_is_one_data_error(tmp_path, mixture_fit_dict, data):
    from scaling.mixture.predict import predict_table
    from scaling.mixture.result import MixtureFit
    d = copy.deepcopy(mixture_fit_dict)
    domain = data.draw(st.sampled_from(d["loss_domains"]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        where = data.draw(st.sampled_from(["law", "top", "drop", "t", "c"]))
        if not isinstance(d.get("params"), dict):
            continue
        if where == "law":
            d["params"][domain] = data.draw(JSON)
        elif where == "top":
            d[data.draw(st.sampled_from(["kind", "domains", "loss_domains", "mixtures", "n_points", "r2"]))] = data.draw(JSON)
        elif where == "drop":
            d.pop(data.draw(st.sampled_from(sorted(d))), None)
        elif isinstance(d["params"].get(domain), dict):
            key = where
            d["params"][domain][key] = data.draw(st.lists(NUMBERS, max_size=3) if key == "t" else NUMBERS)
    try:
        fit = MixtureFit.load(_write(tmp_path, d))
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    k = len(fit.domains)
    try:
        out = predict_table(fit, np.full((1, k), 1.0 / k), 1e7, 1e9)
    except UsageError:            # a valid fit asked about what it cannot answer: still one line
        return
    assert all(np.isfinite(np.asarray(v, float)).all() for key, v in out.items() if key.startswith("loss"))


# -- tables -----------------------------------------------------------------------------------

CELLS = NUMBERS | st.sampled_from(["", "abc", "1e6", "nan", "-1", "1_000"]) | st.none()


@given(st.lists(st.tuples(CELLS, CELLS, CELLS), min_size=0, max_size=12))
def test_a_table_of_runs_is_prepared_for_a_fit_or_is_one_data_error(rows):
    from scaling.fit import prepare
    table = pd.DataFrame(rows, columns=["params", "tokens", "loss"], dtype=object)
    try:
        frame = prepare(table, "chinchilla", source="t.csv")[1].frame
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    values = frame[["params", "tokens", "loss"]].to_numpy(float)
    assert np.isfinite(values).all() and (values > 0).all() and len(frame) >= 3
