"""Fit scaling laws the way the papers do, globally, with intervals and honest diagnostics.

Objective (Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024; Muennighoff et al. 2023):
the *sum* over runs of Huber_delta(LSE-prediction of log-loss - log-loss), delta = 1e-3. A mean would
shrink gradients by 1/n and make L-BFGS stop early.

Search: every start of the law's grid (for Chinchilla, the replication's 4,500 points) is optimised
at once by a batched L-BFGS (``scaling.optimize``); the best distinct candidates are polished by
scipy's L-BFGS-B. The data-constrained law is fitted as in its paper: a Chinchilla fit on the
single-epoch runs, then R_D*, R_N* on all runs with the base held fixed (or ``--base FIT.json``).

    python -m scaling.fit results/
    python -m scaling.fit chinchilla.csv --column params="Model Size" --column flops="Training FLOP" --exclude-top 5


The package by room: ``objective`` (the Huber objective as a ``Problem``, multi-start search),
``solver`` (the batched L-BFGS and polish), ``diagnostics``, ``data`` (``prepare``), ``approach3``
(``fit``, variants chosen by ``variants``, bootstrap), ``approach1``, ``approach2`` and ``cli``;
every name ``scaling.fit`` had is importable from it as before."""

from __future__ import annotations

from scaling.fit.objective import (  # noqa: F401  (scaling.fit's names, as one module had them)
    DELTA, FLAT_PROFILE, PROFILE_FACTORS, HAIR, MAX_STARTS, SCREEN_POINTS, SCREEN_KEEP, BASE_NAMES,
    TIEABLE, Problem, make_problem, solve, local_batch)
from scaling.fit.diagnostics import (  # noqa: F401  (scaling.fit's names, as one module had them)
    profiles, diagnose, warning_kind, count_warnings)
from scaling.fit.data import (  # noqa: F401  (scaling.fit's names, as one module had them)
    FitData, prepare, default_law, data_sha256)
from scaling.fit.approach3 import (  # noqa: F401  (scaling.fit's names, as one module had them)
    Stage, fit_stage, fit, bootstrap_draws)
from scaling.fit.cli import (  # noqa: F401  (scaling.fit's names, as one module had them)
    main, print_approach2)

__all__ = ["DELTA", "FLAT_PROFILE", "PROFILE_FACTORS", "HAIR", "MAX_STARTS", "SCREEN_POINTS", "SCREEN_KEEP", "BASE_NAMES", "TIEABLE", "Problem", "make_problem", "solve", "local_batch", "profiles", "diagnose", "warning_kind", "count_warnings", "FitData", "prepare", "default_law", "data_sha256", "Stage", "fit_stage", "fit", "bootstrap_draws", "main", "print_approach2"]
