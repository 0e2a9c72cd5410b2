"""Evaluation along training: the in-memory model scored at checkpoints of its own run.

``--eval TASKS --eval-every STEPS`` on the grid commands: the Trainer calls a ``CheckpointScorer``
after every optimiser step; at step 0 (the initial model), every STEPS steps and at the last step
it measures the validation loss (on ``CHECKPOINT_VALIDATION_TOKENS`` per domain, the same windows
at every checkpoint: the first windows of the run's validation split; the run's own row uses
65,536) and the tasks (one ``TaskSuite``, loaded once per run), and rewrites the run's
``_evals/<run_id>.parquet`` (``scaling.store.write_checkpoint_evals``). A run resumed after a kill
reads that file back and scores only the checkpoints it lacks.

Why checkpoints: the downstream laws (``scaling.downstream``; Bhagia et al. 2024, Gadre et al.
2024) fit task accuracy against a smooth task loss over every checkpoint of every run, so a ladder
of a few runs yields hundreds of points. Step 0 anchors the chance end of that curve.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import torch

from runners.grid.plan import CHECKPOINT_VALIDATION_TOKENS
from scaling import store as rstore

log = logging.getLogger(__name__)

#: Configuration columns of the run copied into each checkpoint row, so that the table can be
#: filtered (``--where``) without a join; ``tokens`` there is tokens seen so far, the run's
#: total is ``run_tokens``.
SPEC_COLUMNS = ("shape", "seed", "code_fraction", "mix", "filter", "grid", "budget", "data", "tokenizer",
                "unique_tokens", "arch", "flops_convention")


@functools.lru_cache(maxsize=4)
def task_suite(tasks: tuple[str, ...], limit: int | None):
    """One ``TaskSuite`` per process and task list: a worker that trains several runs loads the
    tasks once (~0.6 s each time otherwise)."""
    from runners.eval.evaluate import TaskSuite

    return TaskSuite(list(tasks), limit)


class CheckpointScorer:
    """Scores one run's model at its checkpoints; a Trainer hook (``hook(trainer, step, losses, lr)``)
    for run ``index`` of the runs the Trainer steps together. ``suite``: a ``task_suite`` already
    loaded (the runs of one stacked group share it)."""

    def __init__(self, spec, store, tasks, *, every: int, steps: int, tokens_per_step: int, corpus, tokenizer,
                 settings, limit: int | None = None, cache_dir=None, index: int = 0, suite=None):
        self.spec, self.store, self.every, self.steps = spec, store, int(every), int(steps)
        self.index = index
        self.tokens_per_step = int(tokens_per_step)
        self.corpus, self.tokenizer, self.settings, self.cache_dir = corpus, tokenizer, settings, cache_dir
        previous = rstore.read_checkpoint_evals(store, spec.run_id)
        self.rows: list[dict] = previous.to_dict("records") if len(previous) else []
        self.scored = {int(r["step"]) for r in self.rows}
        t0 = time.perf_counter()
        self.suite = suite if suite is not None else task_suite(tuple(tasks), limit)
        #: seconds spent loading the tasks in this process (each checkpoint's are in its row)
        self.setup_seconds = time.perf_counter() - t0

    def due(self, done: int) -> bool:
        return (done % self.every == 0 or done == self.steps) and done not in self.scored

    def __call__(self, trainer, step: int, losses, lr: float) -> None:
        k = self.index
        if trainer.active[k] and self.due(step + 1):     # a diverged run is not scored again
            self.at(trainer.engine.model(k), step + 1, trainer.logs)

    def at(self, model, done: int, training_logs=()) -> None:
        """Score after ``done`` steps if that is a checkpoint not yet scored; the time leaves the
        clocks of the training logs (``TrainingLog.exclude``): every run of a stacked group waits."""
        if not self.due(done):
            return
        cpu0 = time.process_time()
        spent = self.score(model, done)
        for training_log in training_logs:
            training_log.exclude(spent, time.process_time() - cpu0)

    def score(self, model, done: int) -> float:
        """Score the model after ``done`` steps, append the row, rewrite the run's file; the seconds spent."""
        from runners.eval.evaluate import make_lm
        from runners.train.evaluation import validation_metrics

        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                val = validation_metrics(model, self.corpus, self.tokenizer, self.spec.code_fraction, self.settings,
                                         self.cache_dir, max_tokens=CHECKPOINT_VALIDATION_TOKENS,
                                         mix=self.spec.mixture)
                cols = self.suite.score(make_lm(model, self.tokenizer))
        finally:
            model.train(was_training)
        spent = time.perf_counter() - t0
        spec = self.spec.to_dict()
        row = {"run_id": self.spec.run_id, "step": int(done), "tokens": int(done * self.tokens_per_step),
               "params": int(self.spec.params), "run_tokens": int(self.spec.tokens), "total_steps": self.steps,
               **{k: spec[k] for k in SPEC_COLUMNS if k in spec},
               **{k: v for k, v in val.items() if k == "loss" or k.startswith(("loss.", "bpb"))},
               **cols, "eval_time_s": spent}
        self.rows.append(row)
        self.scored.add(int(done))
        rstore.write_checkpoint_evals(self.store, self.spec.run_id, self.rows)
        log.info("run %s step %d/%d scored in %.2fs: loss %.4f %s", self.spec.run_id, done, self.steps, spent,
                 val["loss"], " ".join(f"{k[5:]} {v:.3f}" for k, v in cols.items() if k.endswith((".acc", ".bpb"))))
        return spent

    def total_seconds(self) -> float:
        """Evaluation time of the whole run: every checkpoint's (earlier sessions' included) and
        this session's loading of the tasks."""
        spent = [r.get("eval_time_s") for r in self.rows]
        return self.setup_seconds + float(sum(v for v in spent if isinstance(v, (int, float)) and math.isfinite(v)))

    def final_columns(self) -> dict:
        """The ``eval.*`` columns of the last checkpoint, for the run's own row (what ``runners.evaluate``
        would write for the finished model)."""
        last = [r for r in self.rows if int(r["step"]) == self.steps]
        if not last:
            return {}
        return {k: v for k, v in last[-1].items() if str(k).startswith("eval.")}
