"""Argument plumbing shared by the grid CLIs (``runners.isoflop``, ``runners.isounique``).

Each CLI builds its plan (a list of ``RunSpec``) and its ``RunOptions`` (the running flags, checked
once) and hands both to ``execute``, which either prints
it (``--dry-run``, OLMo-ladder style: what would run, what it costs, what is already done) or
checks the data once for the whole grid and launches it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from scaling import accounting
from scaling.humanise import count as human, seconds as duration
from scaling.cli import ArgumentParser as Parser, UsageError, add_store_argument, parse_count, parse_number, \
    whole_number
from scaling.errors import DataError
from runners.grid import plan
from runners.grid.spec import RunSpec
from runners.models.device import device_arg  # noqa: F401  (the grid CLIs' --device)


def make_parser(prog: str, description: str, example: str) -> Parser:
    return Parser(prog=prog, description=description, epilog=example,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(p: argparse.ArgumentParser, *, unique_required: bool = False,
                    unique_help: str = "") -> None:
    """The flags both grid CLIs take."""
    g = p.add_argument_group("grid axes (comma lists)")
    g.add_argument("--unique", required=unique_required, metavar="LIST",
                   help=unique_help or "unique-data levels in tokens, e.g. 55B,4B,1.25B")
    g.add_argument("--epochs", metavar="LIST", help="epoch counts, e.g. 1,4,16")
    g.add_argument("--code-fraction", default=None, metavar="LIST",
                   help="share of code in the unique data, each in [0, 1] (default 0; the tiny preset: 1); "
                        "shorthand for --mix code=x,text=1-x")
    g.add_argument("--mix", action="append", default=None, metavar="D1=S1,D2=S2,...",
                   help="a mixture of the corpus's domains (shares summing to 1); repeat for several "
                        "mixtures, e.g. --mix reference=0.5,lib-core=0.5 --data embedded-domains")
    g.add_argument("--filter", default="none", metavar="LIST",
                   help=f"data filters: {', '.join(plan.VALID_FILTERS)} (default none)")
    g.add_argument("--seeds", default="0", metavar="LIST",
                   help="seeds: a list, with A..B for every seed from A to B (0..7 = 0,1,...,7; default 0)")
    g.add_argument("--flops-convention", default=None, choices=accounting.FLOP_CONVENTIONS,
                   help="how a run's FLOPs are counted, and so how many tokens a budget buys: 6N (all "
                        "parameters, default; the tiny preset: 6N_ne+head+attn), 6N_ne (Kaplan et al. 2020), 6N_ne+head, 6N_ne+head+attn "
                        "(see scaling.accounting.flops_per_token); every run stores all of them")
    m = p.add_argument_group("model")
    m.add_argument("--arch", default="gpt", metavar="gpt|mamba|PACKAGE.MODULE:FACTORY",
                   help="architecture of every run: gpt (default), mamba (Mamba blocks + a dense block, "
                        "runners.models.mamba), or a factory FACTORY(config) -> nn.Module (see runners.models.arch)")
    m.add_argument("--activation", default="gelu", choices=accounting.ACTIVATIONS,
                   help="gelu (default) or swelu, the learnable activation (with --arch mamba)")
    d = p.add_argument_group("data")
    d.add_argument("--data", default="embedded",
                   help="corpus: embedded (text, code) | embedded-domains (7 domains of this Python's docs and "
                        "standard library) | path to .jsonl/.parquet | hf:NAME (default embedded)")
    d.add_argument("--text-column", default=None, help="text column of a jsonl/parquet corpus")
    d.add_argument("--domain-column", default=None,
                   help="column labelling each row's domain in a jsonl/parquet corpus (default: one domain, text)")
    d.add_argument("--tokenizer", default=None,
                   help="byte | bpe:VOCAB | a HF tokenizer (default: byte for CPU-scale grids, "
                        "gpt2 for paper-scale ones, matching the vocabulary the shapes assume)")
    r = p.add_argument_group("running")
    add_store_argument(r, positional=False, default="results")
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan, its cost and what is already done; train nothing")
    r.add_argument("--json", action="store_true",
                   help="with --dry-run: the plan as a JSON list; otherwise the launch summary")
    r.add_argument("--launcher", default="local", choices=("local", "deepspeed", "slurm"),
                   help="how to run: local (this process), deepspeed (each run as a DeepSpeed job of "
                        "--nproc-per-node processes) or slurm (default local)")
    r.add_argument("--device", default=None, type=device_arg,
                   help="torch device for local training: cpu, cuda, cuda:N or mps (default: auto)")
    r.add_argument("--batch-runs", default="auto", metavar="K|auto",
                   help="local launcher: train up to K same-shape runs stacked in one process (auto: 8 for tiny "
                        "CPU runs, else 1; 1 = one at a time)")
    r.add_argument("--workers", default="auto", metavar="N|auto",
                   help="local launcher: processes training at once (auto: one per core, one thread each, "
                        "when every run is tiny and on a CPU; else 1)")
    r.add_argument("--limit", type=whole_number, default=None, metavar="N",
                   help="train at most N of the missing runs this time")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    sl = p.add_argument_group("slurm (--launcher slurm, through submitit: one array job, a task per run)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--nodes", type=whole_number, default=None,
                    help="nodes per run, for --launcher slurm or deepspeed (default 1)")
    sl.add_argument("--gpus-per-node", type=whole_number, default=None)
    sl.add_argument("--time", default=None, metavar="HH:MM:SS", help="time limit per run (default 04:00:00)")
    sl.add_argument("--wait", action="store_true", help="wait for the jobs and report their outcome")
    sl.add_argument("--submitit-cluster", default=None, choices=("slurm", "local", "debug"),
                    help="submitit backend (default: Slurm when sbatch exists); local runs the same path here")
    ds = p.add_argument_group("deepspeed (--launcher deepspeed: each run through the deepspeed launcher; "
                              "--nodes also applies)")
    ds.add_argument("--nproc-per-node", type=whole_number, default=None, metavar="K",
                    help="processes (GPUs, or CPU ranks) per node and run (default 1)")
    ds.add_argument("--zero", type=whole_number, default=None, choices=(0, 1, 2, 3),
                    help="ZeRO stage (default 0)")
    ds.add_argument("--micro-batch", type=whole_number, default=None, metavar="N",
                    help="sequences per forward pass and rank; the rest of a rank's share of the batch "
                         "is gradient accumulation (default: the whole share)")
    ds.add_argument("--hostfile", default=None,
                    help="DeepSpeed hostfile ('host slots=K' lines), needed for --nodes > 1")
    r.add_argument("--eval", default=None, metavar="TASKS",
                   help="after training, score each new run with these lm-eval tasks, e.g. "
                        "corpus_cloze,code_cloze (see python -m runners.evaluate --help)")
    r.add_argument("--eval-limit", type=whole_number, default=None, metavar="N",
                   help="with --eval: at most N examples per task")
    r.add_argument("--eval-every", type=whole_number, default=None, metavar="STEPS",
                   help="with --eval: also score each run's model along training, at step 0, every STEPS "
                        "optimiser steps and at the end (one row per checkpoint in the store's _evals/, "
                        "read by scaling.downstream; local and slurm launchers, stacked runs included)")
    r.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS",
                   help="checkpoint each run this often, so a killed grid resumes (default 30)")
    r.add_argument("--eval-tokens", type=whole_number, default=None, metavar="N",
                   help="validation tokens per domain scored when a run ends (default 262144: every embedded "
                        "split whole); fewer is faster and noisier; each row records it as eval_tokens_cap")


# ---------------------------------------------------------------------------------------------
# comma lists

#: Measured: 2 single-threaded processes on 2 cores ran the tiny demo's 20 runs in 196 s against
#: the one-process estimate's 573 s / 2 (docs/benchmarks.md); the estimate is per process.
WORKER_EFFICIENCY = 0.7


def parse_list(text: str | None, parse: Callable[[str], object], what: str) -> list | None:
    """``"1,2, 4"`` -> ``[parse("1"), parse("2"), parse("4")]``; None stays None."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise UsageError(f"malformed {what} list {text!r} (expected comma-separated values)")
    out = []
    for t in items:
        try:
            out.append(parse(t))
        except UsageError:
            raise
        except (ValueError, TypeError):
            raise UsageError(f"malformed {what} {t!r} in {text!r}") from None
    return out


