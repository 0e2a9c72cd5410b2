"""Controlled comparison of datasets (issue 7 item 5) and the diversity coefficient it reports
(Miranda, Lee et al. 2023, "Beyond Scale: the Diversity Coefficient as a Data Quality Metric").

Tiny everything: a t24 model (24K parameters) at 1 and 6 tokens per parameter (47 and 280 steps), 4K held-out tokens
per part, a t32 probe on a few batches of a few sequences; one thread, because on two busy cores
torch's second thread made a t24 step 20x slower (378 ms against 19 ms, measured here).
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from runners.studies import compare  # noqa: E402
from runners.studies import diversity as div
from scaling import store as rstore  # noqa: E402
from scaling.cli import run_cli  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private data cache, also seen by the CLIs (``SCALING_CACHE``)."""
    path = tmp_path_factory.mktemp("scaling-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCALING_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def sources(cache):
    return div.Sources(cache_dir=cache)


def _run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_cli(main, argv)
    return code, out.getvalue(), err.getvalue()


# -- the diversity coefficient ------------------------------------------------------------------

SMALL = dict(batches=6, batch_size=6)


@pytest.fixture(scope="module")
def repeated_and_mixed(sources):
    """One document repeated over and over, and the embedded text+code mix."""
    doc = sources.corpus(div.Part("embedded", "text")).train["text"][5]
    repeated = np.frombuffer((doc + "\0").encode() * 100, dtype=np.uint8)
    mix = div.parse_dataset("text+code")
    pool = sources.train_tokens(mix, min(div.POOL_TOKENS, sources.available(mix)))
    return (div.diversity_coefficient(repeated, name="repeated", **SMALL),
            div.diversity_coefficient(pool, name="text+code", **SMALL))


def test_one_repeated_document_is_less_diverse_than_text_and_code(repeated_and_mixed):
    # the paper's sanity check: diversity grows with the number of latent concepts (Miranda et
    # al. 2023); at 6 batches of 6 the 95% intervals do not even overlap ([0.090, 0.109] against
    # [0.141, 0.183]; at the default 20 x 16: 0.050 against 0.096)
    repeated, mixed = repeated_and_mixed
    assert repeated.coefficient < mixed.coefficient
    assert repeated.ci_high < mixed.ci_low


def test_coefficient_and_its_interval_lie_in_the_unit_interval(repeated_and_mixed):
    # Task2Vec's cosine distance of non-negative Fisher diagonals is in [0, 1]
    for result in repeated_and_mixed:
        assert 0.0 <= result.ci_low <= result.coefficient <= result.ci_high <= 1.0
        assert np.all((result.distances >= 0) & (result.distances <= 1))
        assert np.allclose(np.diag(result.distances), 0.0)
        assert result.paper_half_width > 0


def test_same_seed_gives_the_same_coefficient_and_another_seed_another(sources):
    tokens = sources.train_tokens(div.parse_dataset("code"), 200_000)
    a = div.diversity_coefficient(tokens, batches=4, batch_size=4, seed=3)
    b = div.diversity_coefficient(tokens, batches=4, batch_size=4, seed=3)
    c = div.diversity_coefficient(tokens, batches=4, batch_size=4, seed=4)
    assert a.to_dict() == b.to_dict()
    np.testing.assert_array_equal(a.distances, b.distances)
    assert c.coefficient != a.coefficient


def test_task2vec_distance_is_zero_for_equal_and_one_for_disjoint_embeddings():
    e = np.array([1.0, 2.0, 0.0, 3.0])
    assert div.task2vec_distance(e, e) == pytest.approx(0.0, abs=1e-12)
    assert div.task2vec_distance(e, 5 * e) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert div.task2vec_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_interleaving_alternates_equal_blocks_of_each_part():
    a, b = np.zeros(2500, dtype=np.int64), np.ones(2500, dtype=np.int64)
    mixed = div.interleave([a, b], 1024)
    assert len(mixed) == 5000 and mixed.sum() == 2500
    assert mixed[:1024].sum() == 0 and mixed[1024:2048].min() == 1


def test_dataset_names_map_to_the_run_spec_of_the_embedded_corpus():
    text, code, mix = div.parse_datasets("text,code,text+code")
    assert text.run_fields() == {"data": "embedded", "code_fraction": 0.0}
    assert code.run_fields() == {"data": "embedded", "code_fraction": 1.0}
    assert mix.run_fields() == {"data": "embedded", "code_fraction": 0.5} and mix.is_mixture


def test_diversity_cli_prints_one_json_object_per_dataset(cache):
    code, out, err = _run(div.main, ["--datasets", "text,code", "--batches", "3", "--batch-size", "2",
                                     "--json", "--quiet"])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["dataset"] for r in rows] == ["text", "code"]
    assert all(0 <= r["coefficient"] <= 1 and r["probe"]["labels"] == "data" for r in rows)


