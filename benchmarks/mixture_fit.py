"""Mixture fit time and peak memory against the number of domains and of runs, per predictor.

Each cell is one ``python -m scaling.mixture fit`` process (one loss domain, synthetic Dirichlet
runs from a known mixing law, 5-fold cross-validation included) timed as a whole, with the child's
peak resident memory. The reference measured in the same run is the smallest cell (2 domains, 64
runs, law): every time is also given as a ratio to it. The issue's target: 512 runs x 17 domains
fits *all its loss domains* in <= 60 s and <= 2 GB; that cell is run with 17 loss domains.

    python benchmarks/mixture_fit.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def table(m, n, n_loss=1, seed=0):
    rng = np.random.default_rng(seed)
    r = np.round(rng.dirichlet(np.ones(m), size=n), 3)
    t = rng.normal(0, 0.3, (n_loss, m))
    for i in range(n_loss):
        t[i, i % m] = -3.0
    rows = {f"mix.d{j}": r[:, j] for j in range(m)}
    for i in range(n_loss):
        rows[f"loss.l{i}"] = (1.5 + 0.8 * np.exp(r @ t[i])) * np.exp(rng.normal(0, 0.005, n))
    return pd.DataFrame(rows)


PROBE = ("import resource, runpy, sys\n"
         "sys.argv = ['scaling.mixture', 'fit', sys.argv[1], '--model', sys.argv[2], '--json']\n"
         "try:\n    runpy.run_module('scaling.mixture', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def run(path, model):
    """One fit process: wall seconds and its own peak resident memory."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PROBE, str(path), model], cwd=ROOT, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    peak = [line for line in p.stderr.splitlines() if line.startswith("PEAK_KB")]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    if errors or not p.stdout.strip():
        return {"error": (errors or [p.stderr.strip()[-200:]])[0], "seconds": secs}
    return {"seconds": secs, "peak_mb": int(peak[0].split()[1]) / 1024 if peak else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/mixture_fit.py --quick")
    ap.add_argument("--quick", action="store_true", help="domains 2,17 and runs 64,512 only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    domains = (2, 17) if args.quick else (2, 5, 17, 32)
    runs = (64, 512) if args.quick else (64, 512, 2048)
    models = ("law", "log-linear", "gbdt", "auto")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in domains:
            for n in runs:
                path = Path(tmp) / f"m{m}_n{n}.csv"
                table(m, n).to_csv(path, index=False)
                for model in models:
                    rows.append({"domains": m, "runs": n, "model": model, "loss_domains": 1, **run(path, model)})
        path = Path(tmp) / "target.csv"
        table(17, 512, n_loss=17).to_csv(path, index=False)
        rows.append({"domains": 17, "runs": 512, "model": "auto", "loss_domains": 17, **run(path, "auto")})
    ref = next(r["seconds"] for r in rows if r["domains"] == domains[0] and r["runs"] == runs[0] and r["model"] == "law")
    for r in rows:
        r["ratio_to_reference"] = r["seconds"] / ref
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"reference: 2 domains, 64 runs, law: {ref:.2f} s (process included)")
    print(f"{'domains':>7} {'runs':>5} {'loss d.':>7} {'model':<11} {'seconds':>8} {'ratio':>7} {'peak MB':>8}")
    for r in rows:
        print(f"{r['domains']:>7} {r['runs']:>5} {r['loss_domains']:>7} {r['model']:<11} {r['seconds']:>8.2f} "
              f"{r['ratio_to_reference']:>7.2f} {r.get('peak_mb', float('nan')):>8.0f} {r.get('error', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