#: passes over the unique data at most (Muennighoff et al. 2023 go to ~1,500; a plan's FLOPs must stay finite)
MAX_EPOCHS = 1e6
#: seeds in one grid at most (each is a run per point of the grid)
MAX_SEEDS = 10_000


def _positive_number(t: str) -> float:
    v = parse_number(t, "epochs")
    if not 0 < v <= MAX_EPOCHS:
        raise UsageError(f"epochs must be positive and at most {MAX_EPOCHS:g}, got {t!r}")
    return v


def _seed(t: str) -> int:
    if not str(t).strip().lstrip("+").isdigit():
        raise UsageError(f"seeds must be non-negative integers, got {t!r}")
    return parse_count(t, "seed", maximum=2 ** 63 - 1, why="a 64-bit seed")


def parse_seeds(text: str) -> list[int]:
    """``"0,3"`` -> [0, 3]; ``"0..3,7"`` -> [0, 1, 2, 3, 7] (a range includes both ends); each seed once."""
    seeds: list[int] = []
    for part in parse_list(text, str, "seed"):
        first, dots, last = part.partition("..")
        if not dots:
            seeds.append(parse_list(part, _seed, "seed")[0])
            continue
        try:
            lo, hi = _seed(first), _seed(last)
        except UsageError:
            lo = hi = None
        if lo is None or hi < lo:
            raise UsageError(f"malformed seed range {part!r} in {text!r} (expected A..B with A <= B, e.g. 0..7)")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise UsageError(f"seed range {part!r} in {text!r}: at most {MAX_SEEDS:,} seeds in one grid")
        seeds += range(lo, hi + 1)
    return list(dict.fromkeys(seeds))


