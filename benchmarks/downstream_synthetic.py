"""The two-step downstream law on ladders with a known truth: error and interval coverage at 10x.

Each draw makes a ladder (``scaling.downstream.synthetic``: 5 sizes 20M-320M x 10/20/40 tokens per
parameter, 20 checkpoints, 0.5% multiplicative noise on the intermediate, 1,000-item noise on
accuracy), fits both steps (``fit_downstream``, sigmoid, bootstrap 100) and predicts accuracy at
10x the largest model (3.2B, 20 tokens per parameter). Reports the absolute error in accuracy
points and how often the 95% interval covers the truth.

    python benchmarks/downstream_synthetic.py [--draws 50] [--form sigmoid|auto] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from scaling.downstream import fit_downstream  # noqa: E402
from scaling.downstream.synthetic import SIZES, ladder, truth  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--form", default="sigmoid")
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    target = (10 * SIZES[-1], 10 * SIZES[-1] * 20)
    _, acc_true = truth(*target)
    errors, covered, chosen = [], [], []
    t0 = time.perf_counter()
    for seed in range(args.draws):
        f = fit_downstream(ladder(seed), "synth", via="bpb", form=args.form, bootstrap=args.bootstrap, seed=seed)
        pred = f.predict(*target)
        errors.append(pred["prediction"][0] - acc_true)
        lo, hi = pred["interval"][0]
        covered.append(bool(lo <= acc_true <= hi))
        chosen.append(f.form)
    err = np.abs(errors)
    out = {"draws": args.draws, "truth": float(acc_true), "mean_abs_error": float(err.mean()),
           "median_abs_error": float(np.median(err)), "p90_abs_error": float(np.quantile(err, 0.9)),
           "bias": float(np.mean(errors)), "coverage": float(np.mean(covered)),
           "forms": {f: chosen.count(f) for f in set(chosen)}, "seconds_per_draw": (time.perf_counter() - t0) / args.draws}
    print(json.dumps(out, indent=1) if args.json else
          f"{args.draws} draws: |error| mean {100 * out['mean_abs_error']:.2f} points, median "
          f"{100 * out['median_abs_error']:.2f}, 90th percentile {100 * out['p90_abs_error']:.2f}, bias "
          f"{100 * out['bias']:+.2f}; 95% interval covers the truth in {100 * out['coverage']:.0f}%; forms {out['forms']}; "
          f"{out['seconds_per_draw']:.2f} s per draw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
