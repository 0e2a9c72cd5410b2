"""The one Trainer: a run's life and the training loop, whatever engine takes the steps.

``train_runs(specs, store, options, engine)`` is what every launcher calls: it claims the runs, loads
their unique data (``runners.data``), has the engine (``runners.train.engines``: one model, K
stacked models, DeepSpeed ranks) build the models and resume from their checkpoints, runs
``Trainer.train`` for ``ceil(tokens / (batch * seq_len))`` steps with AdamW, linear warmup and
cosine decay, scores checkpoints along training when asked, evaluates validation loss per domain and
writes one row per run (``scaling.store.write_run``) plus its loss curve. It checkpoints every
``checkpoint_every_s`` seconds and resumes when rerun, so a killed grid loses at most that much
work; batches are a pure function of the step (``EpochBatches``), so a resumed run sees the same
data as an uninterrupted one. A run whose loss turns non-finite is recorded as ``failed`` with a
``failure_reason``, not raised. ``train_run(spec, store)`` is one run on the local engine.

Hyper-parameters are functions of N written once, in ``hparams``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from runners import data as rdata
from runners.models.gpt import GPT
from runners.train.evaluation import EVAL_TOKENS_PER_DOMAIN, evaluate, mix_weights, validation_metrics  # noqa: F401
from runners.train.options import TrainOptions
from runners.train.settings import DTYPES, Settings, autocast, resolve_settings, to_device  # noqa: F401
from scaling import store as rstore
from scaling.cli import UsageError
from scaling.errors import DataError

log = logging.getLogger(__name__)

#: Short runs still get this many optimiser steps when ``hparams`` is told the token count.
MIN_STEPS = 1000
#: Below TINY_PARAMS parameters a run of at least TINY_MIN_STEPS steps takes TINY_BATCH_TOKENS
#: per step (8 sequences of 128), whatever its length: see ``hparams``.
TINY_PARAMS = 1_000_000
TINY_BATCH_TOKENS = 1024
TINY_MIN_STEPS = 150
#: Linear warmup as a share of the run's steps: 5% (GPT-3 / Chinchilla scale runs), and 20% below
#: TINY_PARAMS. Measured (``benchmarks/tiny_sweep.py --warmup``, code, batch 8 x 128, the rule's LR):
#: s96 at 850K tokens (830 steps) ends at 1.98/2.27/2.25/2.23 nats over 4 seeds with 5% (42 steps)
#: and 1.95/1.92/1.96/1.93 with 20%; s64 at 2M tokens 1.77/1.76/1.96 and 1.76/1.75/1.77; s24 at 850K
#: tokens 2.216 vs 2.212 mean (range 0.038 vs 0.027). A short warmup leaves the wider tiny models
#: stuck near the unigram loss for a random share of their few hundred steps: the seed-to-seed
#: scatter and the sharp rise at the large-model end of the ``tiny`` isoFLOP curves.
WARMUP_FRACTION = 0.05
TINY_WARMUP_FRACTION = 0.2


# --------------------------------------------------------------------------------------------
# Hyper-parameters as functions of N


@dataclass(frozen=True)
class Hparams:
    lr: float                    #: peak learning rate
    batch_size: int              #: sequences per optimiser step
    warmup_fraction: float       #: share of the run's steps spent in linear warmup
    min_lr_ratio: float          #: cosine decays to min_lr_ratio * lr
    weight_decay: float          #: AdamW decoupled weight decay (matrices only)
    grad_clip: float             #: max global gradient norm
    beta1: float = 0.9
    beta2: float = 0.95


def hparams(params: int, seq_len: int, tokens: int | None = None) -> Hparams:
    """Hyper-parameters of a model of ``params`` parameters, written once for every run.

    * Batch ``160 * (N / 108e6) ** (2/3)`` sequences of 2048 tokens: the OLMo-core model ladder's
      rule (from Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of
      Language Models"), kept in tokens so it does not depend on ``seq_len``, rounded to a power of
      two sequences, at least 4. With ``tokens`` given, also at most ``tokens / (MIN_STEPS *
      seq_len)``: on the tiny CPU budgets (10^10 - 10^12 FLOPs, 10^5 - 10^7 tokens) the number of
      optimiser steps, not the batch, limits the loss (at 3e11 FLOPs on the embedded code, t40 ends
      at 2.37 / 2.25 / 2.16 nats with batches of 16 / 8 / 4 sequences of 128), so those runs take
      the smallest batch (4-8 sequences) and several hundred to a few thousand steps.
    * Peak LR ``min(0.0047 * (N / 108e6) ** (-1/3), max(0.01 * (N / 4e4) ** (-0.45), 1e-3))``:
      the ladder's rule (same source), capped by a fit to LR sweeps of the tiny shapes on the
      embedded corpus at ~100-step runs (best LR ~1e-2 at t32, 5e-3 at t64, 1.3-2.5e-3 at t128,
      <=1.3e-3 at t256; the ladder's extrapolation, 0.01-0.07 there, ends 0.3-0.5 nats worse or
      diverges). Single-seed sweeps: at t64 two seeds of a 150-step run differ by up to 0.3 nats,
      so the fit is rough; re-sweep with seeds before trusting optima. The 1e-3 floor keeps the cap from reaching into the ladder's regime; it binds
      from ~5M parameters until the ladder's rule falls below it (~10B).
    * Below 1M parameters, with ``tokens`` given: a fixed 1,024 tokens per step (8 sequences of
      128) for every run of at least ~150K tokens (4 sequences below), so that one isoFLOP curve of
      the ``tiny`` preset is trained with one batch (the rule above switches between 4, 8 and 16
      sequences along it, and the switch shows as a step of ~0.1 nats). Multi-seed sweep
      (``benchmarks/tiny_sweep.py``, 2M tokens, 2-3 seeds, docs/benchmarks.md): 8 sequences
      beat 16 by 0.00/0.02/0.08 nats and 32 by 0.04/0.11/0.26 at t8/t16/t24, and run at ~80% of
      their throughput; the peak LR above was within 0.03 nats of the best of x0.5/x1/x2 at t16,
      t24 and t40 (x0.5 was 0.05-0.10 worse), t8 preferring x2 by 0.03.
    * Cosine to 10% of the peak (Hoffmann et al. 2022), 5% linear warmup (20% below 1M parameters,
      ``TINY_WARMUP_FRACTION``), AdamW with
      beta2 0.95, weight decay 0.1 and clipping at 1.0 (GPT-3 / Chinchilla / OLMo settings).
    """
    n = float(params)
    ladder = 0.0047 * (n / 108e6) ** (-1.0 / 3.0)
    tiny_cap = max(0.01 * (n / 4e4) ** (-0.45), 1e-3)
    lr = float(min(ladder, tiny_cap))
    batch_tokens = 160 * 2048 * (n / 108e6) ** (2.0 / 3.0)
    if tokens is not None:
        batch_tokens = min(batch_tokens, tokens / MIN_STEPS)
    sequences = max(batch_tokens / seq_len, 4.0)
    batch_size = max(4, int(2 ** round(math.log2(sequences))))
    warmup = WARMUP_FRACTION
    if tokens is not None and n < TINY_PARAMS:
        long_enough = tokens >= TINY_MIN_STEPS * TINY_BATCH_TOKENS
        batch_size = max(4, TINY_BATCH_TOKENS // seq_len) if long_enough else 4
        warmup = TINY_WARMUP_FRACTION
    return Hparams(lr=lr, batch_size=batch_size, warmup_fraction=warmup, min_lr_ratio=0.1,
                   weight_decay=0.1, grad_clip=1.0)


def lr_at(step: int, steps: int, hp: Hparams) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr`` over the run's own ``steps``."""
    warmup = max(1, math.ceil(hp.warmup_fraction * steps))
    if step < warmup:
        return hp.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    min_lr = hp.min_lr_ratio * hp.lr
    return min_lr + 0.5 * (hp.lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class TrainingLog:
    """What every training loop records per step: the loss EMA, the curve, the progress bar and log
    lines, the first non-finite step; and the row fields they give. Shared by this module's loop
    and ``runners.train.distributed``'s; a resumed run passes back ``start``, ``curve``, ``ema``, ``elapsed``."""

    def __init__(self, spec, batches, tokens_per_step: int, *, start: int = 0, curve=None, ema=None,
                 elapsed: float = 0.0, progress: bool = True, log_every: int = 50, desc: str | None = None,
                 cpu_share: float = 1.0):
        self.run_id, self.batches, self.tokens_per_step = spec.run_id, batches, tokens_per_step
        self.steps = batches.steps
        self.start = self.done = start
        self.curve, self.ema, self.elapsed = list(curve or []), ema, elapsed
        self.failure: str | None = None
        self.log_every = log_every
        self.bar = progress_bar(self.steps, desc or f"{spec.shape} {spec.run_id[:8]}", enabled=progress,
                                initial=start)
        self.t0 = self._last_log = time.perf_counter()
        #: CPU seconds of this process from here on, times ``cpu_share`` (1/K for K batched runs)
        self.c0, self.cpu_share = time.process_time(), cpu_share
        self._log_tokens = 0
        #: seconds inside the loop that were not training (evaluation along training), and their CPU time
        self.excluded, self.excluded_cpu = 0.0, 0.0

    def exclude(self, seconds: float, cpu_seconds: float | None = None) -> None:
        """Book time spent inside the loop on something else (scoring a checkpoint): it leaves
        ``wall_time_s``, ``cpu_time_s`` and ``tokens_per_s``, and the progress bar shows it apart."""
        self.excluded += seconds
        self.excluded_cpu += seconds if cpu_seconds is None else cpu_seconds
        self._last_log += seconds
        self.bar.set_postfix_str(self._postfix())

    def _postfix(self) -> str:
        parts = ([f"loss {self.ema:.3f}"] if self.ema is not None else []) + \
            ([f"eval {self.excluded:.1f}s"] if self.excluded else [])
        return " | ".join(parts)

    def record(self, step: int, loss: float, grad_norm: float | None, lr: float) -> bool:
        """Book one finished step; False (and ``failure`` set) if its loss or gradient norm is not finite."""
        for what, value in (("loss", loss), ("gradient norm", grad_norm)):
            if value is not None and not math.isfinite(value):
                self.failure = f"non-finite {what} at step {step}"
                return False
        self.done = step + 1
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        self.curve.append((step, (step + 1) * self.tokens_per_step, loss, lr))
        self._log_tokens += self.tokens_per_step
        self.bar.update(1)
        if self.log_every and (step + 1) % self.log_every == 0:
            now = time.perf_counter()
            self.bar.set_postfix_str(self._postfix())
            log.info("run %s step %d/%d loss %.4f lr %.2e grad %s tok/s %.0f epochs %.2f", self.run_id,
                     step + 1, self.steps, self.ema, lr, "?" if grad_norm is None else f"{grad_norm:.2f}",
                     self._log_tokens / max(now - self._last_log, 1e-9), self.batches.epochs_at(step + 1))
            self._last_log, self._log_tokens = now, 0
        return True

    def wall(self) -> float:
        """Seconds of training so far, earlier (resumed-from) sessions included."""
        return self.elapsed + time.perf_counter() - self.t0 - self.excluded

    def close(self) -> None:
        self.bar.close()

    def row(self) -> dict:
        return {"steps": self.done, "total_steps": self.steps, "tokens_trained": self.done * self.tokens_per_step,
                "epochs_seen": self.batches.epochs_at(self.done),
                "train_loss": self.ema if self.ema is not None else float("nan"), "wall_time_s": self.wall(),
                # the run's own compute, whatever else shares the machine (wall_time_s grows with
                # contention; this does not): this session's CPU seconds in the training loop
                "cpu_time_s": (time.process_time() - self.c0 - self.excluded_cpu) * self.cpu_share,
                "resumed_from_step": self.start,
                "tokens_per_s": (self.done - self.start) * self.tokens_per_step
                / max(time.perf_counter() - self.t0 - self.excluded, 1e-9)}

    def client_state(self) -> dict:
        """What a checkpoint keeps of this log (``runners.train.engines.CLIENT_KEYS`` but the step)."""
        return {"curve": self.curve, "ema": self.ema, "wall_time_s": self.wall()}

    def curve_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.curve, columns=["step", "tokens", "train_loss", "lr"])


class Trainer:
    """The one training loop (torchtitan's shape): ``train()`` asks the engine
    (``runners.train.engines``) for one step of every run it holds, from the logs' start to
    ``stop``, under the package's LR schedule (``lr_at``); books every step in each run's
    ``TrainingLog`` (curve, EMA, progress, the first non-finite step, which freezes that run: it is
    stored as failed, the others go on); checkpoints through the engine every
    ``checkpoint_every_s``; and calls ``hooks`` after each step (``hook(trainer, step, losses, lr)``:
    evaluation along training). ``train_runs`` drives it for every launcher; ``runners.compare``
    and ``runners.merge`` step their own models with it (``Trainer.one``)."""

    def __init__(self, engine, batches, hp: Hparams, logs, *, checkpoint_every_s: float = math.inf, hooks=(),
                 bar=None):
        self.engine, self.batches, self.hp, self.logs = engine, list(batches), hp, list(logs)
        self.steps = self.batches[0].steps
        self.active = [True] * len(self.logs)
        self.checkpoint_every_s, self.hooks = checkpoint_every_s, list(hooks)
        self.bar = bar if bar is not None else _NoBar()

    @classmethod
    def one(cls, model, forward, optimizer, batches, hp: Hparams, settings: Settings, log: "TrainingLog",
            **kw) -> "Trainer":
        """A Trainer of one model built by the caller, on the local engine (no checkpoints)."""
        from runners.train.engines import LocalEngine
        return cls(LocalEngine.around(model, forward, optimizer, hp, settings, None, batches.steps),
                   [batches], hp, [log], **kw)

    @property
    def log(self) -> "TrainingLog":
        """The first run's log (the only one but on the stacked engine)."""
        return self.logs[0]

    def checkpoint(self, step: int) -> None:
        self.engine.save(step, [tl.client_state() for tl in self.logs])

    def train(self, stop: int | None = None) -> list["TrainingLog"]:
        stop = self.steps if stop is None else min(self.steps, stop)
        start = min(tl.start for tl in self.logs)
        last = time.perf_counter()
        self.engine.train()
        try:
            for step in range(start, stop):
                lr = lr_at(step, self.steps, self.hp)
                want = time.perf_counter() - last >= self.checkpoint_every_s and step + 1 < stop
                losses, norms, save_now = self.engine.step([b.batch(step) for b in self.batches], lr, want)
                for k, tl in enumerate(self.logs):
                    if self.active[k] and not tl.record(step, losses[k], norms[k], lr):
                        self.active[k] = False
                        self.engine.freeze(k)
                self.bar.update(1)
                if not any(self.active):
                    break
                for hook in self.hooks:
                    hook(self, step, losses, lr)
                if save_now:
                    self.checkpoint(step + 1)
                    last = time.perf_counter()
        finally:
            for tl in self.logs:
                tl.close()
            self.bar.close()
        self.engine.eval()
        return self.logs


def run_row(spec, settings: Settings, corpus, tokenizer, hp: Hparams, tl: "TrainingLog", **extra) -> dict:
    """The row every engine writes for a run: its plan, where and how it ran, its hyper-parameters,
    what its training log measured, and the engine's own ``extra`` columns."""
    return {**spec.to_dict(), **_environment(settings, corpus, tokenizer), "hparams": asdict(hp), "lr": hp.lr,
            "batch_size": hp.batch_size, **tl.row(), **extra}


def finish_run(store, spec, model, row: dict, tl: "TrainingLog", corpus, tokenizer, settings: Settings,
               cache_dir, drop_checkpoint, eval_tokens: int | None = None, started: float | None = None) -> dict:
    """How every engine ends a run that reached its last step or diverged: ``failed`` with its reason
    and curve, or validated and stored ``ok`` with weights and curve (``store_finished_run``); then
    its checkpoint goes (``drop_checkpoint()``). ``started`` (``time.perf_counter()`` when the run's
    data and model were set up): the row's ``run_time_s``, the run's whole time in this session
    (set-up, loop, final evaluation), from which a dry run measures the time around the loop
    (``runners.grid.plan.calibrate``). Returns the row."""
    curve = tl.curve_frame()
    if tl.failure is not None:
        store_failed_run(store, row, curve, tl.failure)
    else:
        model.eval()
        row.update(validation_metrics(model, corpus, tokenizer, spec.code_fraction, settings, cache_dir,
                                      max_tokens=eval_tokens or EVAL_TOKENS_PER_DOMAIN, mix=spec.mixture))
        if started is not None:
            row["run_time_s"] = time.perf_counter() - started
        store_finished_run(store, spec, model, row, curve)
    drop_checkpoint()
    return row


def store_failed_run(store, row: dict, curve_frame: pd.DataFrame, failure: str) -> dict:
    """A run that diverged: kept as ``failed`` with its reason and curve, not raised."""
    log.warning("run %s failed: %s", row["run_id"], failure)
    row.update(status="failed", failure_reason=failure, loss=float("nan"))
    rstore.write_curve(store, row["run_id"], curve_frame)
    rstore.write_run(store, row)
    return row


# --------------------------------------------------------------------------------------------
# The run: claim -> data -> build -> resume -> loop -> evaluate -> finish or fail -> store, once


def prepare_data(spec, cache_dir=None):
    """(corpus, tokenizer, hparams, batches) of a run: what every engine's loop starts from."""
    corpus = rdata.load_corpus(spec.data, text_column=spec.text_column, domain_column=spec.domain_column or None,
                               cache_dir=cache_dir)
    tokenizer = rdata.get_tokenizer(spec.tokenizer, corpus, cache_dir=cache_dir)
    if tokenizer.vocab_size > spec.vocab_size:
        raise UsageError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but the "
                         f"run's vocab_size is {spec.vocab_size}")
    unique = rdata.train_tokens(corpus, tokenizer, spec.unique_tokens, spec.code_fraction, spec.filter,
                                cache_dir=cache_dir, mix=spec.mixture)
    hp = hparams(spec.params, spec.seq_len, tokens=spec.tokens)
    batches = rdata.EpochBatches(unique, spec.seq_len, hp.batch_size, spec.seed, total_tokens=spec.tokens)
    return corpus, tokenizer, hp, batches


