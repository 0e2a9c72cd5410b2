"""What a run measures on held-out data: loss, accuracy and bits per byte per domain, and the
mix-weighted validation loss (``validation_metrics``), at the end of training and at every
checkpoint scored along it (``runners.eval.along``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from runners import data as rdata
from runners.models.gpt import GPT
from runners.train.settings import Settings, autocast, to_device
from scaling.errors import DataError

#: Validation tokens evaluated per domain (fixed non-overlapping windows), recorded in every row as
#: ``eval_tokens_cap``. 65,536 until stop 34: on the CPU demo a quarter to a third of the seed-to-seed
#: spread at the optimum was the window's own sampling noise (the embedded code split holds 138K
#: tokens); with 262,144 (every embedded split whole) the demo's seed spread went 0.010-0.026 ->
#: 0.009-0.022 nats and its held-out backtest 14.7% -> 11.2%, at no measurable cost in time
#: (docs/benchmarks.md).
EVAL_TOKENS_PER_DOMAIN = 262_144


@torch.no_grad()
def evaluate(model: GPT, tokens: np.ndarray, tokenizer, settings: Settings, batch_size: int = 32) -> dict:
    """Loss (nats/token), accuracy and bytes per token on fixed non-overlapping windows."""
    T = model.config.seq_len
    n_windows = (len(tokens) - 1) // T
    if n_windows < 1:
        raise DataError(f"only {len(tokens)} validation tokens; need more than the context of {T}")
    stream = np.asarray(tokens[: n_windows * T + 1], dtype=np.int64)
    x_all, y_all = stream[:-1].reshape(n_windows, T), stream[1:].reshape(n_windows, T)
    was_training = model.training
    model.eval()
    nats, correct = 0.0, 0
    for i in range(0, n_windows, batch_size):
        x, y = to_device(x_all[i:i + batch_size], settings.device), to_device(y_all[i:i + batch_size], settings.device)
        with autocast(settings):
            logits, _ = model(x)
        logits = logits.float()
        nats += torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1),
                                                  reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
    model.train(was_training)
    n = n_windows * T
    if getattr(tokenizer, "name", None) == "byte":
        n_bytes = n  # one byte per token (the eot separator counts as the byte it is)
    else:
        n_bytes = len(tokenizer.decode(stream[1:]).encode("utf-8"))
    return {"loss": nats / n, "acc": correct / n, "bytes_per_token": n_bytes / n, "tokens": n}


def mix_weights(domains: list[str], code_fraction: float) -> dict[str, float]:
    """Weights of the run's own mix: ``code`` gets code_fraction, other domains share the rest."""
    other = [d for d in domains if d != "code"]
    if "code" not in domains or not other:
        return {d: 1.0 / len(domains) for d in domains}
    return {"code": code_fraction, **{d: (1.0 - code_fraction) / len(other) for d in other}}


def validation_metrics(model: GPT, corpus, tokenizer, code_fraction: float, settings: Settings,
                       cache_dir=None, max_tokens: int = EVAL_TOKENS_PER_DOMAIN, mix: dict | None = None) -> dict:
    """``loss.<domain>``, ``acc.<domain>``, ``bpb.<domain>`` for every domain of the corpus, the
    mix-weighted ``loss``, ``acc``, ``bpb`` (the validation loss of a held-out set drawn in the run's
    own mix) and the mix itself as ``mix.<domain>`` proportions summing to 1 over every domain
    (``--mix`` as given; ``--code-fraction x``: ``mix.code = x``, ``mix.text = 1 - x``), the columns
    ``scaling.mixture`` fits."""
    domains = [d for d in corpus.domains if corpus.validation.get(d)]
    out, per = {}, {}
    for d in domains:
        toks = rdata.validation_tokens(corpus, tokenizer, d, max_tokens=max_tokens, cache_dir=cache_dir)
        m = evaluate(model, toks, tokenizer, settings)
        per[d] = m
        out[f"loss.{d}"] = m["loss"]
        out[f"acc.{d}"] = m["acc"]
        out[f"bpb.{d}"] = m["loss"] / math.log(2) / m["bytes_per_token"]
    weights = ({d: float(mix.get(d, 0.0)) for d in sorted(set(corpus.domains) | set(mix))} if mix
               else mix_weights(domains, code_fraction))
    out["eval_tokens_cap"] = int(max_tokens)     # which measurement ``loss`` is (scaling.columns.validation_windows)
    out.update({f"mix.{d}": float(v) for d, v in weights.items()})
    w = {d: v for d, v in weights.items() if v > 0 and d in per}     # trained-on domains with held-out data
    if not w:
        w = {d: 1.0 / len(per) for d in per}
    total = sum(w.values())
    w = {d: v / total for d, v in w.items()}
    out["loss"] = sum(w[d] * per[d]["loss"] for d in w)
    out["acc"] = sum(w[d] * per[d]["acc"] for d in w)
    out["bpb"] = out["loss"] / math.log(2) / sum(w[d] * per[d]["bytes_per_token"] for d in w)
    return out
