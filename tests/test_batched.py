"""Batched training (runners.train.batched): K same-shape runs stacked in one module give each run what
it would get alone: the same initialisation, data, clipping and AdamW steps (to float tolerance),
its own row, curve and weights, and a failure of its own."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from runners.train import batched
from runners.train import trainer as train
from runners.models.gpt import GPT, GPTConfig
from runners.grid.spec import RunSpec
from scaling import store
from scaling.accounting import shape

pytestmark = pytest.mark.slow


def spec(seed=0, unique=40_000, tokens=40_000, name="t24") -> RunSpec:
    s = shape(name)
    return RunSpec(name, s.d_model, s.ffw_size, s.attention_heads, s.n_layers, 256, 128, tokens, unique, seed=seed)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("batched-cache")


def test_stacked_forward_is_each_models_forward():
    cfg = GPTConfig(d_model=24, ffw_size=96, n_heads=2, n_layers=2, vocab_size=256, seq_len=128)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(GPT(cfg))
    stacked = batched.StackedGPT(models)
    x = torch.randint(0, 256, (3, 2, 128))
    y = torch.randint(0, 256, (3, 2, 128))
    losses = stacked(x, y)
    for k, m in enumerate(models):
        assert losses[k].item() == pytest.approx(m(x[k], y[k])[1].item(), abs=1e-5)
        back = stacked.model(k)
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))


def test_batched_runs_match_one_at_a_time(tmp_path, cache):
    """Four runs (two seeds x two repetition levels) at one shape and token count: the first steps
    of every loss curve agree with the run trained alone to 1e-4 nats (later steps drift as float
    differences grow, as between thread counts); every run has its own row, curve and weights."""
    specs = [spec(seed, unique) for seed in (0, 1) for unique in (40_000, 10_000)]
    rows = batched.train_group(specs, tmp_path / "batched", progress=False, cache_dir=cache)
    assert [r["status"] for r in rows] == ["ok"] * 4 and all(r["batched_with"] == 4 for r in rows)
    for s in specs:
        alone = train.train_run(s, tmp_path / "alone", progress=False, cache_dir=cache)
        a = store.read_curve(tmp_path / "alone", s.run_id)["train_loss"].to_numpy()
        b = store.read_curve(tmp_path / "batched", s.run_id)["train_loss"].to_numpy()
        assert len(a) == len(b) == alone["total_steps"]
        assert np.abs(a[:10] - b[:10]).max() < 1e-4
        row = store.read_run(tmp_path / "batched", s.run_id)
        assert row["loss"] == pytest.approx(alone["loss"], abs=0.1)
        assert (tmp_path / "batched" / "_models" / s.run_id / "model.safetensors").exists()
    # different seeds and repetition levels really are different runs
    losses = [r["train_loss"] for r in rows]
    assert len({round(x, 6) for x in losses}) == 4


def test_a_diverging_run_fails_alone(tmp_path, cache, monkeypatch):
    """One run of a group turns non-finite (its embedding poisoned after initialisation): it is a
    failed row with a reason, frozen from then on; the other run of the group finishes as usual.
    Runs with different hyper-parameters are refused as a group."""
    specs = [spec(0), spec(1)]
    real = batched.StackedGPT.__init__

    def poisoned(self, models):
        real(self, models)
        with torch.no_grad():
            self.p("wte.weight")[1].fill_(float("nan"))
    monkeypatch.setattr(batched.StackedGPT, "__init__", poisoned)
    rows = batched.train_group(specs, tmp_path / "g", progress=False, cache_dir=cache)
    assert rows[0]["status"] == "ok" and np.isfinite(rows[0]["loss"])
    assert rows[1]["status"] == "failed" and rows[1]["failure_reason"].startswith("non-finite")
    assert store.read_run(tmp_path / "g", specs[1].run_id)["status"] == "failed"
    monkeypatch.undo()
    real_prepare = train.prepare_data

    def mixed(s, cache_dir=None):
        corpus, tok, hp, batches = real_prepare(s, cache_dir)
        return corpus, tok, (dataclasses.replace(hp, lr=hp.lr * 2) if s.seed == 1 else hp), batches
    monkeypatch.setattr(train, "prepare_data", mixed)
    with pytest.raises(Exception, match="hyper-parameters"):
        batched.train_group(specs, tmp_path / "mixed", progress=False, cache_dir=cache)


def test_groups_are_same_shape_and_tokens():
    a, b, c = spec(0), spec(1), spec(0, tokens=80_000, unique=80_000)
    d = spec(0, name="t32")
    gs = batched.groups([a, b, c, d, spec(2)], 2)
    assert [[s.run_id for s in g] for g in gs] == [[a.run_id, b.run_id], [spec(2).run_id], [c.run_id], [d.run_id]]


def test_grid_cli_validates_the_flag(tmp_path):
    """(That the grid CLIs stack runs is checked on the smoke grid in test_cli_runners.)"""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--batch-runs", "0",
                        "--store", tmp_path / "x"], capture_output=True, text=True)
    assert p.returncode == 2 and "--batch-runs must be a whole number from 1 to 256 or auto" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_the_stacked_engine_honours_dtype_and_leaves_compiled_runs_alone(tmp_path, cache, monkeypatch):
    """``dtype`` reaches the stacked step (it used to be dropped); a compiled step is not something
    the stacked engine does, so runs asked to compile are trained one at a time."""
    from runners.train import launch
    specs = [spec(seed) for seed in (0, 1)]
    summary = launch.launch(specs, tmp_path / "bf16", progress=False, workers=1, batch_runs=2, dtype="bf16",
                            cache_dir=cache)
    assert summary.ok
    for s in specs:
        row = store.read_run(tmp_path / "bf16", s.run_id)
        assert row["dtype"] == "bf16" and row["batched_with"] == 2
    seen = []
    monkeypatch.setattr(batched, "train_group", lambda *a, **k: seen.append(a) or [])
    monkeypatch.setattr(train, "train_runs", lambda specs, *a, **k: [{"run_id": s.run_id, "status": "ok"} for s in specs])
    launch.launch([spec(seed) for seed in (2, 3)], tmp_path / "compiled", progress=False, workers=1,
                  batch_runs=2, compile=True, cache_dir=cache)
    assert not seen


def test_a_grids_losses_do_not_depend_on_batch_runs(tmp_path, cache):
    """Tiny CPU runs always take the stacked engine, K = 1 included, and the stacked step gives
    each run the same numbers whatever K: one at a time and two at a time store the same losses
    (the local engine's differ in the last bits, which tiny runs amplify to ~0.07 nats)."""
    from runners.train import launch
    specs = [spec(seed) for seed in (0, 1)]
    for k in (1, 2):
        assert launch.launch(specs, tmp_path / f"k{k}", progress=False, workers=1, batch_runs=k, cache_dir=cache).ok
    one, two = (store.read_runs(tmp_path / f"k{k}").set_index("run_id") for k in (1, 2))
    assert (one["engine"] == "stacked").all() and sorted(two["batched_with"]) == [2, 2]
    assert one.loc[two.index, "loss"].tolist() == two["loss"].tolist()


def test_a_run_that_left_a_checkpoint_resumes_where_it_would_have_been_stacked(tmp_path, cache):
    """Stacked runs resume together or not at all, so a run that left a checkpoint (a killed grid)
    trains alone when relaunched beside a fresh twin of its shape: it resumes instead of starting
    over (it used to be stacked with the fresh run and lose its progress), and ends as it would
    have uninterrupted. A write of its checkpoint that the kill left half done goes with it."""
    from runners.train import launch
    a, b = spec(0), spec(1)
    where = tmp_path / "resumed"
    launch.launch([a], where, progress=False, workers=1, batch_runs=1, max_steps=4, cache_dir=cache)
    ckpts = where / "_checkpoints"
    assert [p.name for p in ckpts.iterdir()] == [f"{a.run_id}.pt"]
    (ckpts / f".tmp-{a.run_id}-x1y2.pt").write_bytes(b"half a checkpoint")   # a killed write of it
    (ckpts / ".tmp-someone-else-x1y2.pt").write_bytes(b"not ours")
    assert launch.launch([a, b], where, progress=False, workers=1, batch_runs=2, cache_dir=cache).ok
    runs = store.read_runs(where).set_index("run_id")
    assert runs.loc[a.run_id, "resumed_from_step"] == 4 and runs.loc[b.run_id, "resumed_from_step"] == 0
    assert list(runs["batched_with"]) == [1, 1]
    assert [p.name for p in ckpts.iterdir()] == [".tmp-someone-else-x1y2.pt"]
    assert launch.launch([a], tmp_path / "whole", progress=False, workers=1, batch_runs=1, cache_dir=cache).ok
    assert runs.loc[a.run_id, "loss"] == pytest.approx(store.read_run(tmp_path / "whole", a.run_id)["loss"], abs=1e-4)


def test_auto_stacks_only_what_it_measured_to_pay(tmp_path, monkeypatch):
    """``--batch-runs auto`` takes the K with the cheapest measured step per run, K > 1 only when it
    beats one model at a time by MIN_GAIN; the measurement is cached per machine and shape."""
    per_step = {1: 10.0, 2: 16.0, 4: 30.0, 8: 88.0}              # per run: 10, 8, 7.5, 11
    calls = []
    monkeypatch.setattr(batched, "_step_seconds", lambda cfg, batch, k: calls.append(k) or per_step[k])
    chosen = batched.measured_k(spec(), 8, 1, cache_dir=tmp_path)
    assert chosen["k"] == 4 and chosen["seconds_per_run_step"][4] == 7.5
    assert batched.measured_k(spec(), 8, 1, cache_dir=tmp_path)["k"] == 4 and sorted(calls) == [1, 2, 4, 8]
    assert batched.measured_k(spec(), 3, 1, cache_dir=tmp_path)["k"] == 2     # at most 3: K = 2, 1.25x
    per_step[2] = 17.0                                                        # 1.18x: not worth it
    assert batched.measured_k(spec(), 3, 2, cache_dir=tmp_path)["k"] == 1
