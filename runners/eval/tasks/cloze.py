"""Documents of the offline cloze tasks, named by ``custom_dataset: !function`` in their YAML.

An item is a passage of a held-out document cut at a random point (``CONTEXT_CHARS`` before the
cut), its true continuation (the next ``CHOICE_CHARS``) and 3 distractors of the same length cut
from other held-out documents of the same domain, in random order. A model that has learned
nothing scores 1/4; one that continues words and syntax scores above. The documents are the
corpus's validation split (by content hash, never trained on), so scores are comparable across all
runs of a store. Items are a pure function of (corpus, domain, n, seed).

Lengths are in characters and short enough that context plus choice fit the tiny models' 128-token
context with the byte tokenizer.
"""

from __future__ import annotations

import functools

import numpy as np

CONTEXT_CHARS = 80
CHOICE_CHARS = 24
N_ITEMS = 500
SEED = 1234


def cloze_items(documents: list[str], n: int = N_ITEMS, seed: int = SEED,
                context_chars: int = CONTEXT_CHARS, choice_chars: int = CHOICE_CHARS) -> list[dict]:
    """``n`` items ``{"context", "choices", "label"}`` from ``documents``."""
    need = context_chars + choice_chars
    docs = [d for d in documents if len(d) >= need]
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents of {need}+ characters, got {len(docs)}")
    rng = np.random.default_rng(seed)
    lengths = np.array([len(d) - need + 1 for d in docs], dtype=float)
    p_doc = lengths / lengths.sum()
    items: list[dict] = []
    seen: set[tuple[int, int]] = set()
    attempts = 0
    while len(items) < n and attempts < 50 * n:
        attempts += 1
        i = int(rng.choice(len(docs), p=p_doc))
        cut = context_chars + int(rng.integers(len(docs[i]) - need + 1))
        if (i, cut) in seen:
            continue
        gold = docs[i][cut:cut + choice_chars]
        if not gold.strip():
            continue
        others = [j for j in range(len(docs)) if j != i]
        distractors = []
        for j in rng.choice(others, size=3, replace=len(others) < 3):
            start = int(rng.integers(len(docs[j]) - choice_chars + 1))
            distractors.append(docs[j][start:start + choice_chars])
        if gold in distractors or len(set(distractors)) < 3 or not all(d.strip() for d in distractors):
            continue
        seen.add((i, cut))
        label = int(rng.integers(4))
        choices = distractors[:label] + [gold] + distractors[label:]
        items.append({"context": docs[i][cut - context_chars:cut], "choices": choices, "label": label})
    return items


@functools.lru_cache(maxsize=8)
def _items(data: str, domain: str, n: int, seed: int) -> tuple:
    from runners import data as rdata

    corpus = rdata.load_corpus(data)
    if domain not in corpus.validation:
        raise ValueError(f"corpus {data!r} has no {domain!r} domain (has: {', '.join(corpus.domains)})")
    return tuple(cloze_items(corpus.validation[domain], n=n, seed=seed))


def _dataset(domain: str, data: str = "embedded", n: int = N_ITEMS, seed: int = SEED, **_):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(list(_items(data, domain, int(n), int(seed))))})


def corpus_cloze_docs(**metadata):
    return _dataset(**{**metadata, "domain": "text"})


def code_cloze_docs(**metadata):
    return _dataset(**{**metadata, "domain": "code"})
