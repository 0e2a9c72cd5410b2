"""lm-eval on our checkpoints (offline cloze tasks through ``lm_eval.simple_evaluate``), generation
and export: a model trained a little beats chance, an untrained one does not; seeds reproduce
samples; exported weights give the same logits; bad input is one ``error:`` line."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from runners.eval import evaluate as ev  # noqa: E402
from runners.models.files import load_model, load_run_model, model_dir, tokenizer_for  # noqa: E402
from runners.models.gpt import GPT, GPTConfig  # noqa: E402
from runners.grid.plan import _spec  # noqa: E402
from runners.eval.tasks.cloze import cloze_items  # noqa: E402
from runners.train.trainer import train_run  # noqa: E402
from scaling import accounting  # noqa: E402
from scaling.store import read_run, read_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 300


def _cli(module, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _spec_for(shape, tokens, code_fraction=0.5):
    return _spec(accounting.shape(shape), vocab=256, seq_len=128, tokens=tokens, unique=tokens, grid="test",
                 budget="", code_fraction=code_fraction, filter="none", seed=0, data="embedded", tokenizer="byte")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A t64 model trained on 600K tokens of text and code (loss ~2.4 nats/byte; ~30 s here)."""
    store = tmp_path_factory.mktemp("evalstore")
    row = train_run(_spec_for("t64", 6e5), store, progress=False)
    assert row["status"] == "ok"
    return store, row["run_id"]


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_cloze_items_are_deterministic_and_well_formed():
    docs = ["abcdefghij" * 20, "0123456789" * 20, "klmnopqrst" * 20, "ABCDEFGHIJ" * 20]
    a, b = cloze_items(docs, n=50, seed=3), cloze_items(docs, n=50, seed=3)
    assert a == b and len(a) == 50
    for item in a:
        assert len(item["context"]) == 80 and len(item["choices"]) == 4
        assert all(len(c) == 24 for c in item["choices"])
        gold = item["choices"][item["label"]]
        assert any(gold in d and item["context"] + gold in d for d in docs)  # the true continuation
    assert sorted({item["label"] for item in a}) == [0, 1, 2, 3]


def test_loglikelihood_matches_the_models_own_cross_entropy():
    torch.manual_seed(0)
    model = GPT(GPTConfig(d_model=32, ffw_size=64, n_heads=2, n_layers=1, vocab_size=256, seq_len=64))
    from runners.data import ByteTokenizer
    tok = ByteTokenizer()
    lm = ev.make_lm(model, tok)

    class Req:
        def __init__(self, *args):
            self.args = args

    (ll, _), = lm.loglikelihood([Req("hello wor", "ld")])
    ids = torch.tensor([[tok.eot_id] + tok.encode("hello world")])
    logits, _ = model(ids[:, :-1])
    logp = torch.log_softmax(logits.float(), -1)[0]
    want = sum(logp[i, ids[0, i + 1]].item() for i in (len(ids[0]) - 3, len(ids[0]) - 2))
    assert math.isclose(ll, want, rel_tol=1e-5)
    # rolling loglikelihood: every token of the text scored once, the first given end-of-text
    text = "the quick brown fox"
    rolling, = lm.loglikelihood_rolling([Req(text)])
    full = torch.tensor([[tok.eot_id] + tok.encode(text)])
    logp = torch.log_softmax(model(full[:, :-1])[0].float(), -1)[0]
    want = logp.gather(1, full[0, 1:, None]).sum().item()
    assert math.isclose(rolling, want, rel_tol=1e-5)
    long_text = text * 10                                # 190 bytes: three windows of <= 64
    long_ll, = lm.loglikelihood_rolling([Req(long_text)])
    assert math.isfinite(long_ll) and 190 * 4.0 < -long_ll < 190 * 7.0   # near log(256) = 5.5 per byte


def test_untrained_model_scores_at_chance():
    torch.manual_seed(0)
    model = GPT(GPTConfig(d_model=64, ffw_size=256, n_heads=4, n_layers=2, vocab_size=256, seq_len=128))
    from runners.data import ByteTokenizer
    cols = ev.score(ev.make_lm(model, ByteTokenizer()), ["corpus_cloze", "code_cloze"], limit=LIMIT)
    for task in ("corpus_cloze", "code_cloze"):
        acc, se = cols[f"eval.{task}.acc"], cols[f"eval.{task}.acc_stderr"]
        assert cols[f"eval.{task}.n"] == LIMIT
        assert abs(acc - 0.25) < 3 * math.sqrt(0.25 * 0.75 / LIMIT), (task, acc, se)


