"""Data mixtures: fit the data mixing law (Ye et al. 2024), find the loss-minimising mixture at a
target scale (with per-domain unique-data limits, Muennighoff et al. 2023), and measure whether
small runs rank mixtures as large runs do.

Store conventions: proportions as ``mix.<domain>`` columns summing to 1 (derived from a
``code_fraction`` column when absent: ``mix.code = x``, ``mix.text = 1 - x``), per-domain validation
losses as ``loss.<domain>``.

Kinds of fit (Ye et al. 2024, section 4, "nested use of scaling laws"):
- *direct*: every run at one scale; L_i(r) is fitted to the runs' losses.
- *nested*: runs at several scales; per mixture and domain a scaling law in (N, D) is fitted to
  the runs, each mixture is predicted at the target scale, and L_i(r) is fitted to those
  predictions (at ``optimize`` time, since the target is known only then). The per-mixture form is
  the richest every mixture supports: Chinchilla (>= 6 distinct (N, D), >= 3 sizes and token
  counts, not on one line in log space), else E + A/C^gamma (>= 3 compute values), else A/C^gamma.

    python -m scaling.mixture fit results/ --domains text,code --bootstrap 100 --out mix.json
    python -m scaling.mixture optimize --fit mix.json --params 1e8 --tokens 2e9 --unique-tokens code=20M --json
    python -m scaling.mixture transfer results/ --small-params 1M --large-params 10M

One room per step: ``runs`` (reading mixture runs), ``result`` (``MixtureFit``), ``fit``, ``predict``
(the law at a target scale), ``optimize``, ``transfer``, ``cli``; this package re-exports what
callers use.
"""

from scaling.mixture.runs import MixtureRuns, RENORM_TOL, SIZE_TOL, SUM_TOL, read_mixtures
from scaling.mixture.result import MixtureFit, SCALING_FORMS
from scaling.mixture.predict import evaluate_fit, predict_frame, predict_losses, predict_table, proportions_for
from scaling.mixture.fit import MIN_CV_MIXTURES, MIN_TREE_MIXTURES, fit_mixture
from scaling.mixture.optimize import Constraints, RD_STAR, SHARE_STEP, SMOOTH_SAMPLES, TOKEN_GRID, TOP_K, TREE_SAMPLES, dirichlet_samples, make_constraints, optimize_mixture, round_shares, search_simplex
from scaling.mixture.transfer import rank_agreement, transfer
from scaling.mixture.cli import main

__all__ = ["Constraints", "MIN_CV_MIXTURES", "MIN_TREE_MIXTURES", "MixtureFit", "MixtureRuns", "RD_STAR", "RENORM_TOL", "SCALING_FORMS", "SHARE_STEP", "SIZE_TOL", "SMOOTH_SAMPLES", "SUM_TOL", "TOKEN_GRID", "TOP_K", "TREE_SAMPLES", "dirichlet_samples", "evaluate_fit", "fit_mixture", "main", "make_constraints", "optimize_mixture", "predict_frame", "predict_losses", "predict_table", "proportions_for", "rank_agreement", "read_mixtures", "round_shares", "search_simplex", "transfer"]
