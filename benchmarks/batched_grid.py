"""Whole grid commands with and without stacking: the issue's measurement of ``--batch-runs``.

Runs ``python -m runners.isounique --unique 200K --sizes t32 --seeds 0..7 --epochs 1`` (8 same-shape
t32 runs) on a fresh store once per ``--batch-runs`` value, timing the whole command (process start,
data preparation, training, validation, writing), and compares every run's final loss with its
one-at-a-time twin (same run id: same seed, data order and initialisation). ``--batch-runs 1`` is
the reference, measured in the same invocation; ``--workers`` stays ``auto`` in every command.

    python benchmarks/batched_grid.py [--values 1,8,4,auto] [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from scaling import store  # noqa: E402

GRID = ["-m", "runners.isounique", "--unique", "200K", "--sizes", "t32", "--seeds", "0..7", "--epochs", "1",
        "--quiet"]


def run_grid(batch_runs: str, where: str) -> float:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *GRID, "--batch-runs", batch_runs, where], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="example:\n  python benchmarks/batched_grid.py --values 1,8,4,auto --json",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--values", default="1,8,4,auto", help="--batch-runs values; 1 (the reference) always runs first")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    values = ["1"] + [v for v in args.values.split(",") if v != "1"]
    out: dict = {"grid": " ".join(GRID[1:]), "cores": os.cpu_count(), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        loss = {}
        for value in values:
            times = []
            for r in range(args.repeats):
                where = os.path.join(tmp, f"{value}-{r}")
                times.append(run_grid(value, where))
            frame = store.read_runs(where)
            loss[value] = dict(zip(frame["run_id"], frame["loss"]))
            out["results"][value] = {"seconds": min(times), "runs": len(frame)}
        ref = out["results"]["1"]["seconds"]
        for value in values:
            res = out["results"][value]
            res["speedup"] = ref / res["seconds"]
            res["max_loss_gap"] = max(abs(loss[value][k] - loss["1"][k]) for k in loss["1"])
    if args.json:
        print(json.dumps(out))
    else:
        for value, res in out["results"].items():
            print(f"--batch-runs {value:>4}: {res['seconds']:6.1f} s  {res['speedup']:.2f}x  "
                  f"max |loss - twin| {res['max_loss_gap']:.4f} nats ({res['runs']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
