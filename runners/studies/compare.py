"""Controlled comparison of datasets: one architecture, optimiser and step count; only the data (or
an interleaving of datasets) and the tokens-per-parameter ratio vary.

For every dataset and ratio a model of ``--shape`` (N parameters) is trained on ``ratio * N``
tokens with the building blocks of ``runners.train.trainer`` (``hparams``, ``build``, ``train_step``,
``lr_at``, ``EpochBatches``): the same initialisation (seed), hyper-parameters, batch size and
number of steps for every dataset at a ratio. Every dataset gets the same number of unique tokens
(the smallest dataset's, capped at the tokens trained), so the epochs match as well.

Every model is evaluated on the same held-out sets (``runners.train.trainer.evaluate``): each dataset's
validation split (the corpus's fixed hash split, at most ``--eval-tokens`` tokens per part); a
mix ``A+B`` is the equal-weight union of its parts' sets (as it was trained), and ``union`` is the
equal-weight union of all parts when no dataset already is. The result is a table model x eval set
of cross-entropy (nats/token), perplexity (exp of it), bits per byte and next-token accuracy,
beside each dataset's diversity coefficient (``runners.diversity``, Miranda et al. 2023) as the
independent variable.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from runners.studies import diversity as div
from runners.grid.spec import RunSpec
from scaling import accounting
from scaling.humanise import count as human
from scaling.cli import ArgumentParser, DataError, UsageError, nonnegative_int, parse_number, run_cli, \
    whole_number
from runners.models.device import device_arg

log = logging.getLogger(__name__)

GRID = "compare"

#: Columns of the long table (one row per model and evaluation set).
METRICS = ("cross_entropy", "perplexity", "bpb", "token_accuracy")


# --------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class EvalSet:
    """Held-out data: the validation splits of ``parts``, weighted equally."""

    name: str
    parts: tuple[div.Part, ...]


@dataclass(frozen=True)
class CompareRun:
    """One model of the comparison: a dataset, a ratio, and the RunSpec that trains it."""

    dataset: div.DataSource
    tokens_per_param: float
    spec: RunSpec


def eval_sets(sources: list[div.DataSource]) -> list[EvalSet]:
    """Each dataset's own held-out set, then ``union`` of all parts if no dataset is that union."""
    sets = [EvalSet(s.name, s.parts) for s in sources]
    parts = tuple(dict.fromkeys(p for s in sources for p in s.parts))
    if len(parts) > 1 and not any(set(e.parts) == set(parts) for e in sets):
        sets.append(EvalSet("union", parts))
    return sets


#: tokens per parameter at most
MAX_RATIO = 10_000


def parse_ratios(text: str | None) -> list[float]:
    items = [t.strip() for t in (text or "").split(",")]
    if not any(items):
        raise UsageError("no ratios given (e.g. --ratio 20,100)")
    out = []
    for t in items:
        try:
            value = parse_number(t, "ratio")          # no 1_0, no inf: the rule every number follows
        except UsageError:
            raise UsageError(f"malformed ratio {t!r} in {text!r} (expected numbers, e.g. 20,100)") from None
        if not value > 0 or not math.isfinite(value):
            raise UsageError(f"tokens-per-parameter ratios must be positive, got {t!r}")
        if value > MAX_RATIO:
            raise UsageError(f"ratio {t}: at most {MAX_RATIO:g} tokens per parameter (the most over-trained published "
                             f"runs use 640; a larger ratio is a run that does not finish)")
        out.append(value)
    if len(set(out)) < len(out):
        raise UsageError(f"a ratio is listed twice in {text!r}")
    return out


def parse_archs(text: str) -> tuple[str, ...]:
    """``--arch gpt,mamba`` -> ("gpt", "mamba"), each checked (``runners.models.arch.check_arch``)."""
    from runners.models.arch import check_arch
    items = [t.strip() for t in str(text or "").split(",")]
    if not items or any(not t for t in items):
        raise UsageError(f"malformed --arch list {text!r} (expected e.g. gpt,mamba)")
    if len(set(items)) < len(items):
        raise UsageError(f"an architecture is listed twice in --arch {text!r}")
    return tuple(check_arch(t) for t in items)


