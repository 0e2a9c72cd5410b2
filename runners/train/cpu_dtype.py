"""Should CPU training use bf16 autocast? Detect native bf16, measure once, cache the decision.

CPUs differ: with AMX (Sapphire Rapids and later) bf16 matrix products run ~6.5x fp32 (matmul
peaks measured on a 2-core Xeon); with
AVX512-BF16 alone they can be slower than fp32 at our tiny shapes (measured: a t64 step in
bf16 at 0.74x of fp32); without either, torch emulates bf16 hundreds of times slower. So the
decision is never assumed from a flag: where the CPU reports native bf16 (``amx_bf16`` or
``avx512_bf16`` in /proc/cpuinfo, and oneDNN agrees), one training step of the run's shape is
timed in fp32, in bf16, and in bf16 with attention kept in fp32 (on the Xeon with AMX the CPU
flash-attention kernel is 1.5-5x slower in bf16 than in fp32 at head dims <= 32, faster at 64
and above: ``runners.models.gpt.fp32_attention``); bf16 is used only if its better form is at least
``MIN_SPEEDUP`` faster than fp32. The outcome is cached per (CPU model, flags, torch version,
threads, shape) in ``$SCALING_CACHE/cpu_dtype.json``, so the probe (~1-8 s) runs once per
machine and shape. ``SCALING_CPU_DTYPE=fp32|bf16`` overrides it (the test suite pins fp32, so
numerical comparisons are the same on every CPU).
"""

from __future__ import annotations

import math
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


def _step_seconds(dtype: str, steps: int = 12, shape: tuple = PROBE_SHAPE, budget_s: float = 2.0,
                  fp32_attn: bool = False) -> float:
    """Best per-step time of a training step of a GPT of ``shape`` in ``dtype`` (with attention in
    fp32 under bf16 autocast if ``fp32_attn``): two warm-up steps, then up to ``steps`` timed ones
    (at least 3, fewer once ``budget_s`` is spent: a d256 step takes ~0.2-0.5 s)."""
    from runners.models.gpt import GPT, GPTConfig, fp32_attention
    d_model, ffw, heads, layers, vocab, seq_len, batch = shape
    torch.manual_seed(0)
    model = GPT(GPTConfig(d_model=d_model, ffw_size=ffw, n_heads=heads, n_layers=layers, vocab_size=vocab,
                          seq_len=seq_len))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, seq_len))
    best, start = float("inf"), None
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"), fp32_attention(fp32_attn):
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
    """Step times in fp32, bf16, and bf16 with fp32 attention; ``bf16_speedup`` is fp32's time over
    the faster bf16 form's, ``attention`` the dtype that form computes attention in."""
    fp32, bf16 = _step_seconds("fp32", shape=shape), _step_seconds("bf16", shape=shape)
    bf16_fp32_attention = _step_seconds("bf16", shape=shape, fp32_attn=True)
    attention = "fp32" if bf16_fp32_attention < bf16 else "bf16"
    speedup = fp32 / min(bf16, bf16_fp32_attention)
    return {"fp32_step_s": fp32, "bf16_step_s": bf16, "bf16_fp32_attention_step_s": bf16_fp32_attention,
            "bf16_speedup": speedup, "attention": attention,
            "dtype": "bf16" if speedup >= MIN_SPEEDUP else "fp32"}


def _key() -> str:
    flags = sorted(cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"})
    # "attention": decisions cached before the fp32-attention form was measured are measured again
    return (f"{cpu_model()}|{','.join(flags)}|torch {torch.__version__}|threads {torch.get_num_threads()}"
            "|attention")


def decide(cache_dir=None, measure_fn=measure, shape: tuple | None = None) -> dict:
    """{"dtype": "fp32"|"bf16", "attention": "fp32"|"bf16" (under bf16), "reason": ...} for CPU
    training on this machine; with ``shape``
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
    attention = " (attention in fp32)" if m.get("attention") == "fp32" else ""
    return {"attention": "bf16", **m,
            "reason": f"measured once on this CPU: bf16 step{attention} {m['bf16_speedup']:.2f}x fp32 "
                      f"(bf16 needs >= {MIN_SPEEDUP}x)"}


def decide_grid(shape_steps, cache_dir=None, measure_fn=measure) -> dict:
    """One precision for every run of a grid: {"dtype", "bf16_speedup", "reason"}.

    Per-shape decisions would train a sweep's small models in fp32 and its large ones in bf16 (on
    the Xeon with AMX: fp32 up to d48, bf16 from d64), a change of numerics that follows model size
    and so leans on the fitted exponents. So each shape is measured (``decide``, cached) and the
    grid takes bf16 only if it is at least ``MIN_SPEEDUP`` faster over the whole grid: the sum of
    ``steps`` x step time in fp32 against the same sum in each shape's faster bf16 form.
    ``shape_steps``: (shape, training steps) for each run."""
    shape_steps = [(tuple(shape), steps) for shape, steps in shape_steps]
    decisions = {shape: decide(cache_dir, measure_fn, shape=shape) for shape in dict.fromkeys(s for s, _ in shape_steps)}
    if not decisions:
        return decide(cache_dir, measure_fn)
    if any("fp32_step_s" not in d for d in decisions.values()):    # forced, or no native bf16: not measured
        return next(iter(decisions.values()))
    fp32 = sum(steps * decisions[shape]["fp32_step_s"] for shape, steps in shape_steps)
    bf16 = sum(steps * min(decisions[shape]["bf16_step_s"], decisions[shape].get("bf16_fp32_attention_step_s", math.inf))
               for shape, steps in shape_steps)
    speedup = fp32 / bf16 if bf16 > 0 else 1.0
    dtype = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    return {"dtype": dtype, "bf16_speedup": speedup,
            "reason": f"one precision for the grid's {len(shape_steps)} run(s) of {len(decisions)} shape(s), measured on "
                      f"this CPU: bf16 {speedup:.2f}x fp32 over their steps (bf16 needs >= {MIN_SPEEDUP}x)"}
