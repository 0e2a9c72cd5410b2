"""How the runs of a launch are trained (``TrainOptions``): one typed object from the grid command
to the engine. No torch here, so that launchers and dry runs stay light."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainOptions:
    """How every run of a launch is trained, one typed object from the grid command to the engine
    (``runners.grid.command.RunOptions.train_options`` builds it; ``runners.train.trainer.train_runs``
    reads it): where and in what precision, how often to checkpoint and log, where the data cache
    is, when to stop early, and evaluation along training. An engine that cannot honour one of
    them refuses it with one ``error:`` line."""

    device: str | None = None
    dtype: str | None = None
    compile: bool | None = None
    progress: bool = True
    log_every: int = 50
    checkpoint_every_s: float = 30.0
    #: stop after this many steps of each run (counted from step 0), checkpoint kept, no row
    max_steps: int | None = None
    cache_dir: object = None
    #: with ``eval_tasks``: score the model at step 0, every this many steps and at the end
    eval_every: int | None = None
    eval_tasks: tuple[str, ...] | None = None
    eval_limit: int | None = None
    #: validation tokens per domain scored when a run ends (None: ``EVAL_TOKENS_PER_DOMAIN``)
    eval_tokens: int | None = None

    def __post_init__(self):
        if self.eval_tasks is not None:          # any sequence of names, kept as a tuple (hashable, frozen)
            object.__setattr__(self, "eval_tasks", tuple(self.eval_tasks))

    @property
    def evaluates_along(self) -> bool:
        return bool(self.eval_every and self.eval_tasks)
