"""A run's full configuration as a frozen dataclass: what plans produce and launchers execute.

``run_id`` is a hash of every field, so the same configuration always maps to the same store row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from scaling import accounting


@dataclass(frozen=True)
class RunSpec:
    shape: str                 #: name in scaling.accounting.SHAPES
    d_model: int
    ffw_size: int
    n_heads: int               #: attention heads actually used
    n_layers: int
    vocab_size: int
    seq_len: int
    tokens: int                #: tokens trained on (D)
    unique_tokens: int         #: unique tokens available (U_D); epochs = tokens / unique_tokens
    code_fraction: float = 0.0 #: share of code tokens in the unique data (by tokens)
    filter: str = "none"       #: none | ppl25 | ppl50 | ppl25-75 | dedup
    seed: int = 0
    data: str = "embedded"     #: corpus: embedded | path to jsonl/parquet | hf:NAME
    text_column: str = "text"  #: column holding the documents in --data files
    tokenizer: str = "byte"    #: byte | bpe:VOCAB | a HF tokenizer name or path
    grid: str = "isoflop"      #: which plan produced it (isoflop | isounique)
    budget: str = ""           #: budget name, for grouping
    flops_convention: str = "6N"   #: the FLOP convention the run's budget was spent in
    mix: str = ""              #: domain shares "d1=0.3,d2=0.7" (replaces code_fraction when given)
    domain_column: str = ""    #: column labelling each document's domain in --data files
    arch: str = "gpt"          #: gpt | mamba | PACKAGE.MODULE:FACTORY (runners.models.arch)
    activation: str = "gelu"   #: gelu | swelu (mamba's learnable activation)

    @property
    def params(self) -> int:
        if self.arch in accounting.ARCHS:
            return accounting.arch_param_count(self.arch, self.d_model, self.ffw_size, self.n_layers,
                                               self.vocab_size, self.seq_len, self.activation)
        from runners.models.arch import plugin_param_count      # a plug-in: counted by building it
        return plugin_param_count(self)

    @property
    def shape_kwargs(self) -> dict:
        return {"d_model": self.d_model, "ffw_size": self.ffw_size, "n_layers": self.n_layers,
                "vocab": self.vocab_size, "seq_len": self.seq_len, "arch": self.arch, "activation": self.activation}

    @property
    def flops(self) -> float:
        """Training FLOPs in the run's own convention (6 N D over all parameters by default)."""
        if self.arch not in accounting.ARCHS:
            return accounting.flops(self.params, self.tokens)
        return accounting.training_flops(self.flops_convention, self.tokens, **self.shape_kwargs)

    @property
    def mixture(self) -> dict[str, float] | None:
        """``mix`` as {domain: share}, or None when the run mixes by ``code_fraction``."""
        return parse_mix(self.mix) if self.mix else None

    @property
    def epochs(self) -> float:
        return self.tokens / self.unique_tokens

    @property
    def run_id(self) -> str:
        d = dataclasses.asdict(self)
        for key, default in (("flops_convention", "6N"), ("mix", ""), ("domain_column", ""), ("arch", "gpt"),
                             ("activation", "gelu")):
            if d[key] == default:              # defaults leave the ids of earlier stores unchanged
                del d[key]
        payload = json.dumps(d, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """Configuration plus derived canonical columns, as stored and as printed by --dry-run --json."""
        out = dataclasses.asdict(self)
        out.update(run_id=self.run_id, params=self.params, flops=self.flops, epochs=self.epochs)
        out.update(accounting.convention_columns(out, self.tokens))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_mix(text: str) -> dict[str, float]:
    """``"a=0.3,b=0.7"`` -> {"a": 0.3, "b": 0.7}: shares non-negative, summing to 1 within 1e-6."""
    from scaling.cli import UsageError
    out: dict[str, float] = {}
    for part in str(text).split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if not sep or not name or not (share >= 0) or share == float("inf"):
            raise UsageError(f"malformed --mix item {part!r} (expected DOMAIN=SHARE, e.g. code=0.3)")
        if name in out:
            raise UsageError(f"--mix names {name!r} twice")
        out[name] = share
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise UsageError(f"--mix shares sum to {total:.6g}, not 1 ({text})")
    return out


def format_mix(mix: dict[str, float]) -> str:
    """The canonical ``mix`` string: domains sorted, shares to 12 decimals, zero shares kept out."""
    return ",".join(f"{d}={round(float(v), 12):.12g}" for d, v in sorted(mix.items()) if v > 0)
