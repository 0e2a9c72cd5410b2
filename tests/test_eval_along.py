"""Continuous task metrics (bits per byte and CE of the correct answer) from lm-eval's own requests,
and evaluation along training: checkpoints scored in the loop, kept across a kill, fitted by
``scaling.downstream`` from the store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from runners.data import ByteTokenizer  # noqa: E402
from runners.eval import evaluate as ev  # noqa: E402
from runners.models.gpt import GPT, GPTConfig  # noqa: E402
from scaling import store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(d_model=32, ffw_size=64, n_heads=2, n_layers=1, vocab_size=256, seq_len=128))


def _logp_of(model, context_ids, continuation_ids):
    """Sum of log p(continuation | context) by hand, one token at a time from the logits."""
    ids = torch.tensor([context_ids + continuation_ids])
    logp = torch.log_softmax(model(ids[:, :-1])[0].float(), -1)[0]
    start = len(context_ids) - 1
    return sum(logp[start + i, t].item() for i, t in enumerate(continuation_ids))


def test_bpb_and_ce_of_the_correct_choice_match_a_hand_computation():
    model, tok = _model(), ByteTokenizer()
    lm = ev.make_lm(model, tok)

    class Req:
        def __init__(self, *args):
            self.args = args

    # lm-eval moves the context's trailing space into the continuation; "é" is two UTF-8 bytes
    context, choices = "The café is ", ["open", "clos\u00e9d"]
    resps = [[r] for r in lm.loglikelihood([Req(context, c) for c in choices])]
    sample = {"arguments": [(context, c) for c in choices], "resps": resps, "target": 1}
    bpb, ce, chance = ev.continuation_scores(sample, "multiple_choice", lm.continuation_size)
    gold = " clos\u00e9d".encode("utf-8")                 # the scored text: 8 bytes, 8 byte tokens
    ll = _logp_of(model, [tok.eot_id] + tok.encode("The café is"), list(gold))
    assert math.isclose(bpb, -ll / (math.log(2) * 8), rel_tol=1e-5)
    assert math.isclose(ce, -ll / 8, rel_tol=1e-5)
    assert chance == 0.5
    # a cloze task scores its one request; an answer given as text finds its choice
    cloze = ev.continuation_scores({"arguments": [(context, "open")], "resps": [resps[0]], "target": " open"},
                                   "loglikelihood", lm.continuation_size)
    assert math.isnan(cloze[2]) and cloze[0] > 0
    by_text = ev.continuation_scores({**sample, "target": "closéd"}, "multiple_choice", lm.continuation_size)
    assert by_text == (bpb, ce, chance)
    assert ev.continuation_scores(sample, "generate_until", lm.continuation_size) is None


def test_the_suite_writes_bpb_ce_and_chance_from_the_same_requests():
    """Through lm-eval on the offline cloze task: the mean over items of the gold answer's bits per
    byte, computed by hand from the task's own items, is the ``eval.corpus_cloze.bpb`` column."""
    from runners.eval.tasks.cloze import _items
    model, tok = _model(1), ByteTokenizer()
    cols = ev.TaskSuite(["corpus_cloze"], limit=6).score(ev.make_lm(model, tok))
    bpb = []
    for it in _items("embedded", "text", 500, 1234)[:6]:
        context = it["context"].rstrip()                # lm-eval's trailing spaces go to the answer
        answer = it["context"][len(context):] + it["choices"][it["label"]]
        ll = _logp_of(model, [tok.eot_id] + tok.encode(context), tok.encode(answer))
        bpb.append(-ll / (math.log(2) * len(answer.encode("utf-8"))))
    assert cols["eval.corpus_cloze.bpb"] == pytest.approx(np.mean(bpb), rel=1e-5)
    assert cols["eval.corpus_cloze.ce"] == pytest.approx(np.mean(bpb) * math.log(2), rel=1e-5)   # 1 byte = 1 token
    assert cols["eval.corpus_cloze.chance"] == 0.25 and cols["eval.corpus_cloze.n"] == 6
    assert 7.0 < cols["eval.corpus_cloze.bpb"] < 9.0          # untrained: near log2(256) = 8 bits


def _spec():
    from runners.grid.plan import _spec as make
    from scaling import accounting
    return make(accounting.shape("t32"), vocab=256, seq_len=128, tokens=60_000, unique=60_000, grid="test",
                budget="", code_fraction=0.5, filter="none", seed=0, data="embedded", tokenizer="byte")


