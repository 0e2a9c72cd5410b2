"""Unique training data: nested subsets (a smaller one is the head of every larger one), mixed
across domains by tokens, and the held-out validation tokens."""

from __future__ import annotations

import numpy as np

from scaling.errors import DataError
from scaling.humanise import count as human
from runners.data.corpus import Corpus
from runners.data.filters import filtered_stream as _stream
from runners.data.streams import _Stream, _check_filter
from runners.data.tokenizers import _token_dtype


#: When domains are mixed, documents longer than this are cut into pieces (each ended by eot) so
#: that every prefix of the mix is within about this many tokens of the requested code share.
MIX_PIECE_TOKENS = 1024


def corpus_tokens_available(corpus: Corpus, tokenizer, domain: str, filter: str = "none", cache_dir=None) -> int:
    """Train tokens of one domain after ``filter`` (eot separators included)."""
    return int(len(_stream(corpus, tokenizer, "train", domain, filter, cache_dir).tokens))


def validation_tokens(corpus: Corpus, tokenizer, domain: str, max_tokens: int | None = None,
                      cache_dir=None) -> np.ndarray:
    """Held-out documents of ``domain``, eot-separated, truncated to ``max_tokens``."""
    tokens = _stream(corpus, tokenizer, "validation", domain, "none", cache_dir).tokens
    if len(tokens) == 0:
        raise DataError(f"corpus {corpus.name!r} has no validation documents in domain {domain!r}")
    return np.array(tokens[:max_tokens])


def _mix_weights(corpus: Corpus, tokenizer, code_fraction: float, filter: str, cache_dir) -> dict[str, float]:
    """Share of the unique tokens each domain contributes: code gets ``code_fraction``, the other
    domains split the rest in their natural proportions."""
    if not 0.0 <= code_fraction <= 1.0:
        raise DataError(f"code fraction {code_fraction} is outside [0, 1]")
    other = [d for d in sorted(corpus.train) if d != "code"]
    if code_fraction > 0 and "code" not in corpus.train:
        raise DataError(f"code fraction {code_fraction} needs a 'code' domain; "
                        f"corpus {corpus.name!r} has: {', '.join(other)}")
    if code_fraction < 1 and not other:
        raise DataError(f"corpus {corpus.name!r} has only code; use code fraction 1")
    weights = {"code": code_fraction} if code_fraction > 0 else {}
    if code_fraction < 1:
        sizes = {d: corpus_tokens_available(corpus, tokenizer, d, filter, cache_dir) for d in other}
        total = sum(sizes.values()) or 1
        weights.update({d: (1 - code_fraction) * sizes[d] / total for d in other if sizes[d] > 0}
                       if len(other) > 1 else {other[0]: 1 - code_fraction})
    return weights


