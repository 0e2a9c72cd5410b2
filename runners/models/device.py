"""The ``--device`` of every runner command, checked when the command line is read: a device
torch knows (cpu, cuda, cuda:N, mps) that this machine has, never an error from inside torch
after a model was loaded or a grid planned."""

from __future__ import annotations

import argparse
import re


def device_arg(text: str) -> str:
    """argparse ``type``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and present here."""
    name = str(text).strip()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (expected cpu, cuda, cuda:N or mps)")
    if name == "cpu":
        return name
    import torch
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"device {name!r}: CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError("device 'mps': Apple's MPS is not available on this machine")
    return name