def test_a_run_scores_its_checkpoints_and_a_resumed_run_does_not_score_them_twice(tmp_path):
    from runners.train.trainer import train_run
    spec = _spec()
    opts = dict(progress=False, eval_every=40, eval_tasks=["corpus_cloze"], eval_limit=8)
    partial = train_run(spec, tmp_path, max_steps=80, **opts)      # stops like a kill: checkpoint kept, no row
    assert partial["status"] == "running"
    first = store.read_checkpoint_evals(tmp_path, spec.run_id)
    assert first["step"].tolist() == [0, 40, 80]
    row = train_run(spec, tmp_path, **opts)
    steps = row["total_steps"]
    table = store.read_checkpoint_evals(tmp_path, spec.run_id)
    assert table["step"].tolist() == sorted(set(range(0, steps + 1, 40)) | {steps})
    # the rows scored before the kill are kept as they were (not scored again)
    again = table[table["step"] <= 80].reset_index(drop=True)
    assert again["eval_time_s"].tolist() == first["eval_time_s"].tolist()
    assert np.allclose(again["eval.corpus_cloze.bpb"], first["eval.corpus_cloze.bpb"])
    assert table["tokens"].tolist() == [s * row["batch_size"] * 128 for s in table["step"]]
    assert (table["params"] == spec.params).all() and (table["run_tokens"] == spec.tokens).all()
    # learning shows in the continuous metric (accuracy at 8 items cannot show it)
    assert table["eval.corpus_cloze.bpb"].iloc[-1] < table["eval.corpus_cloze.bpb"].iloc[0] - 2.0
    assert table["loss"].iloc[-1] < table["loss"].iloc[0] - 1.0
    # the run's row: the last checkpoint's scores, and evaluation time apart from training time
    final = table.iloc[-1]
    assert row["eval.corpus_cloze.bpb"] == final["eval.corpus_cloze.bpb"]
    assert row["eval_checkpoints"] == len(table) and row["eval_every"] == 40
    assert row["eval_time_s"] >= table["eval_time_s"].sum()
    assert store.read_run(tmp_path, spec.run_id)["eval.corpus_cloze.acc"] == final["eval.corpus_cloze.acc"]


def test_smoke_grid_scored_along_training_is_fitted_by_scaling_downstream(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    run = subprocess.run([sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--eval", "corpus_cloze",
                          "--eval-every", "25", "--eval-limit", "40", "--eval-tokens", "65536", tmp_path / "s", "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    table = store.read_checkpoint_evals(tmp_path / "s")
    per_run = table.groupby("run_id").size()
    assert len(per_run) == 6 and per_run.min() >= 3
    runs = store.read_runs(tmp_path / "s")
    assert (runs["eval_checkpoints"] == per_run.loc[runs["run_id"]].to_numpy()).all()
    fit = subprocess.run([sys.executable, "-m", "scaling.downstream", "fit", tmp_path / "s", "--task", "corpus_cloze",
                          "--via", "bpb", "--bootstrap", "20", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    out = json.loads(fit.stdout)
    # every checkpoint after the first 10% of its run is a step-2 point
    kept = sum(int((g["tokens"] >= 0.1 * g["tokens"].max()).sum())
               for _, g in table[table["tokens"] > 0].groupby("run_id"))
    assert out["via"] == "bpb" and out["n_runs"] == 6 and out["n_points"] == kept
    assert out["settings"]["checkpoints"] is True
    # the table is a SOURCE anywhere: the store's _evals folder
    show = subprocess.run([sys.executable, "-m", "scaling.store", "show", tmp_path / "s", "--checkpoints", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert len(json.loads(show.stdout)) == len(table)
    from scaling.sources import read_table
    assert len(read_table(tmp_path / "s" / "_evals")) == len(table)


def test_stacked_runs_are_scored_along_training_as_runs_alone_are(tmp_path):
    """Evaluation along training is a Trainer hook, so the stacked engine has it too: two runs
    stepped together, stopped at step 80 (``max_steps``) and resumed, score the same checkpoints as
    one run alone, each its own model (step 0: the same initial weights, so the same scores)."""
    from runners.grid.plan import _spec as make
    from runners.train import batched
    from runners.train.trainer import train_run
    from scaling import accounting

    specs = [make(accounting.shape("t32"), vocab=256, seq_len=128, tokens=60_000, unique=60_000, grid="test",
                  budget="", code_fraction=0.5, filter="none", seed=seed, data="embedded", tokenizer="byte")
             for seed in (0, 1)]
    opts = dict(progress=False, eval_every=40, eval_tasks=("corpus_cloze",), eval_limit=8)
    partial = batched.train_group(specs, tmp_path / "stacked", max_steps=80, **opts)
    assert [r["status"] for r in partial] == ["running", "running"]
    rows = batched.train_group(specs, tmp_path / "stacked", **opts)
    alone = train_run(specs[1], tmp_path / "alone", **opts)
    steps = alone["total_steps"]
    expected = sorted(set(range(0, steps + 1, 40)) | {steps})
    tables = [store.read_checkpoint_evals(tmp_path / "stacked", s.run_id) for s in specs]
    assert all(t["step"].tolist() == expected for t in tables)
    assert all(r["status"] == "ok" and r["batched_with"] == 2 and r["eval_checkpoints"] == len(expected)
               and r["resumed_from_step"] == 80 for r in rows)
    mine = store.read_checkpoint_evals(tmp_path / "alone", specs[1].run_id)
    bpb = "eval.corpus_cloze.bpb"
    assert tables[1][bpb].iloc[0] == pytest.approx(mine[bpb].iloc[0], abs=1e-4)
    assert tables[0][bpb].iloc[0] != pytest.approx(tables[1][bpb].iloc[0], abs=1e-3)   # two models, not one
    assert np.allclose(tables[1][bpb], mine[bpb], atol=0.05)
    assert rows[1]["eval.corpus_cloze.bpb"] == tables[1][bpb].iloc[-1]