def test_evaluate_cli_writes_scores_above_chance_into_the_store(trained):
    store, run_id = trained
    proc = _cli("runners.evaluate", "--store", store, "--tasks", "corpus_cloze,code_cloze",
                "--limit", LIMIT, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads(proc.stdout)
    assert list(scored) == [run_id]
    row = read_run(store, run_id)
    for task in ("corpus_cloze", "code_cloze"):
        acc, se = row[f"eval.{task}.acc"], row[f"eval.{task}.acc_stderr"]
        assert scored[run_id][f"eval.{task}.acc"] == acc
        assert acc > 0.25 + 3 * se, (task, acc, se)       # well above chance
    assert row["acc"] > 0.3 and row["status"] == "ok"   # token accuracy beside loss and bpb
    # already scored: nothing to do; pandas and duckdb, reading the directory themselves, see the scores
    again = _cli("runners.evaluate", "--store", store, "--tasks", "corpus_cloze", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == {}
    assert "eval.code_cloze.acc" in read_runs(store).columns
    plain = pd.read_parquet(store)
    assert plain["run_id"].tolist().count(run_id) == 1
    assert plain.set_index("run_id").loc[run_id, "eval.code_cloze.acc"] == row["eval.code_cloze.acc"]
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(f"SELECT \"eval.corpus_cloze.acc\" FROM read_parquet('{store}/[!_.]*.parquet', union_by_name=true) "
                     f"WHERE run_id = '{run_id}'").fetchall()
    assert got == [(row["eval.corpus_cloze.acc"],)]


def test_generation_is_deterministic_under_a_seed(trained):
    store, run_id = trained
    from runners.eval.generate import sample_texts
    model, config = load_run_model(store, run_id)
    tok = tokenizer_for(config)
    a, b = (sample_texts(model, tok, "def ", samples=2, max_new_tokens=40, seed=7) for _ in range(2))
    assert a == b and a[0] != a[1]                        # same seed, same text; sample i uses seed + i
    assert sample_texts(model, tok, "def ", max_new_tokens=40, seed=8)[0] == a[1]
    greedy = [sample_texts(model, tok, "def ", max_new_tokens=40, temperature=0, seed=s)[0] for s in (1, 2)]
    assert greedy[0] == greedy[1]                         # greedy ignores the seed
    proc = _cli("runners.generate", run_id[:8], "--store", store, "--prompt", "def ", "--max-new-tokens", 40,
                "--seed", 7)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "def " + a[0] + "\n"


def test_export_round_trips_weights_and_config(trained, tmp_path):
    store, run_id = trained
    out = tmp_path / "exported"
    proc = _cli("runners.export", run_id, "--store", store, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["run_id"] == run_id and config["params"] == read_run(store, run_id)["params"]
    from safetensors import safe_open
    with safe_open(out / "model.safetensors", "pt") as f:
        assert "wpe.weight" in f.keys() and len(f.keys()) > 5
    a, _ = load_model(out)
    b, cfg = load_run_model(store, run_id[:10])
    x = torch.tensor([tokenizer_for(cfg).encode("import os\n")])
    assert torch.equal(a(x)[0], b(x)[0])
    # scored through lm-eval by its registered name, from the exported directory
    import lm_eval
    ev.lm_class()
    res = lm_eval.simple_evaluate(model="scaling-toolkit", model_args=f"pretrained={out}", tasks=["code_cloze"],
                                  task_manager=ev.task_manager(False), limit=20, bootstrap_iters=0)
    assert 0 <= res["results"]["code_cloze"]["acc,none"] <= 1
    # refuses to overwrite
    assert "not an empty directory" in _one_error_line(_cli("runners.export", run_id, "--store", store, "--out", out))


def test_grid_cli_eval_flag_scores_new_runs(tmp_path):
    store = tmp_path / "s"
    proc = _cli("runners.isoflop", "--budget", "smoke", "--store", store, "--limit", "1", "--quiet",
                "--eval", "code_cloze", "--eval-limit", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = read_runs(store)
    assert len(runs) == 1 and runs["eval.code_cloze.n"].iloc[0] == 20
    assert np.isclose(runs["mix.text"].iloc[0] + runs["mix.code"].iloc[0], 1.0)
    assert (model_dir(store, runs["run_id"].iloc[0]) / "model.safetensors").exists()


def test_bad_input_is_one_error_line(trained, tmp_path, capsys):
    """In-process (``run_cli``, what ``python -m`` runs) but for the last: interpreter starts cost ~4 s each."""
    import importlib
    from types import SimpleNamespace

    from scaling.cli import run_cli

    def cli(module, *argv):
        code = run_cli(importlib.import_module(module).main, [str(a) for a in argv])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)

    store, run_id = trained
    assert "unknown task 'nosuch_task'" in _one_error_line(
        cli("runners.evaluate", "--store", store, "--tasks", "corpus_cloze,nosuch_task"))
    assert "does not exist" in _one_error_line(cli("runners.evaluate", "--store", tmp_path / "none", "--tasks", "corpus_cloze"))
    assert "not in store" in _one_error_line(cli("runners.generate", "ffffffff", "--store", store, "--prompt", "x"))
    assert "not in store" in _one_error_line(cli("runners.export", "ffffffff", "--store", store, "--out", tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    assert "--eval-limit needs --eval" in _one_error_line(
        cli("runners.isoflop", "--budget", "smoke", "--store", tmp_path / "y", "--eval-limit", "5"))
    before = read_run(store, run_id)
    # a fresh process: runners.evaluate turns the HF libraries offline before they are first imported
    line = _one_error_line(_cli("runners.evaluate", "--store", store, "--tasks", "lambada_openai", "--force"))
    assert "lambada_openai" in line and "offline" in line
    after = read_run(store, run_id)
    assert before.keys() == after.keys()                 # nothing half-written
