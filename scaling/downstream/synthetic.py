"""A model ladder with a known two-step truth, for tests and benchmarks of ``scaling.downstream``.

Truth: the intermediate is a Chinchilla law (Besiroglu et al. 2024's fit of Hoffmann et al. 2022,
in nats) and accuracy a sigmoid of it with chance 1/4. Runs: ``sizes`` x token multipliers, each
scored at ``checkpoints`` evenly spaced checkpoints; the intermediate at a checkpoint is the law
at the tokens seen so far (times multiplicative noise), accuracy the sigmoid of the noiseless
intermediate plus binomial-sized noise of ``items`` questions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.laws import get_law
from scaling.laws.downstream import sigmoid

LAW = dict(A=482.01, B=2085.43, E=1.82, alpha=0.3478, beta=0.3658)
SIGMOID = dict(a=0.75, b=0.25, k=3.0, x0=3.0)
SIZES = (2e7, 4e7, 8e7, 1.6e8, 3.2e8)
MULTIPLIERS = (10, 20, 40)


def truth(params, tokens, law: dict = LAW, curve: dict = SIGMOID) -> tuple[np.ndarray, np.ndarray]:
    """(intermediate, accuracy) of the truth at (N, D)."""
    x = get_law("chinchilla").predict(law, np.asarray(params, float), np.asarray(tokens, float))
    return x, sigmoid(x, **curve)


def ladder(seed: int = 0, *, sizes=SIZES, multipliers=MULTIPLIERS, checkpoints: int = 20, items: int = 1000,
           loss_noise: float = 0.005, law: dict = LAW, curve: dict = SIGMOID, task: str = "synth",
           run_noise: float = 0.0) -> pd.DataFrame:
    """One row per (run, checkpoint): run_id, params, tokens (seen so far), eval.<task>.bpb (the
    intermediate), eval.<task>.acc, eval.<task>.chance. ``run_noise``: a log-normal sd by which each
    run's intermediate falls off the law at every checkpoint (a model that is better or worse than
    its size and data say, as seeds and hyperparameters make it), which its accuracy follows."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for m in multipliers:
            d = n * m
            seen = d * np.arange(1, checkpoints + 1) / checkpoints
            x_true, _ = truth(n, seen, law, curve)
            x_true = x_true * np.exp(rng.normal(0.0, run_noise)) if run_noise else x_true
            acc_true = sigmoid(x_true, **curve)
            x = x_true * np.exp(rng.normal(0.0, loss_noise, size=len(seen)))
            acc = np.clip(acc_true + rng.normal(0.0, 1.0, size=len(seen)) * np.sqrt(acc_true * (1 - acc_true) / items), 0, 1)
            for t, xi, ai in zip(seen, x, acc):
                rows.append({"run_id": f"n{n:.0e}-m{m}", "params": n, "tokens": t, f"eval.{task}.bpb": xi,
                             f"eval.{task}.acc": ai, f"eval.{task}.chance": curve["b"]})
    return pd.DataFrame(rows)
