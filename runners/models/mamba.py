"""A Mamba + dense hybrid language model in pure PyTorch, and the learnable SWELU activation.

The selective state-space block is Mamba's (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling
with Selective State Spaces", Algorithm 2 and Fig. 3, the ``mamba_simple`` layout): an input
projection to ``2E`` (E = 2 d), a causal depthwise convolution of width 4, input-dependent
``Delta, B, C`` (``x_proj``, ``dt_proj``, softplus), the zero-order-hold discretisation
``A_bar = exp(Delta A)``, ``B_bar x = Delta B x``, the scan ``h_t = A_bar_t h_{t-1} + B_bar_t x_t``,
``y_t = C_t h_t + D x_t``, gated by ``act(z)`` and projected back to d.

The hybrid is the one the SWELU study trains (P. Obara 2025, github.com/Powwpol/SWELU_LLM,
``src/model.py``: token + learned position embeddings, 6 Mamba blocks, then 3 dense layers
d -> h -> h -> d, output head tied to the embedding): ``n_layers`` Mamba blocks, then a dense
block of three layers with ``ffw_size`` hidden units. Two changes, for trainability at every size
and to count parameters like ``runners.models.gpt.GPT``: the dense block is residual with a pre-norm
(``x + W3 act(W2 act(W1 norm(x))))``) where the study stacks them bare, and a final parameter-free
LayerNorm precedes the head. Parameter and FLOP counts: ``scaling.accounting.mamba_param_count``.

The scan runs in chunks: within a chunk of K steps every ``h_t`` is a masked sum over
``exp(S_t - S_s)`` (S the cumulative log decay, so every exponent is <= 0: no overflow), one
carried state between chunks (used on GPUs without ``mamba_ssm``, whose fused kernel is used when
installed); on a CPU the step-by-step ``selective_scan_sequential`` is faster at these sizes, and
the tests check the two agree.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from runners.models.gpt import GPT, embed, head
from scaling.accounting import MAMBA_D_CONV, MAMBA_D_STATE, MAMBA_EXPAND, flops_per_token, mamba_dt_rank


class SWELU(nn.Module):
    """SWELU(z) = lambda * sign(z) * (1 - exp(-|z|^k)), with learnable shape k and scale lambda
    (P. Obara 2025, SWELU_LLM ``src/swelu.py``; k kept positive as |k| + 1e-6). Smooth, odd,
    bounded by lambda; k near 1 is close to linear around 0, larger k flatter near 0 and sharper."""

    def __init__(self, k_init: float = 1.0, lambda_init: float = 1.0):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k_init)))
        self.lam = nn.Parameter(torch.tensor(float(lambda_init)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k = self.k.abs() + 1e-6
        return self.lam * torch.sign(z) * -torch.expm1(-(z.abs() + 1e-8) ** k)


def activation(name: str, dense: bool) -> nn.Module:
    """``gelu``: SiLU in the Mamba blocks (as in Mamba) and GELU in the dense block (as in GPT);
    ``swelu``: SWELU everywhere, as in the study."""
    if name == "swelu":
        return SWELU()
    if name == "gelu":
        return nn.GELU(approximate="tanh") if dense else nn.SiLU()
    raise ValueError(f"unknown activation {name!r} (known: gelu, swelu)")


def selective_scan_sequential(u, delta, A, B, C, D):
    """Reference scan, one step at a time. u, delta: [b, T, E]; A: [E, N]; B, C: [b, T, N]; D: [E].
    (Computing every step's decay at once first was slower here: 24 ms vs 14 ms for 8 x 128, E 64.)"""
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1) + u * D


def selective_scan_chunked(u, delta, A, B, C, D, chunk: int = 16):
    """The same scan, K = ``chunk`` steps at a time as masked sums (see the module docstring)."""
    b, T, E = u.shape
    log_a = delta.unsqueeze(-1) * A                                    # [b, T, E, N], <= 0
    bx = (delta * u).unsqueeze(-1) * B.unsqueeze(2)                    # [b, T, E, N]
    h = u.new_zeros(b, E, A.shape[1])
    ys = []
    for start in range(0, T, chunk):
        la, x_in = log_a[:, start:start + chunk], bx[:, start:start + chunk]
        K = la.shape[1]
        S = la.cumsum(1)                                               # [b, K, E, N]
        mask = torch.ones(K, K, dtype=torch.bool, device=u.device).tril()
        diff = (S.unsqueeze(2) - S.unsqueeze(1)).masked_fill(~mask[None, :, :, None, None], float("-inf"))
        hs = (diff.exp() * x_in.unsqueeze(1)).sum(2) + S.exp() * h.unsqueeze(1)   # [b, K, E, N]
        ys.append((hs * C[:, start:start + chunk].unsqueeze(2)).sum(-1))
        h = hs[:, -1]
    return torch.cat(ys, 1) + u * D


