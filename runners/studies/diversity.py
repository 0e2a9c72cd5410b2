"""The diversity coefficient of a dataset (Miranda, Lee et al. 2023, "Beyond Scale: the Diversity
Coefficient as a Data Quality Metric", arXiv:2306.13840), and the named datasets it measures.

The coefficient is the expected distance between Task2Vec embeddings (Achille et al. 2019) of two
random batches of the data: ``div(D) = E_{B1 != B2 ~ D} d(e_B1, e_B2)``, where ``e_B`` is the
diagonal of the Fisher information of a fixed probe network on batch ``B`` and ``d`` is Task2Vec's
cosine distance (each embedding divided element-wise by the sum of the two, then ``1 - cos``). Fisher
diagonals are non-negative, so every distance and the coefficient lie in [0, 1]: 0 when all batches
look alike to the probe, larger when batches ask the probe for different things.

Choices, and how they differ from the paper's code (which fine-tunes a pretrained GPT-2's head on
each batch of 512 sequences, then samples labels from the model):

* **Probe**: a GPT of ``runners.models.gpt`` with a tiny shape (default ``t32``), randomly initialised
  from a fixed seed and never trained. Nothing is downloaded, every dataset is seen by the same
  probe (so coefficients of different datasets are comparable), and the probe cannot favour the
  data it was trained on.
* **Parameters**: the final transformer block and the output head (its weight, tied to the token
  embedding, taken in its role as the head only) -- the "final layers" of Task2Vec. As in the
  paper's ``extract_embedding``, each weight tensor is reduced to one value per output unit
  (the mean of its row of Fisher values); biases are left out.
* **Labels**: ``data`` (default) uses the true next tokens, i.e. the empirical Fisher. The paper
  (like Task2Vec) samples labels from the model's predictive distribution (``labels="model"``,
  also available), which is the right choice for its trained probe; a randomly initialised
  probe predicts nearly uniformly, so sampled labels would make the head's Fisher independent of
  the data and leave only the inputs to tell batches apart.
* **Fisher estimate**: mean over the batch's sequences of the squared gradient of each sequence's
  mean token log-likelihood (the paper squares the gradient of mini-batches of 8 sequences).
* **Batches**: ``batches`` (default 20, the paper uses 200) batches of ``batch_size`` (default 16)
  windows of ``seq_len`` tokens, started at uniformly random offsets of the dataset's training
  tokens (at most ``POOL_TOKENS`` of them).
* **Interval**: a 95% percentile bootstrap over batches (resampling batches, not pairs, because
  the pairs sharing a batch are not independent), and, for comparison, the paper's interval: a
  Student-t interval of the mean over all pairs (``stats_of_distance_matrix``), which treats the
  pairs as independent and is narrower.

Datasets are named once for this module and ``runners.compare``: ``text`` and ``code`` (domains of
the embedded corpus), a ``.jsonl``/``.json``/``.parquet`` file (its ``--text-column``), and
``A+B`` for an interleaving of A and B in equal token shares.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scaling import accounting
from scaling.cli import ArgumentParser, DataError, UsageError, bounded_int, nonnegative_int, run_cli, whole_number

#: Domains of the embedded corpus (``runners.data``) that are datasets by name.
EMBEDDED_DOMAINS = ("text", "code")

#: File suffixes ``runners.data.load_corpus`` reads.
FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet")

#: Batches are drawn from at most this many training tokens of a dataset (the whole of the
#: embedded text domain, 2.0M bytes; 40% of the code domain).
POOL_TOKENS = 1 << 22

#: Bootstrap resamples of the batches for the interval.
BOOTSTRAP = 2000

LABELS = ("data", "model")


# --------------------------------------------------------------------------------------------
# Named datasets


@dataclass(frozen=True)
class Part:
    """One single-source dataset: a domain of a corpus (``runners.data.load_corpus``)."""

    data: str     #: "embedded" or a file path
    domain: str   #: the corpus domain ("text" for a file)

    @property
    def name(self) -> str:
        return self.domain if self.data == "embedded" else self.data


@dataclass(frozen=True)
class DataSource:
    """A dataset as the user names it: one part, or several interleaved in equal token shares."""

    name: str
    parts: tuple[Part, ...]

    @property
    def is_mixture(self) -> bool:
        return len(self.parts) > 1

    @property
    def embedded_text_code(self) -> bool:
        """The embedded text+code mix, which ``runners.data.train_tokens`` builds itself."""
        return {p.name for p in self.parts} == {"text", "code"} and all(
            p.data == "embedded" for p in self.parts)

    def run_fields(self) -> dict:
        """``data`` and ``code_fraction`` of a ``RunSpec`` training on this dataset. A mix of files
        has no such spelling; its ``data`` is the dataset's name (it cannot be rerun by train_run)."""
        if not self.is_mixture:
            part = self.parts[0]
            return {"data": part.data, "code_fraction": 1.0 if part.domain == "code" else 0.0}
        if self.embedded_text_code:
            return {"data": "embedded", "code_fraction": 0.5}
        return {"data": self.name, "code_fraction": 0.0}


