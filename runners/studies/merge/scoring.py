"""Scoring: merged models of candidate mixtures evaluated per domain, and rank agreement."""

from __future__ import annotations

import hashlib
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from runners.train import trainer as train
from runners.models.gpt import GPT
from runners.grid.spec import format_mix
from scaling.cli import UsageError
from runners.studies.merge.arithmetic import check_weights, merge_models
from runners.studies.merge.saved import SavedModel, merge_saved, save
from runners.studies.merge.proxy import Data, check_code_shares, label, mixture_of


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def evaluate_model(model: GPT, data: Data, mix, settings, eval_tokens: int,
                   target: Mapping[str, float]) -> dict:
    """``loss.<d>``, ``acc.<d>``, ``bpb.<d>``, ``mix.<d>``, the mix-weighted ``loss`` and the
    ``target_loss`` (``train.validation_metrics`` plus the fixed target); ``mixture`` is the row's
    key (``label``), ``code_share`` its code share (NaN on corpora without a code domain)."""
    mix = mixture_of(data.corpus, mix)
    model = model.to(settings.device)
    row = train.validation_metrics(model, data.corpus, data.tokenizer, float(mix.get("code", 0.0)), settings,
                                   data.cache_dir, max_tokens=eval_tokens, mix=mix)
    row["target_loss"] = sum(w * row[f"loss.{d}"] for d, w in target.items())
    return {"mixture": label(mix), "code_share": float(mix["code"]) if "code" in mix else float("nan"), **row}


def check_target(target: Mapping[str, float] | None, domains: Sequence[str]) -> dict[str, float]:
    if not target:
        return {d: 1.0 / len(domains) for d in domains}
    unknown = sorted(set(target) - set(domains))
    if unknown:
        raise UsageError(f"unknown domain {unknown[0]!r} in the target (domains: {', '.join(domains)})")
    weights = check_weights(list(target.values()))
    return dict(zip(target, weights))


def parse_target(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        d, sep, w = item.partition("=")
        try:
            out[d.strip()] = float(Fraction(w.strip()))
        except (ValueError, ZeroDivisionError):
            sep = ""
        if not sep or not d.strip():
            raise UsageError(f"malformed --target item {item!r} (expected DOMAIN=WEIGHT, e.g. text=0.5,code=0.5)")
    return out


def proxy_model(experts: Mapping[str, GPT], mixture: Mapping[str, float]) -> GPT:
    """The merge that stands for ``mixture``: domain d's expert weighted by its share."""
    names = [d for d in mixture if mixture[d] > 0]
    missing = [d for d in names if d not in experts]
    if missing:
        raise UsageError(f"no expert for domain {missing[0]!r} (experts: {', '.join(experts)})")
    return merge_models([experts[d] for d in names], [mixture[d] for d in names])


def check_candidates(candidates, corpus) -> list[dict[str, float]]:
    """Candidate mixtures as {domain: share} dicts over the corpus, distinct."""
    if all(isinstance(c, (int, float)) for c in candidates):
        check_code_shares(candidates)
    mixes = [mixture_of(corpus, c) for c in candidates]
    if not mixes:
        raise UsageError("no mixtures given")
    labels = [label(m) for m in mixes]
    if len(set(labels)) != len(labels):
        raise UsageError("mixtures repeat a candidate")
    return mixes


def score_mixtures(experts: Mapping[str, GPT], candidates, data: Data, settings, *,
                   eval_tokens: int = train.EVAL_TOKENS_PER_DOMAIN, target=None, progress: bool = False,
                   save_dir=None, expert_saved: Mapping[str, SavedModel] | None = None) -> pd.DataFrame:
    """One row per candidate mixture (code shares or {domain: share} dicts): the merged model's
    validation metrics (the proxy)."""
    mixes = check_candidates(candidates, data.corpus)
    target = check_target(target, data.domains)
    rows = []
    for mix in mixes:
        model = proxy_model(experts, mix)
        t0 = time.perf_counter()
        row = evaluate_model(model, data, mix, settings, eval_tokens, target)
        row["eval_s"] = time.perf_counter() - t0
        rows.append(row)
        if save_dir is not None and expert_saved is not None:
            names = [d for d in mix if mix[d] > 0]
            _, spec, lineage = merge_saved([expert_saved[d] for d in names], [mix[d] for d in names])
            save(model.cpu(), spec, Path(save_dir) / _mix_name(mix), lineage)
        _say(progress, f"proxy  {label(mix):<8} " + _losses_line(row, data.domains))
    return pd.DataFrame(rows)


def _mix_name(mix: Mapping[str, float]) -> str:
    if set(mix) <= {"code", "text"}:
        return f"code{mix.get('code', 0.0):g}"
    return "mix-" + hashlib.sha256(format_mix(mix).encode()).hexdigest()[:10]


def _losses_line(row: dict, domains) -> str:
    return "  ".join([f"loss.{d} {row[f'loss.{d}']:.4f}" for d in domains]
                     + [f"loss {row['loss']:.4f}", f"target {row['target_loss']:.4f}"])


def agreement(proxy: pd.DataFrame, trained: pd.DataFrame, domains: Sequence[str]) -> dict:
    """Rank agreement of proxy and trained losses over mixtures, per metric (``loss.<d>``,
    ``loss``, ``target_loss``): Spearman, Kendall tau-b, decision accuracy (pairs the trained
    models order, ordered alike by the proxy) and the mean gap proxy - trained in nats."""
    from scaling.mixture import rank_agreement  # scipy: imported only when rankings are compared
    p = proxy.set_index("mixture")
    t = trained.set_index("mixture")
    common = [s for s in p.index if s in t.index]
    if len(common) < 3:
        raise UsageError(f"{len(common)} mixture(s) both scored and trained: need at least 3 to compare rankings")
    out = {}
    for metric in [f"loss.{d}" for d in domains] + ["loss", "target_loss"]:
        x, y = p.loc[common, metric].to_numpy(float), t.loc[common, metric].to_numpy(float)
        stats = {k: float(v[0]) for k, v in rank_agreement(x, y).items()}
        stats["mean_gap"] = float(np.mean(x - y))
        stats["proxy_best"] = _as_share(common[int(np.argmin(x))])
        stats["trained_best"] = _as_share(common[int(np.argmin(y))])
        out[metric] = stats
    return out


def _as_share(key: str):
    """A table key as a code share (float) on code/text corpora, else the mix string."""
    try:
        return float(key)
    except ValueError:
        return key