def parse_unique(text):
    return parse_list(text, accounting.parse_size, "unique-data size")


def parse_epochs(text):
    return parse_list(text, _positive_number, "epochs")


def parse_mixes(items) -> list[str] | None:
    """``--mix`` values (one mixture each) as canonical mix strings."""
    if not items:
        return None
    from runners.grid.spec import format_mix, parse_mix
    return [format_mix(parse_mix(item)) for item in items]


def axes(args) -> dict:
    """Keyword arguments for the plan functions from the shared flags."""
    mixes = parse_mixes(getattr(args, "mix", None))
    if mixes and args.code_fraction is not None:
        raise UsageError("give --mix or --code-fraction, not both")
    return dict(mixes=mixes, domain_column=getattr(args, "domain_column", None) or "",
                code_fractions=None if args.code_fraction is None else parse_list(args.code_fraction, float, "code fraction"),
                filters=parse_list(args.filter, str, "filter"),
                seeds=parse_seeds(args.seeds),
                data=check_data_arg(args.data), tokenizer=args.tokenizer,
                text_column=args.text_column or "text", flops_convention=args.flops_convention,
                **model_axes(args))


#: A plan file's run-kind column -> (the axes keyword it sets, the flag that sets it on the command
#: line, that flag's value when not given)
_PLAN_KIND = {"data": ("data", "--data", "embedded"), "code_fraction": ("code_fractions", "--code-fraction", None),
              "filter": ("filters", "--filter", ("none",)), "tokenizer": ("tokenizer", "--tokenizer", None),
              "text_column": ("text_column", "--text-column", "text"),
              "domain_column": ("domain_column", "--domain-column", ""),
              "flops_convention": ("flops_convention", "--flops-convention", None),
              "arch": ("arch", "--arch", "gpt"), "activation": ("activation", "--activation", "gelu")}


