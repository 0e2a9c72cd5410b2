"""Architectures by name: ``--arch gpt|mamba|PACKAGE.MODULE:FACTORY``.

``gpt`` is ``runners.models.gpt.GPT``; ``mamba`` the Mamba + dense hybrid of ``runners.models.mamba``; anything
else names a factory ``FACTORY(config) -> torch.nn.Module`` importable as ``PACKAGE.MODULE``, given
the run's ``runners.models.gpt.GPTConfig`` (d_model, ffw_size, n_heads, n_layers, vocab_size, seq_len,
activation). A plug-in model needs ``forward(idx, targets=None) -> (logits, loss)``, like ``GPT``;
``num_params()`` and ``configure_optimizer(...)`` are used when it has them (else a parameter count
and AdamW with decay on matrices). Its parameters are counted by building it on the meta device,
and it spends its budget in 6 N D.
"""

from __future__ import annotations

import functools
import importlib

import torch

from scaling.accounting import ARCHS
from scaling.cli import UsageError


def check_arch(name: str) -> str:
    """``name`` if it is a known architecture or an importable factory; a UsageError otherwise."""
    name = str(name).strip()
    if name in ARCHS:
        return name
    _factory(name)
    return name


def _factory(name: str):
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"unknown --arch {name!r} (known: {', '.join(ARCHS)}, or PACKAGE.MODULE:FACTORY)")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--arch {name}: cannot import it ({str(exc).splitlines()[0]})") from None
    if not callable(factory):
        raise UsageError(f"--arch {name}: {attr} is not callable")
    return factory


def build_model(cfg) -> torch.nn.Module:
    """The model ``cfg`` describes (``cfg.arch``)."""
    arch = getattr(cfg, "arch", "gpt") or "gpt"
    if arch == "gpt":
        from runners.models.gpt import GPT
        return GPT(cfg)
    if arch == "mamba":
        from runners.models.mamba import MambaLM
        return MambaLM(cfg)
    try:
        model = _factory(arch)(cfg)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; say which and why, once
        raise UsageError(f"--arch {arch}: calling it with the model config failed "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--arch {arch}: returned a {type(model).__name__}, not a torch.nn.Module "
                         f"(a factory takes the model config and returns the model)")
    if not hasattr(model, "num_params"):
        model.num_params = lambda: sum(p.numel() for p in model.parameters())
    if not hasattr(model, "configure_optimizer"):
        from runners.models.gpt import GPT
        model.configure_optimizer = lambda *a, **k: GPT.configure_optimizer(model, *a, **k)
    return model


@functools.lru_cache(maxsize=256)
def _count(cfg_items: tuple) -> int:
    from runners.models.gpt import GPTConfig
    with torch.device("meta"):
        return int(build_model(GPTConfig(**dict(cfg_items))).num_params())


def plugin_param_count(spec) -> int:
    """Parameters of a plug-in architecture's model for ``spec``, built on the meta device."""
    from runners.models.gpt import GPTConfig
    cfg = GPTConfig.from_spec(spec)
    return _count(tuple(sorted(vars(cfg).items())))
