"""Train several same-shape runs at once: K models stacked and stepped together.

Tiny models spend much of a step in per-operation overhead, so one process stepping one
30K-parameter model at a time leaves the machine idle between small kernels. Runs that share a
shape and a step count (seeds, repetition levels, mixtures at one size and token count) are
stacked into one ``StackedGPT``: every weight gains a leading model axis [K, ...], linear layers
are grouped matrix products (``torch.baddbmm``), attention folds the K models into its batch
(``scaled_dot_product_attention`` on [K*B, H, T, hd]), and the loss is one cross-entropy per model.
The K models never mix: the gradient of the summed per-model losses is each model's own gradient.
Each run keeps its own initialisation (``torch.manual_seed(spec.seed)`` then ``GPT(cfg)``, copied
in, as ``runners.train.trainer.train_run`` draws it), its own data (its ``EpochBatches``), its own gradient
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

import logging
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from runners.train import trainer as train
from runners.models.gpt import GPT, GPTConfig, adamw
from runners.grid.spec import RunSpec
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
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
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


def _run_checkpoint(stacked: "StackedGPT", optimizer, k: int, template: dict) -> tuple[dict, dict]:
    """Model ``k``'s weights and AdamW state in ``train_run``'s checkpoint format (the optimizer
    state dict of ``GPT.configure_optimizer``: decay group then no-decay group, parameters in
    ``named_parameters`` order), so a batched run can resume alone and the other way round."""
    model_state = stacked.model(k).state_dict()
    opt_state = {"param_groups": template["param_groups"], "state": {}}
    order = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(order):
        st = optimizer.state.get(p)
        if st:
            opt_state["state"][i] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"][k].clone(),
                                     "exp_avg_sq": st["exp_avg_sq"][k].clone()}
    return model_state, opt_state


def _resume(specs, store, steps: int, batch_size: int, stacked, optimizer) -> dict | None:
    """Every run's own checkpoint, when all of the group have one at the same step: loaded into the
    stacked weights and optimiser; else None (the group starts over)."""
    states = [train.load_checkpoint(train.checkpoint_path(store, s.run_id), s.run_id, steps, batch_size) for s in specs]
    if any(st is None for st in states) or len({st["step"] for st in states}) != 1:
        return None
    with torch.no_grad():
        for k, st in enumerate(states):
            for name, value in st["model"].items():
                if name in stacked.index:
                    stacked.p(name)[k].copy_(value)
    order = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(order):
        per = [st["optimizer"]["state"].get(i) for st in states]
        if all(per):
            optimizer.state[p] = {"step": per[0]["step"].clone(),
                                  "exp_avg": torch.stack([x["exp_avg"] for x in per]).to(p.device),
                                  "exp_avg_sq": torch.stack([x["exp_avg_sq"] for x in per]).to(p.device)}
    return {"step": states[0]["step"], "states": states}


def train_group(specs: Sequence[RunSpec], store, **kw) -> list[dict]:
    """``_train_group`` on the runs of ``specs`` this process can claim (``scaling.store.claim_run``)
    and that are not ``ok`` yet; the others' rows are ``{"status": train.BUSY}``."""
    import contextlib
    from scaling import store as rstore
    rows: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        mine = []
        for s in specs:
            claimed = stack.enter_context(rstore.claim_run(store, s.run_id))
            if not claimed or (rstore.read_run(store, s.run_id) or {}).get("status") == "ok":
                rows[s.run_id] = {"run_id": s.run_id, "status": train.BUSY}
            else:
                mine.append(s)
        if mine:
            for s, row in zip(mine, _train_group(mine, store, **kw)):
                rows[s.run_id] = row
    return [rows[s.run_id] for s in specs]