def train_runs(specs, store, options: TrainOptions | None = None, engine=None, *, claim: bool = True,
               skip_done: bool = False) -> list[dict]:
    """Train ``specs`` together on ``engine`` (a class of ``runners.train.engines``; default the
    local engine, one run) and store each run: the one life of a run, whatever takes its steps.

    Each run is claimed first (``scaling.store.claim_run``): one another process holds, or, with
    ``skip_done``, one already ``ok`` in the store, is not trained and its row is ``{"status":
    BUSY}``. ``claim=False``: the caller coordinates (DeepSpeed's ranks: its launcher runs one job
    per run). Returns one row per spec, in order; a run stopped by ``options.max_steps`` keeps its
    checkpoint, writes no row and says ``status: "running"``."""
    from runners.train.engines import LocalEngine

    options = options or TrainOptions()
    engine = engine or LocalEngine
    specs = list(specs)
    if not claim:
        with run_errors(specs):
            return _train_claimed(specs, store, options, engine)
    rows: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        mine = []
        for s in specs:
            if not stack.enter_context(rstore.claim_run(store, s.run_id)) or \
                    (skip_done and (rstore.read_run(store, s.run_id) or {}).get("status") == "ok"):
                rows[s.run_id] = {"run_id": s.run_id, "status": BUSY}
            else:
                mine.append(s)
        if mine:
            with run_errors(mine):
                rows.update(zip([s.run_id for s in mine], _train_claimed(mine, store, options, engine)))
    return [rows[s.run_id] for s in specs]


