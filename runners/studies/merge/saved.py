"""Saved models with lineage: ``runners.models.files``' format plus where a model came from."""

from __future__ import annotations

import logging
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from runners.models import files as model_files
from runners.models.gpt import GPT
from runners.grid.spec import RunSpec
from scaling.cli import DataError, UsageError
from runners.studies.merge.arithmetic import (
    LINEAGE, check_compatible, check_weights, combine_mixtures, fingerprint, merge_models,
)

log = logging.getLogger(__name__)


@dataclass
class SavedModel:
    """A model loaded from a directory, its ``config.json`` and its lineage."""

    model: GPT
    config: dict
    path: Path

    @property
    def lineage(self) -> dict:
        return lineage_of(self.config)

    @property
    def spec(self) -> RunSpec:
        return RunSpec.from_dict(self.config["run"])

    @property
    def mixture(self) -> dict | None:
        return self.lineage.get("mixture")


def lineage_of(config: dict) -> dict:
    """The config's lineage; a store run's model (no lineage) is a ``run`` of its code share (its
    mixture known for the embedded corpus, whose domains are code and text)."""
    if LINEAGE in config:
        return config[LINEAGE]
    run = config.get("run") or {}
    cf = run.get("code_fraction")
    embedded = run.get("data", "embedded") == "embedded"
    mixture = {"code": float(cf), "text": 1.0 - float(cf)} if cf is not None and embedded else None
    return {"role": "run", "mixture": mixture, "base": None, "fingerprint": None}


def load(directory) -> SavedModel:
    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"model directory {directory} does not exist")
    model, config = model_files.load_model(directory)
    return SavedModel(model, config, directory)


def _check_fresh(out) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty directory")
    return out


def save(model: GPT, spec: RunSpec, directory, lineage: dict) -> Path:
    """``runners.models.files.save_model``'s format plus ``lineage`` in config.json, renamed into place
    whole (an older copy is replaced)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-merge-", dir=directory.parent))
    try:
        inner = model_files.save_model(model, spec, staging / "model")
        config_path = inner / model_files.CONFIG_FILE
        config = json.loads(config_path.read_text())
        config[LINEAGE] = {**lineage, "fingerprint": fingerprint(model)}
        config_path.write_text(json.dumps(config, indent=1, default=str))
        old = staging / "old"
        if directory.exists():
            os.replace(directory, old)
        try:
            os.replace(inner, directory)
        except BaseException:
            if old.exists():
                os.replace(old, directory)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def merge_saved(sources: Sequence[SavedModel], weights: Sequence[float]) -> tuple[GPT, RunSpec, dict]:
    """(merged model, its spec, its lineage) for saved models; the tokenizers must agree too."""
    names = [str(s.path) for s in sources]
    weights = check_weights(weights, len(sources))
    check_compatible([s.model.config for s in sources], names)
    tokenizers = {s.config.get("tokenizer") for s in sources}
    if len(tokenizers) > 1:
        raise DataError(f"cannot merge models trained with different tokenizers ({', '.join(map(str, tokenizers))})")
    merged = merge_models([s.model for s in sources], weights)
    mixture = combine_mixtures([s.mixture for s in sources], weights)
    bases = {_base_of(s.lineage) for s in sources}
    base = bases.pop() if len(bases) == 1 else None
    spec = sources[0].spec
    if mixture is not None and "code" in mixture:
        spec = dataclasses.replace(spec, code_fraction=round(mixture["code"], 12))
    lineage = {"role": "merged", "mixture": mixture, "base": base,
               "sources": [{"path": str(s.path), "weight": w, "fingerprint": s.lineage.get("fingerprint"),
                            "mixture": s.mixture} for s, w in zip(sources, weights)],
               "citation": "Na et al. 2024, Scalable Data Ablation Approximations for Language Models "
                           "through Modular Training and Merging"}
    return merged, spec, lineage


def _base_of(lineage: dict):
    """The seed a model grew from (a seed is its own base)."""
    return lineage.get("fingerprint") if lineage.get("role") == "seed" else lineage.get("base")


def merge_dirs(directories: Sequence, weights: Sequence[float], out) -> Path:
    """Merge saved models into a new directory ``out``; every input is checked before writing."""
    out = _check_fresh(out)
    weights = check_weights(weights, len(directories))
    sources = [load(d) for d in directories]
    merged, spec, lineage = merge_saved(sources, weights)
    if lineage["base"] is None:
        log.warning("merging models without a common seed: parameter averages of unrelated models "
                    "are not a mixture proxy")
    return save(merged, spec, out, lineage)