def _train_group(specs: Sequence[RunSpec], store, *, device: str | None = None, dtype: str | None = None,
                 progress: bool = True, cache_dir=None, log_every: int = 50,
                 checkpoint_every_s: float = 30.0) -> list[dict]:
    """Train ``specs`` (one ``group_key``) stacked; write and return one row per run. Every
    ``checkpoint_every_s`` each run's own checkpoint is written (``train_run``'s format); a rerun
    resumes the group when all of it has checkpoints at one step."""
    specs = list(specs)
    if len({group_key(s) for s in specs}) != 1:
        raise UsageError("batched runs must share shape, context and token count")
    settings = train.resolve_settings(device, dtype, compile=False)   # the stacked step is not compiled
    prepared = [train.prepare_data(s, cache_dir) for s in specs]
    hp = prepared[0][2]
    if any(p[2] != hp for p in prepared):
        raise UsageError("batched runs must share their hyper-parameters")
    K, steps = len(specs), prepared[0][3].steps
    tokens_per_step = hp.batch_size * specs[0].seq_len
    cfg = GPTConfig.from_spec(specs[0])
    models = []
    for s in specs:
        torch.manual_seed(s.seed)                    # train_run's initialisation, run by run
        models.append(GPT(cfg))
    stacked = StackedGPT(models).to(settings.device)
    del models
    optimizer = adamw(stacked.flat, hp.lr, hp.weight_decay, (hp.beta1, hp.beta2), settings.fused_adamw, stacked=True)
    template_model = GPT(cfg)
    template = template_model.configure_optimizer(hp.lr, hp.weight_decay, (hp.beta1, hp.beta2)).state_dict()
    resumed = _resume(specs, store, steps, hp.batch_size, stacked, optimizer)
    start = 0
    if resumed is not None:
        start = resumed["step"]
        logs = [train.TrainingLog(s, p[3], tokens_per_step, progress=False, log_every=log_every, start=start,
                                  curve=st["curve"], ema=st["ema"], elapsed=st["wall_time_s"], cpu_share=1 / K)
                for s, p, st in zip(specs, prepared, resumed["states"])]
        log.info("batched group of %d: resuming at step %d/%d", K, start, steps)
    else:
        logs = [train.TrainingLog(s, p[3], tokens_per_step, progress=False, log_every=log_every, cpu_share=1 / K)
                for s, p in zip(specs, prepared)]

    def checkpoint(step):
        for k, (s, tl) in enumerate(zip(specs, logs)):
            if active[k]:
                model_state, opt_state = _run_checkpoint(stacked, optimizer, k, template)
                train.save_checkpoint(train.checkpoint_path(store, s.run_id),
                                      {"run_id": s.run_id, "steps": steps, "batch_size": hp.batch_size, "step": step,
                                       "model": model_state, "optimizer": opt_state, "curve": tl.curve,
                                       "ema": tl.ema, "wall_time_s": tl.wall()})

    bar = train.progress_bar(steps, f"{specs[0].shape} x{K}", enabled=progress, initial=start)
    active = torch.ones(K, dtype=torch.bool, device=settings.device)
    params = list(stacked.flat)
    stacked.train()
    last_ckpt = time.perf_counter()
    try:
        for step in range(start, steps):
            xy = [p[3].batch(step) for p in prepared]
            x = train.to_device(np.stack([a for a, _ in xy]), settings.device)
            y = train.to_device(np.stack([b for _, b in xy]), settings.device)
            lr = train.lr_at(step, steps, hp)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with train.autocast(settings):
                losses = stacked(x, y)
            losses.sum().backward()
            with torch.no_grad():
                norms = torch.sqrt(sum(p.grad.float().pow(2).reshape(K, -1).sum(dim=1) for p in params))
                coef = torch.clamp(hp.grad_clip / (norms + 1e-6), max=1.0) * active
                for p in params:
                    p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))).to(p.grad.dtype))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_list, norm_list = losses.detach().tolist(), norms.tolist()
            for i, tl in enumerate(logs):
                if active[i] and not tl.record(step, loss_list[i], norm_list[i], lr):
                    active[i] = False
            bar.update(1)
            if not active.any():
                break
            if time.perf_counter() - last_ckpt >= checkpoint_every_s and step + 1 < steps:
                checkpoint(step + 1)
                last_ckpt = time.perf_counter()
    finally:
        bar.close()
    rows = []
    for i, (spec, (corpus, tokenizer, hp_i, batches), tl) in enumerate(zip(specs, prepared, logs)):
        row = train.run_row(spec, settings, corpus, tokenizer, hp_i, tl, batched_with=K)
        ckpt = train.checkpoint_path(store, spec.run_id)
        rows.append(train.finish_run(store, spec, stacked.model(i), row, tl, corpus, tokenizer, settings, cache_dir,
                                     lambda ckpt=ckpt: ckpt.unlink(missing_ok=True)))
    return rows
