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

import numpy as np
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
    Dataset("mixing-laws-5domain", "mixing_laws_losses.csv.gz",
            "the 5-domain experiment of mixing-laws as one row per (run, checkpoint): mix.<group> proportions, "
            "loss.<group> and loss.overall (validation-weighted means over the 22 Pile subsets, as the paper's code)",
            "Ye et al. 2024 (arXiv:2403.16952); validation weights from the authors' pipeline/valid_weight.json",
            "github.com/yegcjs/mixinglaws @ 8ad3e12", _UNSTATED,
            "run_id, model, params (non-embedding), step, tokens (step x 2^20), mix.academic|prose|dialogue|symbolic|"
            "internet, loss.<group>, loss.overall"),
    Dataset("example-isoflop", "example_isoflop.parquet",
            "this project's CPU demo store: python -m runners.isoflop --budget tiny --epochs 1,4,16 (4 budgets "
            "3e10-1e12 FLOPs in 6N_ne+head+attn, 5 one-layer sizes at full data, each optimum also at 4 and 16 "
            "epochs; embedded code, byte tokenizer)",
            "scaling-toolkit's own runs, for notebooks and examples without a store",
            "made by the command above on a 2-core AMD EPYC (see docs/benchmarks.md)", "MIT (this project's)",
            "the store's columns: run_id, shape, params, tokens, unique_tokens, flops, loss, loss.<domain>, status, ..."),
    Dataset("example-mixtures", "example_mixtures.parquet",
            "this project's CPU code-share grid: python -m runners.isounique --unique 100K,300K --sizes t32,t64 "
            "--epochs 1 --code-fraction 0,0.25,0.5,0.75,1",
            "scaling-toolkit's own runs, for notebooks and examples without a store",
            "made by the command above on a 2-core AMD EPYC", "MIT (this project's)",
            "the store's columns, with mix.text, mix.code, loss.text, loss.code"),
    Dataset("gadre2024", "gadre2024_c4_refinedweb_runs.csv.gz",
            "69 runs of the over-training study on C4 and RefinedWeb: 4 sizes 11M-411M at 5-640 tokens/param, "
            "1.4B (20, 80 or 320) and 6.9B (20); C4-eval loss and 7 other losses, top-1 error on 46 tasks",
            "Gadre et al. 2024, 'Language models scale reliably with over-training and on downstream tasks' "
            "(arXiv:2403.08540)",
            "github.com/mlfoundations/scaling @ a003c49 (exp_data/models, exp_data/evals), flattened", "MIT (the repository's)",
            "run_id, dataset (c4_original | rw_original), params (N with embeddings, as the authors count), "
            "params_no_embed, tokens (D), tok_mult (D/N), flops (6ND), loss (C4 eval, the loss the paper predicts), "
            "loss.<set> (8 sets), eval.<task>.err (1 - accuracy), eval.<task>.acc, eval.<task>.chance (the "
            "authors' random baseline, as accuracy) for 46 tasks, avg46 and avg17_subset (the paper's 17 tasks)"),
    Dataset("doremi-weights", "doremi_domain_weights.json",
            "domain weights for the Pile and RedPajama: baseline, uniform and DoReMi-optimised",
            "Xie et al. 2023, 'DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining' (arXiv:2305.10429)",
            "github.com/sangmichaelxie/doremi @ 7cde52d", "MIT (the repository's)",
            "set (file name), kind (train|eval), domain, weight"),
)}


#: Ye et al. 2024's validation weights of the 22 Pile subsets (their pipeline/valid_weight.json) and
#: the 5 groups of their 5-domain experiment (mix_5_domains.ipynb): group and overall losses are
#: means of subset losses with these weights
PILE_VALID_WEIGHTS = {
    "Github": 0.09529320987654322, "Pile-CC": 0.1570216049382716, "Books3": 0.12654320987654322,
    "PhilPapers": 0.005015432098765432, "OpenWebText2": 0.09066358024691358, "PubMed_Abstracts": 0.023919753086419752,
    "DM_Mathematics": 0.021604938271604937, "PG19": 0.018518518518518517, "FreeLaw": 0.05439814814814815,
    "HackerNews": 0.0073302469135802465, "EuroParl": 0.008101851851851851, "OpenSubtitles": 0.015817901234567902,
    "PubMed_Central": 0.125, "Wikipedia_en": 0.03742283950617284, "StackExchange": 0.055169753086419755,
    "BookCorpus2": 0.006944444444444444, "Enron_Emails": 0.0011574074074074073, "NIH_ExPorter": 0.0019290123456790122,
    "YoutubeSubtitles": 0.009645061728395061, "Ubuntu_IRC": 0.008101851851851851, "ArXiv": 0.10185185185185185,
    "USPTO_Backgrounds": 0.02854938271604938}
