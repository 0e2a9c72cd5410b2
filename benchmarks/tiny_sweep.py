"""The multi-seed sweep behind ``runners.train.trainer.hparams`` for the tiny CPU shapes: shapes x token
counts x seeds at a forced batch (sequences of 128) and a multiple of the rule's peak LR; one JSON
line per run (loss, throughput). docs/benchmarks.md records what it gave.

    python benchmarks/tiny_sweep.py --shapes t8,t16,t24 --tokens 2e6 --seeds 0,1,2 --batch 8
    python benchmarks/tiny_sweep.py --shapes t8,t16,t24 --tokens 2e6 --seeds 0,1 --lr-mult 0.5
    python benchmarks/tiny_sweep.py --budget tiny --seeds 0,1 --lr-mult 0.5   # the demo's 20 runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from runners.train import trainer as train  # noqa: E402
from runners.grid.spec import RunSpec  # noqa: E402
from scaling import accounting  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="t8,t16,t24")
    p.add_argument("--budget", default=None,
                   help="instead of --shapes x --tokens: the runs of this isoFLOP preset (e.g. tiny, the demo's)")
    p.add_argument("--tokens", default="2e6", help="comma list of token counts")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--batch", type=int, default=0, help="sequences per step (0: the rule's)")
    p.add_argument("--lr-mult", type=float, default=1.0, help="multiple of the rule's peak LR")
    p.add_argument("--warmup", type=float, default=None, help="warmup fraction (default: the rule's)")
    p.add_argument("--min-lr-ratio", type=float, default=None,
                   help="final LR of the cosine as a share of the peak (default: the rule's)")
    args = p.parse_args()
    rule = train.hparams

    def forced(params, seq_len, tokens=None):
        h = rule(params, seq_len, tokens=tokens)
        return dataclasses.replace(h, batch_size=args.batch or h.batch_size, lr=h.lr * args.lr_mult,
                                   warmup_fraction=h.warmup_fraction if args.warmup is None else args.warmup,
                                   min_lr_ratio=h.min_lr_ratio if args.min_lr_ratio is None else args.min_lr_ratio)

    train.hparams = forced
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.budget:
        from runners.grid import plan
        specs = [dataclasses.replace(spec, seed=seed) for b in accounting.parse_budgets(args.budget)
                 for spec in plan.isoflop_grid(b) for seed in seeds]
    else:
        specs = []
        for name in args.shapes.split(","):
            s = accounting.shape(name)
            for tokens in (int(float(t)) for t in args.tokens.split(",")):
                specs += [RunSpec(shape=s.name, d_model=s.d_model, ffw_size=s.ffw_size, n_heads=s.attention_heads,
                                  n_layers=s.n_layers, vocab_size=256, seq_len=128, tokens=tokens,
                                  unique_tokens=tokens, code_fraction=1.0, seed=seed, budget="sweep")
                          for seed in seeds]
    for spec in specs:
        with tempfile.TemporaryDirectory() as store:
            t0 = time.perf_counter()
            row = train.train_run(spec, store, progress=False)
            wall = time.perf_counter() - t0
        hp = forced(spec.params, spec.seq_len, tokens=spec.tokens)
        print(json.dumps({"shape": spec.shape, "budget": spec.budget, "params": spec.params, "tokens": spec.tokens,
                          "seed": spec.seed, "batch": hp.batch_size, "lr": hp.lr, "lr_mult": args.lr_mult,
                          "warmup": hp.warmup_fraction, "min_lr_ratio": hp.min_lr_ratio,
                          "loss": row.get("loss"), "status": row.get("status"),
                          "tokens_per_s": spec.tokens / wall}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
