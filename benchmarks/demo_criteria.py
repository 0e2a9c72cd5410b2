"""The README demo against the criteria a demo that shows scaling must meet (issue: one fast
training loop, and a CPU demo that shows scaling), measured in one run on this machine:

1. wall time of the demo's three commands (train the ``tiny`` isoFLOP grid, fit, plot), install
   excluded: target <= 6 min on 2 cores;
2. at every budget the lowest measured loss is at an interior size (trained sizes on both sides);
3. no identifiability warning on the fitted exponents;
4. Approach 2 and Approach 3 agree on the N_opt exponent within +-0.1;
5. seed-to-seed spread at each budget's optimum (the best measured size, seeds 0, 1, 2) <= 0.02 nats;
6. ``scaling.backtest`` holding out the largest budget predicts it with MAPE <= 5% (issue 27's
   target; its goal, 2%, is printed as a line of its own).

    python benchmarks/demo_criteria.py [--budget tiny] [--store DIR] [--json]

Prints one line per criterion and, with ``--json``, one JSON object (docs/benchmarks.md records it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402


def timed(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0, out.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="tiny")
    p.add_argument("--store", default=None, help="store directory (default: a fresh temporary one)")
    p.add_argument("--seeds", default="1,2", help="extra seeds at each budget's optimum")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-criteria-"))
    store = Path(args.store) if args.store else work / "results"
    fit_path, png = work / "fit.json", work / "isoflop.png"

    t_train, _ = timed(["runners.isoflop", "--budget", args.budget, "--store", str(store)])
    t_fit, fit_out = timed(["scaling.fit", str(store), "--approach", "2", "--out", str(fit_path), "--json"])
    t_plot, _ = timed(["scaling.plot", "isoflop", str(store), "--fit", str(fit_path), "--out", str(png)])
    fit = json.loads(fit_path.read_text())
    a2 = fit["settings"]["approach2"]
    p3 = fit["params"]
    from scaling.laws import get_law
    a3_exp = float(get_law(fit["law"]).params_exponent(p3))

    runs = pd.read_parquet(store)
    runs = runs[runs["status"] == "ok"]
    bracket, best = {}, {}
    for name, g in runs.groupby("budget"):
        g = g.groupby("params", as_index=False).agg(loss=("loss", "mean"), shape=("shape", "first"))
        i = int(g["loss"].values.argmin())          # sizes with two seeds count by their mean
        bracket[name] = 0 < i < len(g) - 1
        best[name] = g.iloc[i]["shape"]

    # extra seeds of each budget's best measured run, stacked or not as the launcher decides
    from runners.train import launch
    from runners.grid import plan
    from scaling.accounting import parse_budgets
    specs = {(s.budget, s.shape): s for b in parse_budgets(args.budget) for s in plan.isoflop_grid(b)
             if s.seed == 0}
    seeds = [int(x) for x in args.seeds.split(",")]
    have = {(b, sh): set(g["seed"].astype(int)) for (b, sh), g in runs.groupby(["budget", "shape"])}
    extra = [dataclasses.replace(specs[(name, shape)], seed=s) for name, shape in best.items() for s in seeds
             if s not in have[(name, shape)]]
    seed_store = work / "seeds"
    t0 = time.perf_counter()
    if extra:
        launch.launch(extra, seed_store, progress=False)
    t_seeds = time.perf_counter() - t0
    seeded = pd.concat([runs, *([pd.read_parquet(seed_store)] if extra else [])], ignore_index=True)
    spread = {}
    for name, shape in best.items():
        same = seeded[(seeded["shape"] == shape) & (seeded["budget"] == name)]
        losses = [float(v) for v in same.sort_values("seed")["loss"]]
        spread[name] = {"shape": shape, "losses": losses, "range": max(losses) - min(losses),
                        "sd": float(pd.Series(losses).std())}

    _, bt_out = timed(["scaling.backtest", str(store), "--json"])
    bt = json.loads(bt_out)
    # beside the criteria (which judge the default fit, whose law is chosen by its backtest): each
    # law forced, Kaplan et al. 2020's (which these tiny runs follow) and Chinchilla's
    laws = {}
    for name in ("kaplan", "chinchilla"):
        _, lfit_out = timed(["scaling.fit", str(store), "--law", name, "--no-profiles", "--json"])
        _, lbt_out = timed(["scaling.backtest", str(store), "--law", name, "--json"])
        laws[name] = {"r2": json.loads(lfit_out).get("r2"), "backtest_mape_percent": json.loads(lbt_out)["mape"]}
    warnings = [w for w in fit.get("warnings", []) if "identif" in w.lower() or "bound" in w.lower()]
    result = {
        "budget": args.budget, "runs": int(len(runs)),
        "wall_s": {"train": t_train, "fit": t_fit, "plot": t_plot, "demo": t_train + t_fit + t_plot,
                   "extra_seeds": t_seeds},
        "interior_minimum": bracket,
        "warnings": warnings, "all_warnings": fit.get("warnings", []),
        "a3_params_exponent": a3_exp, "a2_params_exponent": a2["params_exponent"],
        "a2_params_exponent_ci": a2.get("params_exponent_ci"),
        "r2": fit.get("r2"), "a2_bootstrap_interior": {f"{b['flops']:.3g}": b.get("bootstrap_interior")
                                                       for b in a2["budgets"]},
        "seed_spread": spread, "backtest_mape_percent": bt["mape"], "fit_params": p3, "variant": fit["settings"].get("variant", {}).get("chosen"),
        "store": str(store), "plot": str(png), "law": fit["law"], "kaplan_law": laws["kaplan"],
        "chinchilla_law": laws["chinchilla"], "law_check": fit["settings"].get("law_check"),
    }
    checks = [
        ("demo <= 6 min", result["wall_s"]["demo"] <= 360, f"{result['wall_s']['demo']:.0f} s "
         f"(train {t_train:.0f}, fit {t_fit:.0f}, plot {t_plot:.0f})"),
        ("interior minimum at every budget", all(bracket.values()), json.dumps(bracket)),
        ("no identifiability warning", not warnings, "; ".join(warnings) or "none"),
        ("A2 vs A3 N_opt exponent within 0.1", abs(a3_exp - a2["params_exponent"]) <= 0.1,
         f"A3 {a3_exp:.3f}, A2 {a2['params_exponent']:.3f}"),
        ("seed spread at the optimum <= 0.02", all(v["range"] <= 0.02 for v in spread.values()),
         ", ".join(f"{k} {v['shape']} {v['range']:.3f}" for k, v in spread.items())),
        ("backtest MAPE <= 5%", bt["mape"] <= 5.0, f"{bt['mape']:.2f}%"),
        ("backtest MAPE <= 2% (the goal)", bt["mape"] <= 2.0, f"{bt['mape']:.2f}%"),
        ("fit R^2 >= 0.97", (fit.get("r2") or 0) >= 0.97, f"{fit.get('r2') or float('nan'):.3f}"),
        ("A2 minimum interior in >= 90% of bootstrap resamples, every budget",
         all((v or 0) >= 0.9 for v in result["a2_bootstrap_interior"].values()),
         ", ".join(f"{k} {100 * (v or 0):.0f}%" for k, v in result["a2_bootstrap_interior"].items())),
    ]
    result["checks"] = {name: bool(ok) for name, ok, _ in checks}
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(f"info  the default fit's law: {fit['law']} ({(fit['settings'].get('law_choice') or {}).get('reason', 'the default')})")
    for name, v in laws.items():
        print(f"info  with --law {name}: R^2 {v['r2']:.3f}, backtest MAPE {v['backtest_mape_percent']:.2f}%")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
