"""Merging proxy for data-mixture ablations: score mixtures by averaging per-domain models.

Na et al. 2024, "Scalable Data Ablation Approximations for Language Models through Modular
Training and Merging" (EMNLP 2024): instead of training one model per candidate mixture, train
one model per data domain (or partition) from a *shared seed* and score a mixture by the
validation loss of the weighted average of those models' parameters. The proxy costs one training
run per domain instead of one per mixture, and its perplexities rank mixtures like the models
actually trained on them. This module does that on this package's data layer and models:

* ``seed``: a base model trained from a fixed initialisation on a mixed stream (``seed_steps``);
* ``expert``: from the seed, the same continued training on one domain only (any number of domains);
* ``merge``: the parameter average ``sum_i w_i theta_i`` of saved models; weights are mixture
  proportions and sum to 1. A merged model records the mixture it stands for, so merges of
  merges are plain merges again: ``merge(merge(A, B, .5), C, 2/3, 1/3) == merge(A, B, C, 1/3 each)``;
* ``score``: merged models of candidate mixtures (code shares, or any domains' shares), evaluated per domain (``loss.<domain>``,
  ``mix.<domain>``, the mix-weighted ``loss``; the store's columns) and on a fixed target mix
  (``target_loss``, equal domain weights unless told, the loss a mixture search minimises);
* ``validate``: the same mixtures actually trained from the seed for the same steps, and the rank
  agreement (Spearman, Kendall, decision accuracy; ``scaling.mixture.rank_agreement``) of proxy and
  trained losses per domain, overall and on the target;
* ``run``: all of it at a small default shape.

Linear averaging needs the experts to stay in one basin of the loss. Here that took a seed trained
longer than the experts and experts continued at a fraction of the seed's LR (``CONTINUE_LR_RATIO``);
with a short seed and experts at the full LR, averages of text and code experts scored worse than
either expert on both domains and misranked the target (Spearman -0.2 at t32, 200 + 400 steps).

Saved models use ``runners.export``'s directory format (``model.safetensors`` + ``config.json``),
with a ``lineage`` entry in the config: role, the mixture it stands for, the seed it grew from,
its training settings and, for merges, the sources and weights. Directories are written under a
temporary name and renamed into place.

    python -m runners.merge run --shape t32 --out merge-t32
    python -m runners.merge seed --shape t32 --steps 600 --out m/seed
    python -m runners.merge expert --from m/seed --domain code --steps 300 --out m/code
    python -m runners.merge merge --models m/text,m/code --weights 0.7,0.3 --out m/code0.3
    python -m runners.merge score --experts text=m/text,code=m/code --mixtures 0,0.25,0.5,0.75,1
    python -m runners.merge validate --seed m/seed --experts text=m/text,code=m/code --out m/report
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from runners import data as rdata
from runners.models import files as model_files
from runners.train import trainer as train
from runners.models.gpt import GPT, GPTConfig
from runners.grid.spec import RunSpec, format_mix, parse_mix
from scaling import accounting
from scaling.cli import ArgumentParser, UsageError, run_cli, nonnegative_int

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------
# Merging arithmetic


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
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"malformed --weights {text!r} (expected a comma list like 0.3,0.7 or 1/3,2/3)") from None
    return check_weights([float(f) for f in fractions])


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
            raise UsageError(f"cannot merge {names[0]} and {name}: different architectures ({', '.join(diff)})")


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


# --------------------------------------------------------------------------------------------
# Saved models with lineage


@dataclass
class SavedModel:
    """A model loaded from a directory, its ``config.json`` and its lineage."""

    model: GPT
    config: dict
    path: Path

    @property
    def lineage(self) -> dict:
        return lineage_of(self.config)

    @property
    def spec(self) -> RunSpec:
        return RunSpec.from_dict(self.config["run"])

    @property
    def mixture(self) -> dict | None:
        return self.lineage.get("mixture")


def lineage_of(config: dict) -> dict:
    """The config's lineage; a store run's model (no lineage) is a ``run`` of its code share (its
    mixture known for the embedded corpus, whose domains are code and text)."""
    if LINEAGE in config:
        return config[LINEAGE]
    run = config.get("run") or {}
    cf = run.get("code_fraction")
    embedded = run.get("data", "embedded") == "embedded"
    mixture = {"code": float(cf), "text": 1.0 - float(cf)} if cf is not None and embedded else None
    return {"role": "run", "mixture": mixture, "base": None, "fingerprint": None}


def load(directory) -> SavedModel:
    directory = Path(directory)
    if not directory.exists():
        raise UsageError(f"model directory {directory} does not exist")
    model, config = model_files.load_model(directory)
    return SavedModel(model, config, directory)


def _check_fresh(out) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty directory")
    return out


def save(model: GPT, spec: RunSpec, directory, lineage: dict) -> Path:
    """``runners.models.files.save_model``'s format plus ``lineage`` in config.json, renamed into place
    whole (an older copy is replaced)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-merge-", dir=directory.parent))
    try:
        inner = model_files.save_model(model, spec, staging / "model")
        config_path = inner / model_files.CONFIG_FILE
        config = json.loads(config_path.read_text())
        config[LINEAGE] = {**lineage, "fingerprint": fingerprint(model)}
        config_path.write_text(json.dumps(config, indent=1, default=str))
        old = staging / "old"
        if directory.exists():
            os.replace(directory, old)
        try:
            os.replace(inner, directory)
        except BaseException:
            if old.exists():
                os.replace(old, directory)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def merge_saved(sources: Sequence[SavedModel], weights: Sequence[float]) -> tuple[GPT, RunSpec, dict]:
    """(merged model, its spec, its lineage) for saved models; the tokenizers must agree too."""
    names = [str(s.path) for s in sources]
    weights = check_weights(weights, len(sources))
    check_compatible([s.model.config for s in sources], names)
    tokenizers = {s.config.get("tokenizer") for s in sources}
    if len(tokenizers) > 1:
        raise UsageError(f"cannot merge models trained with different tokenizers ({', '.join(map(str, tokenizers))})")
    merged = merge_models([s.model for s in sources], weights)
    mixture = combine_mixtures([s.mixture for s in sources], weights)
    bases = {_base_of(s.lineage) for s in sources}
    base = bases.pop() if len(bases) == 1 else None
    spec = sources[0].spec
    if mixture is not None and "code" in mixture:
        spec = dataclasses.replace(spec, code_fraction=round(mixture["code"], 12))
    lineage = {"role": "merged", "mixture": mixture, "base": base,
               "sources": [{"path": str(s.path), "weight": w, "fingerprint": s.lineage.get("fingerprint"),
                            "mixture": s.mixture} for s, w in zip(sources, weights)],
               "citation": "Na et al. 2024, Scalable Data Ablation Approximations for Language Models "
                           "through Modular Training and Merging"}
    return merged, spec, lineage