@functools.lru_cache(maxsize=1)
def _cuda_scan():
    """``mamba_ssm``'s fused scan, or None; looked up once (a failed import is not cached by Python)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    except ImportError:
        return None


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba block: ``x + out_proj(scan(act(conv(x_in))) * act(z))``."""

    def __init__(self, d_model: int, act: str = "gelu"):
        super().__init__()
        E, N, R = MAMBA_EXPAND * d_model, MAMBA_D_STATE, mamba_dt_rank(d_model)
        self.norm = nn.LayerNorm(d_model, bias=False)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, MAMBA_D_CONV, groups=E, padding=MAMBA_D_CONV - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        # S4D-real initialisation A = -(1..N), and dt in [1e-3, 1e-1] (Mamba's defaults)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.A_log._no_weight_decay = True      # as in Mamba's reference: decay would pull A towards -1
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)
        self.act_x, self.act_z = activation(act, dense=False), activation(act, dense=False)
        self.rank, self.state = R, N
        with torch.no_grad():
            dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # softplus^-1(dt)

    def forward(self, x):
        T = x.shape[1]
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        xs = self.act_x(self.conv1d(xs.transpose(1, 2))[..., :T].transpose(1, 2))
        dt, B, C = self.x_proj(xs).split([self.rank, self.state, self.state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.float())
        fused = _cuda_scan() if x.is_cuda else None
        if fused is not None:
            y = fused(xs.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A,
                      B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D.float()).transpose(1, 2)
        else:   # on a CPU the step loop is fastest (14 ms vs 22-58 ms chunked for 8 x 128 tokens, E 64)
            scan = selective_scan_chunked if x.is_cuda else selective_scan_sequential
            y = scan(xs.float(), delta.float(), A, B.float(), C.float(), self.D.float()).to(xs.dtype)
        return x + self.out_proj(y * self.act_z(z))


class DenseBlock(nn.Module):
    """The study's three dense layers d -> h -> h -> d, here residual and pre-normed."""

    def __init__(self, d_model: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, bias=False)
        self.fc1, self.fc2 = nn.Linear(d_model, hidden), nn.Linear(hidden, hidden)
        self.c_proj = nn.Linear(hidden, d_model)
        self.act1, self.act2 = activation(act, dense=True), activation(act, dense=True)

    def forward(self, x):
        return x + self.c_proj(self.act2(self.fc2(self.act1(self.fc1(self.norm(x))))))


class MambaLM(nn.Module):
    """Embeddings (tied head with bias, learned positions, as ``GPT``), ``n_layers`` Mamba
    blocks, one dense block, a final parameter-free norm. Same interface as ``runners.models.gpt.GPT``."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(MambaBlock(cfg.d_model, cfg.activation) for _ in range(cfg.n_layers))
        self.dense = DenseBlock(cfg.d_model, cfg.ffw_size, cfg.activation)
        self.ln_f = nn.LayerNorm(cfg.d_model, elementwise_affine=False)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)
        self.lm_head.weight = self.wte.weight
        dt_projs = {id(b.dt_proj) for b in self.blocks}      # their bias is Mamba's dt initialisation
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and m is not self.lm_head:
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if getattr(m, "bias", None) is not None and id(m) not in dt_projs:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.lm_head.bias)
        for name, p in self.named_parameters():    # residual outputs scaled with depth, as in GPT-2
            if name.endswith(("out_proj.weight", "c_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * (cfg.n_layers + 1)))

    def forward(self, idx, targets=None):
        x = embed(self, idx)
        for block in self.blocks:
            x = block(x)
        return head(self, self.dense(x), targets)

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        cfg = self.config
        return flops_per_token("6N_ne+head+attn", d_model=cfg.d_model, ffw_size=cfg.ffw_size, n_layers=cfg.n_layers,
                               vocab=cfg.vocab_size, seq_len=seq_len or cfg.seq_len, arch="mamba",
                               activation=cfg.activation)

    # GPT's: all parameters once; MFU from the FLOPs above; AdamW with decay on the 2-d tensors but
    # A_log (marked, as Mamba's reference does); D, biases, norms, SWELU's k and lambda are 1-d
    num_params = GPT.num_params
    estimate_mfu = GPT.estimate_mfu
    configure_optimizer = GPT.configure_optimizer
