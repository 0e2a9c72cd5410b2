"""Execute a list of ``RunSpec``s against a store, skipping runs already finished.

The launcher knows specs and a store, nothing about grids: any plan can be launched, and rerunning
the same command trains only what is missing (runs whose store row is not ``ok``; ``train_run``
resumes from a run's checkpoint when one exists).

Launchers are looked up by name in ``LAUNCHERS`` (``local``, ``deepspeed``, ``slurm``); to add one,
write a function ``(specs, store, options: TrainOptions, *, limit, **its_own) -> LaunchSummary`` and
register it there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from scaling.cli import UsageError
from scaling.store import completed_run_ids
from runners.grid.spec import RunSpec
from runners.train.options import TrainOptions

log = logging.getLogger(__name__)


@dataclass
class LaunchSummary:
    """What a launch did, by run_id."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: runs not attempted because of ``limit``
    deferred: list[str] = field(default_factory=list)
    #: job ids of submitted work (slurm)
    submitted: list[str] = field(default_factory=list)
    #: runs another launcher on the same store was training or had just finished
    elsewhere: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def summary(self) -> str:
        parts = [f"trained {len(self.trained)}", f"skipped {len(self.skipped)} (already ok)",
                 f"failed {len(self.failed)}"]
        if self.elsewhere:
            parts.append(f"left {len(self.elsewhere)} to another launcher on this store")
        if self.deferred:
            parts.append(f"not started {len(self.deferred)} (--limit)")
        if self.submitted:
            parts.append(f"submitted {len(self.submitted)} job(s): {' '.join(self.submitted[:5])}"
                         + (" ..." if len(self.submitted) > 5 else ""))
        text = ", ".join(parts)
        if self.failed:
            text += "\nfailed runs: " + " ".join(self.failed)
        return text


def todo(specs: Sequence[RunSpec], store) -> list[RunSpec]:
    """The specs whose run is not yet ``ok`` in the store, in order."""
    done = completed_run_ids(store)
    return [s for s in specs if s.run_id not in done]


def _pending(specs: Sequence[RunSpec], store, limit: int | None) -> tuple[LaunchSummary, list[RunSpec]]:
    """A summary with the already-``ok`` runs skipped and the ones beyond ``limit`` deferred, and
    the specs left to run. A skipped run's leftover checkpoint (a launcher killed after the run's
    row was written and before its checkpoint was removed) is removed now."""
    summary = LaunchSummary()
    done = completed_run_ids(store)
    summary.skipped = [s.run_id for s in specs if s.run_id in done]
    from scaling.store import checkpoint_path, remove_with_abandoned_writes
    for run_id in summary.skipped:
        remove_with_abandoned_writes(checkpoint_path(store, run_id))
    pending = [s for s in specs if s.run_id not in done]
    if limit is not None:
        summary.deferred = [s.run_id for s in pending[limit:]]
        pending = pending[:limit]
    return summary, pending