def plan(sources: list[div.DataSource], ratios: list[float], shape_name: str, *, unique_tokens: int,
         seed: int = 0, tokenizer: str = "byte", vocab_size: int = accounting.CPU_VOCAB,
         seq_len: int = accounting.CPU_SEQ_LEN, text_column: str = "text",
         archs: tuple[str, ...] = ("gpt",), activation: str = "gelu") -> list[CompareRun]:
    """Every (ratio, architecture, dataset), ratio-major; ``unique_tokens`` caps every run's unique
    data. The ratio is tokens per parameter of the first architecture; every other one trains for
    the same FLOPs (6 N D with its own N: D = ratio N_1^2 / N_a), so architectures meet at equal
    compute. ``activation`` applies to the non-GPT ones."""
    if shape_name not in accounting.SHAPES:
        raise UsageError(f"unknown shape {shape_name!r} (tiny shapes: {', '.join(accounting.TINY_SHAPES)})")
    shape = accounting.shape(shape_name)

    def spec_for(arch: str, tokens: int, ratio: float, source) -> RunSpec:
        return RunSpec(shape=shape.name, d_model=shape.d_model, ffw_size=shape.ffw_size,
                       n_heads=shape.attention_heads, n_layers=shape.n_layers, vocab_size=vocab_size,
                       seq_len=seq_len, tokens=tokens, unique_tokens=max(1, min(tokens, unique_tokens)),
                       seed=seed, tokenizer=tokenizer, text_column=text_column, grid=GRID,
                       budget=f"{ratio:g}x", arch=arch, activation="gelu" if arch == "gpt" else activation,
                       **source.run_fields())

    probe = sources[0]
    params = {a: spec_for(a, 1, 1.0, probe).params for a in archs}
    runs = []
    for ratio in ratios:
        ref_tokens = ratio * params[archs[0]]
        for arch in archs:
            tokens = int(round(ref_tokens * params[archs[0]] / params[arch]))
            for source in sources:
                runs.append(CompareRun(source, ratio, spec_for(arch, tokens, ratio, source)))
    return runs


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class CompareResult:
    """Models, their scores on every evaluation set, and the datasets' diversity coefficients."""

    models: pd.DataFrame            #: one row per model: dataset, ratio, tokens, steps, own-set metrics
    evals: pd.DataFrame             #: one row per model and eval set: METRICS
    diversity: list = field(default_factory=list)   #: DiversityResult per dataset (may be empty)
    settings: dict = field(default_factory=dict)

    def cross_entropy_matrix(self) -> pd.DataFrame:
        """Cross-entropy, model (``dataset @ ratio``, ``[arch]`` when several) x evaluation set, in
        the order of the runs."""
        label = self.evals["dataset"] + " @" + self.evals["tokens_per_param"].map("{:g}x".format)
        if "arch" in self.evals and self.evals["arch"].nunique() > 1:
            label = label + " [" + self.evals["arch"] + "]"
        frame = self.evals.assign(model=label)
        table = frame.pivot(index="model", columns="eval_set", values="cross_entropy")
        return table.loc[list(dict.fromkeys(frame["model"])), list(dict.fromkeys(frame["eval_set"]))]

    def summary(self) -> str:
        s = self.settings
        head = (f"controlled comparison: shape {s['shape']} (N = {s['params']:,} parameters), seed {s['seed']}, "
                f"tokenizer {s['tokenizer']}, same hyper-parameters and steps at each ratio\n"
                f"eval: each dataset's held-out validation split (<= {s['eval_tokens']:,} tokens per part); "
                f"a mix is the equal-weight union of its parts")
        several = self.models["arch"].nunique() > 1
        if several:
            head += ("\narchitectures " + ", ".join(s["archs"]) + " at equal FLOPs (6 N D, each its own N; "
                     "D/N is the first's ratio)")
        cols = ["dataset", *(["arch", "N", "FLOPs"] if several else []), "diversity", "D/N", "tokens", "unique",
                "epochs", "steps", "batch", "lr", "CE own", "ppl own", "bpb own", "acc own"]
        rows = []
        for r in self.models.itertuples():
            d = "-" if not np.isfinite(r.diversity) else f"{r.diversity:.3f} [{r.diversity_low:.3f}, {r.diversity_high:.3f}]"
            extra = [r.arch, human(r.params), f"{r.flops:.3g}"] if several else []
            rows.append([r.dataset, *extra, d, f"{r.tokens_per_param:g}", human(r.tokens), human(r.unique_tokens),
                         f"{r.epochs:.2f}", str(r.steps), str(r.batch_size), f"{r.lr:.2g}",
                         f"{r.cross_entropy:.4f}", f"{r.perplexity:.3f}", f"{r.bpb:.4f}", f"{r.token_accuracy:.4f}"])
        matrix = self.cross_entropy_matrix()
        mrows = [[m, *[f"{v:.4f}" for v in matrix.loc[m]]] for m in matrix.index]
        return "\n".join([head, "", _table(cols, rows, left=2), "",
                          "cross-entropy (nats/token), model x eval set:",
                          _table(["model", *matrix.columns], mrows, left=1)])

    def to_dict(self) -> dict:
        return {"settings": self.settings, "models": _records(self.models), "evals": _records(self.evals),
                "diversity": [d.to_dict() for d in self.diversity]}

    def table(self) -> pd.DataFrame:
        """The long table joined with each model's run columns, as written to ``--out``."""
        keep = ["run_id", "shape", "params", "steps", "batch_size", "lr", "unique_tokens", "epochs",
                "diversity", "diversity_low", "diversity_high", "seed"]
        on = ["dataset", "tokens_per_param", "arch"]
        return self.evals.merge(self.models[[*on, "activation", "flops", *keep]], on=on, how="left")


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([fmt(head), "-" * len(fmt(head)), *map(fmt, rows)])


