"""Public reference data shipped inside the package, each with its source and citation.

None of these was produced by this project; they are published results of other groups, copied
from their public repositories so that fits and tests can be checked against real data with no
network and no path outside the package. ``load(name)`` returns a DataFrame; any CLI that takes a
SOURCE accepts ``dataset:NAME`` (e.g. ``python -m scaling.fit dataset:epoch-chinchilla``).

    python -m scaling.datasets list
    python -m scaling.datasets show llama3-isoflops
    python -m scaling.datasets export misfitting-checkpoints --out ckpts.csv
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from scaling.cli import UsageError

PREFIX = "dataset:"


@dataclass(frozen=True)
class Dataset:
    name: str
    file: str
    description: str
    citation: str
    source: str
    licence: str
    columns: str = ""


_UNSTATED = ("no licence file in the source repository at that commit; shipped as published "
             "scientific results for reproduction, with attribution")

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("epoch-chinchilla", "epoch_chinchilla.csv.gz",
            "245 (N, C, loss) points read off Chinchilla's Figure 4 by the Epoch AI replication",
            "Besiroglu, Erdil, Barnett, You 2024, 'Chinchilla Scaling: A replication attempt' (arXiv:2404.10102)",
            "github.com/epoch-research/analyzing-chinchilla (data/svg_extracted_data.csv)", "MIT (the repository's)",
            "'Model Size' (N), 'Training FLOP' (C = 6ND), loss"),
    Dataset("llama3-isoflops", "llama3_isoflops.csv.gz",
            "isoFLOP sweeps of the Llama 3 report (6e18-1e22 FLOPs), digitised; raw and exp-transformed loss",
            "Llama Team 2024, 'The Llama 3 Herd of Models' (arXiv:2407.21783), Fig. 2; digitised by Open-Athena",
            "github.com/Open-Athena/scaling-law-analysis @ 3e0656e", _UNSTATED,
            "experiment (llama_3__raw_loss | llama_3__exp_loss), params, tokens, budget (C = 6ND), loss"),
    Dataset("marin-isoflops", "marin_isoflops.csv.gz",
            "isoFLOP sweeps of the Marin scaling ladder on 3 datasets (comma, dclm, nemotron), 1.8e18-3e20 FLOPs",
            "Marin project 2026 scaling ladder, as extracted by Open-Athena/scaling-law-analysis",
            "github.com/Open-Athena/scaling-law-analysis @ 3e0656e", _UNSTATED,
            "experiment, params, tokens, budget (nominal; 6ND/budget ranges 0.74-1.07), loss"),
    Dataset("misfitting-checkpoints", "misfitting_checkpoints.csv.gz",
            "C4 eval loss at 4,852 intermediate checkpoints of 240 runs, 11 sizes 12M-1B, several lengths and LRs",
            "Li, Kudugunta, Zettlemoyer 2025, '(Mis)Fitting: A Survey of Scaling Laws' (arXiv:2502.18969)",
            "github.com/hadasah/scaling_laws @ 1f3708c", _UNSTATED,
            "run (model|steps|lr|sweep, added here), loss, N, N_no_emb, D (tokens so far), C, C_no_emb, C_6ND, "
            "C_6ND_no_emb, portion_steps_elapsed, model, train_tokens (= D; not the run's total), total_steps, peak_lr"),
    Dataset("misfitting-final", "misfitting_final.csv.gz",
            "the final checkpoint of each of the 261 runs of misfitting-checkpoints",
            "Li, Kudugunta, Zettlemoyer 2025 (arXiv:2502.18969)", "github.com/hadasah/scaling_laws @ 1f3708c",
            _UNSTATED, "as misfitting-checkpoints"),
    Dataset("mixing-laws", "mixing_laws_losses.csv.gz",
            "per-checkpoint validation losses of Pythia-style models (70M-1B) on 2-, 3- and 5-domain mixtures",
            "Ye, Liu, Sun, Zhou, Zhan, Qiu 2024, 'Data Mixing Laws' (arXiv:2403.16952)",
            "github.com/yegcjs/mixinglaws @ 8ad3e12", _UNSTATED,
            "experiment, model, nonembed_params, run_id, w_<domain> (proportions), step, tokens_if_1M_tok_batch, "
            "valid_domain (22 Pile subsets), loss"),
    Dataset("doremi-weights", "doremi_domain_weights.json",
            "domain weights for the Pile and RedPajama: baseline, uniform and DoReMi-optimised",
            "Xie et al. 2023, 'DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining' (arXiv:2305.10429)",
            "github.com/sangmichaelxie/doremi @ 7cde52d", "MIT (the repository's)",
            "set (file name), kind (train|eval), domain, weight"),
)}


def _path(d: Dataset):
    return resources.files("scaling.datasets").joinpath("data", d.file)


def get(name: str) -> Dataset:
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    try:
        return DATASETS[key]
    except KeyError:
        raise UsageError(f"unknown dataset {key!r} (known: {', '.join(DATASETS)})") from None


def load(name: str) -> pd.DataFrame:
    """The dataset as a DataFrame (``dataset:`` prefix optional)."""
    d = get(name)
    with resources.as_file(_path(d)) as path:
        if d.file.endswith(".json"):
            raw = json.loads(path.read_text())
            rows = [(s, kind.replace("_domain_weights", ""), dom, float(w))
                    for s, kinds in raw.items() for kind, ws in kinds.items() for dom, w in ws.items()]
            return pd.DataFrame(rows, columns=["set", "kind", "domain", "weight"])
        return pd.read_csv(path, low_memory=False)


def is_dataset(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)
