"""A GPT-2 style decoder whose parameter count is exactly ``scaling.accounting.param_count``.

nanoGPT-shaped (one config dataclass, the model knows its FLOPs and MFU), with the layout the
data-constrained paper counts (Muennighoff et al. 2023; shapes from Hoffmann et al. 2022 Table A9):
per layer ``4d^2 + 4d`` (qkv and output projections with biases) ``+ 2*ffw*d + ffw + d`` (GELU MLP
with biases) ``+ 2d`` (two weight-only LayerNorms); embeddings ``V*d`` (token embedding tied to the
output head) ``+ V`` (output bias) ``+ S*d`` (learned positions); the final LayerNorm has no
parameters so that the count matches the formula term for term.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.accounting import flops_per_token


@dataclass
class GPTConfig:
    d_model: int = 128
    ffw_size: int = 512
    n_heads: int = 4
    n_layers: int = 3
    vocab_size: int = 256
    seq_len: int = 128
    #: the papers train without dropout; kept for completeness
    dropout: float = 0.0
    #: which model these dimensions describe (``runners.models.arch.build_model``): gpt | mamba | PACKAGE.MODULE:FACTORY
    arch: str = "gpt"
    activation: str = "gelu"

    @classmethod
    def from_spec(cls, spec) -> "GPTConfig":
        """The model of a ``runners.grid.spec.RunSpec``."""
        return cls(d_model=spec.d_model, ffw_size=spec.ffw_size, n_heads=spec.n_heads,
                   n_layers=spec.n_layers, vocab_size=spec.vocab_size, seq_len=spec.seq_len,
                   arch=getattr(spec, "arch", "gpt"), activation=getattr(spec, "activation", "gelu"))


_FP32_ATTENTION = contextvars.ContextVar("fp32_attention", default=False)


@contextlib.contextmanager
def fp32_attention(enabled: bool = True):
    """Inside bf16 autocast on a CPU, compute attention in fp32 (``causal_attention``).

    Measured on a 2-core Xeon with AMX (torch 2.13): the CPU flash-attention kernel in bf16 is
    1.5-5x slower than in fp32 at head dims <= 32 (every tiny shape, and d256 x 8 heads), faster
    at 64 and above. ``runners.train.cpu_dtype`` measures the step both ways per shape and
    ``runners.train.settings.autocast`` enters this context where fp32 attention won."""
    token = _FP32_ATTENTION.set(enabled)
    try:
        yield
    finally:
        _FP32_ATTENTION.reset(token)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal scaled dot-product attention of [B, H, T, hd] tensors: the one attention every GPT
    engine calls (the model here, the stacked engine). In fp32 under CPU bf16 autocast where
    ``fp32_attention`` says so; the next projection casts the output back to bf16 as autocast does."""
    if _FP32_ATTENTION.get() and q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=True)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=True)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # [B, T, C] -> [B, H, T, C/H]
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = causal_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.ffw_size, bias=True)
        self.c_proj = nn.Linear(cfg.ffw_size, cfg.d_model, bias=True)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # no affine parameters: the paper's count has no term for a final norm
        self.ln_f = nn.LayerNorm(cfg.d_model, elementwise_affine=False)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017), as in GPT-2
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 n_layers) so the residual stream's
        # variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """All parameters, embeddings included, the tied matrix once (the papers' N)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        """Logits ``[B, T, V]``; with ``targets`` also the mean next-token cross-entropy."""
        x = self.drop(embed(self, idx))
        for block in self.blocks:
            x = block(x)
        return head(self, x, targets)

    # -- accounting ---------------------------------------------------------------------------

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token that the hardware really performs, for MFU: every matrix
        multiply (non-embedding weights and the tied output head) plus attention's score and value
        products, ``scaling.accounting.flops_per_token("6N_ne+head+attn")`` (PaLM appendix B;
        counted as if not causal, as the convention does). The embedding lookups are not FLOPs."""
        cfg = self.config
        return flops_per_token("6N_ne+head+attn", d_model=cfg.d_model, ffw_size=cfg.ffw_size,
                               n_layers=cfg.n_layers, vocab=cfg.vocab_size, seq_len=seq_len or cfg.seq_len)

    def estimate_mfu(self, tokens_per_s: float, peak_flops: float, seq_len: int | None = None) -> float:
        """Model FLOPs utilisation: achieved model FLOP/s over the device's peak FLOP/s."""
        return self.estimate_flops_per_token(seq_len) * tokens_per_s / peak_flops

    # -- optimisation -------------------------------------------------------------------------

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float],
                            device_type: str = "cpu", fused: bool | None = None) -> torch.optim.AdamW:
        """AdamW with decay on matrices only (biases, norms stay undecayed, as in nanoGPT/GPT-2), and
        never on a parameter marked ``_no_weight_decay`` (mamba_ssm's convention: Mamba's ``A_log``).

        ``fused`` defaults to the fused kernel wherever this torch has it (CUDA, and CPU since
        torch 2.4), else the multi-tensor (foreach) path.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if fused is None:
            fused = fused_adamw_available(device_type)
        return adamw(params, lr, weight_decay, betas, fused)


def decays(p: torch.Tensor, stacked: bool = False) -> bool:
    """The weight-decay rule, one place for every engine: matrices decay; biases, norms and any
    parameter marked ``_no_weight_decay`` do not. ``stacked``: ``p`` has a leading [K] dimension of
    stacked models (``runners.train.batched``)."""
    return p.dim() - int(stacked) >= 2 and not getattr(p, "_no_weight_decay", False)


def adamw(params, lr: float, weight_decay: float, betas: tuple[float, float], fused: bool,
          stacked: bool = False) -> torch.optim.AdamW:
    """AdamW over ``params`` in two groups, decayed (``decays``) then not, in their order: the
    optimizer (and so the checkpoint layout) of every engine."""
    params = list(params)
    groups = [{"params": [p for p in params if decays(p, stacked)], "weight_decay": weight_decay},
              {"params": [p for p in params if not decays(p, stacked)], "weight_decay": 0.0}]
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)


def embed(model, idx):
    """Token plus learned position embeddings (``model.wte``, ``model.wpe``), the context checked:
    the input side every language model here shares (GPT, the Mamba hybrid)."""
    T = idx.size(1)
    if T > model.config.seq_len:
        raise ValueError(f"sequence of {T} tokens is longer than the context {model.config.seq_len}")
    return model.wte(idx) + model.wpe(torch.arange(T, device=idx.device))


def head(model, x, targets=None):
    """The output side: final norm, tied head, and with ``targets`` the mean next-token cross-entropy."""
    logits = model.lm_head(model.ln_f(x))
    if targets is None:
        return logits, None
    return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def fused_adamw_available(device_type: str) -> bool:
    """Whether this torch build has a fused AdamW kernel for ``device_type``."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    if device_type == "cuda":
        return True
    if device_type == "cpu":
        try:
            p = nn.Parameter(torch.zeros(2))
            p.grad = torch.zeros(2)
            torch.optim.AdamW([p], fused=True).step()
            return True
        except (RuntimeError, TypeError):
            return False
    return False


def count_params(cfg: GPTConfig) -> int:
    """Parameters of a config without allocating memory (built on the meta device)."""
    with torch.device("meta"):
        return GPT(cfg).num_params()
