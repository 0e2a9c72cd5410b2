"""What takes a training step: the engines behind the one ``runners.train.trainer.Trainer``.

The Trainer owns a run's life (claim, data, resume, the loop, evaluation, the row, the end); an
engine owns the model(s), the optimizer, the step and the checkpoint format of its family
(torchtitan's split). Three engines, one interface (``Engine``):

* ``LocalEngine`` (here): one model in this process, compiled where ``Settings.compile`` says;
* ``runners.train.batched.StackedEngine``: K same-shape models stacked and stepped as one;
* ``runners.train.distributed.DeepSpeedEngine``: one model across DeepSpeed ranks (a collective step).

The local and stacked engines share one checkpoint format (``_checkpoints/RUN_ID.pt`` per run:
``RunFileCheckpoints``), so a run stacked once can resume alone and the other way round; DeepSpeed
keeps its own (a directory per run).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from runners.models.arch import build_model
from runners.models.gpt import GPTConfig
from runners.train.settings import Settings, autocast, resolve_settings, to_device
from scaling import store as rstore
from scaling.cli import UsageError

log = logging.getLogger(__name__)


class Engine:
    """The step of ``K`` runs trained together (K = 1 but for the stacked engine).

    ``writes``: this process stores rows and scores checkpoints (DeepSpeed: rank 0 only).
    ``row_extra``: the engine's own columns of every row it trains.
    """

    K: int = 1
    writes: bool = True
    settings: Settings
    row_extra: dict = {}
    #: an engine that cannot score models in the middle of a run (``--eval-every``) says why here
    cannot_evaluate_along: str | None = None

    def step(self, batches, lr: float, want_checkpoint: bool = False) -> tuple[list[float], list, bool]:
        """One optimiser step of every run on its ``(x, y)`` of ``batches``; returns (losses,
        gradient norms, whether to checkpoint now: ``want_checkpoint``, agreed by every rank)."""
        raise NotImplementedError

    def freeze(self, k: int) -> None:
        """Run ``k`` diverged: it takes no further updates (the others go on)."""

    def save(self, step: int, clients: list[dict]) -> None:
        """Checkpoint every live run at ``step``; ``clients[k]`` is run k's training-log state."""
        raise NotImplementedError

    def restore(self) -> list[dict] | None:
        """Every run's checkpoint loaded into the engine, and each run's saved training-log state
        (``step``, ``curve``, ``ema``, ``wall_time_s``); None when the runs start from step 0."""
        raise NotImplementedError

    def drop(self, k: int) -> None:
        """Remove run ``k``'s checkpoint (it is stored)."""
        raise NotImplementedError

    def model(self, k: int):
        """Run ``k``'s model as a plain module (None on a process that does not write)."""
        raise NotImplementedError

    def train(self) -> None:
        pass

    def eval(self) -> None:
        pass

    def close(self) -> None:
        """After the runs are stored (DeepSpeed: every rank waits for rank 0)."""


def probe_shape(spec, hp) -> tuple | None:
    """The run's model and batch as ``runners.train.cpu_dtype`` measures them (GPTs only): the CPU
    dtype is decided for the shape that trains, not for a fixed probe."""
    if getattr(spec, "arch", "gpt") != "gpt":
        return None
    return (spec.d_model, spec.ffw_size, spec.n_heads, spec.n_layers, spec.vocab_size, spec.seq_len, hp.batch_size)


def new_model(spec, cfg: GPTConfig | None = None):
    """Run ``spec``'s initial model: the seed, then the architecture, its size checked against the
    accounting formula. Every engine draws its models here, so they all start alike."""
    torch.manual_seed(spec.seed)
    model = build_model(cfg or GPTConfig.from_spec(spec))
    if model.num_params() != spec.params:  # the accounting formula and the model must agree
        raise RuntimeError(f"model has {model.num_params()} parameters, accounting says {spec.params}")
    return model


def build(cfg: GPTConfig, hp, settings: Settings, model=None):
    """(model, compiled-or-same model, optimizer) on the settings' device; ``model`` (else a new
    one of ``cfg``) is moved there."""
    model = (build_model(cfg) if model is None else model).to(settings.device)
    optimizer = model.configure_optimizer(hp.lr, hp.weight_decay, (hp.beta1, hp.beta2),
                                          torch.device(settings.device).type, fused=settings.fused_adamw)
    if settings.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    forward = torch.compile(model) if settings.compile else model
    return model, forward, optimizer


def train_step(forward, optimizer, x, y, lr: float, grad_clip: float, settings: Settings):
    """One optimiser step; returns (loss, grad_norm) as tensors (no host sync here)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(settings):
        _, loss = forward(x, y)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), grad_norm


# --------------------------------------------------------------------------------------------
# One checkpoint file per run (the local and stacked engines)


checkpoint_path = rstore.checkpoint_path


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic (``scaling.store.atomic_write_bytes``)."""
    rstore.atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))


def set_aside(path: Path, why: str) -> None:
    """Move a checkpoint that cannot be used out of the way (``NAME.set-aside``, kept for a look)
    with one warning, so the run restarts instead of failing the same way on every rerun."""
    try:
        os.replace(path, path.with_name(path.name + ".set-aside"))
    except OSError:
        pass
    log.warning("checkpoint %s set aside (%s); the run starts over", path, why)


