"""Parameter, token and FLOP accounting: the one source of truth for runners and fits.

Conventions follow the papers this toolkit reproduces:

* FLOPs = 6 * params * tokens by default (Hoffmann et al. 2022; Muennighoff et al. 2023); the other
  conventions of the literature (non-embedding, last layer, attention) are ``FLOP_CONVENTIONS``,
  computed by ``flops_per_token`` (see its docstring for the derivation).
* Parameter count of a GPT-2 style decoder with learned positions (Muennighoff et al. 2023,
  "Scaling Data-Constrained Language Models", appendix; shapes from Hoffmann et al. 2022 Table A9):
  per layer ``4d^2 + 4d`` (attention) ``+ 2*ffw*d + ffw + d`` (MLP) ``+ 2d`` (norms);
  embeddings ``V*d + V + S*d``.
* Budgets are named after the model that is compute-optimal for them (Muennighoff et al. 2023).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from scaling.cli import UsageError

#: Chinchilla's compute-optimal ratio, D_opt ~= 20 N_opt; the papers' named budgets sit at 19-20.5.
TOKENS_PER_PARAM = 20.0

#: GPT-2 tokenizer and context of the papers' shapes.
PAPER_VOCAB = 50257
PAPER_SEQ_LEN = 2048

#: The byte-level tokenizer and context used for CPU-sized runs.
CPU_VOCAB = 256
CPU_SEQ_LEN = 128


class AccountingError(UsageError):
    """A budget, size or shape that cannot be understood; the CLIs print it as ``error: ...``."""


def flops(params, tokens):
    """Training FLOPs, C = 6 N D (the papers' convention). Vectorised."""
    return 6.0 * np.asarray(params, dtype=float) * np.asarray(tokens, dtype=float) if (
        np.ndim(params) or np.ndim(tokens)) else 6.0 * float(params) * float(tokens)


def tokens_for(flops_budget, params):
    """Tokens that spend ``flops_budget`` on a model of ``params`` parameters: D = C / 6N."""
    return flops_budget / (6.0 * params)


def param_count(d_model: int, ffw_size: int, n_layers: int, vocab: int, seq_len: int) -> int:
    """GPT-2 style parameter count (Muennighoff et al. 2023), embeddings included."""
    d = d_model
    per_layer = 4 * d * d + 4 * d + 2 * ffw_size * d + ffw_size + d + 2 * d
    return n_layers * per_layer + vocab * d + vocab + seq_len * d


def nonembedding_param_count(d_model: int, ffw_size: int, n_layers: int, vocab: int, seq_len: int) -> int:
    """Parameters without the token and position embedding tables (Kaplan et al. 2020's N):
    ``param_count - V*d - S*d``. The output bias (V) stays: it is a weight of the last layer."""
    return param_count(d_model, ffw_size, n_layers, vocab, seq_len) - vocab * d_model - seq_len * d_model


#: Architectures ``scaling.accounting`` counts (``runners --arch``; a ``PACKAGE.MODULE:FACTORY``
#: plug-in is counted by building it, and spends its budget in 6N only).
ARCHS = ("gpt", "mamba")
ACTIVATIONS = ("gelu", "swelu")
#: Mamba's defaults (Gu & Dao 2023, ``mamba_simple``): state size, conv width, expansion.
MAMBA_D_STATE, MAMBA_D_CONV, MAMBA_EXPAND = 16, 4, 2


def mamba_dt_rank(d_model: int) -> int:
    """Mamba's ``dt_rank = ceil(d / 16)``."""
    return -(-int(d_model) // 16)


def mamba_param_count(d_model: int, ffw_size: int, n_layers: int, vocab: int, seq_len: int,
                      activation: str = "gelu") -> int:
    """Parameters of ``runners.models.mamba.MambaLM`` (the Mamba + dense hybrid of P. Obara 2025's SWELU
    study), embeddings included, term for term. Per Mamba block (Gu & Dao 2023; E = 2d, N = 16,
    R = ceil(d/16), conv width 4): norm ``d``, in_proj ``2Ed``, conv ``4E + E``, x_proj ``E(R + 2N)``,
    dt_proj ``RE + E``, A ``EN``, D ``E``, out_proj ``Ed``. The dense block (three layers, hidden
    h = ffw_size): norm ``d``, ``dh + h``, ``h^2 + h``, ``hd + d``. Embeddings as ``param_count``:
    ``V d + V + S d``. SWELU adds its k and lambda per use (two per Mamba block, two in the dense block)."""
    d, h, L = int(d_model), int(ffw_size), int(n_layers)
    E, N, R, K = MAMBA_EXPAND * d, MAMBA_D_STATE, mamba_dt_rank(d), MAMBA_D_CONV
    swelu = 2 if activation == "swelu" else 0
    block = d + 2 * E * d + K * E + E + E * (R + 2 * N) + R * E + E + E * N + E + E * d + 2 * swelu
    dense = d + d * h + h + h * h + h + h * d + d + 2 * swelu
    return L * block + dense + vocab * d + vocab + seq_len * d


def arch_param_count(arch: str, d_model: int, ffw_size: int, n_layers: int, vocab: int, seq_len: int,
                     activation: str = "gelu") -> int:
    """``param_count`` (gpt) or ``mamba_param_count`` (mamba)."""
    if arch == "mamba":
        return mamba_param_count(d_model, ffw_size, n_layers, vocab, seq_len, activation)
    if arch == "gpt":
        if activation != "gelu":
            raise AccountingError(f"--activation {activation} is for --arch mamba (gpt uses gelu)")
        return param_count(d_model, ffw_size, n_layers, vocab, seq_len)
    raise AccountingError(f"unknown architecture {arch!r} for accounting (known: {', '.join(ARCHS)})")


#: FLOP conventions, training FLOPs per token (see ``flops_per_token``). ``6N`` is the default.
FLOP_CONVENTIONS = ("6N", "6N_ne", "6N_ne+head", "6N_ne+head+attn")
DEFAULT_CONVENTION = "6N"


def check_convention(convention: str) -> str:
    if convention not in FLOP_CONVENTIONS:
        raise AccountingError(f"unknown FLOP convention {convention!r} (known: {', '.join(FLOP_CONVENTIONS)})")
    return convention


def flops_per_token(convention: str, *, d_model, ffw_size, n_layers, vocab, seq_len, arch="gpt",
                    activation="gelu"):
    """Training FLOPs per token of a GPT-2 style decoder under one of the literature's conventions.

    Derivation (Kaplan et al. 2020, Table 1; Hoffmann et al. 2022, App. F; Porian et al. 2024,
    Table 1): a weight matrix of m parameters costs 2m forward FLOPs per token (a multiply and an
    add) and twice that backward, so training costs 6 FLOPs per weight per token (training = 3x
    forward). What differs is *which* weights and products are counted:

    * ``6N``: 6 x all parameters, embeddings included (Hoffmann et al. 2022's C = 6ND as used by
      the data-constrained paper). An embedding lookup is not a matrix multiply, so this over-counts
      small models, whose parameters are mostly embeddings.
    * ``6N_ne``: 6 x non-embedding parameters (Kaplan et al. 2020's C = 6N with N = 12 L d^2 for
      ffw = 4d, their eq. 2.2 without the attention term): ignores the output layer and attention.
    * ``6N_ne+head``: adds the output layer (the un-embedding, a real d x V matrix multiply),
      6 V d: Porian et al. 2024's "last layer" correction, which moves Kaplan's exponent towards
      Chinchilla's.
    * ``6N_ne+head+attn``: adds attention's two token-mixing products, the logits Q K^T and the
      weighted sum of values, each 2 T d forward FLOPs per token per layer (Hoffmann et al. 2022,
      App. F counts both; Kaplan et al. 2020 count 2 L T d for one), so 4 L T d forward and
      12 L T d for training. Counted over the full context, without causal halving, as both papers do.

    For ``arch="mamba"`` (``mamba_param_count``) N counts the hybrid's parameters, and the token-
    mixing term of ``+attn`` is the selective scan's instead of attention's: 9 E N forward FLOPs per
    token per block (discretise, update the state, read it out: the count ``mamba_ssm`` gives its
    reference scan), so 27 L E N for training; independent of the context. The depthwise
    convolution's weights are in N (each is used once per token).

    Vectorised over numpy arrays of shapes (``arch`` and ``activation`` may be arrays too).
    """
    check_convention(convention)
    if not (np.ndim(arch) == 0 and str(arch) == "gpt"):
        return _flops_per_token_by_arch(convention, d_model=d_model, ffw_size=ffw_size, n_layers=n_layers,
                                        vocab=vocab, seq_len=seq_len, arch=arch, activation=activation)
    d, f, L = (np.asarray(x, dtype=float) for x in (d_model, ffw_size, n_layers))
    V, S = np.asarray(vocab, dtype=float), np.asarray(seq_len, dtype=float)
    per_layer = 4 * d * d + 4 * d + 2 * f * d + f + d + 2 * d
    n_all = L * per_layer + V * d + V + S * d
    n_ne = n_all - V * d - S * d
    if convention == "6N":
        out = 6.0 * n_all
    elif convention == "6N_ne":
        out = 6.0 * n_ne
    elif convention == "6N_ne+head":
        out = 6.0 * (n_ne + V * d)
    else:
        out = 6.0 * (n_ne + V * d) + 12.0 * L * S * d
    return float(out) if np.ndim(out) == 0 else out


def _mamba_flops_per_token(convention, d_model, ffw_size, n_layers, vocab, seq_len, activation) -> float:
    d, V, S = int(d_model), int(vocab), int(seq_len)
    n_all = mamba_param_count(d, ffw_size, n_layers, V, S, activation)
    n_ne = n_all - V * d - S * d
    out = {"6N": 6.0 * n_all, "6N_ne": 6.0 * n_ne, "6N_ne+head": 6.0 * (n_ne + V * d)}.get(convention)
    if out is None:
        out = 6.0 * (n_ne + V * d) + 27.0 * int(n_layers) * MAMBA_EXPAND * d * MAMBA_D_STATE
    return out


def _name(value, default: str) -> str:
    """An architecture or activation name from a table cell: missing (None, NaN, "") is ``default``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("", "None", "nan"):
        return default
    return str(value)


def _flops_per_token_by_arch(convention, *, d_model, ffw_size, n_layers, vocab, seq_len, arch, activation):
    """``flops_per_token`` where ``arch`` is given per row: GPT's formula for all rows at once, then
    the rows of other architectures one by one (stores since ``--arch`` carry the column for every run)."""
    shapes = np.broadcast_arrays(*(np.asarray(x) for x in (d_model, ffw_size, n_layers, vocab, seq_len, arch, activation)))
    d, f, L, V, S, archs, acts = shapes
    out = np.array(flops_per_token(convention, d_model=d, ffw_size=f, n_layers=L, vocab=V, seq_len=S), dtype=float)
    for i in np.ndindex(out.shape):
        a = _name(archs[i], "gpt")
        if a == "mamba":
            out[i] = _mamba_flops_per_token(convention, d[i], f[i], L[i], V[i], S[i], _name(acts[i], "gelu"))
        elif a != "gpt":
            raise AccountingError(f"architecture {a!r} has no FLOP count but 6N (run it with --flops-convention 6N)")
    return float(out) if out.ndim == 0 else out


def training_flops(convention: str, tokens, **shape):
    """Training FLOPs of ``tokens`` tokens under ``convention`` (``shape``: as ``flops_per_token``)."""
    return flops_per_token(convention, **shape) * np.asarray(tokens, dtype=float) if np.ndim(tokens) else (
        flops_per_token(convention, **shape) * float(tokens))


def shape_kwargs(table) -> dict:
    """``flops_per_token`` keyword arguments from a run table (or a row/dict) that has the
    store's shape columns ``d_model``, ``ffw_size``, ``n_layers``, ``vocab_size``, ``seq_len``."""
    out = {"d_model": table["d_model"], "ffw_size": table["ffw_size"], "n_layers": table["n_layers"],
           "vocab": table["vocab_size"], "seq_len": table["seq_len"]}
    for key in ("arch", "activation"):          # stores from before --arch have neither: GPT
        if key in table:
            out[key] = table[key]
    return out


def convention_columns(shape: dict, tokens) -> dict:
    """Store columns of one run: ``params_nonembedding`` and ``flops.<convention>`` for every
    convention (``shape``: ``d_model, ffw_size, n_layers, vocab_size, seq_len``)."""
    kw = {"d_model": shape["d_model"], "ffw_size": shape["ffw_size"], "n_layers": shape["n_layers"],
          "vocab": shape["vocab_size"], "seq_len": shape["seq_len"]}
    arch, act = shape.get("arch", "gpt") or "gpt", shape.get("activation", "gelu") or "gelu"
    if arch not in ARCHS:                       # a plug-in: its own count, 6N only
        return {"params_nonembedding": float("nan"), **{f"flops.{c}": (6.0 * shape["params"] * float(tokens)
                if c == "6N" else float("nan")) for c in FLOP_CONVENTIONS}}
    n_all = arch_param_count(arch, kw["d_model"], kw["ffw_size"], kw["n_layers"], kw["vocab"], kw["seq_len"], act)
    out = {"params_nonembedding": n_all - kw["vocab"] * kw["d_model"] - kw["seq_len"] * kw["d_model"]}
    for c in FLOP_CONVENTIONS:
        out[f"flops.{c}"] = float(flops_per_token(c, **kw, arch=arch, activation=act) * float(tokens))
    return out


@dataclass(frozen=True)
class Shape:
    """A model shape as in Chinchilla Table A9: (d_model, ffw_size, kv_size, n_heads, n_layers)."""

    name: str
    d_model: int
    ffw_size: int
    kv_size: int
    n_heads: int
    n_layers: int

    @property
    def attention_heads(self) -> int:
        """Heads actually used: Table A9 lists some shapes whose n_heads does not divide d_model
        (e.g. 20M: d=288, 7 heads); there we keep d_model // kv_size heads of kv_size."""
        if self.d_model % self.n_heads == 0:
            return self.n_heads
        return self.d_model // self.kv_size

    def params(self, vocab: int = PAPER_VOCAB, seq_len: int = PAPER_SEQ_LEN) -> int:
        return param_count(self.d_model, self.ffw_size, self.n_layers, vocab, seq_len)


_TABLE_A9 = """
7M 128 512 32 4 3; 14M 224 896 32 7 4; 20M 288 1152 32 7 5; 35M 448 1792 32 7 6;
44M 512 2048 64 8 8; 57M 576 2304 64 9 9; 74M 640 2560 64 10 10; 90M 640 2560 64 10 13;
106M 640 2560 64 10 16; 117M 768 3072 64 12 12; 140M 768 3072 64 12 15;
163M 768 3072 64 12 18; 175M 896 3584 64 14 14; 196M 896 3584 64 14 16;
217M 896 3584 64 14 18; 251M 1024 4096 64 16 16; 278M 1024 4096 64 16 18;
306M 1024 4096 64 16 20; 425M 1280 5120 128 10 18; 489M 1280 5120 128 10 21;
509M 1408 5632 128 11 18; 552M 1280 5120 128 10 24; 587M 1408 5632 128 11 21;
632M 1536 6144 128 12 19; 664M 1408 5632 128 11 24; 724M 1536 6144 128 12 22;
816M 1536 6144 128 12 25; 893M 1792 7168 128 14 20; 1018M 1792 7168 128 14 23;
1143M 1792 7168 128 14 26; 1266M 2048 8192 128 16 22; 1424M 2176 8704 128 17 22;
1429M 2048 8192 128 16 25; 1593M 2048 8192 128 16 28; 1609M 2176 8704 128 17 25;
1731M 2304 9216 128 18 24; 1794M 2176 8704 128 17 28; 2007M 2304 9216 128 18 28;
2283M 2304 9216 128 18 32; 2298M 2560 10240 128 20 26; 2639M 2560 10240 128 20 30;
2980M 2560 10240 128 20 34; 3530M 2688 10752 128 21 36; 3802M 2816 11264 128 22 36;
4084M 2944 11776 128 23 36; 4516M 3072 12288 128 24 36; 6796M 3584 14336 128 28 40;
9293M 4096 16384 128 32 42; 11452M 4352 17408 128 32 47; 12295M 4608 18432 128 36 44;
12569M 4608 18432 128 32 47; 13735M 4864 19456 128 32 47; 14940M 4992 19968 128 32 49;
16183M 5120 20480 128 40 47
"""

#: Tiny shapes for CPUs, in the same spirit (ffw = 4 d, head size 16 or 32), ~20K to ~5M params
#: at the byte vocabulary and a 128-token context.
_TINY = """
t24 24 96 12 2 2; t32 32 128 16 2 2; t40 40 160 20 2 3; t48 48 192 16 3 3;
t64 64 256 16 4 3; t80 80 320 20 4 4; t96 96 384 32 3 4; t128 128 512 32 4 4;
t160 160 640 32 5 5; t192 192 768 32 6 6; t256 256 1024 32 8 6
"""


#: The ``tiny`` preset's family: one layer, width 8 to 96, ~4K to ~150K params. At its budgets
#: (3e10-1e12 FLOPs) the compute-optimal model has ~8-40K parameters (Kaplan et al. 2020, Fig. 14:
#: a few thousand non-embedding parameters at ~1e-8 PF-days). One depth for the whole ladder: with
#: one layer at the small end and two or three at the large end the optimum's loss fell faster with
#: each budget (0.20, 0.22, 0.28 nats per half-decade) and the fitted exponents disagreed (Approach 2
#: 0.63, Approach 3 0.25-0.50); a two-layer family gave 0.41 vs 0.50 and unidentifiable B and E;
#: this one 0.48 vs 0.50 (docs/benchmarks.md).
_MICRO = """
s8 8 32 8 1 1; s12 12 48 12 1 1; s16 16 64 16 1 1; s24 24 96 12 2 1; s32 32 128 16 2 1; s48 48 192 16 3 1;
s64 64 256 16 4 1; s96 96 384 32 3 1
"""


def _parse(table: str) -> dict[str, Shape]:
    shapes = {}
    for row in table.replace("\n", " ").split(";"):
        name, *dims = row.split()
        shapes[name] = Shape(name, *map(int, dims))
    return shapes


PAPER_SHAPES: dict[str, Shape] = _parse(_TABLE_A9)
TINY_SHAPES: dict[str, Shape] = _parse(_TINY)
MICRO_SHAPES: dict[str, Shape] = _parse(_MICRO)
SHAPES: dict[str, Shape] = {**MICRO_SHAPES, **TINY_SHAPES, **PAPER_SHAPES}


def shape(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise AccountingError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}") from None


def planned_pool(params: float, tokens: float) -> tuple["Budget", dict[str, Shape]]:
    """The budget of a planned run of ``params`` x ``tokens`` (6ND) and the shapes it may train on:
    every CPU shape below 1e17 FLOPs (the one-layer s* family of the tiny preset too, byte
    vocabulary), the paper's above. What every ``--plan`` runner and ``scaling.design`` map a
    planned N to."""
    budget = parse_budgets(f"{6.0 * params * tokens:.6g}")[0]
    if budget.cpu:
        return budget, {k: v for k, v in SHAPES.items() if k not in PAPER_SHAPES}
    return budget, budget.shape_pool


def nearest_shape(params: float, vocab: int, seq_len: int, shapes=None) -> Shape:
    """The shape whose parameter count (at this vocab and context) is nearest in log space."""
    pool = list((shapes or SHAPES).values())
    return min(pool, key=lambda s: abs(math.log(s.params(vocab, seq_len) / params)))


@dataclass(frozen=True)
class Budget:
    """A compute budget; named ones are the data-constrained paper's (Muennighoff et al. 2023, §3)."""

    name: str
    flops: float
    #: unique-data levels in tokens (paper's values for named budgets); None = ratios of D_opt
    unique_levels: tuple[float, ...] | None = None
    #: published compute-optimal params and tokens, when the budget is named after a model
    params: float | None = None
    tokens: float | None = None
    #: vocabulary and context the budget's models use
    vocab: int = PAPER_VOCAB
    seq_len: int = PAPER_SEQ_LEN
    #: unique-data levels as fractions of D_opt (None: the paper's UNIQUE_RATIOS)
    unique_ratios: tuple[float, ...] | None = None
    #: model sizes at full data along the budget, and the factor between neighbours
    n_sizes: int = 5
    size_factor: float = 4.0
    #: share of code in the unique data when none is asked for
    code_fraction: float = 0.0
    #: the shapes the grid picks from (names; None: TINY_SHAPES on CPU, PAPER_SHAPES otherwise)
    shapes: tuple[str, ...] | None = None
    #: the FLOP convention the budget is spent in when none is asked for
    flops_convention: str = DEFAULT_CONVENTION
    #: the K widest sizes at full data also run with a second seed when one seed is asked for
    #: (``runners.grid.plan.isoflop_grid``)
    replicate_widest: int = 0

    @property
    def shape_pool(self) -> dict[str, "Shape"]:
        if self.shapes:
            return {n: SHAPES[n] for n in self.shapes}
        return TINY_SHAPES if self.cpu else PAPER_SHAPES

    @property
    def optimal_params(self) -> float:
        return self.params or math.sqrt(self.flops / (6.0 * TOKENS_PER_PARAM))

    @property
    def optimal_tokens(self) -> float:
        return self.tokens or self.flops / (6.0 * self.optimal_params)

    @property
    def cpu(self) -> bool:
        return self.vocab == CPU_VOCAB


#: Unique-data fractions of D_opt used at 2b8 (55, 28, 18, 14, 11, 9, 4, 1.25 B of 55 B).
UNIQUE_RATIOS = tuple(u / 55.0 for u in (55, 28, 18, 14, 11, 9, 4, 1.25))


def _named(name, n, d, levels):
    return Budget(name, 6.0 * n * d, tuple(x * 1e9 for x in levels) if levels else None, n, d)


NAMED_BUDGETS: dict[str, Budget] = {
    "1b1": _named("1b1", 1.0963e9, 21e9, None),
    "2b8": _named("2b8", 2.81e9, 55e9, (55, 28, 18, 14, 11, 9, 4, 1.25)),
    "4b2": _named("4b2", 4.2465e9, 84e9, (84, 42, 28, 21, 17, 12, 6, 1.9)),
    "8b7": _named("8b7", 8.67e9, 178e9, (178, 88, 58, 44, 35, 25, 13)),
}

@dataclass(frozen=True)
class CpuPreset:
    """A CPU grid: budgets (FLOPs) on tiny shapes with the byte tokenizer, sized to this machine
    (~2e10-1e11 FLOP/s on 2 cores for 20K-5M parameter models, see docs/benchmarks.md) and to the
    embedded corpus (2.0M unique text tokens: the smallest model at the largest budget must fit)."""

    budgets: tuple[float, ...]
    n_sizes: int
    size_factor: float
    unique_ratios: tuple[float, ...]
    code_fraction: float = 0.0
    #: compute-optimal params at each budget (the grid's centre); None: Chinchilla's 20 tokens/param
    centres: tuple[float, ...] | None = None
    shapes: tuple[str, ...] | None = None
    flops_convention: str = DEFAULT_CONVENTION
    replicate_widest: int = 0


CPU_PRESETS: dict[str, CpuPreset] = {
    # one budget: 5 sizes at full data + the optimum at 4 epochs (6 runs); ~20 s on 2 cores
    "smoke": CpuPreset((2e10,), 5, 2.0, (1.0, 0.25)),
    # the README demo, an isoFLOP ladder over 1.5 decades of compute: 5 one-layer sizes per budget
    # (a factor 1.6 apart, centred on the measured optima) at full data, spent in 6N_ne+head+attn
    # (28 runs with the replicates below, ~3.3 min on 2 cores; benchmarks/demo_criteria.py). It trains on the embedded corpus's
    # code domain (10.2M byte tokens): the smallest model at 1e12 FLOPs needs 8.5M unique tokens,
    # more than the 2.0M of the text domain. Add repeated-data points with --epochs 1,4,16.
    # The two widest sizes of each budget also run seed 1 (28 runs): they take the fewest steps and
    # part most between seeds (docs/benchmarks.md, stop 34), at a fifth of the wall time.
    "tiny": CpuPreset((3e10, 1e11, 3e11, 1e12), 5, 1.6, (1.0,), code_fraction=1.0,
                      centres=(7e3, 1.2e4, 2.2e4, 4e4), shapes=tuple(MICRO_SHAPES),
                      flops_convention="6N_ne+head+attn", replicate_widest=2),
}

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
#: a FLOP count as typed: digits, a point, an exponent (no ``1_000``, no ``inf``)
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmbgt]?)\s*$", re.I)