#: runs below this many parameters are "tiny": per-op overhead, not FLOPs, sets their speed, and
#: one thread per process (several processes) uses the cores better than threads in one
TINY_PARAMS = 2_000_000


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_policy(specs: Sequence[RunSpec], workers, device: str | None) -> tuple[int, int]:
    """(processes, torch threads per process) for a local launch. ``workers="auto"``: on a CPU,
    when every run is tiny, one process per core (up to the number of runs), one thread each;
    otherwise one process with every core's threads. An integer forces the process count."""
    n = cores()
    on_cpu = _on_cpu(device)
    if workers in (None, "auto"):
        tiny = all(s.params < TINY_PARAMS for s in specs)
        workers = min(n, len(specs)) if on_cpu and tiny and len(specs) > 1 else 1
    workers = max(1, int(workers))
    return workers, max(1, n // workers)


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


#: one file per launcher training in its own process on this machine (host-local: the temp dir)
LAUNCHERS_DIR = Path(tempfile.gettempdir()) / "scaling-launchers"


def live_launchers(directory: Path) -> int:
    """Launchers registered in ``directory`` whose process is alive (at least 1); the files of
    dead ones (a SIGKILLed launcher leaves its file) are removed on the way."""
    n = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 1
    for f in entries:
        try:
            os.kill(int(f.name), 0)
        except ValueError:
            continue
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                f.unlink()
            continue
        except PermissionError:    # another user's launcher: alive, and on the same cores
            pass
        n += 1
    return max(n, 1)


@contextlib.contextmanager
def sharing_cores(directory: Path | None = None):
    """While this launcher trains in its own process, its torch threads are its share of this
    process's threads among the launchers training on the machine at the time. Two launchers of
    2 threads each on 2 cores spin against each other in OpenMP: one grid took 7 s alone and 50-136
    s as one of a pair (1 thread each: 6-7 s; ``OMP_WAIT_POLICY=PASSIVE`` instead costs a lone
    launcher 1.7x). Yields ``share()``, which sets the threads; the launcher calls it per unit."""
    import torch
    from runners.train.settings import torch_threads
    directory = Path(directory or LAUNCHERS_DIR)
    me = directory / str(os.getpid())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        me.touch()
    except OSError:              # unwritable temp dir: no sharing, as before
        me = None

    try:
        with torch_threads(None) as threads:
            def share() -> int:
                n = max(1, threads // live_launchers(directory))
                torch.set_num_threads(n)
                return n

            yield share
    finally:
        if me is not None:
            with contextlib.suppress(OSError):
                me.unlink()


def _worker_init(threads: int, parent: int | None = None) -> None:
    _die_with_parent(parent)
    import torch
    torch.set_num_threads(threads)


def _die_with_parent(parent: int | None) -> None:
    """A worker ends with the launcher that started it, even when the launcher is killed outright
    (SIGKILL gives it no chance to stop its pool): Linux's ``PR_SET_PDEATHSIG``. Otherwise an
    orphaned worker trains on, holding its run's claim, while a rerun of the grid waits for it."""
    import signal
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))            # PR_SET_PDEATHSIG
    except (OSError, AttributeError):                 # not Linux: the pool's own shutdown only
        return
    if parent is not None and os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def _train_unit(engine: str, unit: list[RunSpec], store, options: TrainOptions) -> list[dict]:
    """One unit of ``plan_units`` (one run on the local engine, or same-shape runs on the stacked
    engine), in this process or a worker (module level, so that it can be pickled)."""
    if engine == "stacked":
        from runners.train.batched import train_group
        return train_group(unit, store, options)
    from runners.train.trainer import train_runs  # lazy: torch is needed only when something is trained
    return train_runs(unit, store, options, skip_done=True)


def _on_cpu(device: str | None) -> bool:
    return (device or "cpu").startswith("cpu") or (device is None and not _cuda())


def plan_units(pending: Sequence[RunSpec], batch_runs, options: TrainOptions, threads: int,
               resuming: frozenset = frozenset()) -> list[tuple[str, list[RunSpec]]]:
    """What a local launch trains at a time: ``("stacked", runs)``, same-shape runs on the stacked
    engine (``runners.train.batched``), or ``("local", [run])`` on the local engine.

    Tiny GPT runs on a CPU (``TINY_PARAMS``) always train on the stacked engine, K = 1 included,
    so a grid's losses do not depend on ``--batch-runs``: the stacked engine gives each run the
    same numbers whatever K (bitwise here), whereas the local engine's kernels differ in the last
    bits and tiny runs amplify that (final losses 0.005-0.07 nats apart, like a change of seed;
    docs/benchmarks.md). ``batch_runs``: K, or ``auto`` = the K measured fastest per run on this
    machine (``batched.measured_k``; 1 where stacking does not pay). Other runs take the local
    engine unless an explicit K > 1 asks to stack them; runs to compile and other ``--arch`` always do.
    A run in ``resuming`` (it left a checkpoint) is a unit of its own: stacked runs resume together
    or not at all, so stacking it with a fresh run, or one stopped at another step, would start it
    over."""
    on_cpu, explicit = _on_cpu(options.device), batch_runs not in (None, "auto")
    want = max(1, int(batch_runs)) if explicit else None
    index = {s.run_id: i for i, s in enumerate(pending)}
    units: list[tuple[int, str, list[RunSpec]]] = []
    stack = []
    for s in pending:
        stackable = getattr(s, "arch", "gpt") == "gpt" and not options.compile
        if stackable and ((on_cpu and s.params < TINY_PARAMS) or (want or 1) > 1):
            stack.append(s)
        else:
            units.append((index[s.run_id], "local", [s]))
    if stack:
        from runners.train.batched import groups
        for members in groups(stack, len(stack)):              # every run of one shape and length
            k = want or 1
            if want is None and len(members) > 1:
                from runners.train.batched import measured_k
                chosen = measured_k(members[0], len(members), threads, options.cache_dir)
                k = chosen["k"]
                log.info("--batch-runs auto: %d at a time for %d %s runs (seconds per run-step by K: %s)", k,
                         len(members), members[0].shape,
                         ", ".join(f"{kk}: {v:.4f}" for kk, v in chosen["seconds_per_run_step"].items()))
            fresh = [m for m in members if m.run_id not in resuming]
            units += [(index[m.run_id], "stacked", [m]) for m in members if m.run_id in resuming]
            units += [(index[g[0].run_id], "stacked", g) for g in groups(fresh, k)] if fresh else []
    return [(engine, unit) for _, engine, unit in sorted(units, key=lambda u: u[0])]


