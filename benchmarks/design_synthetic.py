"""Does following ``scaling.design`` narrow the target's interval faster than extending the grid?

Synthetic truth (Hoffmann et al.'s law, 0.5% noise): a starting isoFLOP grid of 4 budgets
(1e17-3e18 FLOPs, 5 sizes each) fitted with a 60-resample bootstrap; the target is the loss at the
compute-optimal allocation of 1e22 FLOPs. Two arms, three rounds each, the same number of runs per
round (5):

* ``design``: the 5 runs ``scaling.design`` proposes within a budget of one grid step (5 runs at 3x
  the largest budget), drawn from the truth, refitted (``--objective``: the narrowest interval the
  budget buys, or the largest fall per FLOP);
* ``grid``: the default next step, the isoFLOP sizes at 3x the largest budget.

Reported per arm: the width of the 95% bootstrap interval of the target (relative), its fall per
FLOP spent, and whether the interval covers the truth; over ``--draws`` seeds.

    python benchmarks/design_synthetic.py [--draws 10] [--json]
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

from scaling.accounting import chinchilla_optimal  # noqa: E402
from scaling.design import candidates, design  # noqa: E402
from scaling.fit import fit  # noqa: E402
from scaling.laws import get_law  # noqa: E402

TRUTH = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
NOISE = 0.005
LAW = get_law("chinchilla")


def runs_at(n, d, rng):
    n, d = np.asarray(n, float), np.asarray(d, float)
    return pd.DataFrame({"params": n, "tokens": d, "loss": LAW.predict(TRUTH, n, d) * np.exp(rng.normal(0, NOISE, len(n)))})


def grid(budgets, rng):
    n = np.concatenate([np.geomspace(c ** 0.5 / 60, c ** 0.5 / 6, 5) for c in budgets])
    return runs_at(n, np.repeat(budgets, 5) / (6 * n), rng)


def interval(f, target):
    b = f.fit_settings.bootstrap
    preds = [LAW.predict(dict(zip(b.names, row)), target["params"], target["tokens"]) for row in b.draws]
    return np.percentile(preds, [2.5, 97.5])


def one(seed: int, rounds: int = 3, objective: str = "width") -> dict:
    rng = np.random.default_rng(seed)
    start = grid(np.array([1e17, 3e17, 1e18, 3e18]), rng)
    n_t, d_t = chinchilla_optimal(1e22, TRUTH["E"], TRUTH["A"], TRUTH["B"], TRUTH["alpha"], TRUTH["beta"])
    target = {"flops": 1e22, "params": float(n_t), "tokens": float(d_t)}
    truth = float(LAW.predict(TRUTH, n_t, d_t))
    refit = lambda t: fit(t, "chinchilla", bootstrap=60, seed=seed, want_profiles=False, variant="free")  # noqa: E731
    out = {}
    for arm in ("design", "grid"):
        runs, f, spent, largest = start.copy(), refit(start), 0.0, 3e18
        lo, hi = interval(f, target)
        w0 = hi / lo - 1
        for _ in range(rounds):
            step = 3 * largest
            if arm == "design":
                plan = design(runs, f, quantity="loss", target=target, budget=5 * step, k=5, cands=candidates(runs, f),
                              objective=objective)
                new = runs_at([r["params"] for r in plan["runs"]], [r["tokens"] for r in plan["runs"]], rng)
                spent += sum(r["flops"] for r in plan["runs"])
            else:
                new = grid(np.array([step]), rng)
                spent += 5 * step
            largest = step
            runs = pd.concat([runs, new], ignore_index=True)
            f = refit(runs)
        lo, hi = interval(f, target)
        out[arm] = {"width_before": float(w0), "width_after": float(hi / lo - 1), "flops": spent,
                    "fall_per_eflop": float((w0 - (hi / lo - 1)) / spent * 1e18), "covers": bool(lo <= truth <= hi)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--objective", choices=("width", "per-flop"), default="width",
                   help="the design's objective (scaling.design --objective)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [one(s, objective=args.objective) for s in range(args.draws)]
    summary = {}
    for arm in ("design", "grid"):
        summary[arm] = {k: float(np.median([r[arm][k] for r in rows])) for k in ("width_before", "width_after", "flops",
                                                                                  "fall_per_eflop")}
        summary[arm]["coverage"] = float(np.mean([r[arm]["covers"] for r in rows]))
    ratios = [r["design"]["fall_per_eflop"] / r["grid"]["fall_per_eflop"] for r in rows if r["grid"]["fall_per_eflop"] > 0]
    summary["ratio_per_flop_median"] = float(np.median(ratios)) if ratios else float("nan")
    summary["draws"] = args.draws
    if args.json:
        print(json.dumps({"summary": summary, "draws": rows}))
        return 0
    for arm in ("design", "grid"):
        s = summary[arm]
        print(f"{arm:>6}: width {s['width_before']:.3f} -> {s['width_after']:.3f} with {s['flops']:.3g} FLOPs "
              f"({s['fall_per_eflop']:.4f} per 1e18 FLOPs), interval covers the truth in {s['coverage']:.0%}")
    print(f"design / grid, fall of the width per FLOP (median over {args.draws} draws): {summary['ratio_per_flop_median']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
