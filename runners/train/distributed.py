"""Train one ``RunSpec`` across processes with DeepSpeed: what ``--launcher deepspeed`` starts.

``runners.train.launch.launch_deepspeed`` runs, for each missing run, the real DeepSpeed launcher (the
``deepspeed`` command, as ``python -m deepspeed.launcher.runner`` of this interpreter)::

    python -m deepspeed.launcher.runner --num_nodes M --num_gpus K --master_port P --no_local_rank \\
        --module runners.train.distributed --spec STORE/_deepspeed/RUN_ID.json --store STORE --zero Z

which starts K processes per node (on a CPU-only machine ``--num_gpus K`` is taken as K slots of
DeepSpeed's CPU accelerator); each runs ``main`` here, i.e. ``train_distributed``:

* ``deepspeed.initialize`` with a config dict built from ``runners.train.trainer.hparams``: the global
  batch is ``hparams(N).batch_size`` sequences, each rank takes rows ``rank::world`` of
  ``EpochBatches.batch(step)`` (split into micro-batches with gradient accumulation when
  ``micro_batch`` asks for it), so the data of every step is the local run's; AdamW from
  ``GPT.configure_optimizer`` as DeepSpeed's client optimizer, the learning rate of
  ``runners.train.trainer.lr_at`` set each step, ``gradient_clipping`` = ``hp.grad_clip``, ZeRO stage
  0-3, bf16 on CUDA (NCCL), fp32 on CPU (gloo).
* ``engine.save_checkpoint`` into ``_checkpoints/RUN_ID/`` every ``checkpoint_every_s`` seconds
  (rank 0's clock decides; the decision rides on the per-step loss all-reduce), with a small
  ``run.json`` naming the tag and the settings, so a rerun resumes only a checkpoint of this very
  run, world size and ZeRO stage (``runners.train.trainer`` semantics).
* At the end the full fp32 weights are gathered (``deepspeed.utils.safe_get_full_fp32_param``:
  works for every ZeRO stage, including partitioned ZeRO-3 parameters) into a plain ``GPT`` on
  rank 0, which computes ``validation_metrics`` and writes the run through
  ``runners.train.trainer.store_finished_run``, exactly as the local launcher does: one row per run.

A DeepSpeed checkpoint (a directory) and a local one (``_checkpoints/RUN_ID.pt``) do not stand
in for each other: a run started by one launcher and resumed by the other starts over.
Nothing at module level imports torch or deepspeed, so the launcher and dry-runs stay light.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from scaling import store as rstore
from scaling.cli import ArgumentParser, UsageError, run_cli
from runners.grid.spec import RunSpec

log = logging.getLogger(__name__)

ZERO_STAGES = (0, 1, 2, 3)
INSTALL_HINT = "pip install -e '.[distributed]' (deepspeed==0.19.8)"

#: what a checkpoint must share with the run to be resumed (ZeRO shards depend on the last three)
_CHECKPOINT_KEYS = ("run_id", "steps", "batch_size", "world_size", "zero_stage", "micro_batch_size")


@dataclass(frozen=True)
class DeepSpeedOptions:
    """What a ``--launcher deepspeed`` launch asks for: processes and ZeRO stage of every run."""

    nproc_per_node: int = 1
    nodes: int = 1
    zero_stage: int = 0
    #: sequences per forward pass on one rank; None: the rank's whole share of the global batch
    micro_batch: int | None = None
    #: DeepSpeed hostfile ("host slots=K" lines) for nodes > 1
    hostfile: str | None = None

    def __post_init__(self):
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node must be >= 1, got {self.nproc_per_node}")
        if self.nodes < 1:
            raise UsageError(f"--nodes must be >= 1, got {self.nodes}")
        if self.zero_stage not in ZERO_STAGES:
            raise UsageError(f"--zero must be one of {', '.join(map(str, ZERO_STAGES))}, got {self.zero_stage}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise UsageError(f"--micro-batch must be >= 1, got {self.micro_batch}")
        if self.nodes > 1 and not (self.hostfile and Path(self.hostfile).is_file()):
            raise UsageError(f"--nodes {self.nodes} needs --hostfile FILE listing the hosts "
                             "('host slots=K' lines, DeepSpeed's format)"
                             + (f"; {self.hostfile!r} is not a file" if self.hostfile else ""))

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nodes

    def describe(self, n_runs: int) -> str:
        return (f"would launch {n_runs} run(s) one after another through deepspeed: {self.nodes} node(s) x "
                f"{self.nproc_per_node} process(es), ZeRO stage {self.zero_stage}")


def require_deepspeed() -> None:
    """Import deepspeed or raise a ``UsageError`` that says how to install it."""
    try:
        import deepspeed  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing at import
        raise UsageError(f"--launcher deepspeed needs deepspeed ({type(exc).__name__}: {exc}); "
                         f"{INSTALL_HINT}") from None


def deepspeed_installed() -> bool:
    """Cheap check (no import) for CLIs and dry-runs."""
    import importlib.util
    try:
        return importlib.util.find_spec("deepspeed") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["deepspeed"] is None
        return False


# --------------------------------------------------------------------------------------------
# the batch split and the DeepSpeed config


def batch_split(batch_size: int, world_size: int, micro_batch: int | None = None) -> tuple[int, int]:
    """(micro batch per rank, gradient accumulation steps) so that ``micro * accumulation *
    world_size == batch_size``: the global batch is ``hparams``' whatever the world size."""
    per_rank, rest = divmod(batch_size, world_size)
    if rest or per_rank == 0:
        raise UsageError(f"a batch of {batch_size} sequences does not split evenly over {world_size} "
                         f"processes; use a world size that divides it")
    micro = per_rank if micro_batch is None else min(micro_batch, per_rank)
    if per_rank % micro:
        raise UsageError(f"--micro-batch {micro_batch} does not divide the {per_rank} sequences each of "
                         f"{world_size} processes takes from a batch of {batch_size}")
    return micro, per_rank // micro


