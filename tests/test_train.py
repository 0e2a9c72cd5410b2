"""Training one run: it learns, writes a complete row, resumes after a kill, and records divergence.

Tiny shapes (t32: 38K parameters, byte tokenizer, 128-token context) on the embedded corpus keep
each run to a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from runners import data as rdata
from runners.train import engines, trainer as train
from runners.grid.spec import RunSpec
from runners.models.gpt import GPTConfig
from scaling import store
from scaling.accounting import shape

pytestmark = pytest.mark.slow


def tiny_spec(name="t32", tokens=300_000, unique_tokens=100_000, **kw) -> RunSpec:
    s = shape(name)
    return RunSpec(name, s.d_model, s.ffw_size, s.attention_heads, s.n_layers, 256, 128,
                   tokens, unique_tokens, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scaling-cache")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache):
    """One uninterrupted 3-epoch run: (spec, store, row)."""
    spec = tiny_spec()
    where = tmp_path_factory.mktemp("store")
    row = train.train_run(spec, where, progress=False, cache_dir=cache)
    return spec, where, row


# -- hyper-parameters ---------------------------------------------------------------------------


def test_batch_follows_the_olmo_ladder_at_108m_parameters():
    # Porian et al. 2024 / OLMo-core ladder: 160 sequences of 2048 at N = 108M
    assert train.hparams(108_000_000, 2048).batch_size == 128  # 160 rounded to a power of two
    assert train.hparams(108_000_000, 1024).batch_size == 256  # same tokens per step


def test_learning_rate_follows_the_ladder_for_large_models():
    # above ~10B parameters the ladder's 0.0047 * (N / 108M)^(-1/3) is below the tiny-model cap
    assert train.hparams(int(20e9), 2048).lr == pytest.approx(0.0047 * (20e9 / 108e6) ** (-1 / 3))


def test_learning_rate_falls_and_batch_grows_with_model_size():
    sizes = [4e4, 2e5, 1e6, 5e6, 1e8, 1e9, 1e10, 1e11]
    hps = [train.hparams(int(n), 2048) for n in sizes]
    assert all(a.lr >= b.lr for a, b in zip(hps, hps[1:]))
    assert all(a.batch_size <= b.batch_size for a, b in zip(hps, hps[1:]))
    # the tiny-shape sweep: ~1e-2 at t32 (38K params), ~1.2e-3 at t256 (4.8M)
    assert train.hparams(37_824, 128).lr == pytest.approx(1e-2, rel=0.05)
    assert train.hparams(4_834_048, 128).lr == pytest.approx(1.15e-3, rel=0.05)


def test_short_runs_still_take_about_min_steps():
    hp = train.hparams(800_000, 128, tokens=1_000_000)
    steps = math.ceil(1_000_000 / (hp.batch_size * 128))
    assert train.MIN_STEPS / 2 <= steps <= 2 * train.MIN_STEPS
    # shorter still: the smallest batch (4 sequences), as many steps as the tokens allow
    assert train.hparams(800_000, 128, tokens=100_000).batch_size == 4


def test_schedule_warms_up_then_decays_to_the_floor():
    hp = train.hparams(1_000_000, 128)
    steps = 200
    lrs = [train.lr_at(s, steps, hp) for s in range(steps)]
    warmup = math.ceil(hp.warmup_fraction * steps)
    assert lrs[0] == pytest.approx(hp.lr / warmup)
    assert max(lrs) == pytest.approx(hp.lr)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert train.lr_at(steps, steps, hp) == pytest.approx(hp.min_lr_ratio * hp.lr)


# -- a whole run ---------------------------------------------------------------------------------


def test_tiny_run_learns_and_writes_a_complete_row(finished):
    spec, where, row = finished
    assert row["status"] == "ok"
    assert row["loss"] < math.log(256) - 1.5  # uniform over bytes is ln 256 = 5.55 nats
    for column in ("loss", "loss.text", "loss.code", "bpb", "acc", "train_loss", "wall_time_s",
                   "tokens_per_s", "steps", "epochs_seen", "device", "dtype", "corpus_fingerprint",
                   "tokenizer", "torch_version", "git_commit", "run_id", "params", "tokens",
                   "unique_tokens", "flops", "epochs", "shape", "cpu_time_s", "eval_tokens_cap", "cpu_model", "threads"):
        assert column in row, column
    from runners.train.cpu_dtype import cpu_model
    assert row["cpu_model"] == cpu_model() and row["threads"] >= 1          # what a dry run calibrates on
    assert row["run_time_s"] > row["wall_time_s"]         # the run's whole time: set-up and final evaluation too
    assert row["eval_tokens_cap"] == train.EVAL_TOKENS_PER_DOMAIN      # which measurement `loss` is
    assert 0 < row["cpu_time_s"] < 50 * row["wall_time_s"]
    assert row["loss"] == row["loss.text"]  # code_fraction 0: the run's mix is all text
    assert row["bpb"] == pytest.approx(row["loss"] / math.log(2))  # byte tokenizer: 1 byte/token
    assert row["epochs_seen"] == pytest.approx(spec.epochs, rel=0.02)
    assert row["params"] == spec.params and row["run_id"] == spec.run_id
    stored = store.read_runs(where)
    assert list(stored["run_id"]) == [spec.run_id]
    assert stored.iloc[0]["loss"] == pytest.approx(row["loss"])
    curve = store.read_curve(where, spec.run_id)
    assert len(curve) == row["steps"]
    assert curve["train_loss"].iloc[-20:].mean() < curve["train_loss"].iloc[:5].mean() - 1.5
    assert not engines.checkpoint_path(where, spec.run_id).exists()


def test_loss_of_a_code_mix_is_token_weighted(tmp_path, cache):
    spec = tiny_spec(tokens=40_000, unique_tokens=40_000, code_fraction=0.3)
    row = train.train_run(spec, tmp_path, progress=False, cache_dir=cache)
    assert row["loss"] == pytest.approx(0.7 * row["loss.text"] + 0.3 * row["loss.code"])


def test_killed_run_resumes_from_its_checkpoint(finished, tmp_path, cache, monkeypatch):
    spec, _, reference = finished
    kill_at = reference["steps"] // 2
    real_batch = rdata.EpochBatches.batch

    def batch_then_die(self, step):
        if step == kill_at:
            raise KeyboardInterrupt("simulated kill")
        return real_batch(self, step)

    monkeypatch.setattr(rdata.EpochBatches, "batch", batch_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.train_run(spec, tmp_path, progress=False, checkpoint_every_s=0.0, cache_dir=cache)
    assert engines.checkpoint_path(tmp_path, spec.run_id).exists()
    assert store.read_runs(tmp_path).empty

    monkeypatch.setattr(rdata.EpochBatches, "batch", real_batch)
    row = train.train_run(spec, tmp_path, progress=False, cache_dir=cache)
    assert row["status"] == "ok" and row["steps"] == reference["steps"]
    assert row["loss"] == pytest.approx(reference["loss"], abs=1e-4)
    assert len(store.read_runs(tmp_path)) == 1
    assert len(store.read_curve(tmp_path, spec.run_id)) == reference["steps"]
    assert not engines.checkpoint_path(tmp_path, spec.run_id).exists()


def test_max_steps_leaves_a_checkpoint_and_no_row(finished, tmp_path, cache):
    spec, _, reference = finished
    partial = train.train_run(spec, tmp_path, progress=False, max_steps=10, cache_dir=cache)
    assert partial["status"] == "running" and partial["steps"] == 10
    assert engines.checkpoint_path(tmp_path, spec.run_id).exists()
    assert store.read_runs(tmp_path).empty
    row = train.train_run(spec, tmp_path, progress=False, cache_dir=cache)
    assert row["loss"] == pytest.approx(reference["loss"], abs=1e-4)


def test_non_finite_loss_is_recorded_as_failed(tmp_path, cache, monkeypatch):
    absurd = train.Hparams(lr=1e30, batch_size=8, warmup_fraction=0.05, min_lr_ratio=0.1,
                           weight_decay=0.1, grad_clip=1.0)
    monkeypatch.setattr(train, "hparams", lambda *a, **k: absurd)
    spec = tiny_spec(tokens=50_000, unique_tokens=50_000)
    row = train.train_run(spec, tmp_path, progress=False, cache_dir=cache)
    assert row["status"] == "failed"
    assert row["failure_reason"].startswith("non-finite")
    stored = store.read_run(tmp_path, spec.run_id)
    assert stored["status"] == "failed" and stored["failure_reason"] == row["failure_reason"]
    assert not engines.checkpoint_path(tmp_path, spec.run_id).exists()


def test_bf16_autocast_matches_fp32_within_seed_noise(tmp_path, cache):
    """bf16 autocast changes a run's loss by no more than seeds do: a two-sample check over 4 seeds
    per dtype, |mean(bf16) - mean(fp32)| <= 3 standard errors of the difference (Welch). Measured on
    2 cores (AVX512-BF16, no AMX): seeds spread by ~0.024 nats at this size, bf16 - fp32 = -0.008.
    A fixed 0.02 failed on a CPU with AMX, where one seed pair differed by 0.039 (1.6 seed sds)."""
    def loss(seed, dtype):
        spec = tiny_spec(tokens=60_000, unique_tokens=30_000, seed=seed)
        return train.train_run(spec, tmp_path / f"{seed}-{dtype}", progress=False, dtype=dtype,
                               cache_dir=cache)["loss"]

    seeds = range(4)
    fp32 = np.array([loss(s, "fp32") for s in seeds])
    bf16 = np.array([loss(s, "bf16") for s in seeds])
    se = max(np.sqrt(fp32.var(ddof=1) / len(fp32) + bf16.var(ddof=1) / len(bf16)), 0.002)
    assert abs(bf16.mean() - fp32.mean()) <= 3 * se, (fp32, bf16)


def test_cpu_dtype_is_measured_once_and_cached(tmp_path, monkeypatch):
    """Native bf16 is detected, one measurement decides, the decision is cached and reused; the
    environment override wins; a CPU without bf16 instructions is fp32 without measuring."""
    from runners.train import cpu_dtype
    monkeypatch.delenv("SCALING_CPU_DTYPE", raising=False)
    calls = []

    def fake(speedup):
        def measure():
            calls.append(speedup)
            return {"fp32_step_s": 1.0, "bf16_step_s": 1.0 / speedup, "bf16_speedup": speedup,
                    "dtype": "bf16" if speedup >= cpu_dtype.MIN_SPEEDUP else "fp32"}
        return measure

    monkeypatch.setattr(cpu_dtype, "native_bf16", lambda: True)
    assert cpu_dtype.decide(tmp_path, fake(2.6))["dtype"] == "bf16"
    assert cpu_dtype.decide(tmp_path, fake(0.5))["dtype"] == "bf16"      # cached: not measured again
    assert calls == [2.6] and (tmp_path / "cpu_dtype.json").exists()
    assert cpu_dtype.decide(tmp_path / "other", fake(0.74))["dtype"] == "fp32"
    monkeypatch.setattr(cpu_dtype, "native_bf16", lambda: False)
    assert cpu_dtype.decide(tmp_path / "none", fake(9.0))["dtype"] == "fp32" and calls == [2.6, 0.74]
    monkeypatch.setenv("SCALING_CPU_DTYPE", "bf16")
    assert cpu_dtype.decide(tmp_path)["dtype"] == "bf16"
    # the real probe runs and returns a decision consistent with its own timings
    m = cpu_dtype.measure()
    assert m["dtype"] == ("bf16" if m["bf16_speedup"] >= cpu_dtype.MIN_SPEEDUP else "fp32")


def test_the_cpu_dtype_is_decided_for_the_shape_that_trains(tmp_path, monkeypatch):
    """On AVX512-BF16 without AMX bf16 loses at tiny shapes and wins at d256 (docs/benchmarks.md):
    the decision is measured per model shape and batch, each cached under its own key."""
    from runners.train import cpu_dtype
    monkeypatch.delenv("SCALING_CPU_DTYPE", raising=False)
    monkeypatch.setattr(cpu_dtype, "native_bf16", lambda: True)
    seen = []

    def by_shape(shape):
        seen.append(shape)
        speedup = 1.4 if shape[0] >= 256 else 0.6
        return {"fp32_step_s": 1.0, "bf16_step_s": 1 / speedup, "bf16_speedup": speedup,
                "dtype": "bf16" if speedup >= cpu_dtype.MIN_SPEEDUP else "fp32"}

    big, tiny = (256, 1024, 8, 6, 256, 256, 8), (32, 128, 2, 2, 256, 128, 8)
    assert cpu_dtype.decide(tmp_path, by_shape, shape=big)["dtype"] == "bf16"
    assert cpu_dtype.decide(tmp_path, by_shape, shape=tiny)["dtype"] == "fp32"
    assert cpu_dtype.decide(tmp_path, by_shape, shape=big)["dtype"] == "bf16" and seen == [big, tiny]
    # the real probe at a given shape: a tiny one, a few steps, three forms
    m = cpu_dtype.measure(tiny)
    assert m["dtype"] == ("bf16" if m["bf16_speedup"] >= cpu_dtype.MIN_SPEEDUP else "fp32")
    assert m["attention"] == ("fp32" if m["bf16_fp32_attention_step_s"] < m["bf16_step_s"] else "bf16")
    assert m["bf16_speedup"] == pytest.approx(m["fp32_step_s"] / min(m["bf16_step_s"], m["bf16_fp32_attention_step_s"]))


def test_attention_runs_in_fp32_under_bf16_autocast_where_the_settings_say(tmp_path, monkeypatch):
    """On a Xeon with AMX the CPU flash-attention kernel is 1.5-5x slower in bf16 than in fp32 at
    head dims <= 32 (docs/benchmarks.md): ``cpu_dtype`` times a third form, bf16 with attention in
    fp32, and a run's settings carry that choice to the attention of every engine, the stacked
    engine (which tiny CPU runs take) included."""
    import torch
    import torch.nn.functional as F
    from runners.models.gpt import GPT, causal_attention, fp32_attention
    from runners.train import cpu_dtype
    from runners.train.batched import StackedGPT
    from runners.train.settings import autocast, resolve_settings

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert causal_attention(q, k, v).dtype == torch.bfloat16
        with fp32_attention():
            y = causal_attention(q, k, v)
        assert causal_attention(q, k, v).dtype == torch.bfloat16          # the context ends with its block
    assert y.dtype == torch.float32
    assert torch.equal(y, F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True))

    # a measurement that chose fp32 attention reaches the settings, the dtype chosen or given
    monkeypatch.delenv("SCALING_CPU_DTYPE", raising=False)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_dtype, "native_bf16", lambda: True)
    tiny = (32, 128, 2, 2, 256, 128, 8)
    cpu_dtype.decide(None, lambda shape: {"fp32_step_s": 1.0, "bf16_step_s": 1.9, "bf16_fp32_attention_step_s": 0.8,
                                          "bf16_speedup": 1.25, "attention": "fp32", "dtype": "bf16"}, shape=tiny)
    settings = resolve_settings("cpu", shape=tiny)
    assert settings.dtype == "bf16" and settings.fp32_attention
    assert resolve_settings("cpu", dtype="bf16", shape=tiny).fp32_attention
    assert not resolve_settings("cpu", dtype="bf16", shape=tiny, fp32_attention=False).fp32_attention
    assert not resolve_settings("cpu", dtype="fp32", shape=tiny).fp32_attention

    # both engines' models under those settings: attention's kernel sees fp32 in both, bf16 under
    # plain autocast; the loss stays that of fp32 within bf16 rounding
    from torch.utils._python_dispatch import TorchDispatchMode

    class AttentionInputs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "scaled_dot_product" in func.__name__:
                self.dtypes.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    model = GPT(GPTConfig(d_model=32, ffw_size=128, n_heads=2, n_layers=2, vocab_size=256, seq_len=128))
    x = torch.randint(0, 256, (4, 128))
    reference = model(x, x)[1].item()
    for context, dtype in ((autocast(settings), torch.float32),
                           (torch.autocast("cpu", dtype=torch.bfloat16), torch.bfloat16)):
        with context, AttentionInputs() as seen:
            single = model(x, x)[1].item()
            stacked = StackedGPT([model])(x[None], x[None]).item()
        assert seen.dtypes == [dtype] * 4, seen.dtypes                    # two layers, two models
        assert abs(single - reference) < 0.02 and abs(stacked - reference) < 0.02, (single, stacked, reference)


def test_a_cpu_grid_trains_in_one_precision(tmp_path, cache, monkeypatch):
    """Per-shape decisions would train a sweep's small models in fp32 and its large ones in bf16
    (the Xeon with AMX: fp32 to d48, bf16 from d64), numerics that change with model size. The
    launcher takes one dtype for the grid: bf16 only if it pays over the grid's steps."""
    from runners.train import cpu_dtype
    from runners.train.engines import probe_shape
    from runners.train.launch import grid_precision
    from runners.train.options import TrainOptions
    monkeypatch.delenv("SCALING_CPU_DTYPE", raising=False)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_dtype, "native_bf16", lambda: True)
    small, big = (32, 128, 2, 2, 256, 128, 8), (64, 256, 4, 3, 256, 128, 8)
    speed = {small: 0.8, big: 1.3}                  # bf16 over fp32 per step; fp32 step 1 s and 2 s

    def measure(shape):
        fp32 = 1.0 if shape == small else 2.0
        return {"fp32_step_s": fp32, "bf16_step_s": fp32 / speed[shape] * 1.2,
                "bf16_fp32_attention_step_s": fp32 / speed[shape], "bf16_speedup": speed[shape], "attention": "fp32",
                "dtype": "bf16" if speed[shape] >= cpu_dtype.MIN_SPEEDUP else "fp32"}

    # equal steps: fp32 3 s against bf16 1.25 + 1.54 s: 1.08x, under 1.1x: fp32 for both shapes
    grid = cpu_dtype.decide_grid([(small, 100), (big, 100)], tmp_path, measure)
    assert grid["dtype"] == "fp32" and grid["bf16_speedup"] == pytest.approx(3 / (1 / 0.8 + 2 / 1.3))
    # the big shape's steps dominate: bf16 for both
    assert cpu_dtype.decide_grid([(small, 10), (big, 100)], tmp_path, measure)["dtype"] == "bf16"
    assert cpu_dtype.decide_grid([(small, 100)], tmp_path, measure)["dtype"] == "fp32"

    # the launcher's options: measured for the runs it trains (their shapes and batches), the dtype
    # given left alone
    def grid(t32_tokens, t64_tokens):
        specs = [tiny_spec("t32", tokens=t32_tokens), tiny_spec("t64", tokens=t64_tokens)]
        for s in specs:
            hp = train.hparams(s.params, s.seq_len, tokens=s.tokens)
            cpu_dtype.decide(None, lambda shape: measure(small if shape[0] == 32 else big), shape=probe_shape(s, hp))
        return specs

    specs = grid(100_000, 10_000_000)                                     # the t64 run's steps dominate
    assert grid_precision(specs, TrainOptions(device="cpu")).dtype == "bf16"
    assert grid_precision(grid(10_000_000, 100_000), TrainOptions(device="cpu")).dtype == "fp32"
    assert grid_precision(specs, TrainOptions(device="cpu", dtype="fp32")).dtype == "fp32"
    monkeypatch.setenv("SCALING_CPU_DTYPE", "bf16")                  # every run reads it: nothing to decide
    assert grid_precision(specs, TrainOptions(device="cpu")).dtype is None
    monkeypatch.delenv("SCALING_CPU_DTYPE")

    # a real launch of such a grid in this process: the t32 run, fp32 by its own measurement,
    # trains in the grid's bf16, as does the t64 run
    from runners.train.launch import launch
    specs = grid(40_000, 160_000)
    assert cpu_dtype.decide(None, shape=probe_shape(specs[0], train.hparams(specs[0].params, 128, 40_000)))["dtype"] == "fp32"
    summary = launch(specs, tmp_path / "store", options=TrainOptions(device="cpu", progress=False, cache_dir=cache),
                     workers=1)
    assert sorted(summary.trained) == sorted(s.run_id for s in specs)
    assert [store.read_run(tmp_path / "store", s.run_id)["dtype"] for s in specs] == ["bf16", "bf16"]


