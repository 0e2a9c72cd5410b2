"""Experiment grids as data: lists of frozen ``RunSpec``s (Muennighoff et al. 2023, §3-4).

Two grids of the data-constrained paper ("Scaling Data-Constrained Language Models"):

* ``isoflop_grid``: at one compute budget C, the compute-optimal model trained at several
  unique-data levels (1 to ~44 epochs; the paper's levels for named budgets), plus several model
  sizes on the same budget at full data to trace the isoFLOP curve. Every run spends C = 6 N D.
* ``isounique_grid``: unique data fixed (the paper: 100M, 400M, 1.5B tokens), model sizes x epochs.

A plan knows nothing about how it is run: ``runners.train.launch`` executes any list of specs. Nothing
here imports torch, so dry-runs are instant.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scaling import accounting
from scaling.humanise import count as human
from scaling.accounting import AccountingError, Budget, Shape
from runners.grid.spec import RunSpec

#: Perplexity filters and deduplication of the paper (§3; C4 also the 25-75 percentile band).
VALID_FILTERS = ("none", "ppl25", "ppl50", "ppl25-75", "dedup")

#: Default epoch counts of an isoUniqueData grid (the paper: value of repetition is ~gone by ~40).
ISOUNIQUE_EPOCHS = (1, 2, 4, 8, 16, 32)

#: Unique data at or above this many tokens is "paper scale" (GPT-2 vocab, Table A9 shapes).
PAPER_SCALE_UNIQUE = 1e8

#: Rough throughput model of this machine (a 2-core CPU, float32, the tiny shapes at 128 tokens of
#: context): seconds per token = PER_TOKEN_S + 6 N / CPU_FLOPS_PER_S. The constant term is the
#: per-token work the 6 N count ignores at tiny sizes (attention, norms, optimizer, Python); it
#: dominates below ~100K parameters. Fitted to train_run's measured throughput (t32 ~100K tok/s,
#: t64 ~35K, t128 ~13K, t256 ~3K; docs/benchmarks.md); override with ``SCALING_FLOPS_PER_S`` /
#: ``SCALING_PER_TOKEN_S``.
CPU_FLOPS_PER_S = 6e10
PER_TOKEN_S = 1e-5
#: Fixed cost per run (model build, data loading, final evaluation, store write), in seconds.
RUN_OVERHEAD_S = 3.0


# ---------------------------------------------------------------------------------------------
# validation of the axes shared by both grids

def _validate_axes(code_fractions, filters, seeds) -> tuple[tuple[float, ...], tuple[str, ...], tuple[int, ...]]:
    cfs = tuple(float(c) for c in code_fractions)
    for c in cfs:
        if not (0.0 <= c <= 1.0):
            raise AccountingError(f"code fraction must be in [0, 1], got {c:g}")
    fs = tuple(str(f) for f in filters)
    for f in fs:
        if f not in VALID_FILTERS:
            raise AccountingError(f"unknown filter {f!r} (valid: {', '.join(VALID_FILTERS)})")
    ss = tuple(seeds)
    for s in ss:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise AccountingError(f"seeds must be non-negative integers, got {s!r}")
    if not cfs or not fs or not ss:
        raise AccountingError("code fractions, filters and seeds must each have at least one value")
    return cfs, fs, ss


def _mix_axis(mixes, code_fractions) -> list[tuple[float, str]]:
    """(code_fraction, mix) pairs of a grid: the given mixtures (their code share recorded for
    grouping), else the code fractions with no mix."""
    if not mixes:
        return [(c, "") for c in code_fractions]
    from runners.grid.spec import parse_mix
    return [(float(parse_mix(m).get("code", 0.0)), m) for m in mixes]


def _positive(values, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not out:
        raise AccountingError(f"no {what} given")
    for v in out:
        if not (v > 0) or not math.isfinite(v):
            raise AccountingError(f"{what} must be positive, got {v:g}")
    return out


def _shapes_by_name(names: Iterable[str]) -> list[Shape]:
    shapes = [accounting.shape(str(n).strip()) for n in names]
    if not shapes:
        raise AccountingError("no model sizes given")
    return shapes


def _spec(shape: Shape, *, vocab: int, seq_len: int, tokens: float, unique: float, grid: str,
          budget: str, code_fraction: float, filter: str, seed: int, data: str, tokenizer: str,
          text_column: str = "text", flops_convention: str = "6N", mix: str = "",
          domain_column: str = "", arch: str = "gpt", activation: str = "gelu") -> RunSpec:
    tokens = int(round(tokens))
    # unique data beyond the tokens trained on is never seen: cap at one epoch
    unique = max(1, min(int(round(unique)), tokens))
    return RunSpec(shape=shape.name, d_model=shape.d_model, ffw_size=shape.ffw_size,
                   n_heads=shape.attention_heads, n_layers=shape.n_layers, vocab_size=vocab,
                   seq_len=seq_len, tokens=tokens, unique_tokens=unique, code_fraction=code_fraction,
                   filter=filter, seed=seed, data=data, tokenizer=tokenizer, grid=grid, budget=budget,
                   text_column=text_column, flops_convention=flops_convention, mix=mix,
                   domain_column=domain_column, arch=arch, activation=activation)


def default_tokenizer(cpu: bool) -> str:
    """Byte-level on CPU scale; at paper scale the GPT-2 tokenizer the paper's vocabulary implies."""
    return "byte" if cpu else "gpt2"


