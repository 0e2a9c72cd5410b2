"""Training from a seed: the proxy's settings, its data, the seed and the models continued from it."""

from __future__ import annotations

import logging
import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np
import torch

from runners import data as rdata
from runners.train import trainer as train
from runners.train.engines import build
from runners.models.gpt import GPT, GPTConfig
from runners.grid.spec import RunSpec, format_mix, parse_mix
from scaling import accounting
from scaling.cli import FitError, UsageError
from runners.studies.merge.arithmetic import CONTINUE_LR_RATIO, DEFAULT_MIXTURES, fingerprint
from runners.studies.merge.saved import SavedModel, _base_of

log = logging.getLogger(__name__)


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
    train.Trainer.one(model, forward, optimizer, batches, hp, settings, tl).train()
    if tl.failure is not None:
        raise FitError(f"{desc}: training failed, {tl.failure} (lower --lr, now {hp.lr:g})")
    return [loss for _, _, loss, _ in tl.curve]


def _build(cfg_model: GPTConfig, lr: float, settings, init_seed: int | None, start: GPT | None):
    hp = dataclasses.replace(train.hparams(1, cfg_model.seq_len), lr=lr)
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model, forward, optimizer = build(cfg_model, hp, settings)
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