def test_one_failure_policy_across_the_trainers_callers(tmp_path, cache, monkeypatch):
    """The one Trainer ends every loop at the first non-finite step with the same reason:
    ``runners.compare`` stores the model as a failed row, ``runners.merge`` stops (a diverged expert
    cannot be merged) naming the step; hooks see every finished step."""
    from runners.studies import compare
    from runners.studies import merge
    from runners.studies import diversity as div
    absurd = train.Hparams(lr=1e30, batch_size=4, warmup_fraction=0.05, min_lr_ratio=0.1,
                           weight_decay=0.1, grad_clip=1.0)
    real = train.hparams
    monkeypatch.setattr(train, "hparams", lambda *a, **k: absurd)
    result = compare.compare([div.parse_dataset("text")], [1.0], shape="t24", eval_tokens=4096,
                             diversity_batches=0, cache_dir=cache)
    assert list(result.models["status"]) == ["failed"]
    with pytest.raises(train.UsageError, match="non-finite"):
        merge.run(merge.ProxyConfig(shape="t24", seed_steps=5, steps=3, batch_size=4, lr=1e30,
                                    mixtures=(0.0, 0.5, 1.0), eval_tokens=2048), None, cache_dir=cache)
    monkeypatch.setattr(train, "hparams", real)
    seen = []
    spec = tiny_spec(tokens=20_000, unique_tokens=20_000)
    corpus, tok, hp, batches = train.prepare_data(spec, cache)
    settings = train.resolve_settings("cpu")
    model, forward, opt = engines.build(GPTConfig.from_spec(spec), hp, settings)
    tl = train.TrainingLog(spec, batches, hp.batch_size * spec.seq_len, progress=False)
    trainer = train.Trainer.one(model, forward, opt, batches, hp, settings, tl,
                                hooks=[lambda t, step, losses, lr: seen.append(step)])
    trainer.train(stop=5)
    assert seen == [0, 1, 2, 3, 4] and trainer.log.done == 5 and trainer.engine.model(0) is model


def test_every_run_of_the_tiny_preset_takes_the_same_batch():
    """One isoFLOP curve, one batch: the rule's switch between 4, 8 and 16 sequences showed as a
    ~0.1-nat step along a curve (runners.train.trainer.hparams)."""
    from runners.grid import plan
    from scaling.accounting import parse_budgets
    specs = [s for b in parse_budgets("tiny") for s in plan.isoflop_grid(b)]
    assert len(specs) == 28                     # 4 budgets x 5 sizes, the 2 widest of each with seed 1 too
    assert {train.hparams(s.params, s.seq_len, tokens=s.tokens).batch_size for s in specs} == {8}
    assert train.hparams(20_000, 128, tokens=100_000).batch_size == 4   # too short for 150 steps of 8