FIVE_GROUPS = {
    "academic": ["ArXiv", "PubMed_Abstracts", "PhilPapers", "NIH_ExPorter", "FreeLaw", "USPTO_Backgrounds", "PubMed_Central"],
    "prose": ["PG19", "Books3", "BookCorpus2"],
    "dialogue": ["Ubuntu_IRC", "OpenSubtitles", "EuroParl", "Enron_Emails", "HackerNews", "YoutubeSubtitles"],
    "symbolic": ["DM_Mathematics", "Github"],
    "internet": ["Pile-CC", "OpenWebText2", "StackExchange", "Wikipedia_en"],
}


def _five_domain(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, run, step) of the 5-domain experiment, runs above 900 left out as the
    authors' loader does."""
    t = long[long["experiment"] == "5Mix"].copy()
    t["run_id"] = pd.to_numeric(t["run_id"], errors="coerce")
    t["step"] = pd.to_numeric(t["step"], errors="coerce")
    t = t[t["run_id"] <= 900]
    wide = t.pivot_table(index=["model", "run_id", "step"], columns="valid_domain", values="loss", aggfunc="mean")
    wide = wide.dropna(subset=list(PILE_VALID_WEIGHTS))
    out = pd.DataFrame(index=wide.index)
    for g, subs in FIVE_GROUPS.items():
        w = pd.Series({s: PILE_VALID_WEIGHTS[s] for s in subs})
        out[f"loss.{g}"] = (wide[subs] * w).sum(axis=1) / w.sum()
    w_all = pd.Series(PILE_VALID_WEIGHTS)
    out["loss.overall"] = (wide[list(w_all.index)] * w_all).sum(axis=1) / w_all.sum()
    meta = t.groupby(["model", "run_id", "step"]).first()
    for g in FIVE_GROUPS:
        out[f"mix.{g}"] = meta.loc[out.index, f"w_{g}"].astype(float)
    out["params"] = meta.loc[out.index, "nonembed_params"].astype(float)
    out["tokens"] = out.index.get_level_values("step").astype(float) * 2 ** 20
    out = out.reset_index()
    out["run_id"] = out["model"] + "-" + out["run_id"].astype(int).astype(str) + "-" + out["step"].astype(int).astype(str)
    return out


#: The 17 tasks of Gadre et al. 2024's downstream average (err_avg17_subset is their mean; found
#: as the only 0/1 combination of the 46 err_ columns that reproduces it on all 69 runs)
GADRE_17_TASKS = ("arc_easy", "bigbench_cs_algorithms", "bigbench_dyck_languages", "bigbench_novel_concepts",
                  "bigbench_operators", "bigbench_qa_wikidata", "boolq", "commonsense_qa", "copa", "coqa",
                  "hellaswag", "hellaswag_zeroshot", "lambada_openai", "piqa", "pubmed_qa_labeled", "squad",
                  "winograd")


def _gadre(raw: pd.DataFrame) -> pd.DataFrame:
    """The authors' flattened table in the toolkit's columns: one run per row, ``loss`` the C4
    eval loss, ``eval.<task>.err``/``.acc``/``.chance`` per task (chance from their random baselines)."""
    with resources.as_file(resources.files("scaling.datasets").joinpath("data", "gadre2024_eval_metadata.csv.gz")) as p:
        meta = pd.read_csv(p)
    chance = dict(zip(meta["Eval Task"], meta["Random baseline"].astype(float) / 100.0))
    out = pd.DataFrame({"run_id": raw["name"], "dataset": raw["dataset"], "model": raw["model"],
                        "params": raw["N"].astype(float), "params_no_embed": raw["N_no_embed"].astype(float),
                        "tokens": raw["D"].astype(float), "tok_mult": raw["tok_mult"].astype(float),
                        "flops": raw["flops_6ND"].astype(float), "loss": raw["loss_c4_val"].astype(float)})
    columns = {}
    for c in raw.columns:
        if c.startswith("loss_"):
            columns[f"loss.{c[5:]}"] = raw[c].astype(float)
        elif c.startswith("err_"):
            task = c[4:]
            columns[f"eval.{task}.err"] = raw[c].astype(float)
            columns[f"eval.{task}.acc"] = 1.0 - raw[c].astype(float)
            members = (GADRE_17_TASKS if task == "avg17_subset"
                       else [t for t in chance if f"err_{t}" in raw.columns] if task == "avg46" else [task])
            if all(t in chance for t in members):
                columns[f"eval.{task}.chance"] = pd.Series(float(np.mean([chance[t] for t in members])),
                                                           index=raw.index)
    return pd.concat([out, pd.DataFrame(columns)], axis=1)


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
        if d.file.endswith(".parquet"):
            return pd.read_parquet(path)
        table = pd.read_csv(path, low_memory=False)
        if d.name == "gadre2024":
            return _gadre(table)
        return _five_domain(table) if d.name == "mixing-laws-5domain" else table


def is_dataset(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)
