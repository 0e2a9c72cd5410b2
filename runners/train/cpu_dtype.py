"""Should CPU training use bf16 autocast? Detect native bf16, measure once, cache the decision.

CPUs differ: with AMX (Sapphire Rapids and later) bf16 matrix products run ~2.6x fp32; with
AVX512-BF16 alone they can be slower than fp32 at our tiny shapes (measured here: a t64 step in
bf16 at 0.74x of fp32); without either, torch emulates bf16 hundreds of times slower. So the
decision is never assumed from a flag: where the CPU reports native bf16 (``amx_bf16`` or
``avx512_bf16`` in /proc/cpuinfo, and oneDNN agrees), one tiny training step is timed in both
dtypes and bf16 is used only if it is at least ``MIN_SPEEDUP`` faster. The outcome is cached per
(CPU model, flags, torch version, threads) in ``$SCALING_CACHE/cpu_dtype.json``, so the probe
(~2 s) runs once per machine. ``SCALING_CPU_DTYPE=fp32|bf16`` overrides it (the test suite pins
fp32, so numerical comparisons are the same on every CPU).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

MIN_SPEEDUP = 1.1
ENV = "SCALING_CPU_DTYPE"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """The CPU reports bf16 instructions and oneDNN can use them."""
    flags = cpu_flags()
    if not ({"amx_bf16", "avx512_bf16"} & flags):
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return False


#: the probe's model when no shape is given: t64, batch 8 x 128 (d_model, ffw, heads, layers, vocab, seq_len, batch)
PROBE_SHAPE = (64, 256, 4, 3, 256, 128, 8)


def _step_seconds(dtype: str, steps: int = 12, shape: tuple = PROBE_SHAPE, budget_s: float = 2.0) -> float:
    """Best per-step time of a training step of a GPT of ``shape`` in ``dtype``: two warm-up steps,
    then up to ``steps`` timed ones (at least 3, fewer once ``budget_s`` is spent: a d256 step
    takes ~0.5 s here)."""
    from runners.models.gpt import GPT, GPTConfig
    d_model, ffw, heads, layers, vocab, seq_len, batch = shape
    torch.manual_seed(0)
    model = GPT(GPTConfig(d_model=d_model, ffw_size=ffw, n_heads=heads, n_layers=layers, vocab_size=vocab,
                          seq_len=seq_len))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, seq_len))
    best, start = float("inf"), None
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
            start = start or t0
            if i >= 4 and time.perf_counter() - start > budget_s:
                break
    return best


def measure(shape: tuple = PROBE_SHAPE) -> dict:
    fp32, bf16 = _step_seconds("fp32", shape=shape), _step_seconds("bf16", shape=shape)
    speedup = fp32 / bf16
    return {"fp32_step_s": fp32, "bf16_step_s": bf16, "bf16_speedup": speedup,
            "dtype": "bf16" if speedup >= MIN_SPEEDUP else "fp32"}


def _key() -> str:
    flags = sorted(cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"})
    return f"{cpu_model()}|{','.join(flags)}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def decide(cache_dir=None, measure_fn=measure, shape: tuple | None = None) -> dict:
    """{"dtype": "fp32"|"bf16", "reason": ...} for CPU training on this machine; with ``shape``
    (``PROBE_SHAPE``'s fields) for a model of that shape, measured on it: the answer differs with
    size here (AVX512-BF16 without AMX: bf16 0.6-0.7x fp32 at t64, 1.5x at d256 x 6 layers)."""
    forced = os.environ.get(ENV)
    if forced:
        if forced not in ("fp32", "bf16"):
            from scaling.cli import UsageError
            raise UsageError(f"{ENV}={forced!r}: expected fp32 or bf16")
        return {"dtype": forced, "reason": f"{ENV}={forced}"}
    if not native_bf16():
        return {"dtype": "fp32", "reason": "no native bf16 on this CPU (no amx_bf16/avx512_bf16)"}
    from runners.data.cache import cached_json
    key = _key() + ("" if shape is None else "|shape " + ",".join(map(str, shape)))
    m = cached_json("cpu_dtype.json", key, measure_fn if shape is None else lambda: measure_fn(tuple(shape)), cache_dir)
    return {"dtype": m["dtype"], "reason": f"measured once on this CPU: bf16 step {m['bf16_speedup']:.2f}x fp32 "
                                           f"(bf16 needs >= {MIN_SPEEDUP}x)", **m}
