"""What the fits give on the public data shipped in ``scaling.datasets`` (none of it ours).

1. Approach 2, every estimator, on the Llama 3 and Marin isoFLOP sweeps: N_opt and D_opt exponents
   with 95% intervals (the Llama 3 report: D_opt ~ C^0.53).
2. Approach 2 estimators on synthetic skewed sweeps with known truth (how the default was chosen).
3. Approach 3 on ladders, holding out the largest scale: the variant the rolling backtest picks
   (inside the training part only) and the held-out error of each variant.
4. Approach 1 on the (Mis)Fitting checkpoints in two FLOP conventions.
5. Fit time at 2,000 points against 250 points, measured in the same run.

    python benchmarks/fits_real_data.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling import datasets                       # noqa: E402
from scaling.fit.approach1 import approach1            # noqa: E402
from scaling.fit.approach2 import ESTIMATORS, approach2   # noqa: E402
from scaling.fit import fit                        # noqa: E402
from scaling.laws import get_law                   # noqa: E402
from scaling.predict import chinchilla_allocation  # noqa: E402
from scaling.fit.variants import VARIANTS              # noqa: E402

LAW = get_law("chinchilla")


def sweeps():
    for name in ("llama3-isoflops", "marin-isoflops"):
        t = datasets.load(name)
        for e, g in t.groupby("experiment"):
            yield e, g.reset_index(drop=True)


def approach2_real():
    rows = []
    for e, g in sweeps():
        for est in ESTIMATORS:
            r = approach2(g, est)
            rows.append({"experiment": e, "estimator": est, "budgets": len(r.budgets),
                         "params_exponent": r.params_exponent, "params_ci": r.params_exponent_ci,
                         "tokens_exponent": r.tokens_exponent, "tokens_ci": r.tokens_exponent_ci,
                         "tokens_coefficient": r.tokens_coefficient})
    return rows


def approach2_synthetic(seeds=10):
    truth = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    exponent = truth["beta"] / (truth["alpha"] + truth["beta"])
    out = []
    for noise in (0.0, 0.003, 0.005, 0.01):
        errs = {e: [] for e in ESTIMATORS}
        for seed in range(seeds if noise else 1):
            rng = np.random.default_rng(seed)
            rows = []
            for j, c in enumerate(np.logspace(18, 21, 7)):
                n_opt = chinchilla_allocation(truth, c)["params"]
                below = 2.6 - 2.2 * j / 6
                for dec in np.arange(-below, 3.0 - below + 1e-9, 0.1):
                    n = n_opt * 10 ** dec
                    rows.append((n, c / (6 * n), c, float(LAW.predict(truth, n, c / (6 * n))) * np.exp(rng.normal(0, noise))))
            t = pd.DataFrame(rows, columns=["params", "tokens", "budget", "loss"])
            for e in ESTIMATORS:
                errs[e].append(approach2(t, e, bootstrap=0).params_exponent - exponent)
        for e, v in errs.items():
            out.append({"noise": noise, "estimator": e, "bias": float(np.mean(v)),
                        "rmse": float(np.sqrt(np.mean(np.square(v))))})
    return out


def ladders():
    f = datasets.load("misfitting-final")
    for n in ("N", "N_no_emb"):
        g = f.assign(params=f[n].astype(float), tokens=f["D"].astype(float))
        g = g.groupby(["params", "tokens"], as_index=False)["loss"].min()     # best learning rate
        yield f"misfitting ({n})", g, g["params"] >= g["params"].max() * 0.99
    for e, g in sweeps():
        yield e, g[["params", "tokens", "loss", "budget"]], g["budget"] == g["budget"].max()


def approach3_ladders():
    rows = []
    for name, t, held in ladders():
        train, test = t[~held], t[held]
        chosen = fit(train, "chinchilla", want_profiles=False)
        row = {"ladder": name, "n_train": int((~held).sum()), "n_test": int(held.sum()),
               "chosen": chosen.settings["variant"]["chosen"],
               "backtest_mape": {k: c["backtest_mape"] for k, c in chosen.settings["variant"]["candidates"].items()}}
        for v in VARIANTS:
            r = fit(train, "chinchilla", want_profiles=False, variant=v)
            err = 100 * (LAW.predict(r.params, test["params"].values, test["tokens"].values) - test["loss"].values) / test["loss"].values
            row[f"heldout.{v}"] = {"mean_pct": float(err.mean()), "mape": float(np.abs(err).mean()), "E": r.params["E"]}
        row["heldout.chosen"] = row[f"heldout.{row['chosen']}"]
        rows.append(row)
    return rows


def approach1_conventions():
    t = datasets.load("misfitting-checkpoints")
    out = []
    for label, n, c in (("with embeddings (N, C)", "N", "C"), ("without (N_no_emb, C_no_emb)", "N_no_emb", "C_no_emb")):
        r = approach1(t.assign(params=t[n], tokens=t["D"], flops=t[c]))
        out.append({"convention": label, "params_exponent": r.params_exponent, "ci": r.params_exponent_ci,
                    "tokens_exponent": r.tokens_exponent, "sizes_on_envelope": len(set(r.envelope["params"]))})
    return out


def timing(repeats=3):
    truth = dict(A=482.01, B=2085.43, E=1.82, alpha=0.3478, beta=0.3658)
    rng = np.random.default_rng(0)

    def table(n):
        N, D = 10 ** rng.uniform(7, 9.5, n), 10 ** rng.uniform(9, 11.5, n)
        return pd.DataFrame(dict(params=N, tokens=D, loss=LAW.predict(truth, N, D) * np.exp(rng.normal(0, 0.01, n))))

    out = {}
    for n in (250, 2000):
        t = table(n)
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fit(t, "chinchilla")               # variant selection (12 fold fits) + profiles
            secs.append(time.perf_counter() - t0)
        out[n] = float(np.median(secs))
    return {"seconds_250": out[250], "seconds_2000": out[2000], "ratio": out[2000] / out[250]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="example:\n  python benchmarks/fits_real_data.py --json",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    res = {"approach2_real": approach2_real(), "approach2_synthetic": approach2_synthetic(),
           "approach3_ladders": approach3_ladders(), "approach1_conventions": approach1_conventions(),
           "timing": timing()}
    if args.json:
        print(json.dumps(res))
        return 0
    print("Approach 2 on public isoFLOP sweeps")
    for r in res["approach2_real"]:
        print(f"  {r['experiment']:<34} {r['estimator']:<15} a={r['params_exponent']:.3f} "
              f"[{r['params_ci'][0]:.3f}, {r['params_ci'][1]:.3f}]  b={r['tokens_exponent']:.3f} "
              f"[{r['tokens_ci'][0]:.3f}, {r['tokens_ci'][1]:.3f}]  k_b={r['tokens_coefficient']:.3g}")
    print("Approach 2 estimators on synthetic skewed sweeps (exponent error)")
    for r in res["approach2_synthetic"]:
        print(f"  noise {r['noise']:<6} {r['estimator']:<15} bias {r['bias']:+.4f} rmse {r['rmse']:.4f}")
    print("Approach 3 on ladders, largest scale held out")
    for r in res["approach3_ladders"]:
        held = ", ".join(f"{v} {r['heldout.' + v]['mape']:.2f}%" for v in VARIANTS)
        print(f"  {r['ladder']:<34} chosen {r['chosen']:<12} held-out MAPE {r['heldout.chosen']['mape']:.2f}%  ({held})")
    print("Approach 1 on (Mis)Fitting checkpoints")
    for r in res["approach1_conventions"]:
        print(f"  {r['convention']:<30} N_opt ~ C^{r['params_exponent']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]")
    t = res["timing"]
    print(f"Fit time (selection + profiles): 250 points {t['seconds_250']:.2f} s, 2,000 points "
          f"{t['seconds_2000']:.2f} s, ratio {t['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