# -- the comparison, end to end -----------------------------------------------------------------

ARGS = ["--datasets", "text,code,text+code", "--ratio", "1,6", "--shape", "t24", "--eval-tokens", "4096",
        "--batches", "3", "--batch-size", "4", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def compared(cache, tmp_path_factory):
    where = tmp_path_factory.mktemp("compare")
    out, store = where / "out", where / "store"
    code, stdout, err = _run(compare.main, [*ARGS, "--out", str(out), "--store", str(store), "--json"])
    assert code == 0, err
    return json.loads(stdout), out, store


def test_table_has_cross_entropy_perplexity_bpb_and_accuracy_for_every_model_and_eval_set(compared):
    result, _, _ = compared
    evals = pd.DataFrame(result["evals"])
    assert set(compare.METRICS) <= set(evals.columns)
    assert len(evals) == 2 * 3 * 3                     # ratios x datasets x eval sets
    assert set(evals["eval_set"]) == {"text", "code", "text+code"}
    np.testing.assert_allclose(evals["perplexity"], np.exp(evals["cross_entropy"]))
    # byte tokenizer: one byte per token, so bits per byte = nats / ln 2
    np.testing.assert_allclose(evals["bpb"], evals["cross_entropy"] / math.log(2))
    assert evals["token_accuracy"].between(0, 1).all()
    # a mix's held-out set is the equal-weight union of its parts
    for _, model in evals.groupby(["dataset", "tokens_per_param"]):
        ce = model.set_index("eval_set")["cross_entropy"]
        assert ce["text+code"] == pytest.approx((ce["text"] + ce["code"]) / 2)


def test_only_the_data_varies_at_a_ratio(compared):
    models = pd.DataFrame(compared[0]["models"])
    assert len(models) == 6
    for _, same in models.groupby("tokens_per_param"):
        for column in ("shape", "params", "tokens", "unique_tokens", "steps", "batch_size", "lr", "seed"):
            assert same[column].nunique() == 1, column
        assert same["dataset"].tolist() == ["text", "code", "text+code"]
    assert models["shape"].eq("t24").all() and models["params"].eq(23_824).all()


def test_more_tokens_per_parameter_gives_lower_loss_on_own_data(compared):
    models = pd.DataFrame(compared[0]["models"])
    for name, runs in models.groupby("dataset"):
        loss = runs.set_index("tokens_per_param")["cross_entropy"]
        assert loss[6.0] < loss[1.0], name  # 280 against 47 steps: 0.2-0.5 nats apart on seeds 0 and 1


def test_diversity_is_reported_beside_each_model(compared):
    result = compared[0]
    assert [d["dataset"] for d in result["diversity"]] == ["text", "code", "text+code"]
    models = pd.DataFrame(result["models"])
    assert ((models["diversity_low"] <= models["diversity"]) & (models["diversity"] <= models["diversity_high"])).all()


def test_plot_and_tables_are_written_and_runs_land_in_the_store(compared):
    _, out, store = compared
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "compare.csv")
    assert {"dataset", "tokens_per_param", "eval_set", *compare.METRICS, "steps", "diversity"} <= set(table.columns)
    pd.testing.assert_frame_equal(table, pd.read_parquet(out / "compare.parquet"), check_dtype=False)
    runs = rstore.read_runs(store)
    assert len(runs) == 6 and runs["status"].eq("ok").all() and runs["grid"].eq("compare").all()