def load_checkpoint(path: Path, run_id: str, steps: int, batch_size: int) -> dict | None:
    """The checkpoint of this very run, or None (missing, unreadable, or from other settings).

    Loaded with ``weights_only=True``: tensors, numbers, strings, lists and dicts only, so a pickle
    placed in a store cannot run code when a grid resumes; anything else is set aside."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn, foreign or not weights-only: start over rather than fail the grid
        set_aside(path, f"unreadable: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
        return None
    if not isinstance(state, dict):
        set_aside(path, "not a checkpoint of this toolkit")
        return None
    if (state.get("run_id"), state.get("steps"), state.get("batch_size")) != (run_id, steps, batch_size):
        log.warning("ignoring checkpoint %s: it was written with other settings", path)
        return None
    return state


#: what a run's saved training-log state holds besides its weights (every engine's client state)
CLIENT_KEYS = ("step", "curve", "ema", "wall_time_s")


class RunFileCheckpoints:
    """``save``/``restore``/``drop`` of an engine whose runs each keep ``_checkpoints/RUN_ID.pt``:
    {run_id, steps, batch_size, step, model, optimizer, curve, ema, wall_time_s}, the optimizer in
    ``GPT.configure_optimizer``'s layout. The engine gives ``run_state(k)`` (model, optimizer) and
    ``load_run_states(states)``; a checkpoint that loads but does not fit is set aside and the
    engine rebuilt (``reset``)."""

    specs: list
    store: object
    steps: int
    batch_size: int

    def _path(self, k: int) -> Path:
        return checkpoint_path(self.store, self.specs[k].run_id)

    def save(self, step: int, clients: list[dict]) -> None:
        for k, spec in enumerate(self.specs):
            if self.live(k):
                model_state, opt_state = self.run_state(k)
                save_checkpoint(self._path(k), {"run_id": spec.run_id, "steps": self.steps,
                                                "batch_size": self.batch_size, "model": model_state,
                                                "optimizer": opt_state, **clients[k], "step": step})

    def restore(self) -> list[dict] | None:
        states = [load_checkpoint(self._path(k), s.run_id, self.steps, self.batch_size)
                  for k, s in enumerate(self.specs)]
        if any(st is None for st in states) or len({st["step"] for st in states}) != 1:
            return None                               # stacked runs resume together or not at all
        try:
            self.load_run_states(states)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            # it loads but no longer matches the model code (e.g. "size mismatch"): start over from
            # fresh models, since loading may have copied part of it
            for k in range(len(self.specs)):
                set_aside(self._path(k), f"does not match the model: {str(exc).splitlines()[0][:200]}")
            self.reset()
            return None
        return [{key: st[key] for key in CLIENT_KEYS} for st in states]

    def drop(self, k: int) -> None:
        rstore.remove_with_abandoned_writes(self._path(k))     # the run is stored, and ours

    def live(self, k: int) -> bool:
        return True


class LocalEngine(RunFileCheckpoints, Engine):
    """One model in this process: ``build`` (compiled when the settings say so), ``train_step``."""

    def __init__(self, specs, hp, steps: int, store, options=None, *, settings: Settings | None = None,
                 model=None, forward=None, optimizer=None):
        if len(specs) != 1:
            raise UsageError("the local engine trains one run at a time")
        self.row_extra = {"engine": "local"}
        self.specs, self.store, self.hp, self.steps, self.batch_size = list(specs), store, hp, steps, hp.batch_size
        self.settings = settings or resolve_settings(getattr(options, "device", None), getattr(options, "dtype", None),
                                                     getattr(options, "compile", None),
                                                     shape=probe_shape(self.specs[0], hp) if self.specs[0] else None)
        if model is not None:                          # a model built elsewhere (runners.studies)
            self.net, self.forward, self.optimizer = model, forward or model, optimizer
        else:
            self.reset()

    @classmethod
    def around(cls, model, forward, optimizer, hp, settings: Settings, spec, steps: int) -> "LocalEngine":
        """An engine that steps a model someone else built (a comparison's, a merge's expert)."""
        return cls([spec], hp, steps, None, settings=settings, model=model, forward=forward, optimizer=optimizer)

    def reset(self) -> None:
        spec = self.specs[0]
        self.net, self.forward, self.optimizer = build(GPTConfig.from_spec(spec), self.hp, self.settings,
                                                       model=new_model(spec))

    def step(self, batches, lr, want_checkpoint=False):
        (x, y), = batches
        device = self.settings.device
        loss, norm = train_step(self.forward, self.optimizer, to_device(x, device), to_device(y, device), lr,
                                self.hp.grad_clip, self.settings)
        return [loss.item()], [norm.item()], want_checkpoint

    def run_state(self, k):
        return self.net.state_dict(), self.optimizer.state_dict()

    def load_run_states(self, states):
        self.net.load_state_dict(states[0]["model"])
        self.optimizer.load_state_dict(states[0]["optimizer"])

    def model(self, k):
        return self.net

    def train(self):
        self.net.train()

    def eval(self):
        self.net.eval()