def _base_of(lineage: dict):
    """The seed a model grew from (a seed is its own base)."""
    return lineage.get("fingerprint") if lineage.get("role") == "seed" else lineage.get("base")


def merge_dirs(directories: Sequence, weights: Sequence[float], out) -> Path:
    """Merge saved models into a new directory ``out``; every input is checked before writing."""
    out = _check_fresh(out)
    weights = check_weights(weights, len(directories))
    sources = [load(d) for d in directories]
    merged, spec, lineage = merge_saved(sources, weights)
    if lineage["base"] is None:
        log.warning("merging models without a common seed: parameter averages of unrelated models "
                    "are not a mixture proxy")
    return save(merged, spec, out, lineage)


# --------------------------------------------------------------------------------------------
# Training from a seed


@dataclass(frozen=True)
class ProxyConfig:
    """The one-shot experiment: a seed, one expert per domain, proxies and trained mixtures."""

    shape: str = "t32"                 #: tiny shape in scaling.accounting.TINY_SHAPES (or a paper shape)
    seed_steps: int = 600              #: steps of the shared seed on the seed mix (0: the seed is the init)
    steps: int = 300                   #: steps of every expert and every trained mixture from the seed
    batch_size: int = 8                #: sequences per step (seed and continuations)
    lr: float | None = None            #: peak LR of the seed; default ``train.hparams(N).lr``
    continue_lr_ratio: float = CONTINUE_LR_RATIO  #: experts' and mixtures' peak LR / the seed's
    seed_code_fraction: float = 0.5    #: code share of the seed's data (code/text corpora)
    mixtures: tuple = DEFAULT_MIXTURES #: candidates scored and trained: code shares, or {domain: share} dicts
    seed_mix: dict | None = None       #: the seed's mixture on other corpora (default: uniform over domains)
    target: dict | None = None         #: domain weights of ``target_loss`` (default equal)
    unique_tokens: int | None = None   #: unique tokens per run; default all it trains on (one epoch)
    eval_tokens: int = train.EVAL_TOKENS_PER_DOMAIN  #: validation tokens per domain
    seed: int = 0                      #: initialisation and data-order seed
    data: str = "embedded"
    tokenizer: str = "byte"
    seq_len: int = accounting.CPU_SEQ_LEN

    def check(self) -> "ProxyConfig":
        if self.shape not in accounting.SHAPES:
            raise UsageError(f"unknown shape {self.shape!r} (tiny shapes: {', '.join(accounting.TINY_SHAPES)})")
        for name in ("steps", "batch_size", "eval_tokens", "seq_len"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.unique_tokens is not None and self.unique_tokens <= self.seq_len * self.batch_size:
            raise UsageError(f"--unique-tokens must exceed one batch ({self.seq_len * self.batch_size} tokens)")
        if self.seed_steps < 0:
            raise UsageError(f"--seed-steps must be >= 0, got {self.seed_steps}")
        for name in ("lr", "continue_lr_ratio"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if all(isinstance(m, (int, float)) for m in self.mixtures):
            check_code_shares(self.mixtures)
        if not 0 <= self.seed_code_fraction <= 1:
            raise UsageError(f"seed code fraction {self.seed_code_fraction} is outside [0, 1]")
        return self

    def spec(self, tokens: int, mix: dict, vocab_size: int) -> RunSpec:
        s = accounting.SHAPES[self.shape]
        unique = tokens if self.unique_tokens is None else min(tokens, self.unique_tokens)
        return RunSpec(self.shape, s.d_model, s.ffw_size, s.attention_heads, s.n_layers, vocab_size,
                       self.seq_len, int(tokens), int(unique), code_fraction=float(mix.get("code", 0.0)),
                       seed=self.seed, data=self.data, tokenizer=self.tokenizer, grid="merge",
                       mix=format_mix(mix))

    def peak_lr(self, params: int) -> float:
        return self.lr if self.lr is not None else train.hparams(params, self.seq_len).lr


def check_code_shares(shares: Sequence[float]) -> list[float]:
    shares = [float(s) for s in shares]
    if not shares:
        raise UsageError("no mixtures given")
    for s in shares:
        if not 0.0 <= s <= 1.0:
            raise UsageError(f"code share {s:g} is outside [0, 1]")
    if len(set(shares)) != len(shares):
        raise UsageError("mixtures repeat a code share")
    return shares


def parse_shares(text: str):
    """``0,0.25,0.5`` (code shares) or ``a=1;b=1;a=0.5,b=0.5`` (mixtures separated by ``;``)."""
    if "=" in str(text):
        return [parse_mix(t.strip()) for t in str(text).split(";") if t.strip()]
    try:
        return check_code_shares(float(Fraction(t.strip())) for t in str(text).split(",") if t.strip())
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"malformed --mixtures {text!r} (expected code shares like 0,0.25,0.5, or "
                         f"mixtures like a=1;a=0.5,b=0.5)") from None


def code_text(corpus) -> bool:
    """Whether mixtures of this corpus are code shares (its domains are code and text)."""
    return set(corpus.domains) == {"code", "text"}


def mixture_of(corpus, candidate) -> dict[str, float]:
    """{domain: share} over the corpus's domains of a candidate: a code share (code/text
    corpora), a {domain: share} dict, or a mix string."""
    domains = [d for d in corpus.domains if corpus.validation.get(d)]
    if isinstance(candidate, str):
        candidate = parse_mix(candidate)
    if isinstance(candidate, Mapping):
        unknown = [d for d in candidate if d not in corpus.domains]
        if unknown:
            raise UsageError(f"unknown domain {unknown[0]!r} in a mixture (corpus {corpus.name!r} has: "
                             f"{', '.join(corpus.domains)})")
        return {d: float(candidate.get(d, 0.0)) for d in sorted(set(domains) | set(candidate))}
    if not code_text(corpus):
        raise UsageError(f"corpus {corpus.name!r} has domains {', '.join(corpus.domains)}: give mixtures as "
                         f"DOMAIN=SHARE lists, not code shares")
    return train.mix_weights(domains, float(candidate))


def domain_mixture(corpus, domain: str) -> dict[str, float]:
    """The mixture of an expert: all of one domain."""
    if domain not in corpus.domains:
        raise UsageError(f"unknown domain {domain!r} (corpus {corpus.name!r} has: {', '.join(corpus.domains)})")
    return mixture_of(corpus, {domain: 1.0})


def label(mix: Mapping[str, float]) -> str:
    """A mixture's key in tables and directory names: the code share on code/text corpora (as
    before), else its canonical mix string."""
    if set(mix) <= {"code", "text"}:
        return f"{mix.get('code', 0.0):g}"
    return format_mix(mix)


def _training(cfg: ProxyConfig, steps: int, mix: Mapping[str, float], lr: float) -> dict:
    tokens = steps * cfg.batch_size * cfg.seq_len
    unique = tokens if cfg.unique_tokens is None else min(tokens, cfg.unique_tokens)
    return {"steps": steps, "batch_size": cfg.batch_size, "lr": lr, "code_fraction": float(mix.get("code", 0.0)),
            "mix": format_mix(mix), "tokens": tokens, "unique_tokens": max(unique, 1), "data_seed": cfg.seed,
            "data": cfg.data, "tokenizer": cfg.tokenizer, "seq_len": cfg.seq_len, "shape": cfg.shape}


def _train(model: GPT, optimizer, forward, tokens: np.ndarray, training: dict, settings, progress: bool,
           desc: str, spec: RunSpec) -> list[float]:
    """``training['steps']`` AdamW steps with the package's schedule (warmup, cosine) through the
    one ``runners.train.trainer.Trainer``; returns the per-step losses. A non-finite loss is the same failure
    as everywhere (``non-finite loss at step N``); here it stops the experiment, since a diverged
    expert cannot be merged (lower the LR)."""
    hp = train.hparams(model.num_params(), training["seq_len"])
    hp = dataclasses.replace(hp, lr=training["lr"], batch_size=training["batch_size"])
    steps = training["steps"]
    batches = rdata.EpochBatches(tokens, training["seq_len"], hp.batch_size, training["data_seed"],
                                 total_tokens=steps * hp.batch_size * training["seq_len"])
    tl = train.TrainingLog(spec, batches, hp.batch_size * training["seq_len"], progress=progress, log_every=25,
                           desc=desc)
    train.Trainer(model, forward, optimizer, batches, hp, settings, tl).train()
    if tl.failure is not None:
        raise UsageError(f"{desc}: training failed, {tl.failure} (lower --lr, now {hp.lr:g})")
    return [loss for _, _, loss, _ in tl.curve]


def _build(cfg_model: GPTConfig, lr: float, settings, init_seed: int | None, start: GPT | None):
    hp = dataclasses.replace(train.hparams(1, cfg_model.seq_len), lr=lr)
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model, forward, optimizer = train.build(cfg_model, hp, settings)
    if start is not None:
        model.load_state_dict(start.state_dict())
    return model, forward, optimizer


class Data:
    """Corpus and tokenizer of an experiment, loaded once."""

    def __init__(self, data: str = "embedded", tokenizer: str = "byte", cache_dir=None):
        self.corpus = rdata.load_corpus(data, cache_dir=cache_dir)
        self.tokenizer = rdata.get_tokenizer(tokenizer, self.corpus, cache_dir=cache_dir)
        self.cache_dir = cache_dir

    @property
    def domains(self) -> list[str]:
        return [d for d in self.corpus.domains if self.corpus.validation.get(d)]

    def tokens(self, training: dict) -> np.ndarray:
        return rdata.train_tokens(self.corpus, self.tokenizer, training["unique_tokens"],
                                  training["code_fraction"], cache_dir=self.cache_dir,
                                  mix=parse_mix(training["mix"]) if training.get("mix") else None)

    def seed_mix(self, cfg: ProxyConfig) -> dict[str, float]:
        if code_text(self.corpus) and cfg.seed_mix is None:
            return mixture_of(self.corpus, cfg.seed_code_fraction)
        return mixture_of(self.corpus, cfg.seed_mix or {d: 1.0 / len(self.domains) for d in self.domains})


def train_seed(cfg: ProxyConfig, data: Data, settings, progress: bool = False) -> tuple[GPT, RunSpec, dict]:
    """The shared base: the init at ``cfg.seed`` trained ``seed_steps`` on the seed mix."""
    seed_mix = data.seed_mix(cfg)
    spec = cfg.spec(max(1, cfg.seed_steps) * cfg.batch_size * cfg.seq_len, seed_mix, _vocab(data.tokenizer))
    lr = cfg.peak_lr(spec.params)
    training = _training(cfg, cfg.seed_steps, seed_mix, lr)
    tokens = data.tokens(training) if cfg.seed_steps else None
    model, forward, optimizer = _build(GPTConfig.from_spec(spec), lr, settings, cfg.seed, None)
    losses = _train(model, optimizer, forward, tokens, training, settings, progress, "seed", spec) \
        if cfg.seed_steps else []
    lineage = {"role": "seed", "mixture": seed_mix, "base": None,
               "training": {**training, "init_seed": cfg.seed},
               "train_loss": float(np.mean(losses[-25:])) if losses else None}
    return model.cpu().eval(), spec, lineage


def continue_from(seed: SavedModel, mix, steps: int, data: Data, settings, *,
                  batch_size: int | None = None, lr: float | None = None, unique_tokens: int | None = None,
                  progress: bool = False, desc: str = "") -> tuple[GPT, RunSpec, dict]:
    """The seed trained ``steps`` more on a stream of mixture ``mix`` (a code share or a {domain:
    share} dict; fresh AdamW, warmup and cosine to a peak ``lr``, default ``CONTINUE_LR_RATIO`` times
    the seed's): an expert when ``mix`` is one domain, a trained mixture otherwise."""
    mix = mixture_of(data.corpus, mix)
    seed_training = seed.lineage.get("training") or {}
    if seed.lineage.get("role") not in ("seed", "run"):
        log.warning("%s is a %s model, not a seed", seed.path, seed.lineage.get("role"))
    spec0 = seed.spec
    seed_lr = seed_training.get("lr") or train.hparams(spec0.params, spec0.seq_len).lr
    cfg = ProxyConfig(shape=spec0.shape, batch_size=batch_size or seed_training.get("batch_size", 8),
                      lr=lr or CONTINUE_LR_RATIO * seed_lr, unique_tokens=unique_tokens, seed=spec0.seed,
                      data=spec0.data, tokenizer=spec0.tokenizer, seq_len=spec0.seq_len, steps=steps).check()
    spec = cfg.spec(steps * cfg.batch_size * cfg.seq_len, mix, spec0.vocab_size)
    training = _training(cfg, steps, mix, cfg.peak_lr(spec.params))
    tokens = data.tokens(training)
    model, forward, optimizer = _build(seed.model.config, training["lr"], settings, None, seed.model)
    losses = _train(model, optimizer, forward, tokens, training, settings, progress,
                    desc or f"mix {label(mix)}", spec)
    lineage = {"role": "continued", "mixture": mix,
               "base": _base_of(seed.lineage) or fingerprint(seed.model), "training": training,
               "train_loss": float(np.mean(losses[-25:]))}
    return model.cpu().eval(), spec, lineage


def _vocab(tokenizer) -> int:
    return max(accounting.CPU_VOCAB, int(tokenizer.vocab_size))


# --------------------------------------------------------------------------------------------
# Scoring


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


# --------------------------------------------------------------------------------------------
# The report


@dataclass
class ProxyReport:
    """Proxy scores, trained scores and their rank agreement: a value that saves, loads and prints."""

    config: dict
    domains: list
    target: dict
    proxy: pd.DataFrame
    trained: pd.DataFrame | None = None
    agreement: dict | None = None
    timings: dict = field(default_factory=dict)
    citation: str = ("Na et al. 2024, Scalable Data Ablation Approximations for Language Models "
                     "through Modular Training and Merging")

    def table(self) -> pd.DataFrame:
        """Long table, one row per (mixture, source) with the store's ``loss.<d>``/``mix.<d>``."""
        frames = [self.proxy.assign(source="proxy")]
        if self.trained is not None:
            frames.append(self.trained.assign(source="trained"))
        table = pd.concat(frames, ignore_index=True)
        first = ["source", "mixture", "code_share"] + [f"mix.{d}" for d in self.domains]
        first += [f"loss.{d}" for d in self.domains] + ["loss", "target_loss"]
        return table[first + [c for c in table.columns if c not in first]]

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "domains": self.domains, "target": self.target,
                           "proxy": self.proxy.to_dict("records"),
                           "trained": None if self.trained is None else self.trained.to_dict("records"),
                           "agreement": self.agreement, "timings": self.timings, "citation": self.citation},
                          indent=1, default=plain)

    @classmethod
    def from_json(cls, text: str) -> "ProxyReport":
        d = json.loads(text)
        return cls(config=d["config"], domains=d["domains"], target=d["target"], proxy=pd.DataFrame(d["proxy"]),
                   trained=None if d["trained"] is None else pd.DataFrame(d["trained"]),
                   agreement=d["agreement"], timings=d.get("timings", {}), citation=d.get("citation", cls.citation))

    def summary(self) -> str:
        metrics = [f"loss.{d}" for d in self.domains] + ["loss", "target_loss"]
        lines = [f"merging proxy (Na et al. 2024): {len(self.proxy)} mixture(s), target "
                 + ", ".join(f"{d}={w:g}" for d, w in self.target.items())]
        trained = None if self.trained is None else self.trained.set_index("mixture")
        width = 12 if trained is None else 21
        key_w = max(10, *(len(str(k)) for k in self.proxy["mixture"]))
        head = f"{'mixture' if key_w > 10 else 'code share':>{key_w}}  " + "  ".join(f"{m:>{width}}" for m in metrics)
        what = "proxy" if trained is None else "proxy / trained"
        lines += [head, f"{'':>{key_w}}  " + "  ".join(f"{what:>{width}}" for _ in metrics)]
        for _, row in self.proxy.iterrows():
            s = row["mixture"]
            cells = []
            for m in metrics:
                cell = f"{row[m]:.4f}"
                if trained is not None:
                    cell += f" / {trained.loc[s, m]:.4f}" if s in trained.index else " / -"
                cells.append(cell)
            lines.append(f"{s:>{key_w}}  " + "  ".join(f"{c:>{width}}" for c in cells))
        if self.agreement:
            lines += ["", f"{'metric':<12} {'spearman':>9} {'kendall':>9} {'decision':>9} {'gap':>8} "
                          f"{'best(proxy)':>12} {'best(trained)':>14}"]
            for m, st in self.agreement.items():
                lines.append(f"{m:<12} {st['spearman']:>9.3f} {st['kendall']:>9.3f} "
                             f"{st['decision_accuracy']:>9.3f} {st['mean_gap']:>+8.4f} "
                             f"{str(label_of(st['proxy_best'])):>12} {str(label_of(st['trained_best'])):>14}")
        if self.timings:
            lines += ["", "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())]
        return "\n".join(lines)

    def save(self, out) -> None:
        """``table.csv`` and ``report.json`` in ``out``, each written whole."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "table.csv", self.table().to_csv(index=False))
        _write_atomic(out / "report.json", self.to_json())


def label_of(best) -> str:
    return f"{best:g}" if isinstance(best, float) else str(best)


def plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_atomic(path: Path, text: str) -> None:
    from scaling.store import atomic_write_text
    atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------
# Experiments


def _expert_domains(experts: Mapping[str, SavedModel], data: Data) -> dict[str, dict]:
    """Domain -> mixture key of each expert, checked against the corpus and the expert's lineage."""
    shares = {}
    for domain, saved in experts.items():
        share = label(domain_mixture(data.corpus, domain))
        mix = saved.mixture
        if mix is not None and abs(mix.get(domain, 0.0) - 1.0) > WEIGHT_TOL:
            raise UsageError(f"{saved.path} is not a {domain} expert (it stands for the mixture "
                             + ", ".join(f"{d}={w:g}" for d, w in mix.items()) + ")")
        shares[domain] = share
    missing = [d for d in data.domains if d not in experts]
    if missing:
        raise UsageError(f"no expert for domain {missing[0]!r} (give DOMAIN=DIR for each of {', '.join(data.domains)})")
    return shares


def _common_base(saved: Sequence[SavedModel]) -> str | None:
    bases = {_base_of(s.lineage) for s in saved}
    return bases.pop() if len(bases) == 1 else None


def score(experts: Mapping[str, SavedModel], shares, *, eval_tokens=train.EVAL_TOKENS_PER_DOMAIN,
          target=None, device=None, progress=False, save_dir=None, cache_dir=None) -> ProxyReport:
    """Proxy scores of candidate mixtures (code shares or {domain: share}) from saved experts of one seed."""
    spec = next(iter(experts.values())).spec
    data = Data(spec.data, spec.tokenizer, cache_dir)
    shares = [plain_mix(m) for m in check_candidates(shares, data.corpus)]
    _expert_domains(experts, data)
    check_compatible([s.model.config for s in experts.values()], [str(s.path) for s in experts.values()])
    if _common_base(list(experts.values())) is None:
        raise UsageError("the experts do not share a seed: the merging proxy averages models grown from one seed")
    target = check_target(target, data.domains)
    settings = train.resolve_settings(device)
    t0 = time.perf_counter()
    proxy = score_mixtures({d: s.model for d, s in experts.items()}, shares, data, settings,
                           eval_tokens=eval_tokens, target=target, progress=progress, save_dir=save_dir,
                           expert_saved=experts)
    return ProxyReport(config={"experts": {d: str(s.path) for d, s in experts.items()}, "mixtures": shares,
                               "eval_tokens": eval_tokens},
                       domains=data.domains, target=target, proxy=proxy,
                       timings={"proxy_s": time.perf_counter() - t0})


def validate(seed: SavedModel, experts: Mapping[str, SavedModel], shares, *,
             eval_tokens=train.EVAL_TOKENS_PER_DOMAIN, target=None, device=None, progress=False, out=None,
             cache_dir=None) -> ProxyReport:
    """Proxy scores, then every mixture trained from ``seed`` with the experts' own settings, and the
    rank agreement between the two."""
    if len(shares) < 3:
        raise UsageError(f"{len(shares)} mixture(s): need at least 3 to compare rankings")
    trainings = [s.lineage.get("training") for s in experts.values()]
    if any(t is None for t in trainings):
        raise UsageError("an expert has no training record (was it written by runners.merge expert?)")
    keys = ("steps", "batch_size", "lr", "data_seed", "unique_tokens")
    if len({tuple(t.get(k) for k in keys) for t in trainings}) > 1:
        raise UsageError("the experts were trained with different steps, batch sizes, LRs, unique data or data seeds")
    seed_base = _base_of(seed.lineage) or fingerprint(seed.model)
    if _common_base(list(experts.values())) != seed_base:
        raise UsageError(f"the experts were not trained from the seed {seed.path}")
    report = score(experts, shares, eval_tokens=eval_tokens, target=target, device=device, progress=progress,
                   save_dir=None if out is None else Path(out) / "merged", cache_dir=cache_dir)
    spec = seed.spec
    data = Data(spec.data, spec.tokenizer, cache_dir)
    settings = train.resolve_settings(device)
    steps, batch, lr = trainings[0]["steps"], trainings[0]["batch_size"], trainings[0]["lr"]
    unique = trainings[0].get("unique_tokens")
    shares_of = _expert_domains(experts, data)
    rows, t0 = [], time.perf_counter()
    pure = set(shares_of.values())
    for mix in check_candidates(shares, data.corpus):
        if label(mix) in pure:
            row = _expert_row(report.proxy, label(mix))
        else:
            model, mspec, lineage = continue_from(seed, mix, steps, data, settings, batch_size=batch, lr=lr,
                                                  unique_tokens=unique, progress=progress,
                                                  desc=f"mix {label(mix)}")
            if out is not None:
                save(model, mspec, Path(out) / "trained" / _mix_name(mix), lineage)
            row = evaluate_model(model, data, mix, settings, eval_tokens, report.target)
        rows.append(row)
        _say(progress, f"trained {label(mix):<8} " + _losses_line(row, data.domains))
    report.trained = pd.DataFrame(rows)
    report.agreement = agreement(report.proxy, report.trained, data.domains)
    report.timings["trained_s"] = time.perf_counter() - t0
    report.config.update(seed=str(seed.path), steps=steps, batch_size=batch, lr=lr)
    if out is not None:
        report.save(out)
    return report


def run(cfg: ProxyConfig = ProxyConfig(), out=None, *, device=None, progress=False, cache_dir=None) -> ProxyReport:
    """The whole experiment: seed, experts, proxies and trained mixtures, rank agreement.

    With ``out``, models go to ``out/models`` (seed, experts, trained mixtures) and ``out/merged``
    (proxies), the table and report to ``out``; a model already there with the same lineage is
    loaded instead of retrained, so the command can be rerun at will."""
    cfg = cfg.check()
    data = Data(cfg.data, cfg.tokenizer, cache_dir)
    candidates = cfg.mixtures
    if not code_text(data.corpus) and all(isinstance(c, (int, float)) for c in candidates):
        candidates = default_candidates(data.domains, cfg.seed)   # code shares mean nothing here
    mixes = check_candidates(candidates, data.corpus)
    shares = [plain_mix(m) for m in mixes]
    target = check_target(cfg.target, data.domains)
    expert_mix = {d: domain_mixture(data.corpus, d) for d in data.domains}
    experts_by_share = {label(m): d for d, m in expert_mix.items()}
    seed_mix = data.seed_mix(cfg)
    settings = train.resolve_settings(device)
    spec0 = cfg.spec(1, seed_mix, _vocab(data.tokenizer))
    lr = cfg.peak_lr(spec0.params)
    clr = cfg.continue_lr_ratio * lr
    # fail before training anything when the data cannot cover a run
    for mix in [*mixes, *expert_mix.values()]:
        data.tokens(_training(cfg, cfg.steps, mix, clr))
    if cfg.seed_steps:
        data.tokens(_training(cfg, cfg.seed_steps, seed_mix, lr))
    models = None if out is None else Path(out) / "models"
    timings = {}
    _say(progress, f"merging proxy: {cfg.shape} ({spec0.params:,} parameters), seed {cfg.seed_steps} steps at "
                   f"lr {lr:.3g} on {label(seed_mix)}, {len(expert_mix)} experts and {len(shares)} mixtures "
                   f"{cfg.steps} steps at lr {clr:.3g}, batch {cfg.batch_size} x {cfg.seq_len}")

    t0 = time.perf_counter()
    seed = _cached(models, "seed", progress, lambda: train_seed(cfg, data, settings, progress),
                   {"role": "seed", "training": {**_training(cfg, cfg.seed_steps, seed_mix, lr),
                                                 "init_seed": cfg.seed}})
    timings["seed_s"] = time.perf_counter() - t0

    def grow(mix, desc):
        return continue_from(seed, mix, cfg.steps, data, settings, batch_size=cfg.batch_size, lr=clr,
                             unique_tokens=cfg.unique_tokens,
                             progress=progress, desc=desc)

    def expect(mix):
        return {"role": "continued", "base": seed.lineage["fingerprint"],
                "training": _training(cfg, cfg.steps, mix, clr)}

    t0 = time.perf_counter()
    experts = {d: _cached(models, d, progress, lambda m=m, d=d: grow(m, f"expert {d}"), expect(m))
               for d, m in sorted(expert_mix.items())}
    timings["experts_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    proxy = score_mixtures({d: s.model for d, s in experts.items()}, mixes, data, settings,
                           eval_tokens=cfg.eval_tokens, target=target, progress=progress,
                           save_dir=None if out is None else Path(out) / "merged", expert_saved=experts)
    timings["proxy_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = []
    for mix in mixes:
        if label(mix) in experts_by_share:
            row = _expert_row(proxy, label(mix))
        else:
            model = _cached(models, _mix_name(mix), progress,
                            lambda m=mix: grow(m, f"mix {label(m)}"), expect(mix)).model
            row = evaluate_model(model, data, mix, settings, cfg.eval_tokens, target)
        rows.append(row)
        _say(progress, f"trained {label(mix):<8} " + _losses_line(row, data.domains))
    trained = pd.DataFrame(rows)
    timings["trained_s"] = time.perf_counter() - t0

    config = {**dataclasses.asdict(cfg), "mixtures": shares, "seed_mix": seed_mix, "lr": lr, "continue_lr": clr, "params": spec0.params,
              "device": settings.device}
    report = ProxyReport(config=config, domains=data.domains, target=target, proxy=proxy, trained=trained,
                         timings=timings)
    if len(shares) >= 3:
        report.agreement = agreement(proxy, trained, data.domains)
    if out is not None:
        report.save(out)
    return report


def _expert_row(proxy: pd.DataFrame, key: str) -> dict:
    """A pure mixture trained from the seed is its expert (same data, order and settings), and its
    proxy is the expert exactly (zero weights are skipped): the metrics are the proxy's."""
    row = proxy.loc[proxy["mixture"] == key].iloc[0].to_dict()
    row.pop("eval_s", None)
    return row


def plain_mix(mix: Mapping[str, float]):
    """A mixture as it is reported: the code share on code/text corpora, else the dict."""
    return float(mix.get("code", 0.0)) if set(mix) <= {"code", "text"} else {d: v for d, v in mix.items() if v > 0}


def default_candidates(domains: Sequence[str], seed: int, k: int = 4) -> list[dict[str, float]]:
    """Candidates on corpora without code shares: every pure domain (the experts themselves), the
    uniform mixture and ``k`` Dirichlet draws around it (``runners.mixgrid.draw_mixtures``)."""
    from runners.grid.mixgrid import draw_mixtures
    uniform = {d: 1.0 / len(domains) for d in domains}
    draws = draw_mixtures(uniform, k, seed)
    return [{d: 1.0} for d in domains] + [uniform] + draws


def _cached(models: Path | None, name: str, progress: bool, make, expected: dict) -> SavedModel:
    """Load ``models/name`` when its lineage matches ``expected``; else train it (and save it)."""
    path = None if models is None else models / name
    if path is not None and (path / model_files.CONFIG_FILE).exists():
        try:
            saved = load(path)
        except UsageError:
            saved = None
        if saved is not None and all(saved.lineage.get(k) == v for k, v in expected.items()):
            _say(progress, f"reusing {path}")
            return saved
    model, spec, lineage = make()
    config = {"run": spec.to_dict(), "tokenizer": spec.tokenizer,
              LINEAGE: {**lineage, "fingerprint": fingerprint(model)}}
    if path is not None:
        save(model, spec, path, lineage)
    return SavedModel(model, config, path if path is not None else Path(name))


# --------------------------------------------------------------------------------------------
# CLI


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def parse_experts(text: str) -> dict[str, SavedModel]:
    experts = {}
    for item in [t for t in str(text).split(",") if t.strip()]:
        domain, sep, path = item.partition("=")
        if not sep or not domain.strip() or not path.strip():
            raise UsageError(f"malformed --experts item {item!r} (expected DOMAIN=DIR, e.g. code=m/code)")
        if domain.strip() in experts:
            raise UsageError(f"two experts for domain {domain.strip()!r}")
        experts[domain.strip()] = load(path.strip())
    if not experts:
        raise UsageError("no experts given")
    return experts


def _add_training(p, steps_default, lr_help="peak LR (default: runners.train.trainer.hparams of the shape)",
                  steps_help="optimiser steps"):
    p.add_argument("--steps", type=int, default=steps_default, help=f"{steps_help} (default {steps_default})")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 8; experts: the seed's)")
    p.add_argument("--lr", type=float, default=None, help=lr_help)
    p.add_argument("--unique-tokens", type=_size, default=None, metavar="U",
                   help="unique tokens per run, e.g. 500k (default: all it trains on, one epoch; fewer repeat epochs)")


def _add_common(p):
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress")


def _add_scoring(p):
    p.add_argument("--mixtures", default=",".join(f"{s:g}" for s in DEFAULT_MIXTURES), metavar="SHARES",
                   help="candidate code shares (default 0,0.25,0.5,0.75,1), or mixtures of any domains separated "
                        "by ';', e.g. 'reference=1;apidoc=1;reference=0.5,apidoc=0.5' (run on a corpus "
                        "without code shares: every domain, the uniform mix and 4 Dirichlet draws)")
    p.add_argument("--target", default=None, metavar="D=W,...",
                   help="domain weights of target_loss, e.g. text=0.7,code=0.3 (default equal)")
    p.add_argument("--eval-tokens", type=int, default=train.EVAL_TOKENS_PER_DOMAIN, metavar="N",
                   help=f"validation tokens per domain (default {train.EVAL_TOKENS_PER_DOMAIN})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.splitlines()
    p = ArgumentParser(prog="python -m runners.merge", description="\n\n".join(__doc__.split("\n\n")[:2]),
                       epilog="examples:\n" + "\n".join(l for l in doc if "python -m" in l))
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="seed, experts, proxies, trained mixtures and rank agreement in one go",
                       epilog="example:\n  python -m runners.merge run --shape t48 --seed-steps 600 --steps 300 "
                              "--out merge-t48")
    r.add_argument("--shape", default="t32", help="model shape (default t32)")
    r.add_argument("--seed-steps", type=int, default=600, help="steps of the shared seed (default 600)")
    _add_training(r, 300, "peak LR of the seed (default: runners.train.trainer.hparams of the shape)",
                  "steps of each expert and each trained mixture from the seed")
    r.add_argument("--continue-lr-ratio", type=float, default=CONTINUE_LR_RATIO,
                   help=f"experts' and trained mixtures' peak LR over the seed's (default {CONTINUE_LR_RATIO})")
    r.add_argument("--seed-code-fraction", type=float, default=0.5, help="code share of the seed's data (default 0.5)")
    r.add_argument("--seed", type=nonnegative_int, default=0, help="initialisation and data-order seed (default 0)")
    r.add_argument("--data", default="embedded", help="corpus (default embedded)")
    r.add_argument("--tokenizer", default="byte", help="tokenizer (default byte)")
    r.add_argument("--out", default=None, help="directory for models, table.csv and report.json (rerunnable)")
    _add_scoring(r)
    _add_common(r)

    s = sub.add_parser("seed", help="train the shared seed model",
                       epilog="example:\n  python -m runners.merge seed --shape t32 --steps 600 --out m/seed")
    s.add_argument("--shape", default="t32")
    _add_training(s, 600)
    s.add_argument("--code-fraction", type=float, default=0.5, help="code share of the seed's data (default 0.5)")
    s.add_argument("--seed", type=nonnegative_int, default=0)
    s.add_argument("--data", default="embedded")
    s.add_argument("--tokenizer", default="byte")
    s.add_argument("--out", required=True, help="new directory for the seed model")
    _add_common(s)

    e = sub.add_parser("expert", help="continue the seed on one domain",
                       epilog="example:\n  python -m runners.merge expert --from m/seed --domain code --steps 300 "
                              "--out m/code")
    e.add_argument("--from", dest="seed_dir", required=True, metavar="SEED", help="seed model directory")
    e.add_argument("--domain", required=True, help="domain to train on (embedded corpus: text, code)")
    _add_training(e, 300, f"peak LR (default {CONTINUE_LR_RATIO} x the seed's)")
    e.add_argument("--out", required=True, help="new directory for the expert")
    _add_common(e)

    m = sub.add_parser("merge", help="weighted parameter average of saved models (merges can be merged again)",
                       epilog="example:\n  python -m runners.merge merge --models m/text,m/code --weights 0.7,0.3 "
                              "--out m/code0.3")
    m.add_argument("--models", required=True, help="comma list of model directories")
    m.add_argument("--weights", required=True, help="mixture proportions summing to 1, e.g. 0.7,0.3 or 1/3,2/3")
    m.add_argument("--out", required=True, help="new directory for the merged model")

    c = sub.add_parser("score", help="proxy losses of candidate mixtures from per-domain experts",
                       epilog="example:\n  python -m runners.merge score --experts text=m/text,code=m/code "
                              "--mixtures 0,0.25,0.5,0.75,1 --out m/proxy")
    c.add_argument("--experts", required=True, metavar="D=DIR,...", help="one expert per domain")
    c.add_argument("--out", default=None, help="directory for the merged models, table.csv and report.json")
    _add_scoring(c)
    _add_common(c)

    v = sub.add_parser("validate", help="train the mixtures from the seed and compare rankings with the proxy",
                       epilog="example:\n  python -m runners.merge validate --seed m/seed "
                              "--experts text=m/text,code=m/code --out m/report")
    v.add_argument("--seed", dest="seed_dir", required=True, help="the experts' seed model directory")
    v.add_argument("--experts", required=True, metavar="D=DIR,...", help="one expert per domain")
    v.add_argument("--out", default=None, help="directory for models, table.csv and report.json")
    _add_scoring(v)
    _add_common(v)
    return p


def _size(text: str) -> int:
    return int(accounting.parse_size(text))


def _print(report: ProxyReport, as_json: bool) -> None:
    print(report.to_json() if as_json else report.summary())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    progress = not getattr(args, "quiet", True)
    if args.command == "merge":
        directories = [t.strip() for t in args.models.split(",") if t.strip()]
        weights = parse_weights(args.weights)
        check_weights(weights, len(directories))
        print(merge_dirs(directories, weights, args.out))
        return 0
    if getattr(args, "eval_tokens", 1) < 1:
        raise UsageError(f"--eval-tokens must be at least 1, got {args.eval_tokens}")
    if args.command == "run":
        cfg = ProxyConfig(shape=args.shape, seed_steps=args.seed_steps, steps=args.steps,
                          batch_size=args.batch_size or 8, lr=args.lr, seed_code_fraction=args.seed_code_fraction,
                          continue_lr_ratio=args.continue_lr_ratio, unique_tokens=args.unique_tokens,
                          mixtures=tuple(parse_shares(args.mixtures)), target=parse_target(args.target),
                          eval_tokens=args.eval_tokens, seed=args.seed, data=args.data, tokenizer=args.tokenizer)
        _print(run(cfg, args.out, device=args.device, progress=progress), args.json)
        return 0
    if args.command == "seed":
        out = _check_fresh(args.out)
        cfg = ProxyConfig(shape=args.shape, seed_steps=args.steps, batch_size=args.batch_size or 8, lr=args.lr,
                          unique_tokens=args.unique_tokens,
                          seed_code_fraction=args.code_fraction, seed=args.seed, data=args.data,
                          tokenizer=args.tokenizer).check()
        data = Data(cfg.data, cfg.tokenizer)
        model, spec, lineage = train_seed(cfg, data, train.resolve_settings(args.device), progress)
        print(save(model, spec, out, lineage))
        return 0
    if args.command == "expert":
        out = _check_fresh(args.out)
        seed = load(args.seed_dir)
        data = Data(seed.spec.data, seed.spec.tokenizer)
        share = domain_mixture(data.corpus, args.domain)
        model, spec, lineage = continue_from(seed, share, args.steps, data, train.resolve_settings(args.device),
                                             batch_size=args.batch_size, lr=args.lr,
                                             unique_tokens=args.unique_tokens, progress=progress,
                                             desc=f"expert {args.domain}")
        print(save(model, spec, out, lineage))
        return 0
    shares = parse_shares(args.mixtures)
    target = parse_target(args.target)
    experts = parse_experts(args.experts)
    if args.command == "score":
        if args.out is not None:
            _check_fresh(args.out)
        report = score(experts, shares, eval_tokens=args.eval_tokens, target=target, device=args.device,
                       progress=progress, save_dir=None if args.out is None else Path(args.out) / "merged")
        if args.out is not None:
            report.save(args.out)
        _print(report, args.json)
        return 0
    seed = load(args.seed_dir)
    if args.out is not None:
        _check_fresh(args.out)
    report = validate(seed, experts, shares, eval_tokens=args.eval_tokens, target=target, device=args.device,
                      progress=progress, out=args.out)
    _print(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
