"""A finished run's weights, kept beside the store and loaded back (evaluation, generation, export).

Every ``ok`` run leaves ``<store>/_models/<run_id>/`` holding ``model.safetensors`` (the tied
embedding stored once) and ``config.json`` (the ``GPTConfig``, the run's spec and its tokenizer),
the layout Hugging Face uses, so the weights are readable without this package. The directory is
written under a temporary name and renamed into place: a reader sees all of it or none of it.
The trainer writes here, ``runners.eval`` reads; ``runners.eval.export`` copies one elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_model as _load_safetensors
from safetensors.torch import save_model as _save_safetensors

from runners.models.arch import build_model
from runners.models.gpt import GPT, GPTConfig
from runners.grid.spec import RunSpec
from scaling import store as rstore
from scaling.cli import UsageError
from scaling.errors import DataError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "scaling-toolkit/gpt-1"


def model_dir(store, run_id: str) -> Path:
    return rstore.side_path(store, "models", run_id)


def save_model(model: GPT, spec: RunSpec, directory) -> Path:
    """Write weights and config to ``directory`` atomically (replacing an older copy)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    os.chmod(tmp, rstore.dir_mode())      # mkdtemp's 0700 would keep colleagues out
    try:
        _save_safetensors(model, str(tmp / MODEL_FILE))
        config = {"format": FORMAT, "model": asdict(model.config), "run": spec.to_dict(),
                  "tokenizer": spec.tokenizer, "params": model.num_params()}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1, default=str))
        old = None
        if directory.exists():
            old = directory.parent / f".old-{directory.name}-{os.getpid()}"
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_model(directory, device: str = "cpu") -> tuple[GPT, dict]:
    """(model in eval mode, config dict) from a directory written by ``save_model``."""
    directory = Path(directory)
    cfg_path, weights = directory / CONFIG_FILE, directory / MODEL_FILE
    if not cfg_path.exists() or not weights.exists():
        raise DataError(f"{directory} holds no saved model ({CONFIG_FILE} + {MODEL_FILE})")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{cfg_path}: unreadable model config ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(f"{cfg_path} is not a {FORMAT} config")
    try:
        model = build_model(_checked_model_config(config.get("model"), cfg_path))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, RuntimeError) as exc:
        raise DataError(f"{cfg_path}: its model section does not describe a model ({str(exc).splitlines()[0][:120]})") from None
    try:
        _load_safetensors(model, str(weights), device="cpu")
    except Exception as exc:            # safetensors' own errors, torch's size mismatch: one line
        raise DataError(f"{weights}: unreadable or mismatched weights ({str(exc).splitlines()[0][:120]})") from None
    return model.to(device).eval(), config


_DIMENSIONS = ("d_model", "ffw_size", "n_heads", "n_layers", "vocab_size", "seq_len")


def _checked_model_config(section, cfg_path) -> GPTConfig:
    """The config's model section as a ``GPTConfig``, its dimensions whole numbers >= 1, its dropout
    in [0, 1), and its weights within this machine's memory; one ``DataError`` otherwise (a damaged
    file made torch divide by zero, allocate negative or terabyte tensors)."""
    if not isinstance(section, dict):
        raise DataError(f"{cfg_path}: no model section")
    cfg = GPTConfig(**section)
    for name in _DIMENSIONS:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{cfg_path}: model.{name} = {value!r} (must be a whole number >= 1)")
    if isinstance(cfg.dropout, bool) or not isinstance(cfg.dropout, int | float) or not 0 <= cfg.dropout < 1:
        raise DataError(f"{cfg_path}: model.dropout = {cfg.dropout!r} (must be in [0, 1))")
    if cfg.arch == "gpt" and cfg.d_model % cfg.n_heads:
        raise DataError(f"{cfg_path}: model.d_model {cfg.d_model} is not divisible by model.n_heads {cfg.n_heads}")
    if cfg.arch in ("gpt", "mamba"):
        from scaling.accounting import AccountingError, arch_param_count
        try:
            n = arch_param_count(cfg.arch, cfg.d_model, cfg.ffw_size, cfg.n_layers, cfg.vocab_size, cfg.seq_len,
                                 cfg.activation)
        except AccountingError as exc:
            raise DataError(f"{cfg_path}: {exc}") from None
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if 4 * n > memory:
            raise DataError(f"{cfg_path}: a model of {n:.3g} parameters ({4 * n / 2 ** 30:.3g} GiB in fp32) does not "
                            f"fit in this machine's {memory / 2 ** 30:.3g} GiB of memory")
    return cfg


def resolve_run_id(store, run_id: str) -> str:
    """The full run id for ``run_id`` or a unique prefix of it; a clear error otherwise."""
    if not Path(store).is_dir():
        raise DataError(f"store {store} does not exist")
    ids = [str(i) for i in rstore.read_runs(store)["run_id"]]
    matches = [i for i in ids if i.startswith(run_id)] if run_id else []
    if run_id in ids:
        return run_id
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"run {run_id!r} is not in store {store}")
    raise UsageError(f"run id prefix {run_id!r} matches {len(matches)} runs in {store}; give more characters")


def load_run_model(store, run_id: str, device: str = "cpu") -> tuple[GPT, dict]:
    """The saved model of an ``ok`` run of ``store`` (``run_id`` may be a unique prefix)."""
    run_id = resolve_run_id(store, run_id)
    row = rstore.read_run(store, run_id)
    if row.get("status") != "ok":
        raise UsageError(f"run {run_id} has status {row.get('status')!r}, not ok: nothing to load")
    directory = model_dir(store, run_id)
    if not (directory / MODEL_FILE).exists():
        raise UsageError(f"run {run_id} has no saved weights in {directory} (trained before weights were kept?)")
    return load_model(directory, device)


def tokenizer_for(config: dict, cache_dir=None):
    """The tokenizer a saved model was trained with (a locally trained BPE needs its corpus)."""
    from runners import data as rdata

    spec = config.get("tokenizer")
    if not isinstance(spec, str) or not spec:
        raise DataError(f"the saved model's config names no tokenizer (tokenizer = {spec!r})")
    corpus = None
    if spec.startswith("bpe:"):
        run = config.get("run")
        if not isinstance(run, dict):
            raise DataError(f"the saved model's config lacks the run that trained its tokenizer {spec} (its corpus)")
        corpus = rdata.load_corpus(run.get("data", "embedded"), text_column=run.get("text_column", "text"),
                                   domain_column=run.get("domain_column") or None,
                                   cache_dir=cache_dir)
    return rdata.get_tokenizer(spec, corpus, cache_dir=cache_dir)
