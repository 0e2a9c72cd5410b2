"""Training throughput of our step (``runners.train.trainer``) against a plain PyTorch GPT, in one run.

The reference is written here: nanoGPT-style manual attention (explicit T x T scores, mask,
softmax), fp32, ``torch.optim.AdamW`` with its defaults, batch 8 - what a first implementation
looks like. Ours is ``runners.models.gpt.GPT`` driven by ``runners.train.trainer.train_step`` with the settings
``train_run`` uses on this device, plus the alternatives it could use (bf16 autocast,
``torch.compile``); the fastest is reported as ``tokens_per_s``. Measurements of the two sides
are interleaved, best of several rounds, so load from other processes hits both alike.
Matmul peaks (fp32, bf16) are timed here too, to express model FLOP/s as a fraction of each.

Prints one JSON object (``--json``) or a short table.

example:
  python benchmarks/train_speed.py --d-model 256 --n-layers 6 --seq-len 256 --vocab 256 --json
  python benchmarks/train_speed.py --device cuda --d-model 768 --n-layers 12 --seq-len 1024 \\
      --vocab 50257 --batch 16 --json        # ~125M parameters, bf16 + compile
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from runners.models.gpt import GPT, GPTConfig  # noqa: E402
from runners.train.engines import build, train_step  # noqa: E402
from runners.train.trainer import Hparams, Settings, resolve_settings  # noqa: E402


# --------------------------------------------------------------------------------------------
# The reference: a first, plain implementation


class _RefAttention(nn.Module):
    def __init__(self, d, n_heads, seq_len):
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(seq_len, seq_len)).view(1, 1, seq_len, seq_len))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class _RefBlock(nn.Module):
    def __init__(self, d, ffw, n_heads, seq_len):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = _RefAttention(d, n_heads, seq_len)
        self.ln_2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, ffw)
        self.proj = nn.Linear(ffw, d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(_RefBlock(cfg.d_model, cfg.ffw_size, cfg.n_heads, cfg.seq_len)
                                    for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# --------------------------------------------------------------------------------------------
# Timing


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, budget_s: float = 1.0) -> float:
    """FLOP/s of a large square matmul (best of the repetitions that fit in ``budget_s``).

    A 512 probe comes first: where the dtype is emulated (bf16 on CPUs without AVX512-BF16/AMX)
    a 2048 product would take a minute, so the probe's rate is reported instead.
    """
    def best_rate(size, seconds):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        a @ b  # the first call pays library initialisation
        _sync(device)
        best, start = 0.0, time.perf_counter()
        while True:
            t = time.perf_counter()
            a @ b
            _sync(device)
            dt = time.perf_counter() - t
            best = max(best, 2 * size ** 3 / dt)
            if time.perf_counter() - start > seconds:
                return best, dt

    probe, probe_dt = best_rate(512, 0.2)
    if probe_dt * (n / 512) ** 3 > 5 * budget_s:
        return probe
    return best_rate(n, budget_s)[0]


class _Runner:
    """A model + optimizer whose ``rate(seconds)`` measures training tokens per second."""

    def __init__(self, name, step, batch, seq_len, vocab, device, warmup=2):
        self.name, self.step = name, step
        self.x = torch.randint(0, vocab, (batch, seq_len), device=device)
        self.y = torch.randint(0, vocab, (batch, seq_len), device=device)
        self.tokens, self.device = batch * seq_len, device
        t = time.perf_counter()
        for _ in range(warmup):
            self.step(self.x, self.y)
        _sync(device)
        self.warmup_s = time.perf_counter() - t
        self.rates: list[float] = []

    def rate(self, seconds: float, min_steps: int = 2) -> float:
        n, t = 0, time.perf_counter()
        while n < min_steps or time.perf_counter() - t < seconds:
            self.step(self.x, self.y)
            n += 1
        _sync(self.device)
        r = n * self.tokens / (time.perf_counter() - t)
        self.rates.append(r)
        return r

    @property
    def best(self) -> float:
        return max(self.rates)


def reference_runner(cfg: GPTConfig, device: str, batch: int = 8) -> _Runner:
    torch.manual_seed(0)
    model = ReferenceGPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x, y):
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _Runner("reference", step, batch, cfg.seq_len, cfg.vocab_size, device)


def our_runner(cfg: GPTConfig, settings: Settings, batch: int) -> _Runner:
    torch.manual_seed(0)
    hp = Hparams(lr=1e-3, batch_size=batch, warmup_fraction=0.05, min_lr_ratio=0.1,
                 weight_decay=0.1, grad_clip=1.0)
    _, forward, opt = build(cfg, hp, settings)

    def step(x, y):
        train_step(forward, opt, x, y, hp.lr, hp.grad_clip, settings)

    name = f"{settings.dtype}{'+fp32-attention' if settings.fp32_attention else ''}{'+compile' if settings.compile else ''}"
    return _Runner(name, step, batch, cfg.seq_len, cfg.vocab_size, settings.device,
                   warmup=3 if settings.compile else 2)


def run(args) -> dict:
    device = args.device
    n_heads = args.n_heads or max(1, args.d_model // 32)
    cfg = GPTConfig(d_model=args.d_model, ffw_size=args.ffw or 4 * args.d_model, n_heads=n_heads,
                    n_layers=args.n_layers, vocab_size=args.vocab, seq_len=args.seq_len)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # an honest fp32 peak; build() turns TF32 on
    peak_fp32 = matmul_peak(device, torch.float32)
    peak_bf16 = matmul_peak(device, torch.bfloat16)

    # what a run of this shape trains with: the CPU dtype is measured for the shape itself
    shape = (cfg.d_model, cfg.ffw_size, cfg.n_heads, cfg.n_layers, cfg.vocab_size, cfg.seq_len, args.batch)
    default = resolve_settings(device, shape=shape)
    candidates = [default]
    alternatives = [resolve_settings(device, dtype="bf16" if default.dtype == "fp32" else "fp32",
                                     compile=default.compile, shape=shape)]
    if default.fp32_attention:  # what plain bf16 autocast (attention in bf16 too) gives
        alternatives.append(resolve_settings(device, dtype="bf16", compile=default.compile, fp32_attention=False))
    if args.try_compile or device.startswith("cuda"):
        alternatives.append(resolve_settings(device, dtype=default.dtype, compile=not default.compile))
    for alt in alternatives:
        if alt.dtype == "bf16" and peak_bf16 < peak_fp32:
            continue  # emulated bf16 (no native support): hundreds of times slower, not worth timing
        candidates.append(alt)

    ours = [our_runner(cfg, s, args.batch) for s in candidates]
    ref = reference_runner(cfg, device, batch=8)
    for _ in range(args.rounds):  # interleaved, so background load hits every side alike
        ref.rate(args.seconds)
        for r in ours:
            r.rate(args.seconds)
    best = max(ours, key=lambda r: r.best)

    with torch.device("meta"):
        meta = GPT(cfg)
    flops_per_token = meta.estimate_flops_per_token()
    model_flops = best.best * flops_per_token
    return {
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "shape": {"d_model": cfg.d_model, "ffw_size": cfg.ffw_size, "n_heads": cfg.n_heads,
                  "n_layers": cfg.n_layers, "vocab": cfg.vocab_size, "seq_len": cfg.seq_len},
        "params": meta.num_params(),
        "batch": args.batch,
        "settings": best.name,
        "default_settings": ours[0].name,          # what train_runs would use for this shape here
        "default_ratio": ours[0].best / ref.best,
        "fused_adamw": default.fused_adamw,
        "tokens_per_s": best.best,
        "reference_tokens_per_s": ref.best,
        "ratio": best.best / ref.best,
        "candidates_tokens_per_s": {r.name: r.best for r in ours},
        "compile_warmup_s": {r.name: r.warmup_s for r in ours if "compile" in r.name},
        "flops_per_token": flops_per_token,
        "model_flops_per_s": model_flops,
        "matmul_peak_fp32_flops_per_s": peak_fp32,
        "matmul_peak_bf16_flops_per_s": peak_bf16,
        "fraction_of_fp32_peak": model_flops / peak_fp32,
        "fraction_of_bf16_peak": model_flops / peak_bf16,
        "reference_fraction_of_fp32_peak": ref.best * flops_per_token / peak_fp32,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/train_speed.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("example:"):])
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=None, help="default d_model // 32")
    p.add_argument("--ffw", type=int, default=None, help="default 4 * d_model")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="sequences per step of our model (reference: 8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--try-compile", action="store_true",
                   help="also time torch.compile on CPU (a minute or more of compilation)")
    p.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34s} {value:.4g}" if isinstance(value, float) else f"{key:34s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
