"""Filtering the unique data: a reference n-gram model's perplexity (keep a quantile band,
Muennighoff et al. 2023, section 6) and MinHash near-duplicate removal."""

from __future__ import annotations

import re
import zlib

import numpy as np

from scaling.errors import DataError
from runners.data.cache import _cached_npy, _safe_name, _sha
from runners.data.corpus import Corpus
from runners.data.streams import _Stream, _check_filter, _documents, _select_documents, _stream, _stream_dir, cached_stream


class NgramReferenceModel:
    """Interpolated Kneser-Ney trigram over token ids (Chen & Goodman 1999), in numpy.

    The paper's perplexity filter scores documents with a small n-gram model trained on reference
    text (a KenLM model, following ROOTS); this is the same idea without the dependency.
    """

    def __init__(self, vocab_size: int, eot_id: int, discount: float = 0.75):
        if vocab_size >= 2**21:
            raise DataError(f"vocabulary of {vocab_size} is too large for the trigram reference model")
        self.vocab_size, self.eot_id, self.discount = int(vocab_size), int(eot_id), float(discount)

    def _trigrams(self, tokens: np.ndarray, ends: np.ndarray):
        """(two-back, one-back, token) for every position; contexts are eot-padded at document starts."""
        tokens = np.asarray(tokens, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        position = np.arange(len(tokens), dtype=np.int64) - np.repeat(starts, ends - starts)
        back1 = np.where(position >= 1, np.roll(tokens, 1), self.eot_id)
        back2 = np.where(position >= 2, np.roll(tokens, 2), self.eot_id)
        return back2, back1, tokens

    def fit(self, tokens: np.ndarray, ends: np.ndarray) -> "NgramReferenceModel":
        if len(tokens) == 0:
            raise DataError("the reference split is empty: no reference model to score perplexity with")
        V, D = self.vocab_size, self.discount
        a, b, c = self._trigrams(tokens, ends)
        self.tri_keys, self.tri_counts = np.unique((a * V + b) * V + c, return_counts=True)
        contexts = self.tri_keys // V
        self.ctx_keys, first, self.ctx_types = np.unique(contexts, return_index=True, return_counts=True)
        self.ctx_totals = np.add.reduceat(self.tri_counts, first)
        # Lower orders use continuation counts: in how many distinct contexts a word appears.
        self.bi_keys, self.bi_cont = np.unique(self.tri_keys % (V * V), return_counts=True)
        self.mid_keys, first, self.mid_types = np.unique(self.bi_keys // V, return_index=True, return_counts=True)
        self.mid_totals = np.add.reduceat(self.bi_cont, first)
        unigram_cont = np.bincount(self.bi_keys % V, minlength=V).astype(np.float64)
        total, types = unigram_cont.sum(), np.count_nonzero(unigram_cont)
        self.unigram = (np.maximum(unigram_cont - D, 0) + D * types / V) / total
        return self

    def log_probs(self, back2: np.ndarray, back1: np.ndarray, token: np.ndarray) -> np.ndarray:
        V, D = self.vocab_size, self.discount
        p = self.unigram[token]
        bigram_cont, _ = _lookup(self.bi_keys, self.bi_cont, back1 * V + token)
        mid_total, seen_mid = _lookup(self.mid_keys, self.mid_totals, back1)
        mid_types, _ = _lookup(self.mid_keys, self.mid_types, back1)
        p = np.where(seen_mid, (np.maximum(bigram_cont - D, 0) + D * mid_types * p) / np.maximum(mid_total, 1), p)
        context = back2 * V + back1
        tri_count, _ = _lookup(self.tri_keys, self.tri_counts, context * V + token)
        ctx_total, seen_ctx = _lookup(self.ctx_keys, self.ctx_totals, context)
        ctx_types, _ = _lookup(self.ctx_keys, self.ctx_types, context)
        p = np.where(seen_ctx, (np.maximum(tri_count - D, 0) + D * ctx_types * p) / np.maximum(ctx_total, 1), p)
        return np.log(p)

    def perplexities(self, tokens: np.ndarray, ends: np.ndarray, chunk_tokens: int = 2_000_000) -> np.ndarray:
        """Per-token perplexity of each document (its eot included), scored in bounded-memory chunks."""
        ends = np.asarray(ends, dtype=np.int64)
        out = np.empty(len(ends), dtype=np.float64)
        first = 0
        while first < len(ends):
            start = int(ends[first - 1]) if first else 0
            last = max(first + 1, int(np.searchsorted(ends, start + chunk_tokens, side="right")))
            chunk_ends = ends[first:last] - start
            logp = self.log_probs(*self._trigrams(tokens[start:int(ends[last - 1])], chunk_ends))
            starts = np.concatenate([[0], chunk_ends[:-1]])
            out[first:last] = np.exp(-np.add.reduceat(logp, starts) / (chunk_ends - starts))
            first = last
        return out


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray):
    """values[keys == query] (0 when absent) and whether it was found; ``keys`` sorted."""
    index = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    found = keys[index] == queries
    return np.where(found, values[index], 0).astype(np.float64), found


def reference_model(corpus: Corpus, tokenizer, domain: str, cache_dir=None) -> NgramReferenceModel:
    """The trigram model of ``domain`` trained on the corpus's reference split."""
    stream = _stream(corpus, tokenizer, "reference", domain, "none", cache_dir)
    if len(stream.ends) == 0:
        raise DataError(f"corpus {corpus.name!r} has no reference documents in domain {domain!r} "
                        "to filter by perplexity")
    return NgramReferenceModel(tokenizer.vocab_size, tokenizer.eot_id).fit(stream.tokens, stream.ends)


def document_perplexities(corpus: Corpus, tokenizer, domain: str, cache_dir=None) -> np.ndarray:
    """Reference-model perplexity of every train document of ``domain``, in corpus order (cached)."""
    path = _stream_dir(corpus, tokenizer, cache_dir) / f"perplexity-{_safe_name(domain)}.npy"

    def score():
        stream = _stream(corpus, tokenizer, "train", domain, "none", cache_dir)
        return reference_model(corpus, tokenizer, domain, cache_dir).perplexities(stream.tokens, stream.ends)

    return _cached_npy(path, score)


def filter_keep_mask(corpus: Corpus, tokenizer, domain: str, filter: str, cache_dir=None) -> np.ndarray:
    """Which train documents of ``domain`` survive ``filter`` (boolean, in corpus order)."""
    _check_filter(filter)
    docs = _documents(corpus, "train", domain)
    if filter == "none":
        return np.ones(len(docs), dtype=bool)
    if filter == "dedup":
        return deduplicate(docs)
    scores = document_perplexities(corpus, tokenizer, domain, cache_dir)
    low, mid, high = np.percentile(scores, [25, 50, 75]) if len(scores) else (0, 0, 0)
    return {"ppl25": scores < low, "ppl50": scores < mid, "ppl25-75": (scores >= low) & (scores < high)}[filter]


def _normalise(text: str) -> list[str]:
    """Lower-cased words: duplicates that differ only in case, spacing or punctuation are equal."""
    return re.findall(r"\w+", text.lower())


class _MinHasher:
    """MinHash signatures of word 5-gram shingles (Broder 1997), with multiply-shift hashing."""

    def __init__(self, num_perm: int = 128, shingle: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.mult = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.add = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.powers = (rng.integers(1, 2**63, size=shingle, dtype=np.uint64) | np.uint64(1))
        self.shingle = shingle
        self._word_hash: dict[str, int] = {}

    def signature(self, words: list[str]) -> np.ndarray:
        hashes = np.fromiter((self._word_hash.setdefault(w, zlib.crc32(w.encode())) for w in words),
                             dtype=np.uint64, count=len(words))
        k = min(self.shingle, max(len(hashes), 1))
        with np.errstate(over="ignore"):
            shingles = np.zeros(max(len(hashes) - k + 1, 1), dtype=np.uint64)
            for j in range(k):
                shingles += hashes[j:j + len(shingles)] * self.powers[j] if len(hashes) else np.uint64(0)
            shingles = np.unique(shingles)
            signature = np.full(len(self.mult), np.iinfo(np.uint64).max, dtype=np.uint64)
            for start in range(0, len(shingles), 8192):
                block = shingles[start:start + 8192, None] * self.mult[None, :] + self.add[None, :]
                signature = np.minimum(signature, block.min(axis=0))
        return signature >> np.uint64(32)


def deduplicate(docs: list[str], threshold: float = 0.8, num_perm: int = 128, bands: int = 16) -> np.ndarray:
    """Keep-mask dropping exact duplicates (after normalisation) and near duplicates.

    Near duplicates: estimated Jaccard similarity of word 5-gram shingles >= ``threshold`` with an
    earlier kept document, candidates found by MinHash LSH (``bands`` bands of the signature).
    The first occurrence in corpus order is kept, so the result is deterministic.
    """
    hasher, rows = _MinHasher(num_perm=num_perm), num_perm // bands
    seen_exact: set[str] = set()
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    signatures: dict[int, np.ndarray] = {}
    keep = np.zeros(len(docs), dtype=bool)
    for i, doc in enumerate(docs):
        words = _normalise(doc)
        exact = _sha(" ".join(words))
        if exact in seen_exact:
            continue
        signature = hasher.signature(words)
        band_keys = [signature[b * rows:(b + 1) * rows].tobytes() for b in range(bands)]
        candidates = {j for b, key in enumerate(band_keys) for j in buckets[b].get(key, ())}
        if any(np.mean(signatures[j] == signature) >= threshold for j in candidates):
            continue
        keep[i] = True
        seen_exact.add(exact)
        signatures[i] = signature
        for b, key in enumerate(band_keys):
            buckets[b].setdefault(key, []).append(i)
    return keep


def filtered_stream(corpus: Corpus, tokenizer, split: str, domain: str, filter: str = "none", cache_dir=None) -> _Stream:
    """Tokenised documents of one split and domain after ``filter`` (reference.md section 3): the
    unfiltered stream for "none"; otherwise the documents ``filter_keep_mask`` keeps of the training
    split (filters choose unique data, never held-out data), cached like the unfiltered one."""
    _check_filter(filter)
    if filter == "none":
        return _stream(corpus, tokenizer, split, domain, "none", cache_dir)

    def build():
        full = _stream(corpus, tokenizer, split, domain, "none", cache_dir)
        keep = (filter_keep_mask(corpus, tokenizer, domain, filter, cache_dir) if split == "train"
                else np.ones(len(_documents(corpus, split, domain)), dtype=bool))
        return _select_documents(full, keep)
    return cached_stream(corpus, tokenizer, split, domain, filter, cache_dir, build)