def _dedupe(specs: Iterable[RunSpec]) -> list[RunSpec]:
    seen, out = set(), []
    for s in specs:
        if s.run_id not in seen:
            seen.add(s.run_id)
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# isoFLOP grid

def spread_shapes(center: float, pool: dict[str, Shape], vocab: int, seq_len: int,
                  n_sizes: int = 5, factor: float = 4.0) -> list[Shape]:
    """``n_sizes`` distinct shapes spread around ``center`` params: the nearest shapes to
    ``center * factor**k`` for k = -n//2 .. n//2, topped up with the shapes nearest to ``center``
    when the table runs out (e.g. at the bottom of the tiny table). Sorted by size."""
    ks = range(-(n_sizes // 2), n_sizes - n_sizes // 2)
    chosen: list[Shape] = []
    for k in ks:
        s = accounting.nearest_shape(center * factor ** k, vocab, seq_len, pool)
        if s not in chosen:
            chosen.append(s)
    by_distance = sorted(pool.values(), key=lambda s: abs(math.log(s.params(vocab, seq_len) / center)))
    for s in by_distance:
        if len(chosen) >= n_sizes:
            break
        if s not in chosen:
            chosen.append(s)
    return sorted(chosen, key=lambda s: s.params(vocab, seq_len))


def optimal_shape(budget: Budget) -> Shape:
    """The shape nearest (in log-params) to the budget's compute-optimal model size."""
    return accounting.nearest_shape(budget.optimal_params, budget.vocab, budget.seq_len, budget.shape_pool)


def isoflop_grid(budget: Budget, *, unique: Sequence[float] | None = None,
                 epochs: Sequence[float] | None = None, code_fractions=None, filters=("none",),
                 seeds=(0,), n_sizes: int | None = None, data: str = "embedded",
                 tokenizer: str | None = None, text_column: str = "text",
                 flops_convention: str | None = None, mixes=None, domain_column: str = "",
                 arch: str = "gpt", activation: str = "gelu") -> list[RunSpec]:
    """All runs of one budget's isoFLOP grid; every run has FLOPs = budget.flops (up to rounding
    the token count to an integer), counted in ``flops_convention`` (``scaling.accounting``:
    D = C / FLOPs-per-token of the shape in that convention; None: the budget's own, ``6N`` but for
    the ``tiny`` preset).

    (a) The compute-optimal shape (nearest to ``budget.optimal_params``) at each unique-data level:
        the paper's levels for named budgets (2b8: 55, 28, 18, 14, 11, 9, 4, 1.25 B tokens),
        otherwise ``UNIQUE_RATIOS * D`` with D = C / 6N of that shape. ``unique`` (token counts)
        replaces the levels; ``epochs`` replaces them with D / epochs.
    (b) ``n_sizes`` model sizes spread around the optimum (nearest shapes to N_opt * 4^k) at full
        data (unique = tokens = C / 6N, one epoch). The optimum's own full-data run is left out
        when (a) already trains it within 1% of one epoch.

    Levels above D are capped at D (unseen unique data changes nothing). Crossed with
    ``code_fractions`` (default: the budget's own, 0 but for the ``tiny`` preset) x ``filters`` x
    ``seeds``; duplicates removed. With one seed, a budget's ``replicate_widest`` widest sizes at
    full data also run the next seed (the ``tiny`` preset: 2). ``tokenizer=None`` means
    ``byte`` for CPU budgets and ``gpt2`` otherwise (the vocabulary the budget's shapes assume).
    ``arch`` (``runners.models.arch``) builds each shape as that architecture; tokens are then what the
    budget buys at that architecture's FLOPs per token (a plug-in: 6 N of its own count), so two
    architectures' grids of one budget are compared at equal FLOPs. The shapes are the budget's.
    """
    if code_fractions is None:
        code_fractions = (budget.code_fraction,)
    cfs, fs, ss = _validate_axes(code_fractions, filters, seeds)
    mix_axis = _mix_axis(mixes, cfs)
    n_sizes = budget.n_sizes if n_sizes is None else n_sizes
    if unique is not None and epochs is not None:
        raise AccountingError("give unique-data levels or epochs, not both")
    if isinstance(n_sizes, bool) or not isinstance(n_sizes, int) or n_sizes < 1:
        raise AccountingError(f"n_sizes must be a positive integer, got {n_sizes!r}")
    tokenizer = tokenizer or default_tokenizer(budget.cpu)
    pool = budget.shape_pool
    V, S = budget.vocab, budget.seq_len
    best = optimal_shape(budget)
    flops_convention = accounting.check_convention(flops_convention or budget.flops_convention)

    def tokens_for(shape: Shape) -> float:
        if arch not in accounting.ARCHS:
            probe = _spec(shape, vocab=V, seq_len=S, tokens=1, unique=1, grid="isoflop", budget=budget.name,
                          code_fraction=0.0, filter="none", seed=0, data=data, tokenizer=tokenizer or "byte",
                          arch=arch, activation=activation)
            if flops_convention != "6N":
                raise AccountingError(f"--arch {arch}: a plug-in architecture spends its budget in 6N only")
            return accounting.tokens_for(budget.flops, probe.params)
        return budget.flops / accounting.flops_per_token(
            flops_convention, d_model=shape.d_model, ffw_size=shape.ffw_size, n_layers=shape.n_layers,
            vocab=V, seq_len=S, arch=arch, activation=activation)

    d_best = tokens_for(best)
    if unique is not None:
        levels = _positive(unique, "unique-data levels")
    elif epochs is not None:
        levels = tuple(d_best / e for e in _positive(epochs, "epochs"))
    elif budget.unique_levels:
        levels = tuple(budget.unique_levels)
    else:
        levels = tuple(r * d_best for r in (budget.unique_ratios or accounting.UNIQUE_RATIOS))

    # (shape, tokens, unique) points, then the cross product with the other axes
    points: list[tuple[Shape, float, float]] = [(best, d_best, u) for u in levels]
    best_at_full = any(d_best / min(u, d_best) <= 1.01 for u in levels)
    for s in spread_shapes(best.params(V, S), pool, V, S, n_sizes, budget.size_factor):
        if s == best and best_at_full:
            continue
        d = tokens_for(s)
        points.append((s, d, d))
    runs = [(s, d, u, ss) for (s, d, u) in points]
    if len(ss) == 1 and budget.replicate_widest:
        # the widest sizes take the fewest optimiser steps, and tiny runs with few steps part most
        # between seeds (when each leaves the unigram plateau): a second seed there, cheap in time
        full = sorted({s.name: s for (s, d, u) in points if d == u}.values(), key=lambda s: s.params(V, S))
        widest = {s.name for s in full[-budget.replicate_widest:]}
        runs += [(s, d, u, (ss[0] + 1,)) for (s, d, u) in points if s.name in widest and d == u]
    specs = [_spec(s, vocab=V, seq_len=S, tokens=d, unique=u, grid="isoflop", budget=budget.name,
                   code_fraction=c, filter=f, seed=seed, data=data, tokenizer=tokenizer,
                   text_column=text_column, flops_convention=flops_convention, mix=mx, domain_column=domain_column,
                   arch=arch, activation=activation)
             for (s, d, u, seeds) in runs for c, mx in mix_axis for f in fs for seed in seeds]
    return _dedupe(specs)


def planned_grid(points: Sequence[tuple[float, float, float]], *, code_fractions=None, filters=("none",),
                 seeds=(0,), data: str = "embedded", tokenizer: str | None = None, text_column: str = "text",
                 flops_convention: str | None = None, mixes=None, domain_column: str = "",
                 arch: str = "gpt", activation: str = "gelu",
                 shapes: Sequence[str | None] | None = None) -> list[RunSpec]:
    """The runs of a plan (``scaling.design --out``): each (params, tokens, unique) point trained at
    its ``shapes`` entry when the plan names one (a design in a FLOP convention does), else at the
    shape nearest its N among the shapes of its compute's budget (CPU shapes and the byte tokenizer
    below 1e17 FLOPs, the paper's above), for the tokens planned; crossed with the other axes. The
    shape tables are discrete, so a run's N is the nearest shape's, not the plan's exactly."""
    specs = []
    for i, (n, d, u) in enumerate(points):
        budget, pool = accounting.planned_pool(n, d)
        shape = planned_shape(shapes[i] if shapes is not None else None, n, budget, pool)
        cfs, fs, ss = _validate_axes(code_fractions if code_fractions is not None else (budget.code_fraction,),
                                     filters, seeds)
        tok = tokenizer or default_tokenizer(budget.cpu)
        conv = accounting.check_convention(flops_convention or budget.flops_convention)
        specs += [_spec(shape, vocab=budget.vocab, seq_len=budget.seq_len, tokens=d, unique=u, grid="plan",
                        budget=budget.name, code_fraction=c, filter=f, seed=seed, data=data, tokenizer=tok,
                        text_column=text_column, flops_convention=conv, mix=mx, domain_column=domain_column,
                        arch=arch, activation=activation)
                  for c, mx in _mix_axis(mixes, cfs) for f in fs for seed in ss]
    return _dedupe(specs)


def planned_shape(name, params: float, budget, pool) -> Shape:
    """The shape a plan names (any of ``accounting.SHAPES``), else the one of ``pool`` nearest ``params``."""
    if name is None or (isinstance(name, float) and math.isnan(name)) or str(name).strip() == "":
        return accounting.nearest_shape(params, budget.vocab, budget.seq_len, pool)
    if str(name) not in accounting.SHAPES:
        raise AccountingError(f"the plan names shape {name!r}, which is not one of the shapes a runner trains "
                              f"({', '.join(sorted(accounting.SHAPES))})")
    return accounting.SHAPES[str(name)]


# ---------------------------------------------------------------------------------------------
# isoUniqueData grid

def default_isounique_shapes(unique_tokens: float, cpu: bool, max_epochs: float = 40.0,
                             n_sizes: int = 6) -> list[Shape]:
    """Model sizes for a fixed amount of unique data: log-spaced from the smallest shape (7M at
    paper scale, t24 on CPU) up to about the compute-optimal size for ``max_epochs`` epochs of it
    (N ~= D / 20 with D = max_epochs * unique), at least three shapes."""
    pool = accounting.TINY_SHAPES if cpu else accounting.PAPER_SHAPES
    V, S = (accounting.CPU_VOCAB, accounting.CPU_SEQ_LEN) if cpu else (accounting.PAPER_VOCAB, accounting.PAPER_SEQ_LEN)
    ordered = sorted(pool.values(), key=lambda s: s.params(V, S))
    lo = ordered[0].params(V, S)
    hi = max(max_epochs * unique_tokens / accounting.TOKENS_PER_PARAM, lo)
    targets = [lo * (hi / lo) ** (i / (n_sizes - 1)) for i in range(n_sizes)]
    chosen: list[Shape] = []
    for t in targets:
        s = accounting.nearest_shape(t, V, S, pool)
        if s not in chosen:
            chosen.append(s)
    for s in ordered:  # top up from the small end when the range is narrow
        if len(chosen) >= 3:
            break
        if s not in chosen:
            chosen.append(s)
    return sorted(chosen, key=lambda s: s.params(V, S))


def isounique_grid(unique_tokens: float, *, shapes: Sequence[str] | None = None,
                   epochs: Sequence[float] = ISOUNIQUE_EPOCHS, cpu: bool | None = None,
                   code_fractions=None, filters=("none",), seeds=(0,), data: str = "embedded",
                   tokenizer: str | None = None, text_column: str = "text",
                   flops_convention: str = "6N", mixes=None, domain_column: str = "",
                   arch: str = "gpt", activation: str = "gelu") -> list[RunSpec]:
    """Fixed unique data, model sizes x epochs (tokens = unique x epochs); ``flops_convention``
    only says how the runs' ``flops`` column counts (there is no budget to spend).

    ``cpu=None`` decides by scale: unique data below 1e8 tokens uses the tiny shapes, byte vocab
    and ``CPU_SEQ_LEN``; at or above it (the paper's 100M, 400M, 1.5B) the paper's shapes, GPT-2
    vocab and 2048 context. Default sizes: ``default_isounique_shapes``.
    """
    (unique_tokens,) = _positive([unique_tokens], "unique tokens")
    eps = _positive(epochs, "epochs")
    cfs, fs, ss = _validate_axes((0.0,) if code_fractions is None else code_fractions, filters, seeds)
    mix_axis = _mix_axis(mixes, cfs)
    cpu = unique_tokens < PAPER_SCALE_UNIQUE if cpu is None else bool(cpu)
    V, S = (accounting.CPU_VOCAB, accounting.CPU_SEQ_LEN) if cpu else (accounting.PAPER_VOCAB, accounting.PAPER_SEQ_LEN)
    tokenizer = tokenizer or default_tokenizer(cpu)
    chosen = _shapes_by_name(shapes) if shapes is not None else default_isounique_shapes(unique_tokens, cpu)
    name = "u" + human(unique_tokens)
    specs = [_spec(s, vocab=V, seq_len=S, tokens=unique_tokens * e, unique=unique_tokens,
                   grid="isounique", budget=name, code_fraction=c, filter=f, seed=seed, data=data,
                   tokenizer=tokenizer, text_column=text_column,
                   flops_convention=accounting.check_convention(flops_convention or "6N"), mix=mx,
                   domain_column=domain_column, arch=arch, activation=activation)
             for s in chosen for e in eps for c, mx in mix_axis for f in fs for seed in ss]
    return _dedupe(specs)


# ---------------------------------------------------------------------------------------------
# costs

def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AccountingError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise AccountingError(f"{name} must be a non-negative number, got {raw!r}")
    return value


def throughput_here() -> tuple[float, float]:
    """(FLOP/s, seconds per token of overhead) assumed by ``estimate_seconds_here``."""
    return (_env_float("SCALING_FLOPS_PER_S", CPU_FLOPS_PER_S) or CPU_FLOPS_PER_S,
            _env_float("SCALING_PER_TOKEN_S", PER_TOKEN_S))


def throughput_overridden() -> bool:
    """Whether ``SCALING_FLOPS_PER_S`` or ``SCALING_PER_TOKEN_S`` is set: a throughput given by hand
    wins over one measured."""
    return any(os.environ.get(k) for k in ("SCALING_FLOPS_PER_S", "SCALING_PER_TOKEN_S"))


@dataclass(frozen=True)
class Throughput:
    """A throughput model measured on this machine: seconds per token = ``per_token_s`` + 6 N /
    ``flops_per_s``, from ``runs`` finished runs at ``threads`` torch thread(s) each on ``machine``."""
    flops_per_s: float
    per_token_s: float
    runs: int
    threads: int
    machine: str
    #: seconds per run outside the loop (set-up, final evaluation): the median over the runs that
    #: record ``run_time_s``, else ``RUN_OVERHEAD_S``
    overhead_s: float = RUN_OVERHEAD_S


#: Fewest finished runs (of at least two sizes) a throughput is calibrated from.
MIN_CALIBRATION_RUNS = 3


def calibrate(rows, machine: str, threads: int) -> Throughput | None:
    """The throughput of this machine, fitted to a store's finished runs that trained here (rows
    whose ``cpu_model`` is ``machine`` and ``threads`` is ``threads``, one model per step, not
    resumed): non-negative least squares of each run's seconds per token (1 / ``tokens_per_s``,
    evaluation along training excluded) on 1 and 6 N, relative to it. The constants above were
    measured on an AMD EPYC, and machines differ (a Xeon with AMX trains the demo's runs about twice
    as fast); None with fewer than ``MIN_CALIBRATION_RUNS`` such runs or one size only."""
    import numpy as np
    from scipy.optimize import nnls

    need = {"cpu_model", "threads", "tokens_per_s", "params", "status"}
    if rows is None or len(rows) == 0 or not need <= set(rows.columns):
        return None
    ok = (rows["status"] == "ok") & (rows["cpu_model"] == machine) & (rows["threads"] == threads)
    ok &= rows["tokens_per_s"].astype(float) > 0
    if "engine" in rows.columns:              # DeepSpeed's ranks share the run
        ok &= rows["engine"].fillna("local") != "deepspeed"
    if "batched_with" in rows.columns:        # K stacked models share each step
        ok &= rows["batched_with"].fillna(1).astype(float) <= 1
    if "resumed_from_step" in rows.columns:
        ok &= rows["resumed_from_step"].fillna(0).astype(float) == 0
    if "arch" in rows.columns:
        ok &= rows["arch"].fillna("gpt") == "gpt"
    used = rows[ok]
    if len(used) < MIN_CALIBRATION_RUNS or used["params"].nunique() < 2:
        return None
    y = 1.0 / used["tokens_per_s"].to_numpy(float)
    X = np.stack([np.ones_like(y), 6.0 * used["params"].to_numpy(float)], axis=1)
    (per_token, per_flop), _ = nnls(X / y[:, None], np.ones_like(y))
    if not per_flop > 0:
        return None
    overhead = RUN_OVERHEAD_S
    if "run_time_s" in used.columns:
        around = used["run_time_s"].astype(float) - used["wall_time_s"].astype(float)
        if "eval_time_s" in used.columns:           # evaluation along training: estimated apart
            around -= used["eval_time_s"].astype(float).fillna(0.0)
        around = around[np.isfinite(around)]
        if len(around):
            overhead = float(max(0.0, np.median(around)))
    return Throughput(flops_per_s=float(1.0 / per_flop), per_token_s=float(per_token), runs=len(used),
                      threads=int(threads), machine=machine, overhead_s=overhead)


def estimate_seconds_here(spec: RunSpec, tokens_per_s_fn=None, throughput: Throughput | None = None) -> float:
    """Rough wall time of one run on this machine: ``tokens * (PER_TOKEN_S + 6 N / FLOP/s)``
    plus ``RUN_OVERHEAD_S`` (a measured ``throughput``'s numbers instead of the constants when
    given: ``calibrate``); or ``tokens / tokens_per_s_fn(spec)`` when a throughput model is
    given (e.g. one measured by a benchmark)."""
    if tokens_per_s_fn is not None:
        return spec.tokens / float(tokens_per_s_fn(spec)) + RUN_OVERHEAD_S
    overhead = RUN_OVERHEAD_S
    if throughput is not None:
        flops_per_s, per_token, overhead = throughput.flops_per_s, throughput.per_token_s, throughput.overhead_s
    else:
        flops_per_s, per_token = throughput_here()
    if getattr(spec, "arch", "gpt") == "mamba":      # the scan's step loop: per token and block
        per_token += MAMBA_PER_TOKEN_LAYER_S * spec.n_layers
    return spec.tokens * per_token + accounting.flops(spec.params, spec.tokens) / flops_per_s + overhead


#: Extra seconds per token and Mamba block on a CPU (the selective scan loops over the sequence in
#: Python): 80 ms per 8 x 128-token step of a 2-block hybrid against GPT's 5 ms, here. A calibration
#: from that measurement: the dry run then says 2.3 min (one process) for the 9-run equal-FLOPs
#: grid whose runs trained 109 s in all (79 s wall with 2 workers; the dry run says 48 s for those).
MAMBA_PER_TOKEN_LAYER_S = 35e-6


def a100_gpu_hours(spec: RunSpec, mfu: float = 0.4) -> float:
    """A100 GPU-hours of one run at ``mfu`` (``scaling.accounting.a100_gpu_hours``)."""
    return accounting.a100_gpu_hours(spec.flops, mfu=mfu)


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """The optimiser steps after which evaluation along training scores a run of ``steps`` steps
    (``--eval-every``): 0 (the initial model), every, 2*every, ... and the last."""
    return sorted(set(range(0, int(steps) + 1, int(every))) | {int(steps)})


#: Evaluation along training on a CPU, measured on a 2-core EPYC (t32, 40 cloze items, 2 domains):
#: lm-eval's own cost per task and checkpoint, and loading the tasks once per run
EVAL_TASK_OVERHEAD_S = 0.03
EVAL_SETUP_S = 1.0
#: validation tokens per domain scored at each checkpoint (``runners.eval.along``)
CHECKPOINT_VALIDATION_TOKENS = 8192


def estimate_eval_seconds_here(spec: RunSpec, steps: int, every: int, n_tasks: int, limit: int | None,
                               choices: int = 4, domains: int = 2) -> float:
    """Rough seconds of evaluation along training for one run: forward passes only (a third of a
    training token's cost) over each checkpoint's task items (``limit`` per task, 500 when unset,
    ``choices`` continuations of at most 128 tokens each) and validation windows, plus lm-eval's own
    overhead."""
    flops_per_s, per_token = throughput_here()
    tokens = n_tasks * (limit or 500) * choices * min(spec.seq_len, 128) + domains * CHECKPOINT_VALIDATION_TOKENS
    per_checkpoint = (tokens * per_token / 3 + accounting.flops(spec.params, tokens) / 3 / flops_per_s
                      + n_tasks * EVAL_TASK_OVERHEAD_S)
    return EVAL_SETUP_S + len(checkpoint_steps(steps, every)) * per_checkpoint
