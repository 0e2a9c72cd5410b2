"""Train several same-shape runs at once: K models stacked and stepped together.

Tiny models spend much of a step in per-operation overhead, so one process stepping one
30K-parameter model at a time leaves the machine idle between small kernels. Runs that share a
shape and a step count (seeds, repetition levels, mixtures at one size and token count) are
stacked into one ``StackedGPT``: every weight gains a leading model axis [K, ...], linear layers
are grouped matrix products (``torch.baddbmm``), attention folds the K models into its batch
(``runners.models.gpt.causal_attention`` on [K*B, H, T, hd]), and the loss is one cross-entropy per model.
The K models never mix: the gradient of the summed per-model losses is each model's own gradient.
Each run keeps its own initialisation (``runners.train.engines.new_model``, copied in, as the local
engine draws it), its own data (its ``EpochBatches``), its own gradient
clipping (per-model global norm) and its own AdamW state (``torch.optim.AdamW`` is elementwise, so
one optimiser over stacked tensors is K optimisers), and ends as its own row, loss curve and
weights through the same ``store_finished_run`` / ``store_failed_run`` as every launcher. A run whose
loss turns non-finite is frozen (zero gradient) and stored as ``failed``; the others go on.

(``torch.func.vmap`` over ``functional_call`` was tried first: on CPU it has no batching rule for
the fused attention kernel and falls back to a loop, and the written-out attention that it can
batch was slower than the loop; 1.0x over one-at-a-time for 8 t32 runs.)

Batched and one-at-a-time runs agree to float tolerance at first; over long runs at high learning
rates small differences grow, as they do between thread counts.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from runners.grid.spec import RunSpec
from runners.models.gpt import GPT, GPTConfig, adamw, causal_attention
from runners.train import trainer as train
from runners.train.engines import Engine, RunFileCheckpoints, new_model, probe_shape
from runners.train.options import TrainOptions
from runners.train.settings import autocast, resolve_settings, to_device, torch_threads
from scaling.cli import UsageError

log = logging.getLogger(__name__)

#: per layer: the GPT's parameter names (without ``blocks.i.``) in this order
_LAYER = ("ln_1.weight", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
          "ln_2.weight", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")


class StackedGPT(nn.Module):
    """K ``runners.models.gpt.GPT``s of one config as one module with a leading model axis."""

    def __init__(self, models: Sequence[GPT]):
        super().__init__()
        cfg = models[0].config
        self.config, self.K = cfg, len(models)
        names = [n for n, _ in models[0].named_parameters()]
        self.names = names
        self.flat = nn.ParameterList(
            nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone())
            for n in names)
        self.index = {n: i for i, n in enumerate(names)}

    def p(self, name: str) -> torch.Tensor:
        return self.flat[self.index[name]]

    def model(self, k: int) -> GPT:
        """Model ``k`` as a plain GPT (weights copied out)."""
        m = GPT(self.config).to(self.flat[0].device)
        with torch.no_grad():
            for name, param in m.named_parameters():
                param.copy_(self.p(name)[k])
        return m

    @staticmethod
    def _linear(x, w, b):
        """x [K, N, in] @ w[K, out, in]^T + b[K, out]."""
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-model mean cross-entropy [K] of ``idx``/``targets`` [K, B, T]."""
        cfg, K = self.config, self.K
        _, B, T = idx.shape
        d, H = cfg.d_model, cfg.n_heads
        wte = self.p("wte.weight")
        x = wte[torch.arange(K, device=idx.device)[:, None, None], idx] + self.p("wpe.weight")[:, None, :T]
        x = x.reshape(K, B * T, d)
        for i in range(cfg.n_layers):
            p = {n: self.p(f"blocks.{i}.{n}") for n in _LAYER}
            h = F.layer_norm(x, (d,)) * p["ln_1.weight"].unsqueeze(1)
            q, k, v = self._linear(h, p["attn.c_attn.weight"], p["attn.c_attn.bias"]).split(d, dim=2)
            q, k, v = (t.reshape(K * B, T, H, d // H).transpose(1, 2) for t in (q, k, v))
            y = causal_attention(q, k, v)
            y = y.transpose(1, 2).reshape(K, B * T, d)
            x = x + self._linear(y, p["attn.c_proj.weight"], p["attn.c_proj.bias"])
            h = F.layer_norm(x, (d,)) * p["ln_2.weight"].unsqueeze(1)
            h = F.gelu(self._linear(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"]), approximate="tanh")
            x = x + self._linear(h, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
        x = F.layer_norm(x, (d,))
        logits = torch.baddbmm(self.p("lm_head.bias").unsqueeze(1), x, wte.transpose(1, 2))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        return loss.view(K, -1).mean(dim=1)


def group_key(spec: RunSpec) -> tuple:
    """Runs with the same key can be stacked: same architecture and the same number of steps."""
    return (spec.d_model, spec.ffw_size, spec.n_heads, spec.n_layers, spec.vocab_size, spec.seq_len, spec.tokens)


def groups(specs: Sequence[RunSpec], k: int) -> list[list[RunSpec]]:
    """``specs`` cut into stackable groups of at most ``k``, in plan order within a key."""
    by_key: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        by_key.setdefault(group_key(s), []).append(s)
    out = []
    for members in by_key.values():
        out += [members[i:i + k] for i in range(0, len(members), k)]
    return out


class StackedEngine(RunFileCheckpoints, Engine):
    """The Trainer's engine for K same-shape runs (``group_key``): one ``StackedGPT``, one AdamW over
    the stacked tensors, per-run gradient clipping, one step for all; a diverged run is frozen
    (its gradient zeroed) while the others go on. Checkpoints are each run's own file, in the local
    engine's format, so a stacked run can resume alone and the other way round."""

    def __init__(self, specs, hp, steps: int, store, options=None):
        specs = list(specs)
        if len({group_key(s) for s in specs}) != 1:
            raise UsageError("batched runs must share shape, context and token count")
        if any(getattr(s, "arch", "gpt") != "gpt" for s in specs):
            raise UsageError("the stacked engine trains GPTs only (--batch-runs 1 for other --arch)")
        if getattr(options, "compile", None):
            raise UsageError("the stacked engine does not compile its step: use --batch-runs 1 to compile")
        self.specs, self.store, self.hp, self.steps, self.batch_size = specs, store, hp, steps, hp.batch_size
        self.K = len(specs)
        self.row_extra = {"engine": "stacked", "batched_with": self.K}
        self.settings = resolve_settings(getattr(options, "device", None), getattr(options, "dtype", None),
                                         compile=False, shape=probe_shape(specs[0], hp))
        self._template = None
        self.reset()

    def reset(self) -> None:
        cfg = GPTConfig.from_spec(self.specs[0])
        self.stacked = StackedGPT([new_model(s, cfg) for s in self.specs]).to(self.settings.device)
        hp = self.hp
        self.optimizer = adamw(self.stacked.flat, hp.lr, hp.weight_decay, (hp.beta1, hp.beta2),
                               self.settings.fused_adamw, stacked=True)
        self.active = torch.ones(self.K, dtype=torch.bool, device=self.settings.device)

    def step(self, batches, lr, want_checkpoint=False):
        K, hp, device = self.K, self.hp, self.settings.device
        x = to_device(np.stack([a for a, _ in batches]), device)
        y = to_device(np.stack([b for _, b in batches]), device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.settings):
            losses = self.stacked(x, y)
        losses.sum().backward()
        params = list(self.stacked.flat)
        with torch.no_grad():
            norms = torch.sqrt(sum(p.grad.float().pow(2).reshape(K, -1).sum(dim=1) for p in params))
            coef = torch.clamp(hp.grad_clip / (norms + 1e-6), max=1.0) * self.active
            for p in params:
                p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))).to(p.grad.dtype))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses.detach().tolist(), norms.tolist(), want_checkpoint

    def freeze(self, k: int) -> None:
        self.active[k] = False

    def live(self, k: int) -> bool:
        return bool(self.active[k])

    def run_state(self, k: int) -> tuple[dict, dict]:
        """Model ``k``'s weights and AdamW state in the local engine's format (the optimizer state
        dict of ``GPT.configure_optimizer``: decay group then no-decay group, parameters in
        ``named_parameters`` order)."""
        if self._template is None:
            hp = self.hp
            self._template = GPT(self.stacked.config).configure_optimizer(
                hp.lr, hp.weight_decay, (hp.beta1, hp.beta2)).state_dict()["param_groups"]
        opt_state = {"param_groups": self._template, "state": {}}
        order = [p for g in self.optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(order):
            st = self.optimizer.state.get(p)
            if st:
                opt_state["state"][i] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"][k].clone(),
                                         "exp_avg_sq": st["exp_avg_sq"][k].clone()}
        return self.stacked.model(k).state_dict(), opt_state

    def load_run_states(self, states: list[dict]) -> None:
        stacked = self.stacked
        with torch.no_grad():
            for k, st in enumerate(states):
                for name, value in st["model"].items():
                    if name in stacked.index:
                        stacked.p(name)[k].copy_(value)
        order = [p for g in self.optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(order):
            per = [st["optimizer"]["state"].get(i) for st in states]
            if all(per):
                self.optimizer.state[p] = {"step": per[0]["step"].clone(),
                                           "exp_avg": torch.stack([x["exp_avg"] for x in per]).to(p.device),
                                           "exp_avg_sq": torch.stack([x["exp_avg_sq"] for x in per]).to(p.device)}

    def model(self, k: int) -> GPT:
        return self.stacked.model(k)

    def train(self) -> None:
        self.stacked.train()

    def eval(self) -> None:
        self.stacked.eval()


def train_group(specs: Sequence[RunSpec], store, options: TrainOptions | None = None, **kw) -> list[dict]:
    """Train ``specs`` (one ``group_key``) stacked, through the one Trainer
    (``runners.train.trainer.train_runs`` on ``StackedEngine``): the runs this process can claim and
    that are not ``ok`` yet; the others' rows are ``{"status": BUSY}``. Options as ``options`` or
    its fields (``device``, ``dtype``, ``checkpoint_every_s``, ``cache_dir``, ``progress``, ...)."""
    options = dataclasses.replace(options or TrainOptions(), **kw)
    return train.train_runs(specs, store, options, StackedEngine, skip_done=True)


# --------------------------------------------------------------------------------------------
# How many to stack: measured, not assumed

#: stacking K runs must cost at most 1/MIN_GAIN of K steps of one model to be chosen: the
#: measurement is noisy near 1 (1.18x measured where whole runs gained 1.05x)
MIN_GAIN = 1.25
#: the K tried by ``measured_k``
CANDIDATES = (1, 2, 4, 8)


def _step_seconds(cfg: GPTConfig, batch: int, k: int, steps: int = 10) -> float:
    """Median time of one stacked training step of ``k`` models of ``cfg`` (forward, backward,
    AdamW; each model its own batch), after three warm-up steps. The median: a best-of-few drawn
    first, on a cold cache, once made stacking look 1.5x faster than whole runs showed (1.05x)."""
    import statistics
    import time
    stacked = StackedGPT([GPT(cfg) for _ in range(k)])
    opt = adamw(stacked.flat, 1e-3, 0.1, (0.9, 0.95), fused=False, stacked=True)
    x = torch.randint(0, cfg.vocab_size, (k, batch, cfg.seq_len))
    y = torch.randint(0, cfg.vocab_size, (k, batch, cfg.seq_len))
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        stacked(x, y).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measured_k(spec: RunSpec, most: int, threads: int, cache_dir=None) -> dict:
    """{"k", "seconds_per_run_step": {K: s}}: the K (at most ``most``, from ``CANDIDATES``) whose
    stacked step costs least per run on this machine with ``threads`` threads, K > 1 only if it
    beats one model at a time by ``MIN_GAIN``: so ``--batch-runs auto`` never makes a grid slower
    than one run at a time. At batch 8 x 128 a t32 step is not overhead-bound and stacking does not
    pay (docs/benchmarks.md). Measured once per (CPU, torch, threads, shape, batch) and cached in
    ``$SCALING_CACHE/stacking.json``; ~2 s for a t32 shape."""
    from runners.data.cache import cached_json
    from runners.train.cpu_dtype import cpu_model

    hp = train.hparams(spec.params, spec.seq_len, tokens=spec.tokens)
    cfg = GPTConfig.from_spec(spec)
    ks = [k for k in CANDIDATES if k <= max(1, most)]
    key = (f"v3|{cpu_model()}|torch {torch.__version__}|threads {threads}|{cfg.d_model},{cfg.ffw_size},{cfg.n_heads},"
           f"{cfg.n_layers},{cfg.vocab_size},{cfg.seq_len}|batch {hp.batch_size}")
    with torch_threads(threads), torch.random.fork_rng():
        per = {k: cached_json("stacking.json", f"{key}|k {k}",
                              lambda k=k: _step_seconds(cfg, hp.batch_size, k) / k, cache_dir) for k in ks}
    best = min(ks, key=lambda k: per[k])
    k = best if per[1] / per[best] >= MIN_GAIN else 1
    return {"k": k, "seconds_per_run_step": {k_: per[k_] for k_ in ks}}
