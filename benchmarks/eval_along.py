"""What evaluation along training costs: the smoke grid with and without ``--eval-every``, in the same run.

Each repeat trains ``python -m runners.isoflop --budget smoke`` twice into fresh stores, once plain
and once with ``--eval corpus_cloze --eval-every 25 --eval-limit 40``, alternating which goes first.
Two figures, both reported:

* the grid's wall time with evaluation over the grid's wall time without (whole commands: process
  start, data preparation and two workers included, what a user waits for);
* the runs' own scoring time (``eval_time_s``: checkpoints' validation loss and lm-eval, plus loading
  the tasks) over their training-loop time (``wall_time_s``, which excludes scoring), summed over runs.

    python benchmarks/eval_along.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaling import store  # noqa: E402

GRID = ["--budget", "smoke", "--quiet"]
EVAL = ["--eval", "corpus_cloze", "--eval-every", "25", "--eval-limit", "40"]


def one(where: Path, evaluate: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runners.isoflop", *GRID, *(EVAL if evaluate else []), str(where)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    runs = store.read_runs(where)
    out = {"grid_s": wall, "train_s": float(runs["wall_time_s"].sum())}
    if evaluate:
        out["eval_s"] = float(runs["eval_time_s"].sum())
        out["checkpoints"] = int(runs["eval_checkpoints"].sum())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = (False, True) if r % 2 == 0 else (True, False)
            pair = {e: one(Path(tmp) / f"r{r}-{int(e)}", e) for e in order}
            rows.append({"plain_grid_s": pair[False]["grid_s"], "eval_grid_s": pair[True]["grid_s"],
                         "grid_ratio": pair[True]["grid_s"] / pair[False]["grid_s"],
                         "train_s": pair[True]["train_s"], "eval_s": pair[True]["eval_s"],
                         "eval_over_train": pair[True]["eval_s"] / pair[True]["train_s"],
                         "checkpoints": pair[True]["checkpoints"]})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(" ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        med = sorted(r["grid_ratio"] for r in rows)[len(rows) // 2]
        med2 = sorted(r["eval_over_train"] for r in rows)[len(rows) // 2]
        print(f"median: grid with evaluation / without = {med:.3f} (+{100 * (med - 1):.0f}%); "
              f"scoring time / training-loop time = {med2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
