"""Stacked training (``runners.train.batched``) against one run after another, in the same run.

Eight t32 runs (seeds 0-7, 60K tokens each, the hyper-parameters ``runners.train.trainer.hparams`` gives:
batch 4 x 128) trained (a) one after another with ``train_run`` and (b) stacked with
``train_group``; whole runs, data preparation and validation included (the same for both), plus the
optimiser-step time alone from a timed loop of each. The ratio is the figure; the issue's target is
>= 3x for 8 t32 runs.

    python benchmarks/batched_speed.py [--runs 8] [--shape t32] [--tokens 60000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from runners.train import batched  # noqa: E402
from runners.train import trainer as train
from runners.models.gpt import GPT, GPTConfig  # noqa: E402
from runners.grid.spec import RunSpec  # noqa: E402
from scaling.accounting import shape  # noqa: E402


def step_ratio(cfg: GPTConfig, k: int, batch: int, steps: int = 20) -> dict:
    models = [GPT(cfg) for _ in range(k)]
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len))
    opt = torch.optim.AdamW(models[0].parameters(), lr=1e-3)

    def one():
        _, loss = models[0](x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    stacked = batched.StackedGPT(models)
    opt2 = torch.optim.AdamW(stacked.parameters(), lr=1e-3)
    xs = x[None].repeat(k, 1, 1)

    def many():
        stacked(xs, xs).sum().backward()
        opt2.step()
        opt2.zero_grad()
    out = {}
    for name, fn, reps in (("single_step_s", one, steps), ("stacked_step_s", many, max(2, steps // 2))):
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t0) / reps
    out["step_ratio"] = k * out["single_step_s"] / out["stacked_step_s"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example:\n  python benchmarks/batched_speed.py --runs 8 --shape t32 --json")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--shape", default="t32")
    p.add_argument("--tokens", type=int, default=60_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    s = shape(args.shape)
    specs = [RunSpec(args.shape, s.d_model, s.ffw_size, s.attention_heads, s.n_layers, 256, 128, args.tokens,
                     args.tokens, seed=i) for i in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        train.prepare_data(specs[0], cache)          # corpus and streams cached before either side is timed
        t0 = time.perf_counter()
        for spec in specs:
            train.train_run(spec, os.path.join(tmp, "alone"), progress=False, cache_dir=cache)
        alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched.train_group(specs, os.path.join(tmp, "stacked"), progress=False, cache_dir=cache)
        stacked = time.perf_counter() - t0
    hp = train.hparams(specs[0].params, 128, tokens=args.tokens)
    out = {"runs": args.runs, "shape": args.shape, "tokens": args.tokens, "batch": hp.batch_size,
           "one_after_another_s": alone, "stacked_s": stacked, "ratio": alone / stacked,
           "threads": torch.get_num_threads(),
           **step_ratio(GPTConfig.from_spec(specs[0]), args.runs, hp.batch_size)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.runs} {args.shape} runs x {args.tokens} tokens (batch {hp.batch_size}): one after another "
              f"{alone:.1f} s, stacked {stacked:.1f} s -> {out['ratio']:.2f}x (whole runs); optimiser step "
              f"{out['single_step_s'] * 1e3:.1f} ms alone, {out['stacked_step_s'] * 1e3:.1f} ms for {args.runs} "
              f"stacked -> {out['step_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
