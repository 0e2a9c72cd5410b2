"""Where and how a training or evaluation step runs (``Settings``: device, dtype, compile, fused
AdamW), chosen once per run; shared by the Trainer, the stacked and DeepSpeed engines and the
validation of ``runners.train.evaluation``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from runners.models.gpt import fused_adamw_available
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


def resolve_settings(device: str | None = None, dtype: str | None = None,
                     compile: bool | None = None, shape: tuple | None = None) -> Settings:
    """Where and how to run; on a CPU with native bf16 the dtype is measured for ``shape``
    (``runners.train.cpu_dtype.PROBE_SHAPE``'s fields: the run's own model and batch) when given."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_type = torch.device(device).type
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available")
    if dtype is None:
        if device_type == "cuda":
            dtype = "bf16"
        else:
            from runners.train.cpu_dtype import decide     # native bf16 measured once, cached
            dtype = decide(shape=shape)["dtype"]
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if compile is None:
        compile = device_type == "cuda"
    return Settings(device=device, dtype=dtype, compile=bool(compile),
                    fused_adamw=fused_adamw_available(device_type))


def autocast(settings: Settings):
    if settings.dtype == "bf16":
        return torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(array: np.ndarray, device: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device.startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor
