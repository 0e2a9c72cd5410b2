"""Wall time of one run through each launcher, against the local launcher measured in the same run.

    python benchmarks/launcher_overhead.py --shape t64 --tokens 200K --pairs 3

Each pair trains the same RunSpec twice into fresh stores: ``--launcher local`` (the reference)
and ``--launcher deepspeed --nproc-per-node 2``. Printed: medians and the median of the per-pair
ratios (deepspeed / local), so a machine whose speed drifts still gives a fair ratio. The whole
command is timed, process start-up included: that is what a grid pays per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(launcher_args: list[str], shape: str, tokens: str) -> float:
    with tempfile.TemporaryDirectory() as store:
        cmd = [sys.executable, "-m", "runners.isounique", "--unique", tokens, "--sizes", shape, "--epochs", "1",
               "--store", store, "--quiet", *launcher_args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"error: {' '.join(launcher_args) or 'local'} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="example: python benchmarks/launcher_overhead.py --shape t64 --tokens 200K")
    p.add_argument("--shape", default="t64")
    p.add_argument("--tokens", default="200K")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--zero", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    ds = ["--launcher", "deepspeed", "--nproc-per-node", str(args.nproc), "--zero", str(args.zero)]
    local, deep = [], []
    for i in range(args.pairs):
        local.append(one([], args.shape, args.tokens))
        deep.append(one(ds, args.shape, args.tokens))
        print(f"pair {i + 1}: local {local[-1]:.1f} s, deepspeed x{args.nproc} zero {args.zero} {deep[-1]:.1f} s",
              file=sys.stderr)
    ratio = statistics.median(d / l for d, l in zip(deep, local))
    out = {"shape": args.shape, "tokens": args.tokens, "pairs": args.pairs, "local_s": statistics.median(local),
           "deepspeed_s": statistics.median(deep), "ratio_deepspeed_over_local": ratio,
           "nproc": args.nproc, "zero": args.zero, "cpu_count": os.cpu_count()}
    print(json.dumps(out) if args.json else
          f"{args.shape} on {args.tokens} tokens: local {out['local_s']:.1f} s, deepspeed x{args.nproc} "
          f"{out['deepspeed_s']:.1f} s, ratio {ratio:.2f}x (median of {args.pairs} pairs)")


if __name__ == "__main__":
    main()
