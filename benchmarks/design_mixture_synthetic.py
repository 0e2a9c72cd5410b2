"""Does following ``scaling.design --quantity mixture`` narrow the optimum's loss interval faster than
drawing more mixtures the way ``runners.mixgrid`` does?

Synthetic truth: Ye et al. 2024's mixing law for three loss domains over three components (one
scale; 1% log-normal noise per run); 12 starting mixtures drawn around the uniform prior, fitted
directly (the law as predictor, 60-resample bootstrap). The target is the loss of the equal-weight
optimum. Two arms, three rounds of 4 runs each:

* ``design``: the 4 mixtures ``scaling.mixture.design`` proposes (budget 4 runs), drawn from the truth;
* ``draws``: 4 more Dirichlet mixtures around the prior (mixgrid's proposal, a fresh seed each round).

Reported per arm over ``--draws`` seeds: the width of the optimum's 95% bootstrap interval
(absolute, nats) before and after, whether it covers the true optimum's loss, and the error of the
predicted optimum loss.

    python benchmarks/design_mixture_synthetic.py [--draws 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from scaling.mixture import dirichlet_samples, fit_mixture, optimize_mixture  # noqa: E402
from scaling.mixture.design import mixture_design  # noqa: E402
from scaling.mixture.synthetic import DOMAINS, D, N, runs_at, true_optimum_loss  # noqa: E402

def state(table, seed):
    f = fit_mixture(table, bootstrap=60, seed=seed, model="law")
    o = optimize_mixture(f, N, D, seed=seed)
    return f, o["loss"], o["ci"]["loss"]


def one(seed: int, rounds: int = 3, per_round: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    prior = np.ones(3) / 3
    start = runs_at(dirichlet_samples(prior, 12, rng), rng)
    truth = true_optimum_loss()
    out = {}
    for arm in ("design", "draws"):
        arm_rng = np.random.default_rng([seed, 1 if arm == "design" else 2])
        runs = start.copy()
        f, pred, (lo, hi) = state(runs, seed)
        w0 = hi - lo
        for rnd in range(rounds):
            if arm == "design":
                plan = mixture_design(runs, f, target=None, budget=per_round * 6 * N * D, k=per_round, seed=seed)
                R = np.array([[r[f"mix.{d}"] for d in DOMAINS] for r in plan["runs"]])
            else:
                R = dirichlet_samples(prior, per_round, arm_rng)
            runs = pd.concat([runs, runs_at(R, arm_rng)], ignore_index=True)
            f, pred, (lo, hi) = state(runs, seed)
        out[arm] = {"width_before": float(w0), "width_after": float(hi - lo), "covers": bool(lo <= truth <= hi),
                    "error": float(pred - truth)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [one(s) for s in range(args.draws)]
    summary = {}
    for arm in ("design", "draws"):
        summary[arm] = {k: float(np.median([r[arm][k] for r in rows])) for k in ("width_before", "width_after")}
        summary[arm]["coverage"] = float(np.mean([r[arm]["covers"] for r in rows]))
        summary[arm]["mean_abs_error"] = float(np.mean([abs(r[arm]["error"]) for r in rows]))
    falls = [(r["design"]["width_before"] - r["design"]["width_after"]) / (r["draws"]["width_before"] - r["draws"]["width_after"])
             for r in rows if r["draws"]["width_before"] > r["draws"]["width_after"]]
    summary["fall_ratio_median"] = float(np.median(falls)) if falls else float("nan")
    summary["n_draws"] = args.draws
    if args.json:
        print(json.dumps({"summary": summary, "per_draw": rows}))
        return 0
    for arm in ("design", "draws"):
        s = summary[arm]
        print(f"{arm:>6}: width {s['width_before']:.4f} -> {s['width_after']:.4f} nats, covers the true optimum's "
              f"loss in {s['coverage']:.0%}, mean |error| {s['mean_abs_error']:.4f}")
    print(f"design / draws, fall of the width for the same runs (median over {args.draws} draws): "
          f"{summary['fall_ratio_median']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