def deepspeed_config(hp, world_size: int, zero_stage: int, device_type: str,
                     micro_batch: int | None = None) -> dict:
    """The ``deepspeed.initialize`` config of a run with hyper-parameters ``hp``."""
    micro, accumulation = batch_split(hp.batch_size, world_size, micro_batch)
    return {
        "train_batch_size": hp.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": hp.grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": device_type == "cuda"},
        "steps_per_print": 2 ** 31 - 1,     # the runner logs; DeepSpeed's own step log stays off
        "wall_clock_breakdown": False,
    }


def check_batches(specs, opts: DeepSpeedOptions) -> None:
    """Every run's batch splits over the world size (before any process is started)."""
    if not specs:
        return
    from runners.train.trainer import hparams
    for s in specs:
        try:
            batch_split(hparams(s.params, s.seq_len, tokens=s.tokens).batch_size, opts.world_size, opts.micro_batch)
        except UsageError as exc:
            raise UsageError(f"run {s.run_id} ({s.shape}): {exc}") from None


# --------------------------------------------------------------------------------------------
# the launch command


def spec_path(store, run_id: str) -> Path:
    """Where the launcher leaves a run's spec for its workers (shared by every node)."""
    return rstore.side_path(store, "deepspeed", run_id, ".json")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(spec: RunSpec, store, opts: DeepSpeedOptions, *, master_port: int | None = None,
                   device: str | None = None, checkpoint_every_s: float = 30.0, max_steps: int | None = None,
                   progress: bool = True, eval_tokens: int | None = None) -> list[str]:
    """The ``deepspeed`` command line that trains ``spec`` (the launcher's CLI, run by this
    interpreter so that the workers share its environment)."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_nodes", str(opts.nodes),
           "--num_gpus", str(opts.nproc_per_node)]
    if opts.hostfile:
        cmd += ["--hostfile", str(opts.hostfile)]
    if master_port is not None:
        cmd += ["--master_port", str(master_port)]
    if not progress:
        cmd += ["--log_level", "warning"]
    cmd += ["--no_local_rank", "--module", "runners.train.distributed",
            "--spec", str(spec_path(store, spec.run_id)), "--store", str(store), "--zero", str(opts.zero_stage),
            "--checkpoint-every", f"{checkpoint_every_s:g}"]
    if opts.micro_batch is not None:
        cmd += ["--micro-batch", str(opts.micro_batch)]
    if device is not None:
        cmd += ["--device", device]
    if max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    if eval_tokens is not None:
        cmd += ["--eval-tokens", str(eval_tokens)]
    if not progress:
        cmd += ["--quiet"]
    return cmd


def format_command(cmd: list[str]) -> str:
    return shlex.join(cmd)


def write_spec(spec: RunSpec, store) -> Path:
    path = spec_path(store, spec.run_id)
    rstore.atomic_write_text(path, json.dumps(spec.to_dict(), indent=1))
    return path


def worker_env(device: str | None) -> dict:
    """The launcher's environment: this interpreter's import path, and DeepSpeed's CPU
    accelerator when ``--device cpu`` asks for it on a machine with GPUs."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if device is not None and device.startswith("cpu"):
        env["DS_ACCELERATOR"] = "cpu"
    return env