def with_plan_kind(kw: dict, table, path) -> dict:
    """The grid axes ``kw`` with the kind of run a plan file fixes: its ``columns.RUN_KIND_COLUMNS``
    (``scaling.design --out`` writes those the fitted runs share), one value per column. A flag given
    with another value is a usage error: the plan was designed for runs like the fitted ones."""
    from scaling.columns import RUN_KIND_COLUMNS
    kw = dict(kw)
    for col in RUN_KIND_COLUMNS:
        if col not in table.columns:
            continue
        values = [v for v in table[col].dropna().unique() if str(v) != ""]
        if not values:
            continue
        if len(values) != 1 or table[col].isna().any():
            raise DataError(f"{path}: its rows differ in {col} ({', '.join(map(str, values)) or 'missing'}); a plan "
                            f"trains one kind of run: split it")
        key, flag, unset = _PLAN_KIND[col]
        value = values[0].item() if hasattr(values[0], "item") else values[0]
        if col == "code_fraction":
            try:
                value = (float(value),)
            except (TypeError, ValueError):
                raise DataError(f"{path}: code_fraction {value!r} is not a number") from None
            if not 0 <= value[0] <= 1:
                raise DataError(f"{path}: code_fraction {value[0]:g} is not a share in [0, 1]")
            if kw.get("mixes"):
                raise UsageError(f"{path} fixes code_fraction {value[0]:g}: --mix is for a plan without one")
        elif col == "filter":
            value = (str(value),)
        have = tuple(kw[key]) if isinstance(kw[key], list) else kw[key]
        if have != unset and have != value:
            def text(v):
                return ",".join(map(text, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)
            raise UsageError(f"{flag} {text(have)} differs from the plan's {col} {text(value)} (the runs it was "
                             f"designed on); leave the flag out or edit {path}")
        kw[key] = value
    if "data" in table.columns:
        kw["data"] = check_data_arg(kw["data"])
    kw.update(model_axes(argparse.Namespace(arch=kw["arch"], activation=kw["activation"])))
    return kw


def model_axes(args) -> dict:
    """``arch`` and ``activation`` of the grid CLIs, checked before anything is planned."""
    from runners.models.arch import check_arch
    arch = check_arch(getattr(args, "arch", "gpt") or "gpt")
    activation = getattr(args, "activation", "gelu") or "gelu"
    if activation != "gelu" and arch == "gpt":
        raise UsageError(f"--activation {activation} needs --arch mamba (gpt uses gelu)")
    return {"arch": arch, "activation": activation}


def check_data_arg(data: str) -> str:
    """Cheap checks that need no corpus loading (also done by dry-runs)."""
    if not data or not str(data).strip():
        raise UsageError("--data is empty")
    if data in ("embedded", "embedded-domains") or data.startswith("hf:"):
        return data
    path = Path(data)
    if not path.exists():
        raise UsageError(f"cannot read --data {data!r}: no such file or directory")
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise UsageError(f"cannot read --data {data!r}: {exc.strerror or exc}") from None
    return data


#: processes or stacked runs at most: more than a machine's cores (or memory for K models) holds
MAX_WORKERS = 256


def parse_workers(text, flag: str = "--workers"):
    if text in (None, "auto"):
        return "auto"
    import re
    if not re.fullmatch(r"\d+", str(text).strip()) or not 1 <= int(text) <= MAX_WORKERS:
        raise UsageError(f"{flag} must be a whole number from 1 to {MAX_WORKERS} or auto, got {text!r}")
    return int(text)


def check_store_arg(store: str, writing: bool = False) -> str:
    """The store is a directory (or can be one); with ``writing``, one this process can write in,
    checked before anything is trained."""
    from scaling.cli import broken_link
    broken = broken_link(store)
    if broken is not None:
        raise UsageError(f"--store {store!r}: {broken}")
    if Path(store).exists() and not Path(store).is_dir():
        raise UsageError(f"--store {store!r} exists and is not a directory")
    if writing:
        from scaling.cli import check_writable
        check_writable(store, "store")
    return store


# ---------------------------------------------------------------------------------------------
# dry-run output

def store_status(specs: Sequence[RunSpec], store) -> dict[str, str]:
    """run_id -> ``done`` (ok in the store), ``failed``/``running``/``diverged``, or ``todo``."""
    from scaling.store import read_runs

    runs = read_runs(store) if Path(store).is_dir() else None
    by_id: dict[str, str] = {}
    if runs is not None and len(runs) and "run_id" in runs and "status" in runs:
        for rid, st in zip(runs["run_id"].astype(str), runs["status"].astype(str)):
            by_id[rid] = "done" if st == "ok" else st
    return {s.run_id: by_id.get(s.run_id, "todo") for s in specs}


def eval_cost(opts: "RunOptions") -> Callable[[RunSpec], float] | None:
    """Seconds of evaluation along training per run (``plan.estimate_eval_seconds_here``) when the
    options ask for it, else None. Counting a run's steps needs its hyper-parameters."""
    if not opts.eval_every:
        return None
    from runners.train.trainer import hparams

    def cost(spec: RunSpec) -> float:
        hp = hparams(spec.params, spec.seq_len, tokens=spec.tokens)
        steps = math.ceil(spec.tokens / (hp.batch_size * spec.seq_len))
        return plan.estimate_eval_seconds_here(spec, steps, opts.eval_every, len(opts.eval_tasks), opts.eval_limit)

    return cost


def plan_records(specs: Sequence[RunSpec], store, eval_seconds=None, throughput=None) -> list[dict]:
    """The plan as JSON-ready dicts: every spec field, the derived columns (run_id, params, flops,
    epochs), the cost estimates and the store status. ``eval_seconds(spec)`` (``eval_cost``): the
    time of evaluation along training, given apart (``est_eval_seconds_here``) and included in
    ``est_seconds_here``; ``throughput``: this machine's, measured on the store's runs
    (``measured_throughput``), else the constants of ``runners.grid.plan``."""
    status = store_status(specs, store)
    out = []
    for s in specs:
        d = s.to_dict()
        seconds = plan.estimate_seconds_here(s, throughput=throughput)
        if eval_seconds is not None:
            d["est_eval_seconds_here"] = float(eval_seconds(s))
            seconds += d["est_eval_seconds_here"]
        d.update(est_seconds_here=seconds, a100_gpu_hours=plan.a100_gpu_hours(s), status=status[s.run_id])
        out.append(d)
    return out


def measured_throughput(store, threads: int, device: str | None) -> "plan.Throughput | None":
    """This machine's throughput, calibrated on the store's runs that trained here at ``threads``
    thread(s) (``runners.grid.plan.calibrate``); None on a GPU, for a new or foreign store, or when
    ``SCALING_FLOPS_PER_S``/``SCALING_PER_TOKEN_S`` say it by hand."""
    if plan.throughput_overridden() or (device or "cpu").split(":")[0] != "cpu" or not Path(store).is_dir():
        return None
    from runners.train.launch import _cuda
    if device is None and _cuda():
        return None
    from runners.train.cpu_dtype import cpu_model
    from scaling.store import read_runs
    return plan.calibrate(read_runs(store), cpu_model(), threads)


def render_table(specs: Sequence[RunSpec], store, eval_seconds=None, throughput=None) -> str:
    records = plan_records(specs, store, eval_seconds, throughput)
    varying = [k for k in ("budget", "code_fraction", "mix", "filter", "seed")
               if len({r[k] for r in records}) > 1]
    evals = eval_seconds is not None
    head = ["run_id", "shape", "params", "tokens", "unique", "epochs", "flops", *varying,
            "time here", *(["of it eval"] if evals else []), "A100 h", "status"]
    rows = []
    for r in records:
        rows.append([r["run_id"], r["shape"], human(r["params"]), human(r["tokens"]),
                     human(r["unique_tokens"]), f"{r['epochs']:.3g}", f"{r['flops']:.3g}",
                     *[str(r[k]) for k in varying], duration(r["est_seconds_here"]),
                     *([duration(r["est_eval_seconds_here"])] if evals else []),
                     f"{r['a100_gpu_hours']:.3g}", r["status"]])
    todo = [r for r in records if r["status"] != "done"]
    total = ["total", f"{len(records)} runs", "", "", "", "", f"{sum(r['flops'] for r in records):.3g}",
             *[""] * len(varying), duration(sum(r["est_seconds_here"] for r in todo)) + " (todo)",
             *([duration(sum(r["est_eval_seconds_here"] for r in todo))] if evals else []),
             f"{sum(r['a100_gpu_hours'] for r in records):.3g}",
             f"{len(records) - len(todo)} done, {len(todo)} todo"]
    widths = [max(len(str(row[i])) for row in [head, *rows, total]) for i in range(len(head))]
    numeric = {2, 3, 4, 5, 6}

    def fmt(row):
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(fmt(head))
    return "\n".join([fmt(head), rule, *map(fmt, rows), rule, fmt(total)])


# ---------------------------------------------------------------------------------------------
# pre-flight data check and launch

#: the code domain of a corpus (``runners.data``); every other domain is natural language.
CODE_DOMAIN = "code"


def check_corpus(specs: Sequence[RunSpec], dry_run: bool = False) -> list[str]:
    """Before training anything: every run's unique data (after its filter and code mix) must fit
    in its corpus. Raises ``UsageError`` (``DataError``) saying how much there is.

    One check per (corpus, tokenizer, code fraction, filter), with the largest unique-data level.
    A single-domain request is checked with ``corpus_tokens_available``; a mix of domains with
    ``train_tokens`` itself, since a mix runs out when its first domain does.

    ``dry_run``: a plan may be meant for another machine, so what depends on *this* one (a tokenizer
    or ``hf:`` dataset not cached here, a corpus too small here) is returned as warnings; what is
    wrong whatever the machine (an unreadable local corpus, a mix naming domains it lacks) still
    raises, as the real run would.
    """
    from runners.data import DataError, get_tokenizer, load_corpus
    from runners.data.mixing import mix_of_corpus

    largest: dict[tuple, RunSpec] = {}
    for s in specs:
        key = (s.data, s.text_column, s.domain_column, s.tokenizer, s.code_fraction, s.mix, s.filter)
        if key not in largest or s.unique_tokens > largest[key].unique_tokens:
            largest[key] = s
    corpora, tokenizers, warnings = {}, {}, []

    def here_only(exc):                        # a failure of this machine: fatal unless dry-running
        if not dry_run:
            raise exc
        if str(exc) not in warnings:
            warnings.append(str(exc))

    for (data, text_column, domain_column, tok_name, cf, mix, filt), s in largest.items():
        if dry_run and data.startswith("hf:"):
            here_only(DataError(f"--data {data}: not loaded by a dry run (it checks local corpora only)"))
            continue
        if (data, text_column, domain_column) not in corpora:
            corpora[data, text_column, domain_column] = load_corpus(data, text_column=text_column,
                                                                    domain_column=domain_column or None)
        corpus = corpora[data, text_column, domain_column]
        if mix:
            try:
                mix_of_corpus(corpus, s.mixture)
            except DataError as exc:
                raise DataError(f"run {s.run_id} ({s.shape}, mix {mix}): {exc}") from None
        if (data, tok_name) not in tokenizers:
            if tok_name.startswith("bpe:"):
                from runners.data.tokenizers import bpe_vocab
                bpe_vocab(tok_name)                  # a malformed spec is wrong on any machine: raised
            try:
                tokenizers[data, tok_name] = get_tokenizer(tok_name, corpus)
            except DataError as exc:
                here_only(exc)
                tokenizers[data, tok_name] = None
        tok = tokenizers[data, tok_name]
        if tok is None:
            continue
        try:
            _check_fits(corpus, tok, s, data, tok_name, cf, mix, filt)
        except DataError as exc:
            here_only(exc)
    return warnings


def _check_fits(corpus, tok, s: RunSpec, data, tok_name, cf, mix, filt) -> None:
    """A ``DataError`` when run ``s``'s unique data does not fit in ``corpus``."""
    from runners.data import DataError, corpus_tokens_available, train_tokens
    if mix:
        try:
            train_tokens(corpus, tok, s.unique_tokens, cf, filt, mix=s.mixture)
        except DataError as exc:
            raise DataError(f"run {s.run_id} ({s.shape}, mix {mix}): {exc}") from None
        return
    what = f"run {s.run_id} ({s.shape}, {s.epochs:.3g} epochs, code fraction {cf:g}, filter {filt})"
    text_domains = [d for d in corpus.domains if d != CODE_DOMAIN]
    domains = [CODE_DOMAIN] if cf == 1 else text_domains if cf == 0 else None
    if domains is not None and len(domains) == 1 and domains[0] in corpus.domains:
        have = int(corpus_tokens_available(corpus, tok, domains[0], filt))
        if s.unique_tokens > have:
            raise DataError(
                f"{what} needs {s.unique_tokens:,} unique {domains[0]} tokens but corpus {data!r} has "
                f"only {have:,} (tokenizer {tok_name}, filter {filt}); use a larger --data or "
                f"smaller unique-data levels")
        return
    try:
        train_tokens(corpus, tok, s.unique_tokens, cf, filt)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None


def slurm_options(args):
    """``SlurmOptions`` for ``--launcher slurm`` (None otherwise); Slurm flags without it, or
    without submitit installed, are usage errors."""
    shared = ("nodes",) if args.launcher == "deepspeed" else ()   # --nodes serves deepspeed too
    given = {k: getattr(args, k) for k in ("partition", "nodes", "gpus_per_node", "time", "submitit_cluster")
             if getattr(args, k) is not None and k not in shared}
    if args.launcher != "slurm":
        if given or args.wait:
            flags = ", ".join("--" + k.replace("_", "-") for k in given) or "--wait"
            where = "slurm or deepspeed" if list(given) == ["nodes"] else "slurm"
            raise UsageError(f"{flags} only apply with --launcher {where}")
        return None
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install -e '.[slurm]'") from None
    from runners.train.launch import SlurmOptions, parse_time
    for key in ("nodes", "gpus_per_node"):
        if key in given and given[key] < (1 if key == "nodes" else 0):
            raise UsageError(f"--{key.replace('_', '-')} must be {'>= 1' if key == 'nodes' else '>= 0'}")
    if "time" in given:
        parse_time(given["time"])
    cluster = given.pop("submitit_cluster", None)
    return SlurmOptions(**given, cluster=cluster, wait=args.wait)


def deepspeed_options(args):
    """``DeepSpeedOptions`` for ``--launcher deepspeed`` (None otherwise); its flags without it,
    or the launcher without deepspeed installed, are usage errors."""
    from runners.train.distributed import INSTALL_HINT, DeepSpeedOptions, deepspeed_installed

    given = {k: getattr(args, k) for k in ("nproc_per_node", "zero", "micro_batch", "hostfile")
             if getattr(args, k) is not None}
    if args.launcher != "deepspeed":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UsageError(f"{flags} only apply with --launcher deepspeed")
        return None
    if not deepspeed_installed():
        raise UsageError(f"--launcher deepspeed needs deepspeed, which is not installed: {INSTALL_HINT}")
    return DeepSpeedOptions(nproc_per_node=1 if args.nproc_per_node is None else args.nproc_per_node,
                            nodes=1 if args.nodes is None else args.nodes,
                            zero_stage=0 if args.zero is None else args.zero,
                            micro_batch=args.micro_batch, hostfile=args.hostfile)


@dataclass(frozen=True)
class RunOptions:
    """How a grid command runs its plan: every running flag parsed and checked once
    (``from_args``), then passed whole to ``execute``, which never sees the argparse namespace."""

    store: str
    dry_run: bool = False
    as_json: bool = False
    launcher: str = "local"
    device: str | None = None
    workers: int | str = "auto"                   # processes training at once, or "auto"
    batch_runs: int | str = "auto"                # runs stacked in one process, or "auto"
    limit: int | None = None
    progress: bool = True
    checkpoint_every_s: float = 30.0
    eval_tasks: tuple[str, ...] | None = None
    eval_limit: int | None = None
    eval_every: int | None = None                 # score along training every this many steps
    eval_tokens: int | None = None                # validation tokens per domain (None: the default window)
    slurm: object = None                          # runners.train.launch.SlurmOptions
    deepspeed: object = None                      # runners.train.distributed.DeepSpeedOptions

    @classmethod
    def from_args(cls, args) -> "RunOptions":
        """The options of ``add_common_args``' running flags; a usage error names the first bad one."""
        store = check_store_arg(args.store, writing=not args.dry_run)
        if args.limit is not None and args.limit < 0:
            raise UsageError(f"--limit must be >= 0, got {args.limit}")
        workers = parse_workers(args.workers)                       # checked in a dry run too
        batch_runs = parse_workers(args.batch_runs, "--batch-runs")
        if not args.checkpoint_every > 0:
            raise UsageError(f"--checkpoint-every must be positive, got {args.checkpoint_every:g}")
        if args.eval_tokens is not None and args.eval_tokens < 1:
            raise UsageError(f"--eval-tokens must be a positive number of tokens, got {args.eval_tokens}")
        slurm = slurm_options(args)
        eval_tasks = None
        if args.eval is not None:
            from runners.eval.evaluate import check_tasks
            eval_tasks = tuple(check_tasks(args.eval))
        elif args.eval_limit is not None:
            raise UsageError("--eval-limit needs --eval")
        elif args.eval_every is not None:
            raise UsageError("--eval-every needs --eval TASKS (what to score along training)")
        if args.eval_limit is not None and args.eval_limit < 1:
            raise UsageError(f"--eval-limit must be at least 1, got {args.eval_limit}")
        if args.eval_every is not None:
            if args.eval_every < 1:
                raise UsageError(f"--eval-every must be a positive number of steps, got {args.eval_every}")
            if args.launcher == "deepspeed":
                raise UsageError("--eval-every scores the model inside the training loop: use --launcher local "
                                 "or slurm (or score the finished runs with --eval alone)")
        return cls(store=store, dry_run=args.dry_run, as_json=args.json, launcher=args.launcher,
                   device=args.device, workers=workers, batch_runs=batch_runs, limit=args.limit,
                   progress=not args.quiet, checkpoint_every_s=args.checkpoint_every, eval_tasks=eval_tasks,
                   eval_limit=args.eval_limit, eval_every=args.eval_every, eval_tokens=args.eval_tokens, slurm=slurm,
                   deepspeed=deepspeed_options(args))

    def train_options(self):
        """How the launcher trains every run (``runners.train.options.TrainOptions``): device,
        progress, checkpoints, and evaluation along training when asked."""
        from runners.train.options import TrainOptions
        return TrainOptions(device=self.device, progress=self.progress, checkpoint_every_s=self.checkpoint_every_s,
                            eval_tokens=self.eval_tokens,
                            **({"eval_every": self.eval_every, "eval_tasks": self.eval_tasks,
                                "eval_limit": self.eval_limit} if self.eval_every else {}))


def execute(specs: Sequence[RunSpec], opts: RunOptions, out=None) -> int:
    """``--dry-run``: print the plan; otherwise check the data and launch. Returns the exit code."""
    out = out or sys.stdout
    store, ds, slurm = opts.store, opts.deepspeed, opts.slurm
    if not specs:
        raise UsageError("the plan is empty")
    short = [s for s in specs if min(s.tokens, s.unique_tokens) < s.seq_len]
    if short:
        s = short[0]
        raise UsageError(f"{len(short)} run(s) of the plan would see fewer tokens than one sequence of {s.seq_len} "
                         f"(e.g. {s.shape}: {s.tokens} tokens, {s.unique_tokens} unique): raise the budget, the unique "
                         f"data or the epochs")
    context = max(s.seq_len for s in specs)
    if opts.eval_tokens is not None and opts.eval_tokens <= context:
        raise UsageError(f"--eval-tokens must exceed the context of {context} tokens, got {opts.eval_tokens}")
    if ds is not None:
        from runners.train.distributed import check_batches
        from runners.train.launch import todo
        ds_todo = todo(specs, store)[:opts.limit] if opts.limit is not None else todo(specs, store)
        check_batches(ds_todo, ds)

    def command(spec):
        from runners.train.distributed import launch_command
        return launch_command(spec, store, ds, device=opts.device, progress=opts.progress,
                              checkpoint_every_s=opts.checkpoint_every_s, eval_tokens=opts.eval_tokens)

    if opts.dry_run:
        from runners.train.launch import todo
        pending = todo(specs, store)
        # what the real run would refuse whatever the machine, the dry run refuses too; what only
        # this machine lacks is a warning (the plan may be for a cluster)
        for warning in (check_corpus(pending, dry_run=True) if pending else []):
            print(f"warning: a run here would stop: {warning}", file=sys.stderr)
        if ds is not None and not opts.as_json:
            from runners.train.distributed import format_command
            print(ds.describe(len(ds_todo)) + " (each run's --spec file is written just before its launch, "
                  "with a free --master_port):", file=out)
            for s in ds_todo:
                print("  " + format_command(command(s)), file=out)
        if slurm is not None and not opts.as_json:
            from runners.train.launch import todo
            print(slurm.describe(len(todo(specs, store))), file=out)
        n_proc, threads = 1, None
        if opts.launcher == "local":
            from runners.train.launch import thread_policy
            n_proc, threads = thread_policy(pending, opts.workers, opts.device)
        measured = measured_throughput(store, threads, opts.device) if threads else None
        if opts.as_json:
            records = plan_records(specs, store, eval_cost(opts), measured)
            if ds is not None:
                commands = {s.run_id: command(s) for s in ds_todo}
                for r in records:
                    if r["run_id"] in commands:
                        r["launch_command"] = commands[r["run_id"]]
            print(json.dumps(records, indent=1), file=out)
        else:
            print(render_table(specs, store, eval_cost(opts), measured), file=out)
            if measured is not None:
                print(f"time here: {measured.per_token_s:.3g} s/token + 6N/{measured.flops_per_s:.3g} FLOP/s + "
                      f"{measured.overhead_s:.2g} s/run, measured on {measured.runs} runs of this store on this machine "
                      f"({measured.machine}, {measured.threads} thread(s) each); A100 h at 40% MFU", file=out)
            else:
                fps, per_token = plan.throughput_here()
                how = "" if plan.throughput_overridden() else "; runs of this store trained here calibrate it"
                print(f"time here: {per_token:g} s/token + 6N/{fps:.3g} FLOP/s + {plan.RUN_OVERHEAD_S:g} s/run "
                      f"(SCALING_FLOPS_PER_S, SCALING_PER_TOKEN_S recalibrate{how}); A100 h at 40% MFU", file=out)
            if n_proc > 1:
                cost = eval_cost(opts)
                total = sum(plan.estimate_seconds_here(s, throughput=measured) + (cost(s) if cost else 0.0)
                            for s in pending)
                # a measured throughput was measured with as many processes sharing the cores
                each, efficiency = ((f"{threads} thread(s) each", 1.0) if measured is not None
                                    else ("one thread each", WORKER_EFFICIENCY))
                print(f"the total is one process's; --workers {opts.workers} trains {n_proc} at once "
                      f"({each}): about {duration(total / n_proc * efficiency)}", file=out)
        return 0

    from runners.train.launch import launch, todo

    pending = todo(specs, store)
    if pending:
        check_corpus(pending)
    extra = {"slurm": slurm} if slurm is not None else {"deepspeed": ds} if ds is not None else {}
    if opts.launcher == "local":
        extra["workers"] = opts.workers
        extra["batch_runs"] = opts.batch_runs
    existed = Path(store).exists()
    try:
        summary = launch(specs, store, launcher=opts.launcher, options=opts.train_options(), limit=opts.limit,
                         **extra)
    except BaseException:
        if not existed:                 # a grid that failed before storing anything leaves no store
            from scaling.store import remove_if_empty
            remove_if_empty(store)
        raise
    print(summary.to_json() if opts.as_json else summary.summary(), file=out)
    if opts.eval_tasks and not summary.submitted:  # slurm jobs evaluate nothing here: they may still run
        from runners.eval.evaluate import evaluate_store
        scored = evaluate_store(store, list(opts.eval_tasks), limit=opts.eval_limit, device=opts.device,
                                progress=opts.progress)
        print(f"evaluated {len(scored)} run(s) on {','.join(opts.eval_tasks)}",
              file=out if not opts.as_json else sys.stderr)
    return 0 if summary.ok else 1


def run(build_parser: Callable[[], argparse.ArgumentParser], build_plan: Callable, argv=None, out=None) -> int:
    """A grid command's ``main``: its flags parsed, its plan built, the running options checked
    (``RunOptions.from_args``), then ``execute``."""
    args = build_parser().parse_args(argv)
    specs = build_plan(args)
    return execute(specs, RunOptions.from_args(args), out)
