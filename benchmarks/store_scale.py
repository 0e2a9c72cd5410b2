"""Store cost as it grows: time to write one more run and to read every run (cold: every file new
since the last read; warm: one new file, the rest from the store's index), at N runs, against a
reference measured in the same run (writing one bare Parquet file of the same row with
``pq.write_table``; reading the same files with ``pq.read_table`` and nothing else). At the
largest size, the issue's targets: all N runs written one by one (total), ``compact``, reading
and filtering after it (cold: no index; warm), and ``python -m scaling.fit`` on the store.

    python benchmarks/store_scale.py [--sizes 100,1000,10000] [--json]

A store row here is a real one (the columns ``runners.train.trainer`` writes, from the shipped
example store), so schemas and widths are those of real grids; its params, tokens and loss are
set from the Chinchilla law (Hoffmann et al. 2022, Approach 3 values) with 1% noise, over 25
sizes, so that the fit has a real problem to solve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import subprocess  # noqa: E402

from scaling import datasets, store  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100,1000,2000")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    template = {**datasets.load("example-isoflop").iloc[0].to_dict(), "flops_convention": "6N"}
    rng = np.random.default_rng(0)
    sizes_n = np.logspace(6.5, 9.5, 25)

    def run(i: int) -> dict:
        """The i-th run: size i mod 25, budget from 1e17 up, loss on the Chinchilla law."""
        n_params = float(sizes_n[i % 25])
        tokens = float(np.logspace(17, 21, 997)[i // 25 % 997] / (6 * n_params))
        loss = (1.69 + 406.4 / n_params ** 0.34 + 410.7 / tokens ** 0.28) * (1 + 0.01 * rng.standard_normal())
        return {**template, "run_id": f"run{i:06d}", "params": n_params, "tokens": tokens, "unique_tokens": tokens, "epochs": 1.0,
                "flops": 6 * n_params * tokens, "loss": float(loss)}

    sizes = sorted(int(x) for x in args.sizes.split(","))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        d, ref = Path(tmp) / "store", Path(tmp) / "ref"
        ref.mkdir()
        n = 0
        t_all = time.perf_counter()
        for target in sizes:
            while n < target - 5:
                store.write_run(d, run(n))
                n += 1
            t0 = time.perf_counter()
            for _ in range(5):
                store.write_run(d, run(n))
                n += 1
            write_s = (time.perf_counter() - t0) / 5
            row = {k: store._clean(v) for k, v in {**template, "run_id": "ref"}.items()}
            t0 = time.perf_counter()
            for i in range(5):
                pq.write_table(pa.Table.from_pylist([row]), ref / f"ref{i}.parquet")
            ref_write_s = (time.perf_counter() - t0) / 5
            t0 = time.perf_counter()
            frame = store.read_runs(d)           # cold: every file written since the last read
            read_s = time.perf_counter() - t0
            store.write_run(d, run(n))   # one more run, as a grid adds
            n += 1
            t0 = time.perf_counter()
            frame = store.read_runs(d)           # warm: the index serves all but the new file
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for f in store.run_files(d):
                pq.read_table(f)
            ref_read_s = time.perf_counter() - t0
            rec = {"runs": len(frame), "write_s": write_s, "reference_write_s": ref_write_s,
                   "write_ratio": write_s / ref_write_s, "read_runs_s": read_s,
                   "reference_read_s": ref_read_s, "read_ratio": read_s / ref_read_s,
                   "read_runs_warm_s": warm_s, "warm_read_ratio": warm_s / ref_read_s}
            out.append(rec)
            print(f"{rec['runs']:>6} runs: write one {1e3 * write_s:7.1f} ms ({rec['write_ratio']:.1f}x a bare "
                  f"Parquet write), read all {read_s:6.2f} s cold ({rec['read_ratio']:.1f}x reading the files), "
                  f"{warm_s:5.2f} s after one more write ({rec['warm_read_ratio']:.2f}x)", flush=True)
        write_all_s = time.perf_counter() - t_all - sum(r["read_runs_s"] + r["read_runs_warm_s"] for r in out) \
            - sum(5 * r["reference_write_s"] + r["reference_read_s"] for r in out)
        targets = {"runs": n, "write_all_s": write_all_s}
        t0 = time.perf_counter()
        store.compact(d)
        targets["compact_s"] = time.perf_counter() - t0
        (d / store.INDEX_FILE).unlink(missing_ok=True)
        for key in ("read_filter_cold_s", "read_filter_warm_s"):
            t0 = time.perf_counter()
            frame = store.read_runs(d)
            chosen = frame[(frame["status"] == "ok") & (frame["params"] > 1e8)]
            targets[key] = time.perf_counter() - t0
        targets["filtered_runs"] = len(chosen)
        t0 = time.perf_counter()
        fit = subprocess.run([sys.executable, "-m", "scaling.fit", str(d), "--out", str(Path(tmp) / "fit.json")],
                             capture_output=True, text=True)
        targets["fit_s"] = time.perf_counter() - t0
        targets["fit_ok"] = fit.returncode == 0
        if fit.returncode == 0:
            fitted = json.loads((Path(tmp) / "fit.json").read_text())
            targets["fit_params"] = {k: fitted["params"][k] for k in ("alpha", "beta", "E") if k in fitted.get("params", {})}
        else:
            targets["fit_error"] = fit.stderr.strip().splitlines()[-1:]
        out.append(targets)
        print(f"{n} runs written one by one: {write_all_s:.1f} s in all; compact {targets['compact_s']:.2f} s; "
              f"read + filter after it {targets['read_filter_cold_s']:.2f} s cold, {targets['read_filter_warm_s']:.2f} s "
              f"warm ({targets['filtered_runs']} runs kept); scaling.fit {targets['fit_s']:.1f} s "
              f"({'ok' if targets['fit_ok'] else 'FAILED'}) {targets.get('fit_params', targets.get('fit_error'))}", flush=True)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