# --------------------------------------------------------------------------------------------
# the worker


def checkpoint_dir(store, run_id: str) -> Path:
    return rstore.side_path(store, "checkpoints", run_id)


def _read_checkpoint_meta(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "run.json").read_text())
    except (OSError, ValueError):
        return None


def _write_checkpoint_meta(directory: Path, meta: dict) -> None:
    rstore.atomic_write_text(directory / "run.json", json.dumps(meta))


def _full_fp32_state(engine, rank: int) -> dict | None:
    """Every parameter's full fp32 value (collective: all ranks call it), as a state dict on rank
    0. Stage 0 in fp32 has no master copy: the module's own parameters are the weights."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, p in engine.module.named_parameters():
        full = safe_get_full_fp32_param(p)
        if full is None:
            full = p.detach()
        if rank == 0:
            state[name] = full.detach().to("cpu", torch.float32).clone()
    if rank == 0:
        for name, b in engine.module.named_buffers():
            state[name] = b.detach().cpu().clone()
    return state if rank == 0 else None


def _skip_shm_comm_build() -> None:
    """On CPU, ``deepspeed.init_distributed`` JIT-compiles DeepSpeed's shared-memory all-reduce
    kernel (``deepspeed_shm_comm``: about 2 minutes on 2 cores the first time on a machine, and a
    C++ compiler and ninja) whenever the op is marked compatible. It serves only
    ``inference_all_reduce`` (tensor-parallel inference); training reduces through
    torch.distributed (gloo), so the run does not need it: mark it unavailable."""
    import deepspeed.ops
    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def _grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if hasattr(norm, "item") else norm)


class DeepSpeedEngine:
    """The Trainer's engine for one run across DeepSpeed ranks (``runners.train.engines.Engine``):
    ``deepspeed.initialize`` around the local engine's model and AdamW, each rank's share of every
    global batch (micro-batches with gradient accumulation), one all-reduce per step that carries
    the mean loss and rank 0's wish to checkpoint; checkpoints are DeepSpeed's (a directory per run
    with ``run.json`` naming the complete tag); rank 0 writes. Built lazily, so nothing at module
    level imports torch or deepspeed."""

    K = 1
    cannot_evaluate_along = ("--eval-every scores the model inside the training loop: use --launcher local "
                             "or slurm (or score the finished runs with --eval alone)")

    def __init__(self, specs, hp, steps: int, store, options=None, *, zero_stage: int = 0,
                 micro_batch: int | None = None):
        import deepspeed
        import torch
        import torch.distributed as dist
        from datetime import timedelta

        from runners.train.engines import new_model
        from runners.train.settings import Settings

        (spec,) = specs
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        device = getattr(options, "device", None)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.cuda = torch.cuda.is_available() and not (device or "").startswith("cpu")
        if self.cuda:
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        else:
            device = "cpu"
            # K processes share the node's cores; without this each would start one thread per core
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_SIZE", "1"))))
            _skip_shm_comm_build()
        # long enough for rank 0's final evaluation while the others wait at the last barrier
        deepspeed.init_distributed(dist_backend="nccl" if self.cuda else "gloo", timeout=timedelta(hours=2))
        self.dist, self.torch = dist, torch
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.writes = self.rank == 0
        self.settings = Settings(device=device, dtype="bf16" if self.cuda else "fp32", compile=False,
                                 fused_adamw=False)
        self.spec, self.hp, self.steps, self.zero_stage = spec, hp, steps, zero_stage
        config = deepspeed_config(hp, self.world_size, zero_stage, "cuda" if self.cuda else "cpu", micro_batch)
        self.micro, self.accumulation = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
        self.net = new_model(spec)        # the same initial weights on every rank (and as a local run)
        optimizer = self.net.configure_optimizer(hp.lr, hp.weight_decay, (hp.beta1, hp.beta2),
                                                       "cuda" if self.cuda else "cpu", fused=False)
        self.engine, _, _, _ = deepspeed.initialize(model=self.net, optimizer=optimizer, config=config)
        self.ckpt_dir = checkpoint_dir(store, spec.run_id)
        self.expected = {"run_id": spec.run_id, "steps": steps, "batch_size": hp.batch_size,
                         "world_size": self.world_size, "zero_stage": zero_stage, "micro_batch_size": self.micro}
        # DeepSpeed records the global gradient norm of ZeRO and mixed-precision steps only; stage 0
        # in fp32 clips with torch's clip_grad_norm_ and drops the norm, so take it here
        self.own_grad_norm = zero_stage == 0 and not self.cuda
        self.row_extra = {"engine": "deepspeed", "launcher": "deepspeed", "world_size": self.world_size, "zero_stage": zero_stage,
                          "micro_batch_size": self.micro, "gradient_accumulation_steps": self.accumulation,
                          "deepspeed_version": deepspeed.__version__}

    def step(self, batches, lr, want_checkpoint=False):
        from runners.train.settings import to_device
        torch, engine, rank, world = self.torch, self.engine, self.rank, self.world_size
        device = self.settings.device
        ((x, y),) = batches
        x, y = x[rank::world], y[rank::world]        # this rank's share of the global batch
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        loss_sum, own_norm = torch.zeros((), device=device), None
        for m in range(self.accumulation):
            rows = slice(m * self.micro, (m + 1) * self.micro)
            _, loss = engine(to_device(x[rows], device), to_device(y[rows], device))
            engine.backward(loss)
            if self.own_grad_norm and m == self.accumulation - 1:   # reduced, not yet clipped
                own_norm = torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(p.grad) for p in engine.module.parameters() if p.grad is not None]))
            engine.step()
            loss_sum += loss.detach().float()
        grad_norm = _grad_norm(engine) if own_norm is None else float(own_norm)
        # one collective per step: the global batch's mean loss, and rank 0's checkpoint call
        stats = torch.stack([loss_sum / self.accumulation,
                             torch.tensor(float(want_checkpoint and rank == 0), device=device)])
        self.dist.all_reduce(stats)
        return [stats[0].item() / world], [grad_norm], stats[1].item() > 0

    def freeze(self, k: int) -> None:
        pass

    def save(self, step: int, clients: list[dict]) -> None:
        """Collective. The tag is saved, then ``run.json`` names it, then older tags go: a kill at
        any point leaves ``run.json`` pointing at a complete checkpoint."""
        tag = f"step{step}"
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag,
                                    client_state={**self.expected, **clients[0], "step": step})
        self.dist.barrier()
        if self.rank == 0:
            _write_checkpoint_meta(self.ckpt_dir, {**self.expected, "tag": tag})
            for old in self.ckpt_dir.iterdir():
                if old.is_dir() and old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)

    def restore(self) -> list[dict] | None:
        meta = _read_checkpoint_meta(self.ckpt_dir)
        if meta is not None and {k: meta.get(k) for k in _CHECKPOINT_KEYS} == self.expected:
            _, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag=meta["tag"], load_optimizer_states=True,
                                                    load_lr_scheduler_states=False)
            return [{"step": client["step"], "curve": [tuple(c) for c in client["curve"]], "ema": client["ema"],
                     "wall_time_s": client["wall_time_s"]}]
        if self.ckpt_dir.exists():
            if self.rank == 0:
                log.warning("ignoring checkpoint %s: it was written with other settings", self.ckpt_dir)
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            self.dist.barrier()
        return None

    def drop(self, k: int) -> None:
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)

    def model(self, k: int):
        """The full fp32 weights in a plain model on rank 0 (collective: every rank takes part)."""
        from runners.models.arch import build_model
        from runners.models.gpt import GPTConfig

        state = _full_fp32_state(self.engine, self.rank)
        if self.rank != 0:
            return None
        final = build_model(GPTConfig.from_spec(self.spec)).to(self.settings.device)
        missing, unexpected = final.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"}               # the tied matrix appears once among parameters
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"gathered weights do not fit the model: missing {missing}, unexpected {unexpected}")
        return final

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()

    def close(self) -> None:
        self.dist.barrier()


def train_distributed(spec: RunSpec, store, *, zero_stage: int = 0, device: str | None = None,
                      progress: bool = True, log_every: int = 50, checkpoint_every_s: float = 30.0,
                      max_steps: int | None = None, micro_batch: int | None = None, cache_dir=None,
                      eval_tokens: int | None = None) -> dict:
    """Train ``spec`` on this rank of a DeepSpeed job through the one Trainer
    (``runners.train.trainer.train_runs`` on ``DeepSpeedEngine``); rank 0 writes the row and the
    loss curve. ``max_steps`` stops after that many steps (counted from step 0) leaving a
    checkpoint and no row (``status: "running"``), as on every engine. The launcher runs one job
    per run, so the ranks do not claim it."""
    import functools

    from runners.train import trainer as rtrain
    from runners.train.options import TrainOptions

    options = TrainOptions(device=device, progress=progress, log_every=log_every,
                           checkpoint_every_s=checkpoint_every_s, max_steps=max_steps, cache_dir=cache_dir,
                           eval_tokens=eval_tokens)
    engine = functools.partial(DeepSpeedEngine, zero_stage=zero_stage, micro_batch=micro_batch)
    return rtrain.train_runs([spec], store, options, engine, claim=False)[0]


# --------------------------------------------------------------------------------------------
# the worker's command line (what the deepspeed launcher runs on every rank)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.train.distributed",
                       description="One rank of a DeepSpeed run; started by --launcher deepspeed.",
                       epilog="example (what runners.isoflop --launcher deepspeed --nproc-per-node 2 runs):\n"
                              "  python -m deepspeed.launcher.runner --num_gpus 2 --no_local_rank --module "
                              "runners.train.distributed --spec results/_deepspeed/RUN.json --store results --zero 1")
    p.add_argument("--spec", required=True, help="RunSpec JSON file (written by the launcher)")
    p.add_argument("--store", required=True)
    p.add_argument("--zero", type=int, default=0, choices=ZERO_STAGES)
    p.add_argument("--device", default=None, help="cpu forces CPU training on a GPU machine")
    p.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--eval-tokens", type=int, default=None, metavar="N")
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = RunSpec.from_dict(json.loads(Path(args.spec).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read --spec {args.spec!r}: {exc}") from None
    row = train_distributed(spec, args.store, zero_stage=args.zero, device=args.device, progress=not args.quiet,
                            checkpoint_every_s=args.checkpoint_every, max_steps=args.max_steps,
                            micro_batch=args.micro_batch, eval_tokens=args.eval_tokens)
    return 0 if row.get("status", "ok") in ("ok", "running") else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