# --------------------------------------------------------------------------------------------
# Training and evaluation


def combine(per_part: dict[div.Part, dict], parts) -> dict:
    """Metrics of an equal-weight union of parts: mean loss and accuracy, bpb from the mean bytes
    per token (as ``runners.train.trainer.validation_metrics`` weights a mix)."""
    ms = [per_part[p] for p in parts]
    loss = float(np.mean([m["loss"] for m in ms]))
    bytes_per_token = float(np.mean([m["bytes_per_token"] for m in ms]))
    return {"cross_entropy": loss, "perplexity": math.exp(loss),
            "bpb": loss / math.log(2) / bytes_per_token,
            "token_accuracy": float(np.mean([m["acc"] for m in ms])),
            "eval_tokens": int(sum(m["tokens"] for m in ms))}


def train_model(run: CompareRun, data: div.Sources, sets: list[EvalSet], held_out: dict, eval_cap: int,
                settings, *, progress: bool = False, log_every: int = 50) -> tuple[dict, object, pd.DataFrame]:
    """Train one model of the comparison and score it on ``held_out`` (part -> validation tokens);
    returns (row with metrics per eval set, model, loss curve). A non-finite loss ends the run
    with ``status: failed`` and no metrics, as in ``runners.train.trainer``."""
    import torch

    from runners import data as rdata
    from runners.models.gpt import GPTConfig
    from runners.train import trainer as train
    from runners.train.engines import build, new_model

    spec = run.spec
    unique = data.train_tokens(run.dataset, spec.unique_tokens)
    hp = train.hparams(spec.params, spec.seq_len, tokens=spec.tokens)
    batches = rdata.EpochBatches(unique, spec.seq_len, hp.batch_size, spec.seed, total_tokens=spec.tokens)
    steps, tokens_per_step = batches.steps, hp.batch_size * spec.seq_len
    model, forward, optimizer = build(GPTConfig.from_spec(spec), hp, settings, model=new_model(spec))
    tl = train.TrainingLog(spec, batches, tokens_per_step, progress=progress, log_every=log_every,
                           desc=f"{run.dataset.name} @{run.tokens_per_param:g}x")
    train.Trainer.one(model, forward, optimizer, batches, hp, settings, tl).train()
    failure, done = tl.failure, tl.done
    stats = tl.row()
    row = {**spec.to_dict(), "dataset": run.dataset.name, "tokens_per_param": run.tokens_per_param,
           "hparams": asdict(hp), "lr": hp.lr, "batch_size": hp.batch_size, "steps": done,
           "total_steps": steps, "tokens_trained": stats["tokens_trained"],
           "epochs_seen": stats["epochs_seen"], "train_loss": stats["train_loss"],
           "wall_time_s": stats["wall_time_s"], "tokens_per_s": stats["tokens_per_s"],
           "device": settings.device, "dtype": settings.dtype, "eval_tokens_cap": int(eval_cap),
           "tokenizer_name": data.tokenizer.name, "torch_version": torch.__version__,
           "eval_sets": [e.name for e in sets]}
    curve_frame = tl.curve_frame()
    if failure is not None:
        row.update(status="failed", failure_reason=failure, loss=float("nan"))
        return row, model, curve_frame
    per_part = {p: train.evaluate(model, held_out[p], data.tokenizer, settings)
                for p in dict.fromkeys(p for e in sets for p in e.parts)}
    for e in sets:
        m = combine(per_part, e.parts)
        row.update({f"loss.{e.name}": m["cross_entropy"], f"acc.{e.name}": m["token_accuracy"],
                    f"bpb.{e.name}": m["bpb"], f"eval_tokens.{e.name}": m["eval_tokens"]})
    row["loss"] = row[f"loss.{run.dataset.name}"]   # the store's loss: the model's own held-out set
    row["status"] = "ok"
    return row, model, curve_frame


def _stored_row(store, run: CompareRun, sets: list[EvalSet], cap: int) -> dict | None:
    """A finished row of this very run, evaluated on these sets with the same cap, or None."""
    from scaling import store as rstore

    if store is None:
        return None
    row = rstore.read_run(store, run.spec.run_id)
    if not row or row.get("status") != "ok" or row.get("eval_tokens_cap") != cap:
        return None
    needed = [f"{k}.{e.name}" for e in sets for k in ("loss", "acc", "bpb", "eval_tokens")]
    if any(k not in row or row[k] is None or (isinstance(row[k], float) and math.isnan(row[k])) for k in needed):
        return None
    return row


def compare(sources: list[div.DataSource], ratios: list[float], *, shape: str = "t32", seed: int = 0,
            tokenizer: str = "byte", text_column: str = "text", eval_tokens: int | None = None,
            diversity_batches: int = 20, diversity_batch_size: int = 16, probe: div.ProbeSpec | None = None,
            store=None, device: str | None = None, progress: bool = False, cache_dir=None,
            archs: tuple[str, ...] = ("gpt",), activation: str = "gelu") -> CompareResult:
    """Train and evaluate every (dataset, ratio) model; reuse finished runs found in ``store``."""
    from runners.train import trainer as train

    if eval_tokens is None:
        eval_tokens = train.EVAL_TOKENS_PER_DOMAIN
    if eval_tokens <= accounting.CPU_SEQ_LEN:
        raise UsageError(f"--eval-tokens must exceed the context of {accounting.CPU_SEQ_LEN}, got {eval_tokens}")
    if diversity_batches and diversity_batches < 3:
        raise UsageError(f"--batches must be 0 (no diversity) or at least 3, got {diversity_batches}")
    if diversity_batches and diversity_batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {diversity_batch_size}")
    settings = train.resolve_settings(device)
    data = div.Sources(tokenizer, text_column, cache_dir=cache_dir)
    data.check(sources)
    sets = eval_sets(sources)
    held_out = {}
    for part in dict.fromkeys(p for e in sets for p in e.parts):
        held_out[part] = data.validation_tokens(part, eval_tokens)
        if len(held_out[part]) <= accounting.CPU_SEQ_LEN:
            raise DataError(f"dataset {part.name!r} has only {len(held_out[part])} validation tokens; "
                             f"evaluation needs more than {accounting.CPU_SEQ_LEN}")
    unique = min(data.available(s) for s in sources)
    runs = plan(sources, ratios, shape, unique_tokens=unique, seed=seed, tokenizer=tokenizer,
                vocab_size=data.tokenizer.vocab_size, text_column=text_column, archs=tuple(archs),
                activation=activation)
    for r in runs:
        batch = train.hparams(r.spec.params, r.spec.seq_len, tokens=r.spec.tokens).batch_size
        if (r.spec.unique_tokens - 1) // r.spec.seq_len < batch:
            raise DataError(f"ratio {r.tokens_per_param:g} gives {r.spec.unique_tokens} unique tokens, fewer "
                             f"than one batch ({batch} x {r.spec.seq_len}) of the {shape} model")

    diversity = []
    if diversity_batches:
        diversity = div.measure(sources, data, batches=diversity_batches, batch_size=diversity_batch_size,
                                probe=probe or div.ProbeSpec(seed=seed), seed=seed, progress=progress)

    rows = []
    outer = train.progress_bar(len(runs), "compare", enabled=progress and len(runs) > 1, unit="model")
    try:
        for run in runs:
            row = _stored_row(store, run, sets, eval_tokens)
            if row is None:
                row, model, curve = train_model(run, data, sets, held_out, eval_tokens, settings,
                                                progress=progress)
                if store is not None:
                    from scaling import store as rstore
                    if row["status"] == "ok":
                        train.store_finished_run(store, run.spec, model, row, curve)
                    else:
                        rstore.write_curve(store, run.spec.run_id, curve)
                        rstore.write_run(store, row)
            if row.get("status") != "ok":
                log.warning("%s @%gx failed: %s", run.dataset.name, run.tokens_per_param, row.get("failure_reason"))
            rows.append(row)
            outer.update(1)
    finally:
        outer.close()

    return _result(runs, rows, sets, diversity, {
        "shape": shape, "params": runs[0].spec.params, "seed": seed, "tokenizer": data.tokenizer.name,
        "archs": list(archs), "activation": activation,
        "eval_tokens": int(eval_tokens), "ratios": list(ratios), "datasets": [s.name for s in sources],
        "eval_sets": {e.name: [p.name for p in e.parts] for e in sets}, "unique_tokens_cap": int(unique),
        "device": settings.device,
        "diversity": {"batches": diversity_batches, "batch_size": diversity_batch_size,
                      "probe": asdict(probe or div.ProbeSpec(seed=seed))}})


def _result(runs: list[CompareRun], rows: list[dict], sets: list[EvalSet], diversity: list,
            settings: dict) -> CompareResult:
    """The models table and the long model x eval-set table from the runs' rows."""
    by_name = {d.dataset: d for d in diversity}
    models, evals = [], []
    for run, row in zip(runs, rows):
        d = by_name.get(run.dataset.name)
        own = run.dataset.name
        models.append({"dataset": own, "tokens_per_param": run.tokens_per_param, "run_id": run.spec.run_id,
                       "arch": run.spec.arch, "activation": run.spec.activation,
                       "shape": run.spec.shape, "params": run.spec.params, "tokens": run.spec.tokens,
                       "flops": accounting.flops(run.spec.params, run.spec.tokens),
                       "unique_tokens": run.spec.unique_tokens, "epochs": run.spec.epochs,
                       "steps": int(row["steps"]), "batch_size": int(row["batch_size"]), "lr": float(row["lr"]),
                       "seed": run.spec.seed, "status": row.get("status"),
                       "diversity": d.coefficient if d else float("nan"),
                       "diversity_low": d.ci_low if d else float("nan"),
                       "diversity_high": d.ci_high if d else float("nan"),
                       **_metrics(row, own), "wall_time_s": float(row.get("wall_time_s", float("nan")))})
        for e in sets:
            evals.append({"dataset": own, "tokens_per_param": run.tokens_per_param, "arch": run.spec.arch,
                          "eval_set": e.name,
                          **_metrics(row, e.name), "eval_tokens": int(row.get(f"eval_tokens.{e.name}") or 0)})
    return CompareResult(pd.DataFrame(models), pd.DataFrame(evals), diversity, settings)


