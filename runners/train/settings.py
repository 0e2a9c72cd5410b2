"""Where and how a training or evaluation step runs (``Settings``: device, dtype, compile, fused
AdamW), chosen once per run; shared by the Trainer, the stacked and DeepSpeed engines and the
validation of ``runners.train.evaluation``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from runners.models import gpt
from scaling.cli import UsageError

DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class Settings:
    """Where and how a step runs. Defaults measured by ``benchmarks/train_speed.py``: on CUDA bf16
    autocast + ``torch.compile``; on CPU eager (compile time dominates tiny runs and was no faster
    per step), bf16 autocast only where ``runners.train.cpu_dtype.decide`` measured native bf16 faster."""

    device: str
    dtype: str
    compile: bool
    fused_adamw: bool
    #: under CPU bf16 autocast, attention in fp32 (``runners.models.gpt.fp32_attention``): where
    #: ``runners.train.cpu_dtype`` measured it faster for the run's shape
    fp32_attention: bool = False


def resolve_settings(device: str | None = None, dtype: str | None = None,
                     compile: bool | None = None, shape: tuple | None = None,
                     fp32_attention: bool | None = None) -> Settings:
    """Where and how to run; on a CPU with native bf16 the dtype is measured for ``shape``
    (``runners.train.cpu_dtype.PROBE_SHAPE``'s fields: the run's own model and batch) when given,
    and so is, under bf16 (chosen or given), whether attention runs in fp32
    (``fp32_attention=False`` asks for plain bf16 autocast)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_type = torch.device(device).type
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available")
    if dtype not in (None, *DTYPES):
        raise UsageError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    decision = {}
    if device_type == "cpu" and (dtype is None or (dtype == "bf16" and shape is not None and fp32_attention is None)):
        from runners.train.cpu_dtype import decide     # native bf16 measured once per shape, cached
        decision = decide(shape=shape)
    if dtype is None:
        dtype = "bf16" if device_type == "cuda" else decision["dtype"]
    if fp32_attention is None:
        fp32_attention = decision.get("attention") == "fp32"
    if compile is None:
        compile = device_type == "cuda"
    return Settings(device=device, dtype=dtype, compile=bool(compile),
                    fused_adamw=gpt.fused_adamw_available(device_type),
                    fp32_attention=bool(fp32_attention) and dtype == "bf16" and device_type == "cpu")


def autocast(settings: Settings):
    """The step's precision: bf16 autocast where the settings say bf16, with attention in fp32
    where they say that too."""
    if settings.dtype != "bf16":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16))
    if settings.fp32_attention:
        stack.enter_context(gpt.fp32_attention())
    return stack


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` (None: left as they are) for the block and restored
    after it, whatever the block sets meanwhile: measurements at the threads a run will train with,
    a probe that contends on more, a launcher's share of the machine."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield before
    finally:
        torch.set_num_threads(before)


def to_device(array: np.ndarray, device: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device.startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor
