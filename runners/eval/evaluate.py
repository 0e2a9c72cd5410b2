"""lm-eval scores for the runs of a store, written into each run's row as ``eval.<task>.<metric>``.

    python -m runners.evaluate results --tasks corpus_cloze,code_cloze --limit 200

Our checkpoints are an lm-eval model (``ScalingLM``, registered as ``scaling-toolkit``) and every
score comes from ``lm_eval.simple_evaluate``: the library's request building, metrics and standard
errors, none re-implemented. Two offline tasks ship with the package (``runners/eval/tasks``):
``corpus_cloze`` and ``code_cloze``, 4-way continuation choice on held-out documents of the
embedded corpus. Any other lm-eval task name (``lambada_openai``, ``hellaswag``, ``piqa``, ...)
passes through when its data is in the local Hugging Face cache; nothing is downloaded unless
``--allow-download`` is given.

A run is scored when its row is ``ok``, its weights were kept (``runners.export``) and it lacks a
score for a requested task (``--force`` rescores). Each run's new columns are written in one
atomic ``update_run``; an interrupted evaluation leaves every row whole.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scaling import store as rstore
from scaling.cli import bounded_int, ArgumentParser, UsageError, run_cli, add_store_argument, whole_number
from runners.models.device import device_arg

log = logging.getLogger(__name__)

TASK_DIR = Path(__file__).resolve().parent / "tasks"
#: tasks shipped with the package; they need no data from outside
OFFLINE_TASKS = ("corpus_cloze", "code_cloze")


def _lm_eval(allow_download: bool = False):
    """lm-eval, imported offline unless ``allow_download``: the Hugging Face libraries read their
    offline switches once, at import, so they are set before the first import."""
    if not allow_download and "lm_eval" not in sys.modules:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval  # noqa: F401
        from lm_eval.api.model import LM
    except ImportError as exc:
        raise UsageError(f"lm-eval is not installed ({exc}); pip install 'scaling-toolkit[eval]'") from None
    return lm_eval, LM


@functools.lru_cache(maxsize=2)
def task_manager(with_hub_tasks: bool, allow_download: bool = False):
    """lm-eval's TaskManager over our task folder, plus the library's own tasks when asked
    (indexing those thousands of YAML files takes seconds, so only when a hub task is named)."""
    _lm_eval(allow_download)
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASK_DIR), include_defaults=with_hub_tasks)


def hub_task_names(allow_download: bool = False) -> set[str]:
    """The names lm-eval knows, cached per lm-eval version (indexing them takes ~15 s)."""
    from importlib.metadata import version

    from runners.data import default_cache_dir

    path = default_cache_dir() / f"lm_eval-{version('lm_eval')}-tasks.json"
    if path.exists():
        try:
            return set(json.loads(path.read_text()))
        except ValueError:
            pass
    names = sorted(task_manager(True, allow_download).all_tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(names))
    os.replace(tmp, path)
    return set(names)


def check_tasks(text: str, allow_download: bool = False) -> list[str]:
    """Task names from a comma list; an unknown name is a UsageError."""
    tasks = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not tasks:
        raise UsageError("no tasks given (e.g. --tasks corpus_cloze,code_cloze)")
    hub = [t for t in tasks if t not in OFFLINE_TASKS]
    if hub:
        known = hub_task_names(allow_download)
        unknown = [t for t in hub if t not in known]
        if unknown:
            raise UsageError(f"unknown task {unknown[0]!r} (offline tasks: {', '.join(OFFLINE_TASKS)}; "
                             f"or an lm-eval task name)")
    return tasks


# ---------------------------------------------------------------------------------------------
# The model, as lm-eval sees it


@functools.lru_cache(maxsize=1)
def lm_class():
    """The lm-eval model class (defined on first use: importing lm-eval is slow, and must wait
    until the offline switches are decided). Registered with lm-eval as ``scaling-toolkit``."""
    _, LM = _lm_eval()
    from lm_eval.api.registry import register_model

    @register_model("scaling-toolkit")
    class ScalingLM(LM):
        """``loglikelihood``, ``loglikelihood_rolling`` and ``generate_until`` for a ``runners.models.gpt.GPT``.

        Registered with lm-eval as ``scaling-toolkit`` once ``lm_class()`` has run, so an exported run
        (``runners.export``) is scored by name: ``lm_eval.simple_evaluate(model="scaling-toolkit",
        model_args="pretrained=DIR", tasks=[...])``.

        Every context starts with the end-of-text token (how documents start in training); inputs
        longer than the model's context keep their last ``seq_len`` tokens, as lm-eval's HF model does.
        """

        def __init__(self, model=None, tokenizer=None, batch_size: int = 32, pretrained: str | None = None,
                     device: str = "cpu", **_):
            _lm_eval()
            super().__init__()
            if pretrained is not None:  # model="scaling-toolkit", model_args="pretrained=DIR"
                from runners.models.files import load_model, tokenizer_for
                model, config = load_model(pretrained, device)
                tokenizer = tokenizer_for(config)
            if model is None or tokenizer is None:
                raise UsageError("ScalingLM needs a model and tokenizer, or pretrained=DIR (an exported run)")
            self.model, self.tok, self.batch_size = model.eval(), tokenizer, int(batch_size)
            self._device = next(model.parameters()).device
            self.seq_len = model.config.seq_len

        @property
        def tokenizer_name(self) -> str:
            return self.tok.name

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            # lm-eval's convention: trailing spaces of the context belong to the continuation
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
            whole = list(self.tok.encode(context + continuation))
            ctx = list(self.tok.encode(context))
            return [self.tok.eot_id] + ctx, whole[len(ctx):]

        def continuation_size(self, context: str, continuation: str) -> tuple[int, int]:
            """(tokens, UTF-8 bytes) of the continuation as ``loglikelihood`` scores it: after
            lm-eval's move of the context's trailing spaces, cut to the model's context as
            ``_score`` cuts it (bytes in proportion then)."""
            n_spaces = len(context) - len(context.rstrip())
            text = context[len(context) - n_spaces:] + continuation if n_spaces else continuation
            _, cont = self._encode_pair(context, continuation)
            n_bytes = len(text.encode("utf-8"))
            kept = min(len(cont), self.seq_len)
            return kept, (n_bytes if kept == len(cont) else round(n_bytes * kept / max(len(cont), 1)))

        @torch.no_grad()
        def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
            """(sum of log p(continuation | context), whether it is the greedy continuation)."""
            T = self.seq_len
            prepared = []
            for ctx, cont in pairs:
                full = (ctx + cont)[-(T + 1):]
                prepared.append((full[:-1], full[1:], min(len(cont), T)))
            order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))
            out: list[tuple[float, bool] | None] = [None] * len(prepared)
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                width = len(prepared[idx[0]][0])
                x = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    inp = prepared[i][0]
                    x[r, :len(inp)] = torch.tensor(inp)
                logits, _ = self.model(x.to(self._device))
                logp = F.log_softmax(logits.float(), dim=-1).cpu()
                for r, i in enumerate(idx):
                    inp, tgt, n = prepared[i]
                    if n == 0:
                        out[i] = (0.0, True)
                        continue
                    rows = logp[r, len(inp) - n:len(inp)]
                    target = torch.tensor(tgt[-n:])
                    ll = rows.gather(1, target[:, None]).sum().item()
                    out[i] = (ll, bool((rows.argmax(-1) == target).all()))
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self._score([self._encode_pair(*r.args) for r in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

            results = []
            for r in requests:
                windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    token_list=list(self.tok.encode(r.args[0])), prefix_token=self.tok.eot_id,
                    max_seq_len=self.seq_len, context_len=1)]
                results.append(sum(ll for ll, _ in self._score([(list(c), list(t)) for c, t in windows])))
            return results

        def generate_until(self, requests, disable_tqdm: bool = False):
            from runners.eval.generate import generate_ids

            out = []
            for r in requests:
                context, kwargs = r.args
                kwargs = dict(kwargs or {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
                ids = generate_ids(self.model, [self.tok.eot_id] + list(self.tok.encode(context)),
                                   int(kwargs.get("max_gen_toks", 64)), temperature=temperature,
                                   seed=int(kwargs.get("seed", 0)), stop_id=self.tok.eot_id)
                text = self.tok.decode(ids)
                for stop in until:
                    if stop and stop in text:
                        text = text[:text.index(stop)]
                out.append(text)
            return out

    return ScalingLM


def make_lm(model, tokenizer, batch_size: int = 32):
    """An lm-eval ``LM`` over one of our GPTs and its tokenizer."""
    return lm_class()(model=model, tokenizer=tokenizer, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------
# Scoring


def _columns(results: dict) -> dict[str, float]:
    """lm-eval's ``results`` as ``eval.<task>.<metric>`` columns (``acc,none`` -> ``acc``)."""
    cols: dict[str, float] = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            cols[f"eval.{task}.{metric if filt == 'none' else f'{metric}_{filt}'}"] = float(value)
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        if n is not None:
            cols[f"eval.{task}.n"] = float(n)
    return cols


#: lm-eval output types whose requests score a correct continuation (the others generate text or
#: score whole documents, which lm-eval already reports in bits per byte)
CONTINUATION_TYPES = ("multiple_choice", "loglikelihood")


def _gold_index(sample: dict) -> int | None:
    """Which of a multiple-choice sample's requests holds the correct answer: lm-eval logs the
    task's ``doc_to_target``, an index, a list of indices (the first is taken) or the answer's text."""
    target, args = sample.get("target"), sample.get("arguments") or []
    if isinstance(target, (list, tuple)):
        target = target[0] if target else None
    if isinstance(target, bool):
        return None
    if isinstance(target, (int, float)) and float(target).is_integer():
        i = int(target)
        return i if 0 <= i < len(args) else None
    if isinstance(target, str):
        matches = [i for i, a in enumerate(args) if str(a[1]).strip() == target.strip()]
        return matches[0] if len(matches) == 1 else None
    return None


def continuation_scores(sample: dict, output_type: str, sizes) -> tuple[float, float, float] | None:
    """(bits per byte, nats per token, chance) of one sample's correct continuation, from the
    log-likelihood lm-eval already asked the model for (no second forward pass).

    bpb = -log p(answer | context) / (ln 2 * UTF-8 bytes of the answer); ce = -log p / answer tokens
    (OLMo's ``rc`` bpb; Bhagia et al. 2024). ``sizes(context, continuation) -> (tokens, bytes)``
    measures the text the model scored (lm-eval moves a context's trailing spaces into the answer).
    chance is 1 / number of choices for multiple choice, NaN for cloze tasks."""
    args, resps = sample.get("arguments") or [], sample.get("filtered_resps") or sample.get("resps") or []
    if output_type == "multiple_choice":
        gold, chance = _gold_index(sample), 1.0 / max(len(args), 1)
    elif output_type == "loglikelihood":
        gold, chance = (0 if args else None), math.nan
    else:
        return None
    if gold is None or gold >= len(resps):
        return None
    resp = resps[gold]
    resp = resp[0] if isinstance(resp, list) else resp        # unfiltered: one response per repeat
    ll = float(resp[0] if isinstance(resp, (tuple, list)) else resp)
    n_tokens, n_bytes = sizes(*args[gold][:2])
    if n_bytes <= 0 or n_tokens <= 0 or not math.isfinite(ll):
        return None
    return -ll / (math.log(2) * n_bytes), -ll / n_tokens, chance


def continuous_columns(results: dict, sizes) -> dict[str, float]:
    """``eval.<task>.bpb``, ``.ce`` (means over items) and ``.chance`` for every multiple-choice or
    cloze task of an lm-eval run with logged samples; a group (e.g. ``mmlu``) gets the mean over all
    its subtasks' items."""
    per_task: dict[str, list[tuple[float, float, float]]] = {}
    configs = results.get("configs", {})
    for task, samples in (results.get("samples") or {}).items():
        output_type = (configs.get(task) or {}).get("output_type")
        if output_type not in CONTINUATION_TYPES:
            continue
        scores = [s for s in (continuation_scores(x, output_type, sizes) for x in samples) if s is not None]
        if scores:
            per_task[task] = scores
    for group, subtasks in (results.get("group_subtasks") or {}).items():
        items = [s for t in subtasks for s in per_task.get(t, [])]
        if items and group not in per_task:
            per_task[group] = items
    cols: dict[str, float] = {}
    for task, scores in per_task.items():
        arr = np.asarray(scores, dtype=float)
        cols[f"eval.{task}.bpb"] = float(arr[:, 0].mean())
        cols[f"eval.{task}.ce"] = float(arr[:, 1].mean())
        if np.isfinite(arr[:, 2]).all():
            cols[f"eval.{task}.chance"] = float(arr[:, 2].mean())
    return cols


@contextlib.contextmanager
def lm_eval_errors(tasks, allow_download: bool):
    """lm-eval's failures as one ``UsageError`` line: missing hub data surfaces as datasets and hub
    errors of many kinds."""
    try:
        yield
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "" if allow_download else " (offline; --allow-download fetches hub data)"
        raise UsageError(f"lm-eval could not evaluate {','.join(tasks)}{where}: {first}") from None


class TaskSuite:
    """lm-eval tasks loaded once and scored as often as asked: ``runners.evaluate`` scores each
    saved run with one, and evaluation along training scores every checkpoint of a run with the
    same one (loading the tasks takes ~0.7 s, scoring 40 items of a tiny model ~0.07 s).

    Loading follows ``lm_eval.simple_evaluate`` (a task without a default gets 0 shots; the
    few-shot sampler is seeded with 0); scoring is ``lm_eval.evaluator.evaluate`` with samples
    logged, so that the continuous metrics (``continuous_columns``) come from the same requests as
    lm-eval's own. Unlike ``simple_evaluate`` it does not reseed Python, NumPy and torch, so it can
    run in the middle of a training run without changing it."""

    def __init__(self, tasks, limit: int | None = None, allow_download: bool = False):
        _lm_eval(allow_download)
        self.tasks, self.limit, self.allow_download = list(tasks), limit, allow_download
        hub = any(t not in OFFLINE_TASKS for t in self.tasks)
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        with lm_eval_errors(self.tasks, allow_download), _quiet_tqdm():
            self.loaded = task_manager(hub, allow_download).load(self.tasks)
            for task in self.loaded["tasks"].values():
                if task.get_config("num_fewshot") is None:
                    task.set_config(key="num_fewshot", value=0)
                task.set_fewshot_seed(seed=0)

    def score(self, lm) -> dict[str, float]:
        """lm-eval's metrics and the continuous ones, as ``eval.<task>.<metric>`` columns."""
        from lm_eval.evaluator import evaluate as lm_evaluate

        with lm_eval_errors(self.tasks, self.allow_download), _quiet_tqdm():
            results = lm_evaluate(lm=lm, task_dict=self.loaded, limit=self.limit, bootstrap_iters=1000,
                                  log_samples=True, verbosity="ERROR")
        sizes = getattr(lm, "continuation_size", None) or _byte_size
        return {**_columns(results), **continuous_columns(results, sizes)}


@contextlib.contextmanager
def _quiet_tqdm():
    """lm-eval draws a progress bar each time a task builds its requests (``lm_eval.api.task``
    calls ``tqdm`` with no way to turn it off, and tqdm reads ``TQDM_DISABLE`` only at import):
    at every checkpoint of a run it would bury the training's own bar, so that module's ``tqdm``
    is a disabled one for the duration."""
    import lm_eval.api.task as task_module

    original = getattr(task_module, "tqdm", None)
    if original is None:
        yield
        return
    task_module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        task_module.tqdm = original


def _byte_size(context: str, continuation: str) -> tuple[int, int]:
    """(tokens, bytes) when the model cannot count its tokens: one token per byte."""
    n = len(continuation.encode("utf-8"))
    return n, n


def score(lm, tasks: list[str], limit: int | None = None, allow_download: bool = False) -> dict[str, float]:
    """Evaluate ``lm`` on ``tasks`` (``TaskSuite``); the columns it yields."""
    return TaskSuite(tasks, limit, allow_download).score(lm)


def evaluate_run(store, run_id: str, tasks, limit: int | None = None, device: str = "cpu",
                 batch_size: int = 32, allow_download: bool = False) -> dict[str, float]:
    """Score one run's saved model and write the columns into its row (one atomic update).
    ``tasks``: task names, or a ``TaskSuite`` already loaded (then ``limit`` is the suite's)."""
    from runners.models.files import load_run_model, tokenizer_for

    suite = tasks if isinstance(tasks, TaskSuite) else TaskSuite(tasks, limit, allow_download)
    model, config = load_run_model(store, run_id, device=device)
    cols = suite.score(make_lm(model, tokenizer_for(config), batch_size))
    rstore.update_run(store, config["run"]["run_id"], **cols)
    return cols


def runs_to_score(store, tasks: list[str], force: bool = False, run_ids=None) -> list[str]:
    """``ok`` runs (optionally only ``run_ids``) lacking a score for any of ``tasks``."""
    runs = rstore.read_runs(store)
    if runs.empty:
        return []
    runs = runs[runs["status"] == "ok"]
    if run_ids is not None:
        runs = runs[runs["run_id"].astype(str).isin(set(run_ids))]
    todo = []
    for _, row in runs.iterrows():
        missing = force or any(not any(str(c).startswith(f"eval.{t}.") and _present(row[c]) for c in row.index)
                               for t in tasks)
        if missing:
            todo.append(str(row["run_id"]))
    return todo


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def evaluate_store(store, tasks: list[str], limit: int | None = None, device: str | None = None,
                   progress: bool = True, force: bool = False, run_ids=None, batch_size: int = 32,
                   allow_download: bool = False) -> list[str]:
    """Score every run that needs it; returns the run ids scored. Runs without kept weights are
    skipped with a warning (they were trained before weights were kept)."""
    from runners.models.files import MODEL_FILE, model_dir

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    todo = runs_to_score(store, tasks, force, run_ids)
    scored = []
    suite = TaskSuite(tasks, limit, allow_download) if todo else None
    for k, run_id in enumerate(todo):
        if not (model_dir(store, run_id) / MODEL_FILE).exists():
            log.warning("run %s has no saved weights; not evaluated", run_id)
            print(f"warning: run {run_id} has no saved weights; not evaluated", file=sys.stderr)
            continue
        cols = evaluate_run(store, run_id, suite, device=device, batch_size=batch_size)
        scored.append(run_id)
        if progress:
            shown = ", ".join(f"{c[5:]} {v:.3f}" for c, v in cols.items() if c.endswith((".acc", ".word_perplexity")))
            print(f"[{k + 1}/{len(todo)}] {run_id}: {shown}", file=sys.stderr)
    if scored:                         # the scores as ordinary columns, for pandas, pyarrow and duckdb too
        rstore.absorb_updates(store)
    return scored


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m runners.evaluate",
                       description="Score the store's finished runs with lm-eval tasks; write eval.<task>.<metric> columns.",
                       epilog="example: python -m runners.evaluate results --tasks corpus_cloze,code_cloze --limit 200",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_argument(p, positional=False, default="results")
    p.add_argument("--tasks", required=True,
                   help=f"comma list: {', '.join(OFFLINE_TASKS)} (offline) or lm-eval task names")
    p.add_argument("--limit", type=whole_number, default=None, metavar="N", help="at most N examples per task")
    p.add_argument("--runs", default=None, metavar="IDS", help="only these run ids (comma list)")
    p.add_argument("--force", action="store_true", help="rescore runs that already have scores")
    p.add_argument("--device", default=None, type=device_arg, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=bounded_int(4096, "sequences in memory at once", minimum=1), default=32, help="sequences per forward pass (default 32)")
    p.add_argument("--allow-download", action="store_true",
                   help="let lm-eval fetch hub task data (default: local cache only)")
    p.add_argument("--json", action="store_true", help="print the scored runs' new columns as JSON")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.store).is_dir():
        raise UsageError(f"store {args.store} does not exist")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    tasks = check_tasks(args.tasks, args.allow_download)
    run_ids = None
    if args.runs:
        from runners.models.files import resolve_run_id
        run_ids = [resolve_run_id(args.store, r.strip()) for r in args.runs.split(",") if r.strip()]
    scored = evaluate_store(args.store, tasks, args.limit, args.device, progress=not args.json,
                            force=args.force, run_ids=run_ids, batch_size=args.batch_size,
                            allow_download=args.allow_download)
    if args.json:
        rows = {r: {k: v for k, v in rstore.read_run(args.store, r).items() if str(k).startswith("eval.")}
                for r in scored}
        print(json.dumps(rows, indent=1))
    else:
        print(f"evaluated {len(scored)} run(s) on {','.join(tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
