"""The law chosen where no fold can backtest it, against what the next budget shows.

Three compute scales leave the rolling backtest no fold, so the default fit compares Chinchilla's
law with Kaplan et al. 2020's in sample, by BIC (``scaling.fit.variants.law_check_in_sample``).
Each public isoFLOP ladder shipped (Llama 3, Marin) is cut to its three smallest budgets; both laws
are fitted there, the default chooses, and each predicts the fourth budget (the next step up) and
the ladder's largest (MAPE of the loss). The CPU demo's store, when given, is scored the same way.

    python benchmarks/law_choice_no_fold.py [--store results] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fits_real_data                                # noqa: E402

from scaling import store as rstore                 # noqa: E402
from scaling.fit import fit                          # noqa: E402
from scaling.fit.variants import scale_of            # noqa: E402
from scaling.laws import get_law                     # noqa: E402


def mape(law: str, params: dict, t) -> float:
    pred = get_law(law).predict(params, t["params"].to_numpy(float), t["tokens"].to_numpy(float))
    return float(np.mean(np.abs(pred / t["loss"].to_numpy(float) - 1)) * 100)


def score(name: str, table) -> dict:
    s = scale_of(table)
    levels = np.unique(s)
    train = table[s <= levels[2]].reset_index(drop=True)
    nxt, top = table[s == levels[3]], table[s == levels[-1]]
    chosen = fit(train, want_profiles=False)
    fits = {law: fit(train, law, want_profiles=False) for law in ("chinchilla", "kaplan")}
    check = chosen.settings.get("law_check") or {}
    return {"ladder": name, "budgets": len(levels), "n_train": len(train), "criterion": check.get("criterion"),
            "bic": {"chinchilla": check.get("chosen_bic"), "kaplan": check.get("bic")}, "chosen": chosen.law,
            "next": {law: mape(law, f.params, nxt) for law, f in fits.items()},
            "largest": {law: mape(law, f.params, top) for law, f in fits.items()}}


def run(store=None) -> list[dict]:
    rows = [score(e, g[["params", "tokens", "loss", "budget"]]) for e, g in fits_real_data.sweeps()]
    if store:
        runs = rstore.read_runs(store)
        runs = runs[runs["status"] == "ok"].reset_index(drop=True)
        runs = runs.assign(budget=runs.groupby("budget")["flops"].transform("median"))    # the budget's FLOPs
        rows.append(score(f"CPU demo store {store}", runs[["params", "tokens", "loss", "budget"]]))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None, help="also score a CPU demo store (runners.isoflop --budget tiny)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = run(args.store)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| ladder (3 smallest budgets) | BIC chinchilla / kaplan | chosen | next budget: chinchilla / kaplan | largest: chinchilla / kaplan |")
    print("|---|---|---|---|---|")
    for r in rows:
        b = r["bic"]
        print(f"| {r['ladder']} | {b['chinchilla']:.1f} / {b['kaplan']:.1f} ({r['criterion']}) | {r['chosen']} | "
              f"{r['next']['chinchilla']:.2f}% / {r['next']['kaplan']:.2f}% | "
              f"{r['largest']['chinchilla']:.2f}% / {r['largest']['kaplan']:.2f}% |")
    right = sum(r["next"][r["chosen"]] <= min(r["next"].values()) for r in rows)
    print(f"the chosen law predicts the next budget at least as well on {right} of {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
