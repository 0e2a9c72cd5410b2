"""``python -m runners.merge``: run, seed, expert, merge, score, validate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from runners.train import trainer as train
from scaling import accounting
from scaling.cli import ArgumentParser, UsageError, run_cli, nonnegative_int, whole_number
from runners.studies.merge.arithmetic import (
    CONTINUE_LR_RATIO, DEFAULT_MIXTURES, check_weights, parse_weights,
)
from runners.studies.merge.saved import SavedModel, _check_fresh, load, merge_dirs, save
from runners.studies.merge.proxy import (
    Data, ProxyConfig, continue_from, domain_mixture, parse_shares, train_seed,
)
from runners.studies.merge.scoring import parse_target
from runners.studies.merge.report import ProxyReport
from runners.studies.merge.experiments import run, score, validate
from runners.models.device import device_arg


def parse_experts(text: str) -> dict[str, SavedModel]:
    experts = {}
    for item in [t for t in str(text).split(",") if t.strip()]:
        domain, sep, path = item.partition("=")
        if not sep or not domain.strip() or not path.strip():
            raise UsageError(f"malformed --experts item {item!r} (expected DOMAIN=DIR, e.g. code=m/code)")
        if domain.strip() in experts:
            raise UsageError(f"two experts for domain {domain.strip()!r}")
        experts[domain.strip()] = load(path.strip())
    if not experts:
        raise UsageError("no experts given")
    return experts


def _add_training(p, steps_default, lr_help="peak LR (default: runners.train.trainer.hparams of the shape)",
                  steps_help="optimiser steps"):
    p.add_argument("--steps", type=whole_number, default=steps_default, help=f"{steps_help} (default {steps_default})")
    p.add_argument("--batch-size", type=whole_number, default=None, help="sequences per step (default 8; experts: the seed's)")
    p.add_argument("--lr", type=float, default=None, help=lr_help)
    p.add_argument("--unique-tokens", type=_size, default=None, metavar="U",
                   help="unique tokens per run, e.g. 500k (default: all it trains on, one epoch; fewer repeat epochs)")


def _add_common(p):
    p.add_argument("--device", default=None, type=device_arg, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress")


def _add_scoring(p):
    p.add_argument("--mixtures", default=",".join(f"{s:g}" for s in DEFAULT_MIXTURES), metavar="SHARES",
                   help="candidate code shares (default 0,0.25,0.5,0.75,1), or mixtures of any domains separated "
                        "by ';', e.g. 'reference=1;apidoc=1;reference=0.5,apidoc=0.5' (run on a corpus "
                        "without code shares: every domain, the uniform mix and 4 Dirichlet draws)")
    p.add_argument("--target", default=None, metavar="D=W,...",
                   help="domain weights of target_loss, e.g. text=0.7,code=0.3 (default equal)")
    p.add_argument("--eval-tokens", type=whole_number, default=train.EVAL_TOKENS_PER_DOMAIN, metavar="N",
                   help=f"validation tokens per domain (default {train.EVAL_TOKENS_PER_DOMAIN})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    package_doc = sys.modules[__package__].__doc__          # the package's docstring says what merging is
    doc = package_doc.splitlines()
    p = ArgumentParser(prog="python -m runners.merge", description="\n\n".join(package_doc.split("\n\n")[:2]),
                       epilog="examples:\n" + "\n".join(l for l in doc if "python -m" in l))
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="seed, experts, proxies, trained mixtures and rank agreement in one go",
                       epilog="example:\n  python -m runners.merge run --shape t48 --seed-steps 600 --steps 300 "
                              "--out merge-t48")
    r.add_argument("--shape", default="t32", help="model shape (default t32)")
    r.add_argument("--seed-steps", type=whole_number, default=600, help="steps of the shared seed (default 600)")
    _add_training(r, 300, "peak LR of the seed (default: runners.train.trainer.hparams of the shape)",
                  "steps of each expert and each trained mixture from the seed")
    r.add_argument("--continue-lr-ratio", type=float, default=CONTINUE_LR_RATIO,
                   help=f"experts' and trained mixtures' peak LR over the seed's (default {CONTINUE_LR_RATIO})")
    r.add_argument("--seed-code-fraction", type=float, default=0.5, help="code share of the seed's data (default 0.5)")
    r.add_argument("--seed", type=nonnegative_int, default=0, help="initialisation and data-order seed (default 0)")
    r.add_argument("--data", default="embedded", help="corpus (default embedded)")
    r.add_argument("--tokenizer", default="byte", help="tokenizer (default byte)")
    r.add_argument("--out", default=None, help="directory for models, table.csv and report.json (rerunnable)")
    _add_scoring(r)
    _add_common(r)

    s = sub.add_parser("seed", help="train the shared seed model",
                       epilog="example:\n  python -m runners.merge seed --shape t32 --steps 600 --out m/seed")
    s.add_argument("--shape", default="t32")
    _add_training(s, 600)
    s.add_argument("--code-fraction", type=float, default=0.5, help="code share of the seed's data (default 0.5)")
    s.add_argument("--seed", type=nonnegative_int, default=0)
    s.add_argument("--data", default="embedded")
    s.add_argument("--tokenizer", default="byte")
    s.add_argument("--out", required=True, help="new directory for the seed model")
    _add_common(s)

    e = sub.add_parser("expert", help="continue the seed on one domain",
                       epilog="example:\n  python -m runners.merge expert --from m/seed --domain code --steps 300 "
                              "--out m/code")
    e.add_argument("--from", dest="seed_dir", required=True, metavar="SEED", help="seed model directory")
    e.add_argument("--domain", required=True, help="domain to train on (embedded corpus: text, code)")
    _add_training(e, 300, f"peak LR (default {CONTINUE_LR_RATIO} x the seed's)")
    e.add_argument("--out", required=True, help="new directory for the expert")
    _add_common(e)

    m = sub.add_parser("merge", help="weighted parameter average of saved models (merges can be merged again)",
                       epilog="example:\n  python -m runners.merge merge --models m/text,m/code --weights 0.7,0.3 "
                              "--out m/code0.3")
    m.add_argument("--models", required=True, help="comma list of model directories")
    m.add_argument("--weights", required=True, help="mixture proportions summing to 1, e.g. 0.7,0.3 or 1/3,2/3")
    m.add_argument("--out", required=True, help="new directory for the merged model")

    c = sub.add_parser("score", help="proxy losses of candidate mixtures from per-domain experts",
                       epilog="example:\n  python -m runners.merge score --experts text=m/text,code=m/code "
                              "--mixtures 0,0.25,0.5,0.75,1 --out m/proxy")
    c.add_argument("--experts", required=True, metavar="D=DIR,...", help="one expert per domain")
    c.add_argument("--out", default=None, help="directory for the merged models, table.csv and report.json")
    _add_scoring(c)
    _add_common(c)

    v = sub.add_parser("validate", help="train the mixtures from the seed and compare rankings with the proxy",
                       epilog="example:\n  python -m runners.merge validate --seed m/seed "
                              "--experts text=m/text,code=m/code --out m/report")
    v.add_argument("--seed", dest="seed_dir", required=True, help="the experts' seed model directory")
    v.add_argument("--experts", required=True, metavar="D=DIR,...", help="one expert per domain")
    v.add_argument("--out", default=None, help="directory for models, table.csv and report.json")
    _add_scoring(v)
    _add_common(v)
    return p


def _size(text: str) -> int:
    return int(accounting.parse_size(text))


def _print(report: ProxyReport, as_json: bool) -> None:
    print(report.to_json() if as_json else report.summary())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    progress = not getattr(args, "quiet", True)
    if args.command == "merge":
        directories = [t.strip() for t in args.models.split(",") if t.strip()]
        weights = parse_weights(args.weights)
        check_weights(weights, len(directories))
        print(merge_dirs(directories, weights, args.out))
        return 0
    if getattr(args, "eval_tokens", 1) < 1:
        raise UsageError(f"--eval-tokens must be at least 1, got {args.eval_tokens}")
    if args.command == "run":
        if args.out is not None and (not str(args.out).strip() or (Path(args.out).exists() and not Path(args.out).is_dir())):
            raise UsageError(f"--out {args.out!r} is not a directory (run keeps its models, table and report there)")
        cfg = ProxyConfig(shape=args.shape, seed_steps=args.seed_steps, steps=args.steps,
                          batch_size=8 if args.batch_size is None else args.batch_size, lr=args.lr, seed_code_fraction=args.seed_code_fraction,
                          continue_lr_ratio=args.continue_lr_ratio, unique_tokens=args.unique_tokens,
                          mixtures=tuple(parse_shares(args.mixtures)), target=parse_target(args.target),
                          eval_tokens=args.eval_tokens, seed=args.seed, data=args.data, tokenizer=args.tokenizer)
        _print(run(cfg, args.out, device=args.device, progress=progress), args.json)
        return 0
    if args.command == "seed":
        out = _check_fresh(args.out)
        cfg = ProxyConfig(shape=args.shape, seed_steps=args.steps, batch_size=8 if args.batch_size is None else args.batch_size, lr=args.lr,
                          unique_tokens=args.unique_tokens,
                          seed_code_fraction=args.code_fraction, seed=args.seed, data=args.data,
                          tokenizer=args.tokenizer).check()
        data = Data(cfg.data, cfg.tokenizer)
        model, spec, lineage = train_seed(cfg, data, train.resolve_settings(args.device), progress)
        print(save(model, spec, out, lineage))
        return 0
    if args.command == "expert":
        out = _check_fresh(args.out)
        seed = load(args.seed_dir)
        data = Data(seed.spec.data, seed.spec.tokenizer)
        share = domain_mixture(data.corpus, args.domain)
        model, spec, lineage = continue_from(seed, share, args.steps, data, train.resolve_settings(args.device),
                                             batch_size=args.batch_size, lr=args.lr,
                                             unique_tokens=args.unique_tokens, progress=progress,
                                             desc=f"expert {args.domain}")
        print(save(model, spec, out, lineage))
        return 0
    shares = parse_shares(args.mixtures)
    target = parse_target(args.target)
    experts = parse_experts(args.experts)
    if args.command == "score":
        if args.out is not None:
            _check_fresh(args.out)
        report = score(experts, shares, eval_tokens=args.eval_tokens, target=target, device=args.device,
                       progress=progress, save_dir=None if args.out is None else Path(args.out) / "merged")
        if args.out is not None:
            report.save(args.out)
        _print(report, args.json)
        return 0
    seed = load(args.seed_dir)
    if args.out is not None:
        _check_fresh(args.out)
    report = validate(seed, experts, shares, eval_tokens=args.eval_tokens, target=target, device=args.device,
                      progress=progress, out=args.out)
    _print(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