def launch_local(specs: Sequence[RunSpec], store, options: TrainOptions, *, limit: int | None = None,
                 workers="auto", batch_runs="auto") -> LaunchSummary:
    """Train the missing runs, a unit at a time: a same-shape group of up to ``batch_runs`` runs on
    the stacked engine (``runners.train.batched``) or one run on the local engine; the units one
    after another in this process or, when ``thread_policy`` says so (tiny runs on a multi-core
    CPU), in several single-threaded worker processes at once. Every run writes its own row (the
    store serialises writers)."""
    summary, pending = _pending(specs, store, limit)
    order = [s.run_id for s in pending]
    ok: dict[str, bool] = {}
    progress = options.progress
    from scaling.store import checkpoint_path
    resuming = frozenset(s.run_id for s in pending if checkpoint_path(store, s.run_id).exists())
    units = plan_units(pending, batch_runs, options, thread_policy(pending, workers, options.device)[1], resuming)
    n_proc, threads = thread_policy([u[0] for _, u in units], workers, options.device)
    options = grid_precision(pending, options, threads if n_proc > 1 else None)
    bar = _progress(units, progress)
    # registered in both modes: a launcher's workers use cores too, so one training in its own
    # process beside them takes its share
    with sharing_cores() as share:
        if n_proc <= 1:
            for engine, unit in bar:
                share()
                if hasattr(bar, "set_postfix_str"):
                    spec = unit[0]
                    bar.set_postfix_str(f"{spec.shape} {spec.epochs:.3g} ep {spec.run_id}" + (f" x{len(unit)}" if len(unit) > 1 else ""))
                for spec, row in zip(unit, _train_unit(engine, unit, store, options)):
                    ok[spec.run_id] = _outcome(row)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed
            quiet = dataclasses.replace(options, progress=False)
            with ProcessPoolExecutor(max_workers=n_proc, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads, os.getpid())) as pool:
                futures = {pool.submit(_train_unit, engine, unit, str(store), quiet): unit for engine, unit in units}
                for fut in as_completed(futures):
                    try:
                        rows = fut.result()   # a crash in a worker is raised here, as it would be in-process
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)   # runs not started stay unstarted
                        raise
                    for spec, row in zip(futures[fut], rows):
                        ok[spec.run_id] = _outcome(row)
                    if hasattr(bar, "update"):
                        bar.update(1)
            if hasattr(bar, "close"):
                bar.close()
    for run_id in order:                 # plan order, whatever order they finished in
        outcome = ok.get(run_id)
        (summary.elsewhere if outcome == "elsewhere" else summary.trained if outcome else summary.failed).append(run_id)
    return summary


