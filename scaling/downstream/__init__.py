"""Downstream accuracy of a larger model, from runs scored along training: the two-step law.

Step 1, a smooth intermediate (the task's bits per byte by default) from N and D, Chinchilla's
form fitted by ``scaling.fit``; step 2, the task metric from the intermediate, a sigmoid (Bhagia
et al. 2024, the OLMo model ladder) or an exponential (Gadre et al. 2024) fitted on every
checkpoint of every run (``scaling.laws.downstream``). The intermediate and form are chosen per
task by holding out the largest model size; intervals chain both steps' bootstrap draws.

    python -m scaling.downstream fit results/ --task corpus_cloze --out down.json
    python -m scaling.downstream predict --fit down.json --params 7e9 --tokens 4e12 --json
    python -m scaling.downstream fit dataset:gadre2024 --task avg17_subset --metric err --via loss \\
        --where dataset=c4_original --max-params 1e9

One room per step: ``data`` (the points of each step), ``fit`` (both steps, the choice, the
bootstrap), ``result`` (``DownstreamFit``), ``cli``.
"""

from scaling.downstream.data import read_checkpoints, step1_table, step2_points, task_data, tasks_in
from scaling.downstream.fit import fit_downstream, select
from scaling.downstream.result import DownstreamFit
from scaling.downstream.cli import main

__all__ = ["DownstreamFit", "fit_downstream", "main", "read_checkpoints", "select", "step1_table", "step2_points",
           "task_data", "tasks_in"]