def _train_claimed(specs, store, options: TrainOptions, engine_class) -> list[dict]:
    started = time.perf_counter()
    prepared = [prepare_data(s, options.cache_dir) for s in specs]
    hp, steps = prepared[0][2], prepared[0][3].steps
    if any(p[2] != hp or p[3].steps != steps for p in prepared):
        raise UsageError("runs trained together must share their hyper-parameters and number of steps")
    engine = engine_class(specs, hp, steps, store, options)
    K, tokens_per_step = len(specs), hp.batch_size * specs[0].seq_len
    resumed = engine.restore()
    if resumed is not None:
        log.info("%s: resuming at step %d/%d", specs[0].run_id if K == 1 else f"{K} stacked runs",
                 resumed[0]["step"], steps)
    shown = options.progress and engine.writes
    logs = [TrainingLog(s, p[3], tokens_per_step, progress=shown and K == 1,
                        log_every=options.log_every if engine.writes else 0, cpu_share=1 / K,
                        desc=f"{s.shape} {s.run_id[:8]}" + (f" x{engine.world_size}" if getattr(engine, "world_size", 1) > 1 else ""),
                        **({} if resumed is None else {"start": r["step"], "curve": r["curve"], "ema": r["ema"],
                                                       "elapsed": r["wall_time_s"]}))
            for s, p, r in zip(specs, prepared, resumed or [None] * K)]
    bar = progress_bar(steps, f"{specs[0].shape} x{K}", enabled=shown and K > 1, initial=logs[0].start)
    scorers = _scorers(specs, store, options, engine, prepared, steps, tokens_per_step, logs)
    trainer = Trainer(engine, [p[3] for p in prepared], hp, logs, checkpoint_every_s=options.checkpoint_every_s,
                      hooks=scorers, bar=bar)
    trainer.train(steps if options.max_steps is None else min(steps, options.max_steps))

    rows = []
    for k, (spec, (corpus, tokenizer, _, _), tl) in enumerate(zip(specs, prepared, logs)):
        row = run_row(spec, engine.settings, corpus, tokenizer, hp, tl, **engine.row_extra)
        if scorers:
            row.update(scorers[k].final_columns(), eval_every=int(options.eval_every),
                       eval_time_s=scorers[k].total_seconds(), eval_checkpoints=len(scorers[k].rows))
        rows.append(row)
    stopped = [k for k, tl in enumerate(logs) if tl.failure is None and tl.done < steps]
    if stopped:                                   # max_steps: the live runs keep a checkpoint
        trainer.checkpoint(logs[stopped[0]].done)
        if engine.writes:
            log.info("%d run(s) stopped at step %d/%d (max_steps); checkpoint kept", len(stopped),
                     logs[stopped[0]].done, steps)
    for k, (spec, (corpus, tokenizer, _, _), tl) in enumerate(zip(specs, prepared, logs)):
        if k in stopped:
            rows[k] = {**rows[k], "status": "running"}
            continue
        final = engine.model(k) if tl.failure is None else None      # collective on DeepSpeed
        if engine.writes:
            finish_run(store, spec, final, rows[k], tl, corpus, tokenizer, engine.settings, options.cache_dir,
                       lambda k=k: engine.drop(k), eval_tokens=options.eval_tokens, started=started)
            if tl.failure is None:
                log.info("run %s done: loss %.4f bpb %.3f in %.1fs (%.0f tok/s)", spec.run_id, rows[k]["loss"],
                         rows[k]["bpb"], rows[k]["wall_time_s"], rows[k]["tokens_per_s"])
    engine.close()
    return rows