def parse_part(item: str) -> Part:
    if item in EMBEDDED_DOMAINS:
        return Part("embedded", item)
    path = Path(item).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise DataError(f"dataset {item!r}: no such file")
        return Part(str(item), "text")
    raise UsageError(f"unknown dataset {item!r} (expected {', '.join(EMBEDDED_DOMAINS)}, a "
                     f"{'/'.join(FILE_SUFFIXES)} file, or A+B for an equal interleaving)")


def parse_dataset(item: str) -> DataSource:
    item = item.strip()
    if not item:
        raise UsageError("empty dataset name in the list")
    if Path(item).expanduser().is_file():   # a file whose name holds a '+'
        return DataSource(item, (parse_part(item),))
    names = [n.strip() for n in item.split("+")]
    if any(not n for n in names):
        raise UsageError(f"malformed dataset {item!r} (expected A or A+B)")
    if len(set(names)) < len(names):
        raise UsageError(f"dataset {item!r} interleaves a dataset with itself")
    return DataSource(item, tuple(parse_part(n) for n in names))


def parse_datasets(text: str | None) -> list[DataSource]:
    """``"text,code,text+code"`` -> three DataSources; unknown names, missing files, duplicates
    and empty lists are ``UsageError``s."""
    items = [t.strip() for t in (text or "").split(",")]
    if not any(items):
        raise UsageError("no datasets given (e.g. --datasets text,code,text+code)")
    sources = [parse_dataset(t) for t in items]
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"dataset {duplicates[0]!r} is listed twice")
    return sources


