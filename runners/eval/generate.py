"""Samples from a finished run: a quick look at what a point of the grid has learned.

    python -m runners.generate 3f2a9c01 results --prompt "def main(" --samples 2 --seed 0

Sampling is nanoGPT's (temperature, then top-k, then a multinomial draw) with a seeded
``torch.Generator``, so a seed gives the same text every time on the same device. Temperature 0
is greedy decoding. The context slides when the text outgrows the model's ``seq_len``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from runners.models.gpt import GPT
from scaling.cli import ArgumentParser, UsageError, bounded_int, quantity, run_cli, add_store_argument, nonnegative_int
from runners.models.device import device_arg


@torch.no_grad()
def generate_ids(model: GPT, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 0.8,
                 top_k: int | None = 50, seed: int = 0, stop_id: int | None = None) -> list[int]:
    """New token ids after ``prompt_ids`` (stops early at ``stop_id``)."""
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature:g}")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    T = model.config.seq_len
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out: list[int] = []
    model.eval()
    for _ in range(max_new_tokens):
        logits, _ = model(ids[:, -T:])
        logits = logits[0, -1].float()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        if stop_id is not None and nxt == stop_id:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    return out


def sample_texts(model: GPT, tokenizer, prompt: str, *, samples: int = 1, max_new_tokens: int = 128,
                 temperature: float = 0.8, top_k: int | None = 50, seed: int = 0) -> list[str]:
    """``samples`` continuations of ``prompt`` (sample i uses seed ``seed + i``)."""
    prompt_ids = [tokenizer.eot_id] + list(tokenizer.encode(prompt))  # EOT opens a document
    return [tokenizer.decode(generate_ids(model, prompt_ids, max_new_tokens, temperature=temperature,
                                          top_k=top_k, seed=seed + i, stop_id=tokenizer.eot_id))
            for i in range(samples)]


def temperature(text: str) -> float:
    """argparse ``type``: 0 (greedy) or 0.001-100; below, logits / T overflow to inf and NaN."""
    value = quantity(0.0, 100.0, "0 is greedy")(text)
    if 0 < value < 1e-3:
        raise argparse.ArgumentTypeError(f"must be 0 (greedy) or at least 0.001, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m runners.generate",
                       description="Print samples from a finished run's model.",
                       epilog='example: python -m runners.generate 3f2a9c01 results --prompt "def main(" --seed 0',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", help="run id (or a unique prefix) in the store")
    add_store_argument(p, positional=False, default="results")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--samples", type=bounded_int(10_000, "samples are printed", minimum=1), default=1,
                   help="number of samples (default 1)")
    p.add_argument("--max-new-tokens", type=bounded_int(65_536, "one token per forward pass", minimum=1), default=128,
                   help="tokens per sample (default 128)")
    p.add_argument("--temperature", type=temperature, default=0.8, help="0 = greedy, else 0.001-100 (default 0.8)")
    p.add_argument("--top-k", type=bounded_int(1_000_000, "a vocabulary's size", minimum=1), default=50,
                   help="sample among the k likeliest tokens (default 50)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="sample i uses seed + i (default 0)")
    p.add_argument("--device", default="cpu", type=device_arg, help="torch device (default cpu)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples < 1 or args.max_new_tokens < 1:
        raise UsageError("--samples and --max-new-tokens must be at least 1")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    from runners.models.files import load_run_model, tokenizer_for

    model, config = load_run_model(args.store, args.run_id, device=args.device)
    tokenizer = tokenizer_for(config)
    texts = sample_texts(model, tokenizer, args.prompt, samples=args.samples, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    for i, text in enumerate(texts):
        if args.samples > 1:
            print(f"--- sample {i} (seed {args.seed + i})")
        print(args.prompt + text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
