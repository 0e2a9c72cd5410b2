"""Token streams, cached: one per corpus, tokenizer, split, domain and filter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.errors import DataError
from runners.data.cache import _cache_root, _safe_name, _save_npy_atomic
from runners.data.corpus import Corpus
from runners.data.tokenizers import _encode_documents


#: Valid values of ``filter`` (reference.md section 3: perplexity percentiles and deduplication).
FILTERS = ("none", "ppl25", "ppl50", "ppl25-75", "dedup")


@dataclass
class _Stream:
    tokens: np.ndarray   #: documents back to back, each ended by eot
    ends: np.ndarray     #: end offset of each document, eot included (int64, increasing)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], self.ends[:-1]]).astype(np.int64)


def _documents(corpus: Corpus, split: str, domain: str) -> list[str]:
    docs = getattr(corpus, split)
    if domain not in docs:
        raise DataError(f"corpus {corpus.name!r} has no domain {domain!r} (domains: {', '.join(sorted(docs))})")
    return docs[domain]


def _stream_dir(corpus: Corpus, tokenizer, cache_dir) -> Path:
    key = getattr(tokenizer, "cache_key", None) or _safe_name(tokenizer.name)
    return _cache_root(cache_dir) / "streams" / corpus.fingerprint / key


def _stream(corpus: Corpus, tokenizer, split: str, domain: str, filter: str = "none", cache_dir=None) -> _Stream:
    """Tokenised documents of one split and domain, unfiltered (``filter`` "none"; a filtered stream
    is ``runners.data.filters.filtered_stream``'s, which reads this one); built once, then memory-mapped."""
    if filter != "none":
        raise ValueError(f"runners.data.streams builds unfiltered streams; filter {filter!r} is filters.filtered_stream's")
    return cached_stream(corpus, tokenizer, split, domain, "none", cache_dir,
                         lambda: _encode_documents(tokenizer, _documents(corpus, split, domain)))


def cached_stream(corpus: Corpus, tokenizer, split: str, domain: str, filter: str, cache_dir, build) -> _Stream:
    """The stream cached under (corpus, tokenizer, split, domain, filter), ``build()`` -> (tokens,
    ends) the first time; memory-mapped after."""
    _check_filter(filter)
    base = _stream_dir(corpus, tokenizer, cache_dir) / f"{split}-{_safe_name(domain)}-{filter}"
    ends_path, tokens_path = base.with_suffix(".ends.npy"), base.with_suffix(".tokens.npy")
    if not (ends_path.exists() and tokens_path.exists()):
        tokens, ends = build()
        _save_npy_atomic(tokens_path, tokens)
        _save_npy_atomic(ends_path, ends)
    return _Stream(tokens=np.load(tokens_path, mmap_mode="r"), ends=np.load(ends_path))


def _select_documents(stream: _Stream, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = stream.starts[keep], stream.ends[keep]
    pieces = [stream.tokens[s:e] for s, e in zip(starts, ends)]
    tokens = np.concatenate(pieces) if pieces else np.empty(0, dtype=stream.tokens.dtype)
    return tokens, np.cumsum(ends - starts)


def _check_filter(filter: str) -> None:
    if filter not in FILTERS:
        raise DataError(f"unknown filter {filter!r} (valid: {', '.join(FILTERS)})")