class Sources:
    """Corpora loaded once, and the token streams of named datasets drawn from them."""

    def __init__(self, tokenizer: str = "byte", text_column: str = "text", cache_dir=None):
        from runners import data as rdata

        if tokenizer.startswith("bpe:"):
            raise UsageError("a BPE trained on one of the datasets would favour it; compare with "
                             "--tokenizer byte or a pretrained tokenizer")
        self._rdata = rdata
        self.text_column, self.cache_dir = text_column, cache_dir
        self.tokenizer = rdata.get_tokenizer(tokenizer, None, cache_dir=cache_dir)
        self._corpora: dict[str, object] = {}

    def corpus(self, part: Part):
        if part.data not in self._corpora:
            self._corpora[part.data] = self._rdata.load_corpus(part.data, text_column=self.text_column,
                                                               cache_dir=self.cache_dir)
        return self._corpora[part.data]

    def _code_fraction(self, part: Part) -> float:
        return 1.0 if part.domain == "code" else 0.0

    def part_available(self, part: Part) -> int:
        return self._rdata.corpus_tokens_available(self.corpus(part), self.tokenizer, part.domain,
                                                   cache_dir=self.cache_dir)

    def available(self, source: DataSource) -> int:
        """Training tokens the dataset can supply; a mix runs out when its smallest part does
        (less a piece per part of slack for the interleaving)."""
        sizes = [self.part_available(p) for p in source.parts]
        if not source.is_mixture:
            return sizes[0]
        slack = self._rdata.MIX_PIECE_TOKENS if source.embedded_text_code else 0
        return max(0, len(sizes) * (min(sizes) - slack))

    def check(self, sources: list[DataSource]) -> None:
        """Load every corpus and read every part's size: bad files fail before anything runs."""
        for source in sources:
            for part in source.parts:
                if self.part_available(part) == 0:
                    raise DataError(f"dataset {part.name!r} has no training tokens")
                self.validation_tokens(part, 1)

    def train_tokens(self, source: DataSource, n: int) -> np.ndarray:
        """The first ``n`` training tokens of the dataset (nested: fewer tokens are a prefix).

        The embedded text+code mix is ``runners.data.train_tokens`` at code fraction 0.5 (documents
        cut into pieces of ``MIX_PIECE_TOKENS``); any other mix alternates blocks of
        ``MIX_PIECE_TOKENS`` tokens of each part's own stream."""
        rdata, n = self._rdata, int(n)
        if not source.is_mixture or source.embedded_text_code:
            part = source.parts[0]
            fraction = 0.5 if source.is_mixture else self._code_fraction(part)
            return rdata.train_tokens(self.corpus(part), self.tokenizer, n, fraction,
                                      cache_dir=self.cache_dir)
        k = len(source.parts)
        shares = [n // k + (i < n % k) for i in range(k)]
        streams = [rdata.train_tokens(self.corpus(p), self.tokenizer, s, self._code_fraction(p),
                                      cache_dir=self.cache_dir) if s else np.empty(0, np.int64)
                   for p, s in zip(source.parts, shares)]
        return interleave(streams, rdata.MIX_PIECE_TOKENS)

    def validation_tokens(self, part: Part, max_tokens: int | None = None) -> np.ndarray:
        return self._rdata.validation_tokens(self.corpus(part), self.tokenizer, part.domain,
                                             max_tokens=max_tokens, cache_dir=self.cache_dir)


def interleave(streams: list[np.ndarray], block: int) -> np.ndarray:
    """Blocks of ``block`` tokens taken from each stream in turn until all are used up."""
    pieces, offsets = [], [0] * len(streams)
    while any(o < len(s) for o, s in zip(offsets, streams)):
        for i, s in enumerate(streams):
            if offsets[i] < len(s):
                pieces.append(np.asarray(s[offsets[i]:offsets[i] + block]))
                offsets[i] += block
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The probe and its Fisher embeddings


@dataclass(frozen=True)
class ProbeSpec:
    shape: str = "t32"          #: a shape of scaling.accounting.SHAPES
    seed: int = 0               #: initialisation seed of the (untrained) probe
    labels: str = "data"        #: data: true next tokens (empirical Fisher); model: sampled (Task2Vec)
    seq_len: int = accounting.CPU_SEQ_LEN


class Probe:
    """A fixed, randomly initialised GPT whose final block and head give Task2Vec embeddings."""

    def __init__(self, spec: ProbeSpec, vocab_size: int):
        import torch

        from runners.models.gpt import GPT, GPTConfig

        if spec.labels not in LABELS:
            raise UsageError(f"unknown probe labels {spec.labels!r} (known: {', '.join(LABELS)})")
        shape = accounting.shape(spec.shape)
        cfg = GPTConfig(d_model=shape.d_model, ffw_size=shape.ffw_size, n_heads=shape.attention_heads,
                        n_layers=shape.n_layers, vocab_size=vocab_size, seq_len=spec.seq_len)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            self.model = GPT(cfg).eval()
        self.spec, self._torch = spec, torch
        for p in self.model.parameters():
            p.requires_grad_(False)
        last = self.model.blocks[-1]
        # the tied embedding in its role as the output head: a leaf of its own, so its gradient
        # does not flow back into the inputs
        self.head = self.model.wte.weight.detach().clone().requires_grad_(True)
        self.params = {f"block.{n}": p for n, p in last.named_parameters() if n.endswith("weight")}
        self.params["head.weight"] = self.head
        for p in self.params.values():
            p.requires_grad_(True)

    @property
    def dim(self) -> int:
        return sum(p.shape[0] for p in self.params.values())

    def embedding(self, x: np.ndarray, y: np.ndarray, generator=None) -> np.ndarray:
        """Task2Vec embedding of one batch (``x``, ``y``: ``[B, T]`` token ids)."""
        torch, model = self._torch, self.model
        F = torch.nn.functional
        x = torch.as_tensor(np.asarray(x, dtype=np.int64))
        y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        with torch.no_grad():
            h = model.wte(x) + model.wpe(torch.arange(x.shape[1]))
            for block in model.blocks[:-1]:
                h = block(h)
        fisher = {k: torch.zeros_like(p) for k, p in self.params.items()}
        params = list(self.params.values())
        for b in range(x.shape[0]):
            out = model.blocks[-1](h[b:b + 1])
            logits = F.linear(model.ln_f(out), self.head, model.lm_head.bias)[0]
            if self.spec.labels == "model":
                with torch.no_grad():
                    target = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)[:, 0]
            else:
                target = y[b]
            grads = torch.autograd.grad(F.cross_entropy(logits, target), params)
            for k, g in zip(fisher, grads):
                fisher[k] += g * g
        rows = [(f / x.shape[0]).reshape(f.shape[0], -1).mean(dim=1) for f in fisher.values()]
        return torch.cat(rows).numpy().astype(np.float64)


