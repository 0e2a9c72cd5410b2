"""Store cost as it grows: time to write one more run and to read every run (cold: every file new
since the last read; warm: one new file, the rest from the store's index), at N runs, against a
reference measured in the same run (writing one bare Parquet file of the same row with
``pq.write_table``; reading the same files with ``pq.read_table`` and nothing else).

    python benchmarks/store_scale.py [--sizes 100,1000,2000] [--json]

A store row here is a real one (the columns ``runners.train`` writes, from the shipped
example store), so schemas and widths are those of real grids.
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

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from scaling import datasets, store  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100,1000,2000")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    template = datasets.load("example-isoflop").iloc[0].to_dict()
    sizes = sorted(int(x) for x in args.sizes.split(","))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        d, ref = Path(tmp) / "store", Path(tmp) / "ref"
        ref.mkdir()
        n = 0
        for target in sizes:
            while n < target - 5:
                store.write_run(d, {**template, "run_id": f"run{n:06d}"})
                n += 1
            t0 = time.perf_counter()
            for _ in range(5):
                store.write_run(d, {**template, "run_id": f"run{n:06d}"})
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
            store.write_run(d, {**template, "run_id": f"run{n:06d}"})   # one more run, as a grid adds
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
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