#: a size (parameters, tokens, FLOPs) as typed: at least one, and where a law's powers stay in a
#: float's range (10^30 FLOPs is 10^5 times the largest published runs; ``scaling.cli.FLOPS``)
SIZE_RANGE = (1.0, 1e30)


def parse_size(text: str) -> float:
    """Parse ``100M``, ``1.5B``, ``25e9``, ``400k`` into a number in ``SIZE_RANGE``."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise AccountingError(f"malformed size {text!r} (expected e.g. 100M, 1.5B, 25e9)")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not value > 0 or not math.isfinite(value):
        raise AccountingError(f"size must be positive, got {text!r}")
    if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
        raise AccountingError(f"size must be between {SIZE_RANGE[0]:g} and {SIZE_RANGE[1]:g}, got {text!r}")
    return value


def _cpu_budget(flops_value: float, name: str | None = None, preset: CpuPreset | None = None) -> Budget:
    extra = {} if preset is None else dict(unique_ratios=preset.unique_ratios, n_sizes=preset.n_sizes,
                                           size_factor=preset.size_factor, code_fraction=preset.code_fraction,
                                           shapes=preset.shapes, flops_convention=preset.flops_convention,
                                           replicate_widest=preset.replicate_widest)
    if preset is not None and preset.centres:
        extra["params"] = dict(zip(preset.budgets, preset.centres))[flops_value]
    return Budget(name or f"{flops_value:.0e}".replace("+", ""), flops_value,
                  vocab=CPU_VOCAB, seq_len=CPU_SEQ_LEN, **extra)


def parse_budgets(text: str, cpu: bool | None = None) -> list[Budget]:
    """``2b8``, ``1b1,2b8``, ``3e13``, ``smoke``, ``tiny``: a list of budgets.

    A bare FLOP count below 1e17 is taken as a CPU budget (tiny shapes, byte tokenizer) unless
    ``cpu`` says otherwise; larger ones use the paper's vocabulary and shapes.
    """
    budgets: list[Budget] = []
    parts = [p.strip() for p in str(text).split(",")]
    if any(not p for p in parts) and any(parts):
        raise AccountingError(f"malformed budget list {text!r}: an empty item (expected e.g. smoke,tiny or 1e18,1e19)")
    for part in [p for p in parts if p]:
        key = part.lower()
        if key in NAMED_BUDGETS:
            budgets.append(NAMED_BUDGETS[key])
        elif key in CPU_PRESETS:
            preset = CPU_PRESETS[key]
            budgets.extend(_cpu_budget(f, f"{key}-{f:.2g}".replace("+", ""), preset) for f in preset.budgets)
        else:
            try:
                value = float(part) if _PLAIN_NUMBER.fullmatch(part) else float("nan")
            except ValueError:
                value = float("nan")
            if math.isnan(value):
                known = ", ".join([*NAMED_BUDGETS, *CPU_PRESETS])
                raise AccountingError(f"unknown budget {part!r} (known: {known}, or a FLOP count such as 3e13)")
            if not value > 0 or not math.isfinite(value):
                raise AccountingError(f"budget must be a positive FLOP count, got {part!r}")
            if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
                raise AccountingError(f"budget must be between {SIZE_RANGE[0]:g} and {SIZE_RANGE[1]:g} FLOPs, got {part!r}")
            is_cpu = value < 1e17 if cpu is None else cpu
            budgets.append(_cpu_budget(value) if is_cpu else Budget(f"{value:.0e}".replace("+", ""), value))
    if not budgets:
        raise AccountingError("no budget given")
    return budgets


def chinchilla_optimal(flops_budget, E, A, B, alpha, beta):
    """Compute-optimal (N, D) for L = E + A/N^a + B/D^b (Hoffmann et al. 2022, Approach 3):
    G = (alpha A / (beta B))^(1/(alpha+beta)), N = G (C/6)^(beta/(alpha+beta)), D = (C/6)^(alpha/(alpha+beta)) / G."""
    C = np.asarray(flops_budget, dtype=float)
    alpha, beta, A, B = (np.float64(x) for x in (alpha, beta, A, B))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):   # beyond a float: inf, for callers to refuse
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
        n_opt = G * (C / 6.0) ** (beta / (alpha + beta))
        d_opt = (C / 6.0) ** (alpha / (alpha + beta)) / G
    return n_opt, d_opt


def a100_gpu_hours(flops_value, mfu: float = 0.4, peak: float = 312e12) -> float:
    """GPU-hours on an A100 (312 TFLOP/s bf16 peak) at the given model FLOPs utilisation."""
    return float(flops_value) / (peak * mfu) / 3600.0