def task2vec_distance(e0: np.ndarray, e1: np.ndarray) -> float:
    """Task2Vec's cosine distance: each embedding divided element-wise by their sum, then
    ``1 - cos`` (Achille et al. 2019, ``task_similarity.cosine``). In [0, 1] for Fisher diagonals."""
    total = e0 + e1
    total = np.where(total > 0, total, 1.0)
    a, b = e0 / total, e1 / total
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    return float(np.clip(1.0 - a @ b / (na * nb), 0.0, 1.0))


def distance_matrix(embeddings: np.ndarray) -> np.ndarray:
    n = len(embeddings)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = task2vec_distance(embeddings[i], embeddings[j])
    return out


# --------------------------------------------------------------------------------------------
# The coefficient


@dataclass
class DiversityResult:
    """A diversity coefficient with its intervals, settings and the distances it came from."""

    dataset: str
    coefficient: float            #: mean Task2Vec distance over pairs of distinct batches
    ci_low: float                 #: 95% bootstrap interval over batches
    ci_high: float
    paper_half_width: float       #: the paper's interval: mean +- t * sem over pairs
    batches: int
    batch_size: int
    seq_len: int
    seed: int
    probe: dict
    distances: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("distances")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def summary_row(self) -> list[str]:
        return [self.dataset, f"{self.coefficient:.4f}", f"[{self.ci_low:.4f}, {self.ci_high:.4f}]",
                f"+-{self.paper_half_width:.4f}", str(self.batches), str(self.batch_size)]