def _pieces(stream: _Stream, max_len: int):
    """Document pieces of at most ``max_len`` tokens: (start, end, needs_eot) per piece."""
    starts, ends = stream.starts, stream.ends
    counts = np.maximum(1, -(-(ends - starts) // max_len))
    piece_doc_start = np.repeat(starts, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    piece_start = piece_doc_start + within * max_len
    piece_end = np.minimum(piece_start + max_len, np.repeat(ends, counts))
    needs_eot = piece_end < np.repeat(ends, counts)
    return piece_start, piece_end, needs_eot


def _merged_pieces(streams: dict[str, _Stream], weights: dict[str, float]):
    """All pieces of all domains in one fixed order: by position in its own stream / its weight.

    The order does not depend on how many tokens are wanted, so every subset is a prefix of the
    larger ones, and at every prefix each domain has contributed about its weight (within a piece).
    Returns the domain names, the merged pieces (columns domain index, start, end, eot, key), the
    cumulative output length after each piece, and how many output tokens there are before the
    first domain runs out (past that point the mix would no longer hold).
    """
    names = list(weights)
    cols = {k: [] for k in ("domain", "start", "end", "eot", "key")}
    for index, name in enumerate(names):
        start, end, eot = _pieces(streams[name], MIX_PIECE_TOKENS)
        out_end = np.cumsum(end - start + eot)
        cols["domain"].append(np.full(len(start), index))
        cols["start"].append(start)
        cols["end"].append(end)
        cols["eot"].append(eot)
        cols["key"].append(out_end / weights[name])
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((merged["domain"], merged["key"]))
    merged = {k: v[order] for k, v in merged.items()}
    cumulative = np.cumsum(merged["end"] - merged["start"] + merged["eot"])
    if any(len(keys) == 0 for keys in cols["key"]):
        return names, merged, cumulative, 0
    first_exhausted = min(keys[-1] for keys in cols["key"])
    available = int(cumulative[merged["key"] <= first_exhausted][-1])
    return names, merged, cumulative, available


def mix_of_corpus(corpus: Corpus, mix: dict[str, float]) -> dict[str, float]:
    """``mix`` ({domain: share}, shares summing to 1) checked against the corpus; zero shares dropped."""
    unknown = [d for d in mix if d not in corpus.train]
    if unknown:
        raise DataError(f"unknown domain(s) {', '.join(unknown)} in the mix (corpus {corpus.name!r} has: "
                        f"{', '.join(corpus.domains)})")
    if any(not (v >= 0) for v in mix.values()) or abs(sum(mix.values()) - 1.0) > 1e-6:
        raise DataError(f"mix shares must be non-negative and sum to 1, got {mix}")
    return {d: float(v) for d, v in mix.items() if v > 0}


def train_tokens(corpus: Corpus, tokenizer, unique_tokens: int, code_fraction: float = 0.0,
                 filter: str = "none", cache_dir=None, mix: dict[str, float] | None = None) -> np.ndarray:
    """Exactly ``unique_tokens`` tokens of unique data; nested: smaller requests are prefixes.

    With ``0 < code_fraction < 1`` documents of both domains are interleaved so every prefix holds
    about ``code_fraction`` code tokens (long documents are cut into pieces of
    ``MIX_PIECE_TOKENS`` so the share is within a piece of exact). ``mix`` ({domain: share}) does
    the same for any number of domains and replaces ``code_fraction``.
    """
    _check_filter(filter)
    unique_tokens = int(unique_tokens)
    if unique_tokens <= 0:
        raise DataError(f"unique data must be positive, got {unique_tokens}")
    weights = mix_of_corpus(corpus, mix) if mix else _mix_weights(corpus, tokenizer, code_fraction, filter, cache_dir)
    streams = {d: _stream(corpus, tokenizer, "train", d, filter, cache_dir) for d in weights}
    if len(weights) == 1:
        (stream,) = streams.values()
        _check_available(unique_tokens, len(stream.tokens), corpus, tokenizer, code_fraction, filter, streams)
        return np.array(stream.tokens[:unique_tokens])
    names, merged, cumulative, available = _merged_pieces(streams, weights)
    _check_available(unique_tokens, available, corpus, tokenizer, code_fraction, filter, streams)
    last = int(np.searchsorted(cumulative, unique_tokens)) + 1
    eot = np.array([tokenizer.eot_id], dtype=_token_dtype(tokenizer))
    parts = []
    chosen = zip(*(merged[k][:last] for k in ("domain", "start", "end", "eot")))
    for domain_index, start, end, needs_eot in chosen:
        parts.append(streams[names[domain_index]].tokens[start:end])
        if needs_eot:
            parts.append(eot)
    return np.concatenate(parts)[:unique_tokens]


def _check_available(wanted: int, available: int, corpus, tokenizer, code_fraction, filter, streams) -> None:
    if wanted <= available:
        return
    per_domain = ", ".join(f"{d} {human(len(s.tokens))}" for d, s in streams.items())
    mix = (f"{', '.join(streams)}" if len(streams) == 1 else
           f"a {code_fraction:.0%} code mix" if set(streams) <= {"code", "text"} else f"the mix of {', '.join(streams)}")
    raise DataError(
        f"unique data {human(wanted)} tokens exceeds the {human(available)} tokens available for {mix} "
        f"in corpus {corpus.name!r} (train tokens: {per_domain}; tokenizer {tokenizer.name!r}, filter {filter!r})")
