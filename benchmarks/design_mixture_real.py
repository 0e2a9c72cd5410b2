"""``scaling.design`` for mixtures on real runs: Ye et al. 2024's 5-domain experiment
(``dataset:mixing-laws-5domain``), the 26 mixtures of its 201M model at 31B tokens.

Per draw, 12 mixtures are fitted directly (the law, 60-resample bootstrap) and 4 more are added from
the other 14, either the 4 the design picks from them (``--candidates``: the mixtures one could run)
or 4 at random. Reported: the width of the best mixture's 95% bootstrap interval before and after,
and the distance of its loss from the optimum of the fit on all 26 (the nearest thing to a truth).

    python benchmarks/design_mixture_real.py [--draws 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from scaling import datasets  # noqa: E402
from scaling.mixture import fit_mixture, optimize_mixture  # noqa: E402
from scaling.mixture.design import mixture_design  # noqa: E402

N, D = 201541632.0, 31457280000.0
DOMAINS = ["academic", "prose", "dialogue", "symbolic", "internet"]


def optimum(table, seed, bootstrap=60):
    f = fit_mixture(table, model="law", kind="direct", bootstrap=bootstrap, seed=seed)
    return f, optimize_mixture(f, N, D)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    t = datasets.load("mixing-laws-5domain")
    g = t[(t["params"] == N) & (t["tokens"] == D)].drop(columns=["loss.overall"]).reset_index(drop=True)
    reference = optimum(g, 0, bootstrap=0)[1]["loss"]
    shares = g[[f"mix.{d}" for d in DOMAINS]].to_numpy()
    rows = []
    for s in range(args.draws):
        rng = np.random.default_rng(s)
        order = rng.permutation(len(g))
        start, pool = order[:12], order[12:]
        f, o = optimum(g.iloc[start], s)
        plan = mixture_design(g.iloc[start], f, target=None, budget=4 * 6 * N * D, k=4, mixtures=shares[pool])
        picked = [pool[np.argmin(np.abs(shares[pool] - [r[f"mix.{d}"] for d in DOMAINS]).sum(axis=1))]
                  for r in plan["runs"]]
        row = {"width_before": float(np.diff(o["ci"]["loss"])[0])}
        for arm, add in (("design", picked), ("random", list(rng.choice(pool, 4, replace=False)))):
            _, o2 = optimum(g.iloc[list(start) + list(add)], s)
            lo, hi = o2["ci"]["loss"]
            row[arm] = {"width_after": hi - lo, "error": o2["loss"] - reference, "covers": bool(lo <= reference <= hi)}
        rows.append(row)
    summary = {"reference_optimum_loss": reference, "draws": args.draws,
               "width_before": float(np.median([r["width_before"] for r in rows]))}
    for arm in ("design", "random"):
        summary[arm] = {"width_after": float(np.median([r[arm]["width_after"] for r in rows])),
                        "mean_abs_error": float(np.mean([abs(r[arm]["error"]) for r in rows])),
                        "coverage": float(np.mean([r[arm]["covers"] for r in rows]))}
    if args.json:
        print(json.dumps({"summary": summary, "per_draw": rows}))
        return 0
    print(f"optimum of the fit on all 26 mixtures: {reference:.4f}; interval width with 12 mixtures "
          f"{summary['width_before']:.4f} (median of {args.draws} draws)")
    for arm in ("design", "random"):
        a = summary[arm]
        print(f"{arm:>6} +4: width {a['width_after']:.4f}, |loss - all-26 optimum| {a['mean_abs_error']:.4f}, "
              f"covers it in {a['coverage']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