def _scorers(specs, store, options: TrainOptions, engine, prepared, steps, tokens_per_step, logs) -> list:
    """Evaluation along training (``runners.eval.along``): one scorer per run, the initial models
    scored at once; none unless asked, and none on a process that does not write."""
    if not options.evaluates_along:
        return []
    if engine.cannot_evaluate_along:
        raise UsageError(engine.cannot_evaluate_along)
    if not engine.writes:
        return []
    # evaluation is the next room's; imported here so that training alone never loads lm-eval
    from runners.eval.along import CheckpointScorer, task_suite
    suite = task_suite(tuple(options.eval_tasks), options.eval_limit)
    scorers = [CheckpointScorer(s, store, list(options.eval_tasks), every=options.eval_every, steps=steps,
                                tokens_per_step=tokens_per_step, corpus=p[0], tokenizer=p[1], settings=engine.settings,
                                limit=options.eval_limit, cache_dir=options.cache_dir, index=k, suite=suite)
               for k, (s, p) in enumerate(zip(specs, prepared))]
    for k, scorer in enumerate(scorers):
        if scorer.due(logs[k].start):
            scorer.at(engine.model(k), logs[k].start, logs)      # the initial model (step 0)
    return scorers


def train_run(spec, store, *, skip_done: bool = False, options: TrainOptions | None = None, **kw) -> dict:
    """Train ``spec`` on the local engine, write its row and loss curve to ``store``, return the row
    (``train_runs`` of one run). Options come as ``options`` or as its fields (``device``,
    ``progress``, ``max_steps``, ``eval_every``/``eval_tasks``/``eval_limit``, ...).

    ``eval_every`` with ``eval_tasks``: score the in-memory model at step 0, every ``eval_every``
    steps and at the end (``runners.eval.along``), one row per checkpoint in the store's
    ``_evals/``; the last checkpoint's scores also go into the run's row, and ``eval_time_s`` says
    how long scoring took (it is not in ``wall_time_s``). ``max_steps`` stops after that many steps
    of the run (counted from step 0), leaving a checkpoint and writing no row (``status:
    "running"``); the next call resumes. With ``skip_done`` (what launchers pass) a run already
    ``ok`` in the store is not trained again (``{"status": BUSY}``).
    """
    options = dataclasses.replace(options or TrainOptions(), **kw)
    return train_runs([spec], store, options, skip_done=skip_done)[0]