def _metrics(row: dict, eval_set: str) -> dict:
    """The four metrics of one eval set (NaN for a failed run)."""
    def get(key):
        value = row.get(f"{key}.{eval_set}")
        return float("nan") if value is None else float(value)

    ce = get("loss")
    return {"cross_entropy": ce, "perplexity": math.exp(ce), "bpb": get("bpb"), "token_accuracy": get("acc")}


# --------------------------------------------------------------------------------------------
# Outputs


def plot(result: CompareResult, out) -> None:
    """Own-set cross-entropy against tokens per parameter (per dataset) and against the diversity
    coefficient (per ratio, with its 95% interval), and the cross-entropy matrix model x eval set."""
    from scaling.plot import new_figure, save_figure

    plt = new_figure()
    models = result.models
    has_div = bool(np.isfinite(models["diversity"]).any())
    panels = 3 if has_div else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4))
    ax = axes[0]
    several = models["arch"].nunique() > 1
    for (name, arch), sel in models.groupby(["dataset", "arch"], sort=False):
        sel = sel.sort_values("tokens_per_param")
        ax.plot(sel["tokens_per_param"], sel["cross_entropy"], marker="o" if arch == "gpt" else "s",
                label=f"{name} [{arch}]" if several else name)
    ax.set_xscale("log")
    ratios = sorted(models["tokens_per_param"].unique())
    ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel(f"tokens per parameter of {models['arch'].iloc[0]} (D / N; others at equal FLOPs)"
                  if several else "tokens per parameter (D / N)")
    ax.set_ylabel("cross-entropy on own held-out set (nats/token)")
    ax.set_title(f"{result.settings['shape']}: loss by data and ratio")
    ax.legend(fontsize=8)
    if has_div:
        ax = axes[1]
        for ratio, sel in models.groupby("tokens_per_param", sort=True):
            ax.errorbar(sel["diversity"], sel["cross_entropy"],
                        xerr=[sel["diversity"] - sel["diversity_low"], sel["diversity_high"] - sel["diversity"]],
                        fmt="o", capsize=3, label=f"D/N = {ratio:g}")
            for r in sel.itertuples():
                ax.annotate(r.dataset, (r.diversity, r.cross_entropy), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("diversity coefficient (95% bootstrap interval)")
        ax.set_ylabel("cross-entropy on own held-out set")
        ax.set_title("loss against data diversity")
        ax.legend(fontsize=8)
    ax = axes[-1]
    matrix = result.cross_entropy_matrix()
    im = ax.imshow(matrix.values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=8)
    middle = np.nanmean([np.nanmin(matrix.values), np.nanmax(matrix.values)])
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix.values[i, j]
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if value > middle else "black")
    ax.set_xlabel("evaluation set")
    ax.set_title("cross-entropy, model x eval set")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, out)