def grid_precision(specs: Sequence[RunSpec], options: TrainOptions, threads: int | None = None) -> TrainOptions:
    """``options`` with one dtype for every run of a CPU grid (``runners.train.cpu_dtype.decide_grid``:
    bf16 only where it pays over the whole grid, so that no sweep mixes precisions by model size),
    measured at the ``threads`` its runs train with (None: this process's). Unchanged where the
    dtype is given (by the options or by ``SCALING_CPU_DTYPE``, ``cpu_dtype.ENV``, which every run
    reads), on CUDA (bf16 throughout), and for grids without GPTs."""
    from runners.train.cpu_dtype import ENV, decide_grid
    gpts = [s for s in specs if getattr(s, "arch", "gpt") == "gpt"]
    if options.dtype is not None or os.environ.get(ENV) or not gpts or not _on_cpu(options.device):
        return options
    from runners.train.engines import probe_shape
    from runners.train.settings import torch_threads
    from runners.train.trainer import hparams
    shape_steps = []
    for s in gpts:
        hp = hparams(s.params, s.seq_len, tokens=s.tokens)
        shape_steps.append((probe_shape(s, hp), max(1, s.tokens // (hp.batch_size * s.seq_len))))
    with torch_threads(threads):
        decision = decide_grid(shape_steps)
    log.info("precision: %s (%s)", decision["dtype"], decision["reason"])
    return dataclasses.replace(options, dtype=decision["dtype"])


def _outcome(row: dict):
    """True (trained, ok), False (failed) or "elsewhere" (another launcher holds or finished it)."""
    from scaling.store import CLAIMED_ELSEWHERE
    status = row.get("status", "ok")
    return "elsewhere" if status == CLAIMED_ELSEWHERE else status == "ok"


def _progress(items, enabled: bool):
    if not enabled or not items:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional for the launcher
        return items
    return tqdm(items, desc="grid", unit="run", position=0, leave=True)


def parse_time(text: str) -> int:
    """``HH:MM:SS`` (or ``MM:SS``, or minutes) -> whole minutes, at least 1."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        raise UsageError(f"malformed --time {text!r} (expected HH:MM:SS)") from None
    if not parts or len(parts) > 3 or any(p < 0 for p in parts):
        raise UsageError(f"malformed --time {text!r} (expected HH:MM:SS)")
    h, m, sec = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return max(1, h * 60 + m + (1 if sec else 0))


@dataclass(frozen=True)
class SlurmOptions:
    """What a Slurm submission asks for; one array job, one task per missing run."""

    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    time: str = "04:00:00"
    #: submitit cluster: None picks Slurm when ``sbatch`` exists; "local" runs the jobs as local
    #: processes through the same submitit path (how the tests exercise it)
    cluster: str | None = None
    array_parallelism: int = 64
    wait: bool = False

    def parameters(self) -> dict:
        params = {"timeout_min": parse_time(self.time), "nodes": self.nodes, "gpus_per_node": self.gpus_per_node,
                  "slurm_array_parallelism": self.array_parallelism}
        if self.partition:
            params["slurm_partition"] = self.partition
        return params

    def describe(self, n_runs: int) -> str:
        return (f"would submit {n_runs} run(s) as one submitit array: partition {self.partition or '(default)'}, "
                f"{self.nodes} node(s) x {self.gpus_per_node} GPU(s), time limit {self.time}, "
                f"at most {self.array_parallelism} at once")


def train_one(spec_dict: dict, store: str, options: TrainOptions) -> str:
    """One run inside a submitted job (module level, so that submitit can pickle it)."""
    from runners.train.trainer import train_runs
    row = train_runs([RunSpec.from_dict(spec_dict)], store, dataclasses.replace(options, progress=False))[0]
    return str(row.get("status", "ok"))


def launch_slurm(specs: Sequence[RunSpec], store, options: TrainOptions, *, limit: int | None = None,
                 slurm: SlurmOptions | None = None) -> LaunchSummary:
    """Submit the missing runs through submitit (one array job); with ``wait`` (always for the
    local cluster) wait for them and report which finished ``ok``."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install -e '.[slurm]'") from None
    from pathlib import Path
    slurm = slurm or SlurmOptions()
    summary, pending = _pending(specs, store, limit)
    if not pending:
        return summary
    folder = Path(store) / "_slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=slurm.cluster)
    executor.update_parameters(**slurm.parameters())
    with executor.batch():
        jobs = [executor.submit(train_one, s.to_dict(), str(store), options) for s in pending]
    summary.submitted = [j.job_id for j in jobs]
    if not (slurm.wait or slurm.cluster in ("local", "debug")):
        summary.trained = []
        return summary
    for spec, job in zip(pending, jobs):
        try:
            status = job.result()
        except Exception as exc:   # a job that died: its run stays not-ok and is retried next time
            status = f"error: {str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}"
        (summary.trained if status == "ok" else summary.failed).append(spec.run_id)
    return summary


def launch_deepspeed(specs: Sequence[RunSpec], store, options: TrainOptions, *, limit: int | None = None,
                     deepspeed=None) -> LaunchSummary:
    """Train the missing runs one after another, each as its own DeepSpeed job started through
    the ``deepspeed`` launcher (``runners.train.distributed``): ``deepspeed.nproc_per_node`` processes
    on each of ``deepspeed.nodes`` nodes. A run is ``trained`` when its store row says ``ok``.
    The precision is DeepSpeed's (bf16 on CUDA, fp32 on CPU) and nothing is compiled, so a
    ``dtype``, ``compile`` or ``cache_dir`` asked of it is refused rather than dropped, and so is
    evaluation along training."""
    for name in ("dtype", "compile", "cache_dir"):
        if getattr(options, name) is not None:
            raise UsageError(f"--launcher deepspeed does not take {name} (precision is DeepSpeed's: bf16 on "
                             f"CUDA, fp32 on CPU; nothing is compiled); drop it or use --launcher local")
    device, progress = options.device, options.progress
    import subprocess
    import sys

    from runners.train import distributed
    from scaling.store import completed_run_ids

    if options.evaluates_along:
        raise UsageError(distributed.DeepSpeedEngine.cannot_evaluate_along)
    opts = deepspeed or distributed.DeepSpeedOptions()
    if device is not None and not device.startswith(("cpu", "cuda")):
        raise UsageError(f"--launcher deepspeed runs on cpu or cuda, not {device!r}")
    summary, pending = _pending(specs, store, limit)
    if not pending:
        return summary
    distributed.require_deepspeed()                   # before any process is started
    distributed.check_batches(pending, opts)
    if device is not None and device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available")
    env = distributed.worker_env(device)
    bar = _progress(pending, progress)
    for spec in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{spec.shape} {spec.epochs:.3g} ep {spec.run_id}")
        distributed.write_spec(spec, store)
        cmd = distributed.launch_command(
            spec, store, opts, master_port=distributed.free_port() if opts.nodes == 1 else None, device=device,
            checkpoint_every_s=options.checkpoint_every_s, max_steps=options.max_steps, progress=progress,
            eval_tokens=options.eval_tokens)
        # the workers' output goes to stderr: stdout keeps only the summary (--json)
        subprocess.run(cmd, env=env, stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None)
        ok = spec.run_id in completed_run_ids(store)
        (summary.trained if ok else summary.failed).append(spec.run_id)
        if ok:
            distributed.spec_path(store, spec.run_id).unlink(missing_ok=True)
    return summary


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


#: name -> launcher
LAUNCHERS: dict[str, Callable[..., LaunchSummary]] = {
    "local": launch_local,
    "deepspeed": launch_deepspeed,
    "slurm": launch_slurm,
}


def launch(specs: Sequence[RunSpec], store, launcher: str = "local", *, options: TrainOptions | None = None,
           limit: int | None = None, **opts) -> LaunchSummary:
    """Run every spec not already ``ok`` in ``store`` with the named launcher. How each run is
    trained travels as one ``TrainOptions`` (``options``, or its fields among ``opts``: ``device``,
    ``dtype``, ``compile``, ``max_steps``, ``cache_dir``, ``progress``, ...); the rest of ``opts``
    are the launcher's own (``workers``, ``batch_runs``; ``slurm``; ``deepspeed``)."""
    try:
        fn = LAUNCHERS[launcher]
    except KeyError:
        raise UsageError(f"unknown launcher {launcher!r} (known: {', '.join(LAUNCHERS)})") from None
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    options = dataclasses.replace(options or TrainOptions(), **{k: v for k, v in opts.items() if k in fields})
    own = {k: v for k, v in opts.items() if k not in fields}
    takes = inspect.signature(fn).parameters
    for name in own:
        if name not in takes:
            raise UsageError(f"--launcher {launcher} does not take {name}")
    return fn(list(specs), store, options, limit=limit, **own)