def bootstrap_interval(distances: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean pairwise distance, resampling batches with replacement.
    Pairs of a batch with its own copy are left out (their distance is 0 by construction)."""
    n = len(distances)
    rng = np.random.default_rng((seed, 7919))
    means = np.empty(resamples)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        keep = upper & (idx[:, None] != idx[None, :])
        means[r] = distances[np.ix_(idx, idx)][keep].mean() if keep.any() else np.nan
    lo, hi = np.nanpercentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paper_half_width(distances: np.ndarray, level: float = 0.95) -> float:
    """Miranda et al.'s interval: t quantile times the standard error over the n(n-1)/2 pairs."""
    from scipy.special import stdtrit  # the t quantile; scipy.stats alone takes seconds to import

    pairs = distances[np.triu_indices(len(distances), 1)]
    if len(pairs) < 2:
        return float("nan")
    sem = pairs.std(ddof=1) / math.sqrt(len(pairs))
    return float(sem * stdtrit(len(pairs) - 1, (1 + level) / 2))


def sample_batches(tokens: np.ndarray, batches: int, batch_size: int, seq_len: int, seed: int):
    """``batches`` pairs ``(x, y)`` of ``[batch_size, seq_len]`` windows at uniform random offsets."""
    tokens = np.asarray(tokens)
    if len(tokens) < seq_len + 2:
        raise DataError(f"only {len(tokens)} tokens; a batch needs windows of {seq_len + 1}")
    rng = np.random.default_rng(seed)
    span = np.arange(seq_len + 1)
    for _ in range(batches):
        starts = rng.integers(0, len(tokens) - seq_len - 1, batch_size, endpoint=True)
        window = np.asarray(tokens[starts[:, None] + span], dtype=np.int64)
        yield window[:, :-1], window[:, 1:]


def diversity_coefficient(tokens: np.ndarray, *, name: str = "", batches: int = 20, batch_size: int = 16,
                          probe: ProbeSpec | None = None, vocab_size: int = accounting.CPU_VOCAB,
                          seed: int = 0, progress: bool = False) -> DiversityResult:
    """The diversity coefficient of a token stream (Miranda et al. 2023), with 95% intervals."""
    import torch

    if batches < 3:
        raise UsageError(f"--batches must be at least 3 (pairs of distinct batches), got {batches}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    probe = probe or ProbeSpec()
    model = Probe(probe, vocab_size)
    generator = torch.Generator().manual_seed(seed)
    from runners.train.settings import torch_threads
    from runners.train.trainer import progress_bar

    bar = progress_bar(batches, f"diversity {name}", enabled=progress, unit="batch")
    embeddings = []
    # one sequence at a time through a tiny probe: more threads only add contention (measured:
    # 60-90 ms per batch of 16 on one thread, 0.5-5 s on two busy cores)
    try:
        with torch_threads(1):
            for x, y in sample_batches(tokens, batches, batch_size, probe.seq_len, seed):
                embeddings.append(model.embedding(x, y, generator))
                bar.update(1)
    finally:
        bar.close()
    distances = distance_matrix(np.stack(embeddings))
    coefficient = float(distances[np.triu_indices(batches, 1)].mean())
    lo, hi = bootstrap_interval(distances, seed=seed)
    return DiversityResult(dataset=name, coefficient=coefficient, ci_low=lo, ci_high=hi,
                           paper_half_width=paper_half_width(distances), batches=batches,
                           batch_size=batch_size, seq_len=probe.seq_len, seed=seed, probe=asdict(probe),
                           distances=distances)


def measure(sources: list[DataSource], data: Sources, *, batches: int = 20, batch_size: int = 16,
            probe: ProbeSpec | None = None, seed: int = 0, progress: bool = False) -> list[DiversityResult]:
    """The coefficient of each dataset, its batches drawn from its first ``POOL_TOKENS`` training
    tokens (the same seed for every dataset)."""
    out = []
    for source in sources:
        pool = data.train_tokens(source, min(POOL_TOKENS, data.available(source)))
        out.append(diversity_coefficient(pool, name=source.name, batches=batches, batch_size=batch_size,
                                         probe=probe, vocab_size=data.tokenizer.vocab_size, seed=seed,
                                         progress=progress))
    return out


def render(results: list[DiversityResult]) -> str:
    head = ["dataset", "diversity", "95% CI (bootstrap)", "paper CI", "batches", "batch"]
    rows = [head, *(r.summary_row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


# --------------------------------------------------------------------------------------------
# CLI

EXAMPLE = """\
examples:
  python -m runners.diversity --datasets text,code,text+code
  python -m runners.diversity --datasets text,my.jsonl,text+my.jsonl --batches 40 --json
"""


def add_probe_args(p, skip_note: str = "") -> None:
    g = p.add_argument_group("diversity coefficient (Miranda et al. 2023)")
    g.add_argument("--batches", type=whole_number, default=20,
                   help=f"batches per dataset (default 20; the paper: 200){skip_note}")
    g.add_argument("--batch-size", type=bounded_int(4096, "sequences in memory at once", minimum=1), default=16, help="sequences per batch (default 16)")
    g.add_argument("--probe-shape", default="t32", help="shape of the random probe GPT (default t32)")
    g.add_argument("--probe-labels", default="data", choices=LABELS,
                   help="Fisher labels: data (true next tokens, default) or model (sampled, as the paper)")


def probe_spec(args) -> ProbeSpec:
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    if args.probe_shape not in accounting.SHAPES:
        raise UsageError(f"unknown --probe-shape {args.probe_shape!r}")
    return ProbeSpec(shape=args.probe_shape, seed=args.seed, labels=args.probe_labels)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.diversity", description=__doc__.split("\n\n")[0],
                       epilog=EXAMPLE)
    p.add_argument("--datasets", required=True,
                   help="comma list: text, code (embedded corpus), .jsonl/.parquet files, A+B (equal interleaving)")
    p.add_argument("--text-column", default="text", help="text column of .jsonl/.parquet datasets")
    p.add_argument("--tokenizer", default="byte", help="byte (default) or a pretrained tokenizer")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the probe and of the batch sampling")
    p.add_argument("--json", action="store_true", help="one JSON object per dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_probe_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sources = parse_datasets(args.datasets)
    probe = probe_spec(args)
    data = Sources(args.tokenizer, args.text_column)
    data.check(sources)
    results = measure(sources, data, batches=args.batches, batch_size=args.batch_size, probe=probe,
                      seed=args.seed, progress=not args.quiet)
    if args.json:
        for r in results:
            print(r.to_json())
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