def test_rerun_with_the_store_reuses_finished_runs(compared, cache, monkeypatch):
    result, _, store = compared

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare, "train_model", no_training)
    again = compare.compare(div.parse_datasets("text,code,text+code"), [1.0, 6.0], shape="t24",
                            eval_tokens=4096, diversity_batches=0, store=store, cache_dir=cache)
    np.testing.assert_allclose(again.models["cross_entropy"], [m["cross_entropy"] for m in result["models"]])


def test_summary_prints_the_model_table_and_the_cross_entropy_matrix(compared, cache, tmp_path):
    _, _, store = compared
    code, out, err = _run(compare.main, [*ARGS, "--out", str(tmp_path / "o"), "--store", str(store),
                                         "--batches", "0"])
    assert code == 0, err
    assert "CE own" in out and "cross-entropy (nats/token), model x eval set" in out
    assert "text+code @6x" in out


# -- bad input: one error line, exit 2 (1 for a missing file), nothing written ------------------------------------------

@pytest.mark.parametrize("change, message", [
    (["--datasets", "nope"], "unknown dataset 'nope'"),
    (["--datasets", ""], "no datasets"),
    (["--datasets", "text,,code"], "empty dataset"),
    (["--datasets", "text,text"], "listed twice"),
    (["--datasets", "missing.jsonl"], "no such file"),
    (["--datasets", "text+nope"], "unknown dataset 'nope'"),
    (["--ratio", "0"], "must be positive"),
    (["--ratio", "20,-1"], "must be positive"),
    (["--ratio", ""], "no ratios"),
    (["--ratio", "abc"], "malformed ratio"),
    (["--shape", "t7"], "unknown shape"),
    (["--tokenizer", "bpe:512"], "BPE"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, cache, change, message):
    out = tmp_path / "out"
    flags = {"--datasets": "text", "--ratio": "1", "--shape": "t24", "--out": str(out),
             "--store": str(tmp_path / "store"), **dict(zip(change[::2], change[1::2]))}
    argv = [item for pair in flags.items() for item in pair]
    code, stdout, err = _run(compare.main, argv)
    assert code == (1 if message == "no such file" else 2)       # a missing file is data, the rest usage
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists() and not (tmp_path / "store").exists()


def test_diversity_cli_rejects_unknown_datasets_and_too_few_batches(cache):
    assert _run(div.main, ["--datasets", "nope"])[0] == 2
    code, _, err = _run(div.main, ["--datasets", "text", "--batches", "2"])
    assert code == 2 and "at least 3" in err


def test_help_ends_with_an_example(capsys):
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    assert "python -m runners.compare --datasets text,code,text+code --ratio 20,100" in capsys.readouterr().out


def test_a_file_dataset_interleaves_with_an_embedded_one_in_equal_shares(tmp_path, sources):
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"note {i}: " + "lorem ipsum " * (i % 7 + 3)})
                              for i in range(600)))
    text, notes, mix = div.parse_datasets(f"text,{path},text+{path}")
    assert notes.parts == (div.Part(str(path), "text"),) and mix.run_fields()["data"] == f"text+{path}"
    block = 1024
    mixed = sources.train_tokens(mix, 4 * block)
    np.testing.assert_array_equal(mixed[:block], sources.train_tokens(text, block))
    np.testing.assert_array_equal(mixed[block:2 * block], sources.train_tokens(notes, block))
    assert [e.name for e in compare.eval_sets([text, notes])] == ["text", str(path), "union"]
    assert len(sources.validation_tokens(notes.parts[0])) > 0
