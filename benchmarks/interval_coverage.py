"""How often held-out runs of the public ladders fall inside the 95% predictive interval.

Sixteen held-out splits: the ten of ``variant_selection.py`` (the largest scale of each ladder held
out) and ``scaling.backtest``'s own split (the largest compute held out) of the five public isoFLOP
ladders and the CPU demo's store. On each, the default fit with 200 bootstrap draws on the training
runs, and two intervals at every held-out run (``scaling.intervals.prediction_interval``): the
bootstrap draws with a new run's scatter taken as the fitted runs' residual sd (``scatter``, the
interval before 2026-12-07), and as ``scaling.intervals.predictive_sd``, the larger of that and the
rolling backtest's out-of-fold RMS error one fold out (``one_fold``, stop 38), and per held-out run
by its distance beyond the fitted runs, rising to the error two folds out (``predictive``, the
default since stop 39). Prints the share of held-out runs inside each, and the mean half-width in %.

    python benchmarks/interval_coverage.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import variant_selection                                          # noqa: E402

from scaling import datasets                                      # noqa: E402
from scaling.backtest import split_holdout                        # noqa: E402
from scaling.fit import fit                                       # noqa: E402
from scaling.laws import get_law                                  # noqa: E402
from scaling.intervals import decades_beyond, prediction_interval, predictive_sd, residual_sd  # noqa: E402


def splits():
    for name, t, held in variant_selection.ladders():
        yield name, t, np.asarray(held)
    for ds in ("llama3-isoflops", "marin-isoflops"):
        table = datasets.load(ds)
        for e in table["experiment"].unique():
            t = table[table["experiment"] == e].reset_index(drop=True)
            yield f"{e}, largest compute held out", t, split_holdout(t, "largest-compute")
    t = datasets.load("example-isoflop")
    yield "CPU demo store, largest compute held out", t, split_holdout(t, "largest-compute")


def run() -> list[dict]:
    rows = []
    for name, t, held in splits():
        t = t[[c for c in ("params", "tokens", "loss", "budget") if c in t.columns]]
        train, test = t[~held].reset_index(drop=True), t[held].reset_index(drop=True)
        far = test.sort_values(["params", "tokens"]).iloc[-1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = fit(train, want_profiles=False, bootstrap=200, target=(float(far["params"]), float(far["tokens"])))
        law = get_law(f.law)
        n, d, y = (test[k].to_numpy(float) for k in ("params", "tokens", "loss"))
        names = f.settings["bootstrap"]["names"]
        at = np.array([law.predict(dict(zip(names, p)), n, d) for p in f.bootstrap_draws])
        pred = law.predict(f.params, n, d)
        row = {"split": name, "law": f.law, "n_test": len(y),
               "mape": float(np.mean(np.abs(pred / y - 1)) * 100)}
        by_distance = predictive_sd(f, decades_beyond(f, n, d))[0]
        for key, sd in (("scatter", residual_sd(f)), ("one_fold", predictive_sd(f)[0]), ("predictive", by_distance)):
            band = prediction_interval(pred, at, sd)
            row[key] = {"sd": float(np.mean(sd)), "coverage": float(np.mean((band[:, 0] <= y) & (y <= band[:, 1]))),
                        "halfwidth": float(np.mean((band[:, 1] - band[:, 0]) / 2 / pred) * 100)}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = run()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    keys = ("scatter", "one_fold", "predictive")
    print("| held-out split | law | runs | MAPE | scatter sd / inside / half-width | one fold out | "
          "by distance (default; mean sd) |")
    print("|---|---|---:|---:|---|---|---|")
    for r in rows:
        cells = [f"{100 * r[k]['sd']:.2f}% / {100 * r[k]['coverage']:.0f}% / {r[k]['halfwidth']:.1f}%" for k in keys]
        print(f"| {r['split']} | {r['law']} | {r['n_test']} | {r['mape']:.2f}% | " + " | ".join(cells) + " |")
    for k in keys:
        c = [r[k]["coverage"] for r in rows]
        print(f"{k}: mean share inside {100 * np.mean(c):.1f}%, lowest {100 * min(c):.0f}%, "
              f"{sum(x >= 0.9 for x in c)} of {len(c)} splits at 90% or more, "
              f"median half-width {np.median([r[k]['halfwidth'] for r in rows]):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