@contextlib.contextmanager
def run_errors(specs):
    """A run that raises something other than a one-line error (an ``--arch`` plugin whose forward
    fails, a device that runs out of memory) stops the grid with one ``error:`` line naming the run;
    nothing is stored for it, so the next launch retries it. ``SCALING_DEBUG=1`` shows the traceback."""
    try:
        yield
    except (UsageError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the run's own code becomes one line
        if os.environ.get("SCALING_DEBUG"):
            raise
        spec = specs[0]
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        which = f"run {spec.run_id}" + (f" (and {len(specs) - 1} stacked with it)" if len(specs) > 1 else "")
        raise DataError(f"{which} ({spec.shape}, arch {getattr(spec, 'arch', 'gpt')}) failed: "
                        f"{type(exc).__name__}{': ' + first if first else ''} (nothing stored for it; "
                        f"SCALING_DEBUG=1 shows the traceback)") from None


#: What ``train_run`` returns for a run another launcher holds or has just finished.
BUSY = rstore.CLAIMED_ELSEWHERE


def store_finished_run(store, spec, model: GPT, row: dict, curve_frame: pd.DataFrame) -> dict:
    """Weights (``runners.export``), then the loss curve, then the ``ok`` row: a row that says
    ``ok`` always has its weights and curve beside it. Every launcher finishes a run here."""
    from runners.models.files import model_dir, save_model

    save_model(model, spec, model_dir(store, spec.run_id))
    row["status"] = "ok"
    rstore.write_curve(store, spec.run_id, curve_frame)
    rstore.write_run(store, row)
    return row


def _environment(settings: Settings, corpus, tokenizer) -> dict:
    """Where and how a run trained: the device and its precision, the data, the code, and the machine
    (``cpu_model``: the CPU's model name, or the GPU's on CUDA; ``threads``: torch's intra-op
    threads), which is what a dry run calibrates its time estimate on (``runners.grid.plan.calibrate``)."""
    return {"device": settings.device, "dtype": settings.dtype, "compile": settings.compile,
            "corpus_fingerprint": corpus.fingerprint, "tokenizer_name": tokenizer.name,
            "torch_version": torch.__version__, "git_commit": _git_commit(),
            "cpu_model": machine_name(settings.device), "threads": int(torch.get_num_threads())}


def machine_name(device: str) -> str:
    """The model name of what trains on ``device``: the GPU's on CUDA, else the CPU's."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    from runners.train.cpu_dtype import cpu_model
    return cpu_model()


def progress_bar(total: int, desc: str, *, enabled: bool = True, initial: int = 0, unit: str = "step"):
    """A tqdm bar, or a silent stand-in when disabled or tqdm is missing: every runner's progress."""
    if enabled:
        try:
            from tqdm.auto import tqdm
            return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass
