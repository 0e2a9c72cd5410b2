"""Experiments: score, validate, and run (all of it at a small default shape)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from runners.models import files as model_files
from runners.train import trainer as train
from scaling.cli import DataError, UsageError
from runners.studies.merge.arithmetic import LINEAGE, WEIGHT_TOL, check_compatible, fingerprint
from runners.studies.merge.saved import SavedModel, _base_of, load, save
from runners.studies.merge.proxy import (
    Data, ProxyConfig, _training, _vocab, code_text, continue_from, domain_mixture, label,
    train_seed,
)
from runners.studies.merge.scoring import (
    _losses_line, _mix_name, _say, agreement, check_candidates, check_target, evaluate_model,
    score_mixtures,
)
from runners.studies.merge.report import ProxyReport


def _expert_domains(experts: Mapping[str, SavedModel], data: Data) -> dict[str, dict]:
    """Domain -> mixture key of each expert, checked against the corpus and the expert's lineage."""
    shares = {}
    for domain, saved in experts.items():
        share = label(domain_mixture(data.corpus, domain))
        mix = saved.mixture
        if mix is not None and abs(mix.get(domain, 0.0) - 1.0) > WEIGHT_TOL:
            raise DataError(f"{saved.path} is not a {domain} expert (it stands for the mixture "
                             + ", ".join(f"{d}={w:g}" for d, w in mix.items()) + ")")
        shares[domain] = share
    missing = [d for d in data.domains if d not in experts]
    if missing:
        raise UsageError(f"no expert for domain {missing[0]!r} (give DOMAIN=DIR for each of {', '.join(data.domains)})")
    return shares


def _common_base(saved: Sequence[SavedModel]) -> str | None:
    bases = {_base_of(s.lineage) for s in saved}
    return bases.pop() if len(bases) == 1 else None


def score(experts: Mapping[str, SavedModel], shares, *, eval_tokens=train.EVAL_TOKENS_PER_DOMAIN,
          target=None, device=None, progress=False, save_dir=None, cache_dir=None) -> ProxyReport:
    """Proxy scores of candidate mixtures (code shares or {domain: share}) from saved experts of one seed."""
    spec = next(iter(experts.values())).spec
    data = Data(spec.data, spec.tokenizer, cache_dir)
    shares = [plain_mix(m) for m in check_candidates(shares, data.corpus)]
    _expert_domains(experts, data)
    check_compatible([s.model.config for s in experts.values()], [str(s.path) for s in experts.values()])
    if _common_base(list(experts.values())) is None:
        raise DataError("the experts do not share a seed: the merging proxy averages models grown from one seed")
    target = check_target(target, data.domains)
    settings = train.resolve_settings(device)
    t0 = time.perf_counter()
    proxy = score_mixtures({d: s.model for d, s in experts.items()}, shares, data, settings,
                           eval_tokens=eval_tokens, target=target, progress=progress, save_dir=save_dir,
                           expert_saved=experts)
    return ProxyReport(config={"experts": {d: str(s.path) for d, s in experts.items()}, "mixtures": shares,
                               "eval_tokens": eval_tokens},
                       domains=data.domains, target=target, proxy=proxy,
                       timings={"proxy_s": time.perf_counter() - t0})


def validate(seed: SavedModel, experts: Mapping[str, SavedModel], shares, *,
             eval_tokens=train.EVAL_TOKENS_PER_DOMAIN, target=None, device=None, progress=False, out=None,
             cache_dir=None) -> ProxyReport:
    """Proxy scores, then every mixture trained from ``seed`` with the experts' own settings, and the
    rank agreement between the two."""
    if len(shares) < 3:
        raise UsageError(f"{len(shares)} mixture(s): need at least 3 to compare rankings")
    trainings = [s.lineage.get("training") for s in experts.values()]
    if any(t is None for t in trainings):
        raise DataError("an expert has no training record (was it written by runners.merge expert?)")
    keys = ("steps", "batch_size", "lr", "data_seed", "unique_tokens")
    if len({tuple(t.get(k) for k in keys) for t in trainings}) > 1:
        raise DataError("the experts were trained with different steps, batch sizes, LRs, unique data or data seeds")
    seed_base = _base_of(seed.lineage) or fingerprint(seed.model)
    if _common_base(list(experts.values())) != seed_base:
        raise DataError(f"the experts were not trained from the seed {seed.path}")
    report = score(experts, shares, eval_tokens=eval_tokens, target=target, device=device, progress=progress,
                   save_dir=None if out is None else Path(out) / "merged", cache_dir=cache_dir)
    spec = seed.spec
    data = Data(spec.data, spec.tokenizer, cache_dir)
    settings = train.resolve_settings(device)
    steps, batch, lr = trainings[0]["steps"], trainings[0]["batch_size"], trainings[0]["lr"]
    unique = trainings[0].get("unique_tokens")
    shares_of = _expert_domains(experts, data)
    rows, t0 = [], time.perf_counter()
    pure = set(shares_of.values())
    for mix in check_candidates(shares, data.corpus):
        if label(mix) in pure:
            row = _expert_row(report.proxy, label(mix))
        else:
            model, mspec, lineage = continue_from(seed, mix, steps, data, settings, batch_size=batch, lr=lr,
                                                  unique_tokens=unique, progress=progress,
                                                  desc=f"mix {label(mix)}")
            if out is not None:
                save(model, mspec, Path(out) / "trained" / _mix_name(mix), lineage)
            row = evaluate_model(model, data, mix, settings, eval_tokens, report.target)
        rows.append(row)
        _say(progress, f"trained {label(mix):<8} " + _losses_line(row, data.domains))
    report.trained = pd.DataFrame(rows)
    report.agreement = agreement(report.proxy, report.trained, data.domains)
    report.timings["trained_s"] = time.perf_counter() - t0
    report.config.update(seed=str(seed.path), steps=steps, batch_size=batch, lr=lr)
    if out is not None:
        report.save(out)
    return report


def run(cfg: ProxyConfig = ProxyConfig(), out=None, *, device=None, progress=False, cache_dir=None) -> ProxyReport:
    """The whole experiment: seed, experts, proxies and trained mixtures, rank agreement.

    With ``out``, models go to ``out/models`` (seed, experts, trained mixtures) and ``out/merged``
    (proxies), the table and report to ``out``; a model already there with the same lineage is
    loaded instead of retrained, so the command can be rerun at will."""
    cfg = cfg.check()
    data = Data(cfg.data, cfg.tokenizer, cache_dir)
    candidates = cfg.mixtures
    if not code_text(data.corpus) and all(isinstance(c, (int, float)) for c in candidates):
        candidates = default_candidates(data.domains, cfg.seed)   # code shares mean nothing here
    mixes = check_candidates(candidates, data.corpus)
    shares = [plain_mix(m) for m in mixes]
    target = check_target(cfg.target, data.domains)
    expert_mix = {d: domain_mixture(data.corpus, d) for d in data.domains}
    experts_by_share = {label(m): d for d, m in expert_mix.items()}
    seed_mix = data.seed_mix(cfg)
    settings = train.resolve_settings(device)
    spec0 = cfg.spec(1, seed_mix, _vocab(data.tokenizer))
    lr = cfg.peak_lr(spec0.params)
    clr = cfg.continue_lr_ratio * lr
    # fail before training anything when the data cannot cover a run
    for mix in [*mixes, *expert_mix.values()]:
        data.tokens(_training(cfg, cfg.steps, mix, clr))
    if cfg.seed_steps:
        data.tokens(_training(cfg, cfg.seed_steps, seed_mix, lr))
    models = None if out is None else Path(out) / "models"
    timings = {}
    _say(progress, f"merging proxy: {cfg.shape} ({spec0.params:,} parameters), seed {cfg.seed_steps} steps at "
                   f"lr {lr:.3g} on {label(seed_mix)}, {len(expert_mix)} experts and {len(shares)} mixtures "
                   f"{cfg.steps} steps at lr {clr:.3g}, batch {cfg.batch_size} x {cfg.seq_len}")

    t0 = time.perf_counter()
    seed = _cached(models, "seed", progress, lambda: train_seed(cfg, data, settings, progress),
                   {"role": "seed", "training": {**_training(cfg, cfg.seed_steps, seed_mix, lr),
                                                 "init_seed": cfg.seed}})
    timings["seed_s"] = time.perf_counter() - t0

    def grow(mix, desc):
        return continue_from(seed, mix, cfg.steps, data, settings, batch_size=cfg.batch_size, lr=clr,
                             unique_tokens=cfg.unique_tokens,
                             progress=progress, desc=desc)

    def expect(mix):
        return {"role": "continued", "base": seed.lineage["fingerprint"],
                "training": _training(cfg, cfg.steps, mix, clr)}

    t0 = time.perf_counter()
    experts = {d: _cached(models, d, progress, lambda m=m, d=d: grow(m, f"expert {d}"), expect(m))
               for d, m in sorted(expert_mix.items())}
    timings["experts_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    proxy = score_mixtures({d: s.model for d, s in experts.items()}, mixes, data, settings,
                           eval_tokens=cfg.eval_tokens, target=target, progress=progress,
                           save_dir=None if out is None else Path(out) / "merged", expert_saved=experts)
    timings["proxy_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = []
    for mix in mixes:
        if label(mix) in experts_by_share:
            row = _expert_row(proxy, label(mix))
        else:
            model = _cached(models, _mix_name(mix), progress,
                            lambda m=mix: grow(m, f"mix {label(m)}"), expect(mix)).model
            row = evaluate_model(model, data, mix, settings, cfg.eval_tokens, target)
        rows.append(row)
        _say(progress, f"trained {label(mix):<8} " + _losses_line(row, data.domains))
    trained = pd.DataFrame(rows)
    timings["trained_s"] = time.perf_counter() - t0

    config = {**dataclasses.asdict(cfg), "mixtures": shares, "seed_mix": seed_mix, "lr": lr, "continue_lr": clr, "params": spec0.params,
              "device": settings.device}
    report = ProxyReport(config=config, domains=data.domains, target=target, proxy=proxy, trained=trained,
                         timings=timings)
    if len(shares) >= 3:
        report.agreement = agreement(proxy, trained, data.domains)
    if out is not None:
        report.save(out)
    return report


def _expert_row(proxy: pd.DataFrame, key: str) -> dict:
    """A pure mixture trained from the seed is its expert (same data, order and settings), and its
    proxy is the expert exactly (zero weights are skipped): the metrics are the proxy's."""
    row = proxy.loc[proxy["mixture"] == key].iloc[0].to_dict()
    row.pop("eval_s", None)
    return row


def plain_mix(mix: Mapping[str, float]):
    """A mixture as it is reported: the code share on code/text corpora, else the dict."""
    return float(mix.get("code", 0.0)) if set(mix) <= {"code", "text"} else {d: v for d, v in mix.items() if v > 0}


def default_candidates(domains: Sequence[str], seed: int, k: int = 4) -> list[dict[str, float]]:
    """Candidates on corpora without code shares: every pure domain (the experts themselves), the
    uniform mixture and ``k`` Dirichlet draws around it (``runners.mixgrid.draw_mixtures``)."""
    from runners.grid.mixgrid import draw_mixtures
    uniform = {d: 1.0 / len(domains) for d in domains}
    draws = draw_mixtures(uniform, k, seed)
    return [{d: 1.0} for d in domains] + [uniform] + draws


def _cached(models: Path | None, name: str, progress: bool, make, expected: dict) -> SavedModel:
    """Load ``models/name`` when its lineage matches ``expected``; else train it (and save it)."""
    path = None if models is None else models / name
    if path is not None and (path / model_files.CONFIG_FILE).exists():
        try:
            saved = load(path)
        except UsageError:
            saved = None
        if saved is not None and all(saved.lineage.get(k) == v for k, v in expected.items()):
            _say(progress, f"reusing {path}")
            return saved
    model, spec, lineage = make()
    config = {"run": spec.to_dict(), "tokenizer": spec.tokenizer,
              LINEAGE: {**lineage, "fingerprint": fingerprint(model)}}
    if path is not None:
        save(model, spec, path, lineage)
    return SavedModel(model, config, path if path is not None else Path(name))
