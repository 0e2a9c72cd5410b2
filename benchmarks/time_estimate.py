"""How close the dry run's time estimate comes to the time runs take on this machine.

Trains the CPU demo's grid (``python -m runners.isoflop --budget tiny``, 28 runs) into a fresh store,
timing the whole command, unless ``--store`` names one already trained here. Then:

* per run, the training loop's seconds (``wall_time_s``) against the estimate of its loop,
  ``tokens * (s/token + 6 N / FLOP/s)``, from the constants of ``runners.grid.plan`` (measured on an
  AMD EPYC) and from ``runners.grid.plan.calibrate`` fitted to the store's *other* budgets (each
  budget held out in turn, so no run is estimated from itself);
* the whole grid: the dry run's total (the constants with ``WORKER_EFFICIENCY``; or the calibration
  on every run, divided by the processes) against the command's wall time.

    python benchmarks/time_estimate.py [--store DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners.grid import plan                                 # noqa: E402
from runners.grid.command import WORKER_EFFICIENCY            # noqa: E402
from runners.train.cpu_dtype import cpu_flags, cpu_model     # noqa: E402
from runners.train.launch import cores                       # noqa: E402
from scaling.store import read_runs                          # noqa: E402


def train_demo(store: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runners.isoflop", "--budget", "tiny", "--store", str(store),
                    "--quiet"], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def loop_seconds(rows, fps: float, per_token: float) -> np.ndarray:
    return rows["tokens"].to_numpy(float) * (per_token + 6.0 * rows["params"].to_numpy(float) / fps)


def run(store: Path | None) -> dict:
    wall = None
    if store is None:
        store = Path(tempfile.mkdtemp(prefix="time_estimate_")) / "results"
        wall = train_demo(store)
    rows = read_runs(store)
    rows = rows[rows["status"] == "ok"].reset_index(drop=True)
    if "cpu_model" not in rows.columns:
        sys.exit("error: the store's runs do not record cpu_model (trained before 2026-12-07)")
    here = rows[rows["cpu_model"] == cpu_model()]
    threads = int(here["threads"].mode().iloc[0])
    here = here[here["threads"] == threads].reset_index(drop=True)
    actual = here["wall_time_s"].to_numpy(float)
    fps, per_token = plan.CPU_FLOPS_PER_S, plan.PER_TOKEN_S
    constant = loop_seconds(here, fps, per_token)
    held_out = np.full(len(here), np.nan)
    for b in here["budget"].unique():
        test = (here["budget"] == b).to_numpy()
        t = plan.calibrate(here[~test], cpu_model(), threads)
        if t is not None:
            held_out[test] = loop_seconds(here[test], t.flops_per_s, t.per_token_s)
    every = plan.calibrate(here, cpu_model(), threads)
    out = {"machine": cpu_model(), "bf16": bool({"amx_bf16", "avx512_bf16"} & cpu_flags()), "cores": cores(),
           "threads_per_run": threads, "runs": len(here),
           "calibrated": {"flops_per_s": every.flops_per_s, "per_token_s": every.per_token_s,
                          "overhead_s": every.overhead_s},
           "per_run_ratio": {}}
    for key, est in (("constants", constant), ("calibrated, budget held out", held_out)):
        r = est / actual
        r = r[np.isfinite(r)]
        out["per_run_ratio"][key] = {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
                                     "runs": int(r.size)}
    if wall is not None:
        n_proc = max(1, cores() // threads)
        out["grid"] = {"wall_s": wall, "processes": n_proc,
                       "constants_s": (constant.sum() + plan.RUN_OVERHEAD_S * len(here)) / n_proc
                       * (WORKER_EFFICIENCY if n_proc > 1 else 1),
                       "calibrated_s": (loop_seconds(here, every.flops_per_s, every.per_token_s).sum()
                                        + every.overhead_s * len(here)) / n_proc}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=None, help="a store trained on this machine (default: train the demo)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = run(args.store)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['machine']} (bf16: {out['bf16']}), {out['cores']} cores, {out['runs']} runs at "
          f"{out['threads_per_run']} thread(s) each; calibrated on all: {out['calibrated']['per_token_s']:.3g} s/token "
          f"+ 6N/{out['calibrated']['flops_per_s']:.3g} FLOP/s + {out['calibrated']['overhead_s']:.2g} s/run "
          f"(the constants: {plan.PER_TOKEN_S:g} s/token + 6N/{plan.CPU_FLOPS_PER_S:.3g} FLOP/s + {plan.RUN_OVERHEAD_S:g} s/run)")
    print("| estimate of each run's training loop | median estimate / actual | range |")
    print("|---|---:|---|")
    for k, r in out["per_run_ratio"].items():
        print(f"| {k} | {r['median']:.2f} | {r['min']:.2f}-{r['max']:.2f} ({r['runs']} runs) |")
    if "grid" in out:
        g = out["grid"]
        print(f"whole grid ({g['processes']} processes): wall {g['wall_s']:.0f} s; dry run with the constants "
              f"{g['constants_s']:.0f} s ({g['constants_s'] / g['wall_s']:.2f}x), calibrated {g['calibrated_s']:.0f} s "
              f"({g['calibrated_s'] / g['wall_s']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
