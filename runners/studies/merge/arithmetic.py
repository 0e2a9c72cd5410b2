"""Merging arithmetic: weights, compatible models, the parameter average, mixtures of merges."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from fractions import Fraction
from typing import Mapping, Sequence

import torch

from runners.models.gpt import GPT, GPTConfig
from scaling.cli import DataError, UsageError

#: Candidate code shares scored by default: both pure domains and three mixes between them.
DEFAULT_MIXTURES = (0.0, 0.25, 0.5, 0.75, 1.0)

#: Experts and trained mixtures continue from the seed at this fraction of the seed's peak LR.
#: On the embedded corpus at t32 (seed 600 steps, experts 300, batch 8 x 128, 3 data seeds) the
#: proxy's losses were within 0.001-0.01 nats of the trained mixtures' at 0.2, and 0.02-0.2 nats
#: off (the average of the experts worse than both, a loss barrier) when the experts ran at the
#: seed's own LR for longer than the seed had trained.
CONTINUE_LR_RATIO = 0.2

#: Mixture weights may miss 1 by this much (decimal inputs like 0.333,0.333,0.334 are exact).
WEIGHT_TOL = 1e-6

LINEAGE = "lineage"
ROLES = ("seed", "continued", "merged", "run")


def check_weights(weights: Sequence[float], n_models: int | None = None) -> list[float]:
    """Mixture proportions: finite, non-negative, summing to 1 (within ``WEIGHT_TOL``)."""
    weights = [float(w) for w in weights]
    if not weights:
        raise UsageError("no merge weights given")
    if n_models is not None and len(weights) != n_models:
        raise UsageError(f"{len(weights)} weight(s) for {n_models} model(s)")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise UsageError(f"merge weights must be finite and non-negative, got {bad[0]:g}")
    total = sum(weights)
    if abs(total - 1.0) > WEIGHT_TOL:
        raise UsageError(f"merge weights sum to {total:.6g}, not 1 (they are mixture proportions)")
    return weights


def parse_weights(text: str) -> list[float]:
    """``"0.3,0.7"`` or ``"1/3,2/3"`` (fractions, so thirds need no rounding)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        fractions = [Fraction(t) for t in items]
        values = [float(f) for f in fractions]
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"malformed --weights {text!r} (expected a comma list like 0.3,0.7 or 1/3,2/3)") from None
    except OverflowError:
        raise UsageError(f"--weights {text!r}: a weight is beyond a float's range (they are proportions in [0, 1])") from None
    return check_weights(values)


def _architecture(config: GPTConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "dropout"}


def check_compatible(configs: Sequence[GPTConfig], names: Sequence[str] | None = None) -> None:
    """Parameters can only be averaged between models of one architecture."""
    names = list(names or [f"model {i}" for i in range(len(configs))])
    first = _architecture(configs[0])
    for name, cfg in zip(names[1:], configs[1:]):
        other = _architecture(cfg)
        diff = [f"{k} {first[k]} vs {other[k]}" for k in first if first[k] != other[k]]
        if diff:
            raise DataError(f"cannot merge {names[0]} and {name}: different architectures ({', '.join(diff)})")


@torch.no_grad()
def merge_models(models: Sequence[GPT], weights: Sequence[float]) -> GPT:
    """The weighted parameter average ``sum_i w_i theta_i`` (accumulated in float64), a new model.

    Tied parameters (the embedding and the output head) are averaged once. Zero weights are
    skipped, so a pure mixture is exactly its expert."""
    weights = check_weights(weights, len(models))
    check_compatible([m.config for m in models])
    merged = GPT(dataclasses.replace(models[0].config))
    sources = [dict(m.named_parameters()) for m in models]
    for name, param in merged.named_parameters():
        total = torch.zeros(param.shape, dtype=torch.float64)
        for w, named in zip(weights, sources):
            if w:
                total += w * named[name].detach().to("cpu", torch.float64)
        param.copy_(total.to(param.dtype))
    source_buffers = [dict(m.named_buffers()) for m in models]
    for name, buf in merged.named_buffers():
        if buf.is_floating_point():
            buf.copy_(sum(w * b[name].detach().to("cpu", torch.float64) for w, b in zip(weights, source_buffers)
                          if w).to(buf.dtype))
    return merged.eval()


def combine_mixtures(mixtures: Sequence[Mapping[str, float] | None], weights: Sequence[float]) -> dict | None:
    """The mixture a merge stands for, ``sum_i w_i mix_i``; None when a source's is unknown."""
    if any(m is None for m in mixtures):
        return None
    out: dict[str, float] = {}
    for w, mix in zip(weights, mixtures):
        for d, share in mix.items():
            out[d] = out.get(d, 0.0) + w * float(share)
    return {d: out[d] for d in sorted(out)}


def fingerprint(model: GPT) -> str:
    """Content hash of the weights (16 hex): identifies a seed in its descendants' lineage."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