def write_outputs(result: CompareResult, out_dir) -> dict[str, Path]:
    """``compare.csv`` and ``compare.parquet`` (the long table), ``compare.json`` (everything) and
    ``compare.png``, each written atomically."""
    from scaling.store import atomic_write_bytes

    out_dir = Path(out_dir)
    table = result.table()
    paths = {"csv": out_dir / "compare.csv", "parquet": out_dir / "compare.parquet",
             "json": out_dir / "compare.json", "png": out_dir / "compare.png"}
    atomic_write_bytes(paths["csv"], lambda tmp: table.to_csv(tmp, index=False))
    atomic_write_bytes(paths["parquet"], lambda tmp: table.to_parquet(tmp, index=False))
    text = json.dumps(result.to_dict(), indent=1)
    atomic_write_bytes(paths["json"], lambda tmp: Path(tmp).write_text(text))
    plot(result, paths["png"])
    return paths


# --------------------------------------------------------------------------------------------
# CLI

EXAMPLE = """\
examples:
  python -m runners.compare --datasets text,code,text+code --ratio 20,100
  python -m runners.compare --datasets text,my.jsonl,text+my.jsonl --ratio 20 --shape t64 --store results
  python -m runners.compare --datasets text,code --ratio 5 --shape t24 --batches 0 --json   # no diversity
  python -m runners.compare --datasets text --ratio 20,100 --arch gpt,mamba --activation swelu --batches 0
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.compare", description=__doc__.split("\n\n")[0],
                       epilog=EXAMPLE)
    p.add_argument("--datasets", required=True,
                   help="comma list: text, code (embedded corpus), .jsonl/.parquet files, A+B (equal interleaving)")
    p.add_argument("--ratio", required=True, help="tokens per parameter, comma list (e.g. 20,100)")
    p.add_argument("--shape", default="t32", help="model shape (scaling.accounting; default t32)")
    p.add_argument("--arch", default="gpt", metavar="LIST",
                   help="architectures, comma list (gpt, mamba, PACKAGE.MODULE:FACTORY; default gpt): the ratio "
                        "is the first's tokens per parameter, the others train for the same FLOPs")
    p.add_argument("--activation", default="gelu", choices=accounting.ACTIVATIONS,
                   help="activation of the non-GPT architectures (gelu or swelu)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="initialisation, data order and probe seed (default 0)")
    p.add_argument("--store", default=None, help="also write each run to this results store, and reuse "
                                                  "runs already finished there")
    p.add_argument("--out", default="compare", help="directory for compare.csv/.parquet/.json/.png (default compare/)")
    p.add_argument("--eval-tokens", type=whole_number, default=None,
                   help="held-out tokens per dataset part (default: runners.train.trainer's 65536)")
    p.add_argument("--text-column", default="text", help="text column of .jsonl/.parquet datasets")
    p.add_argument("--tokenizer", default="byte", help="byte (default) or a pretrained tokenizer")
    p.add_argument("--device", default=None, type=device_arg, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    div.add_probe_args(p, skip_note=" (0: do not measure diversity)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sources = div.parse_datasets(args.datasets)
    ratios = parse_ratios(args.ratio)
    if args.shape not in accounting.SHAPES:
        raise UsageError(f"unknown shape {args.shape!r} (tiny shapes: {', '.join(accounting.TINY_SHAPES)})")
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    for flag, value in (("--out", args.out), ("--store", args.store)):
        if value is not None and not str(value).strip():
            raise UsageError(f"{flag} is an empty path: name a directory")
        if value is not None and Path(value).exists() and not Path(value).is_dir():
            raise UsageError(f"{flag} {value!r} exists and is not a directory")
    if args.store is not None and not Path(args.store).suffix:
        from scaling.cli import check_writable
        check_writable(args.store, "--store")           # before the first model trains, not after
    probe = div.probe_spec(args) if args.batches else None
    result = compare(sources, ratios, shape=args.shape, seed=args.seed, tokenizer=args.tokenizer,
                     text_column=args.text_column, eval_tokens=args.eval_tokens,
                     diversity_batches=args.batches, diversity_batch_size=args.batch_size, probe=probe,
                     store=args.store, device=args.device, progress=not args.quiet,
                     archs=parse_archs(args.arch), activation=args.activation)
    paths = write_outputs(result, args.out)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        print(f"\nwrote {paths['csv']}, {paths['parquet']}, {paths['json']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
