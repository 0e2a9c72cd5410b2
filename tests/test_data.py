"""The data layer: nested unique-data subsets, code mixes, filters, held-out splits and epochs.

Properties from Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models"), summarised
in its section 3. Every test keeps its caches under pytest's tmp dirs.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runners import data
from runners.data import ByteTokenizer, Corpus, DataError, EpochBatches

BYTE = ByteTokenizer()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scaling-cache")


@pytest.fixture(scope="module")
def embedded(cache):
    return data.load_corpus("embedded", cache_dir=cache)


def synthetic_corpus(seed: int = 0) -> Corpus:
    """Text docs in lower case and code docs in upper case, so every token's domain is visible.

    Code documents run up to 30k characters, far above ``MIX_PIECE_TOKENS``, to exercise the cutting
    of long documents when domains are mixed.
    """
    rng = np.random.default_rng(seed)

    def docs(count, low, high, alphabet):
        letters = np.frombuffer(alphabet.encode(), np.uint8)
        return [letters[rng.integers(0, len(letters), size=rng.integers(low, high))].tobytes().decode()
                for _ in range(count)]

    return data.corpus_from_documents("synthetic", {
        "text": docs(400, 20, 3000, "abcdefghij "),
        "code": docs(150, 50, 30000, "ABCDEFGHIJ\n"),
    })


# --- tokenizers ------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_utf8():
    text = "def f(x):\n    return x  # héllo ✓ 🐍"
    ids = BYTE.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert BYTE.decode(ids) == text
    assert (BYTE.name, BYTE.vocab_size, BYTE.eot_id) == ("byte", 256, 0)


def test_bpe_tokenizer_trains_locally_and_round_trips(embedded, tmp_path):
    small = data.corpus_from_documents("small", {"text": embedded.train["text"][:150]})
    tokenizer = data.get_tokenizer("bpe:512", small, cache_dir=tmp_path)
    assert (tokenizer.name, tokenizer.vocab_size, tokenizer.eot_id) == ("bpe:512", 512, 0)
    sample = embedded.validation["text"][0] + " héllo ✓ <|endoftext|>"
    ids = tokenizer.encode(sample)
    assert tokenizer.decode(ids) == sample
    assert tokenizer.eot_id not in ids  # the separator never occurs inside a document
    assert len(ids) < 0.8 * len(sample.encode())  # merges were learned: it compresses
    cached = data.get_tokenizer("bpe:512", small, cache_dir=tmp_path)  # read back, not retrained
    assert cached.encode(sample) == ids
    assert len(list((tmp_path / "tokenizers").glob("bpe512-*.json"))) == 1
    stream = data.train_tokens(small, tokenizer, 20_000, cache_dir=tmp_path)
    assert stream.dtype == np.uint16 and len(stream) == 20_000 and stream.max() < 512


@pytest.mark.parametrize("spec", ["no/such-tokenizer-anywhere", "bpe:100", "bpe:many"])
def test_unloadable_tokenizer_is_a_data_error(spec, embedded, tmp_path):
    with pytest.raises(DataError):
        data.get_tokenizer(spec, embedded, cache_dir=tmp_path)


# --- the embedded corpus -------------------------------------------------------------------------


def test_embedded_corpus_has_english_text_and_python_code(embedded):
    assert embedded.domains == ["code", "text"]
    assert len(embedded.train["text"]) > 300 and len(embedded.train["code"]) > 300
    assert any("while" in d and "statement" in d for d in embedded.train["text"])  # pydoc topics
    assert sum(d.count("def ") for d in embedded.train["code"]) > 1000
    assert not any("\x00" in d for split in ("train", "validation", "reference")
                   for docs in getattr(embedded, split).values() for d in docs)
    for domain in embedded.domains:  # ~2% validation, ~3% reference by document hash
        total = sum(len(getattr(embedded, s)[domain]) for s in ("train", "validation", "reference"))
        assert 0.005 < len(embedded.validation[domain]) / total < 0.05
        assert 0.01 < len(embedded.reference[domain]) / total < 0.07


def test_embedded_corpus_is_deterministic_and_its_cache_is_fast(embedded, cache, tmp_path, monkeypatch):
    real_walk = os.walk

    def reversed_walk(top, *args, **kwargs):  # the filesystem listing order must not matter
        for directory, subdirs, files in real_walk(top, *args, **kwargs):
            subdirs.reverse()
            yield directory, subdirs, files[::-1]

    monkeypatch.setattr(os, "walk", reversed_walk)
    rebuilt = data.load_corpus("embedded", cache_dir=tmp_path)
    assert rebuilt == embedded
    start = time.perf_counter()
    cached = data.load_corpus("embedded", cache_dir=cache)
    assert time.perf_counter() - start < 1.0
    assert cached == embedded


def test_validation_documents_never_appear_in_train(embedded):
    training = {d for docs in embedded.train.values() for d in docs}
    for domain in embedded.domains:
        assert embedded.validation[domain]
        assert not training & set(embedded.validation[domain])
        assert not training & set(embedded.reference[domain])


def test_validation_tokens_are_the_held_out_documents_eot_separated(embedded, cache):
    tokens = data.validation_tokens(embedded, BYTE, "text", cache_dir=cache)
    expected = "".join(d + "\x00" for d in embedded.validation["text"]).encode()
    assert tokens.tobytes() == np.frombuffer(expected, np.uint8).astype(np.uint16).tobytes()
    assert len(data.validation_tokens(embedded, BYTE, "code", max_tokens=1000, cache_dir=cache)) == 1000


# --- nested subsets and code mixes ----------------------------------------------------------------


@pytest.mark.parametrize("code_fraction", [0.0, 0.3])
def test_nested_subsets_are_prefixes_of_larger_ones(embedded, cache, code_fraction):
    sizes = [5_000, 120_000, 1_500_000]
    subsets = [data.train_tokens(embedded, BYTE, u, code_fraction, cache_dir=cache) for u in sizes]
    for size, subset in zip(sizes, subsets):
        assert len(subset) == size and subset.dtype == np.uint16
    for small, large in zip(subsets, subsets[1:]):
        np.testing.assert_array_equal(large[:len(small)], small)


def test_text_only_unique_data_is_the_head_of_the_text_documents(embedded, cache):
    tokens = data.train_tokens(embedded, BYTE, 50_000, cache_dir=cache)
    head = "".join(d + "\x00" for d in embedded.train["text"]).encode()[:50_000]
    assert tokens.tobytes() == np.frombuffer(head, np.uint8).astype(np.uint16).tobytes()


def code_share(tokens: np.ndarray) -> float:
    """Share of tokens from code (upper case), each eot counted with the document it ends."""
    letters = tokens[tokens != BYTE.eot_id]
    return float(np.mean((letters >= ord("A")) & (letters <= ord("Z")) | (letters == ord("\n"))))


@pytest.mark.parametrize("code_fraction", [0.1, 0.3, 0.5, 0.9])
def test_code_fraction_of_every_prefix_is_within_one_percent(code_fraction, tmp_path):
    corpus = synthetic_corpus()
    tokens = data.train_tokens(corpus, BYTE, 500_000, code_fraction, cache_dir=tmp_path)
    for prefix in (150_000, 300_000, 500_000):
        assert code_share(tokens[:prefix]) == pytest.approx(code_fraction, abs=0.01)


def test_pure_domains_take_only_their_own_tokens(tmp_path):
    corpus = synthetic_corpus()
    assert code_share(data.train_tokens(corpus, BYTE, 100_000, 0.0, cache_dir=tmp_path)) == 0.0
    assert code_share(data.train_tokens(corpus, BYTE, 100_000, 1.0, cache_dir=tmp_path)) == 1.0


def test_too_much_unique_data_says_how_much_is_available(embedded, cache):
    available = data.corpus_tokens_available(embedded, BYTE, "text", cache_dir=cache)
    assert available == sum(len(d.encode()) + 1 for d in embedded.train["text"])
    assert len(data.train_tokens(embedded, BYTE, available, cache_dir=cache)) == available
    with pytest.raises(DataError, match=r"exceeds the .* tokens available for text in corpus 'embedded'"):
        data.train_tokens(embedded, BYTE, available + 1, cache_dir=cache)
    with pytest.raises(DataError, match=r"available for a 30% code mix"):
        data.train_tokens(embedded, BYTE, 50_000_000, 0.3, cache_dir=cache)


def test_code_fraction_needs_a_code_domain(tmp_path):
    corpus = data.corpus_from_documents("prose", {"text": ["some words here"] * 3 + ["other words"]})
    with pytest.raises(DataError, match="code"):
        data.train_tokens(corpus, BYTE, 10, code_fraction=0.2, cache_dir=tmp_path)


def test_unknown_filter_lists_the_valid_ones(embedded, cache):
    with pytest.raises(DataError, match=r"unknown filter 'ppl10'.*ppl25.*dedup"):
        data.train_tokens(embedded, BYTE, 1000, filter="ppl10", cache_dir=cache)


# --- filtering -------------------------------------------------------------------------------


def test_reference_model_is_a_normalised_language_model(embedded, cache):
    model = data.reference_model(embedded, BYTE, "text", cache_dir=cache)
    for context in [(0, 0), (ord("t"), ord("h")), (250, 251)]:  # seen, common, never seen
        tokens = np.arange(256)
        probs = np.exp(model.log_probs(np.full(256, context[0]), np.full(256, context[1]), tokens))
        assert probs.sum() == pytest.approx(1.0, abs=1e-9) and probs.min() > 0
    held_out = np.frombuffer("".join(d + "\x00" for d in embedded.validation["text"]).encode(), np.uint8)
    ends = np.cumsum([len(d.encode()) + 1 for d in embedded.validation["text"]])
    shuffled = np.random.default_rng(0).permutation(held_out)
    real, scrambled = model.perplexities(held_out, ends), model.perplexities(shuffled, ends)
    assert np.median(real) < 15  # English bytes: under 4 bits per character from 50 kB of reference text
    assert np.median(scrambled) > 5 * np.median(real)


@pytest.mark.parametrize("filter, kept_share", [("ppl25", 0.25), ("ppl50", 0.5), ("ppl25-75", 0.5)])
def test_perplexity_filters_keep_the_right_share_of_low_perplexity_docs(embedded, cache, filter, kept_share):
    keep = data.filter_keep_mask(embedded, BYTE, "text", filter, cache_dir=cache)
    assert keep.mean() == pytest.approx(kept_share, abs=0.02)
    perplexity = data.document_perplexities(embedded, BYTE, "text", cache_dir=cache)
    if filter != "ppl25-75":
        assert perplexity[keep].max() < perplexity[~keep].min()
    else:  # the band drops both tails
        assert perplexity[~keep].min() < perplexity[keep].min() and perplexity[keep].max() < perplexity[~keep].max()
    assert np.median(perplexity[keep]) < np.median(perplexity[~keep]) or filter == "ppl25-75"
    kept_docs = [d for d, k in zip(embedded.train["text"], keep) if k]
    available = data.corpus_tokens_available(embedded, BYTE, "text", filter, cache_dir=cache)
    assert available == sum(len(d.encode()) + 1 for d in kept_docs)
    tokens = data.train_tokens(embedded, BYTE, available // 2, filter=filter, cache_dir=cache)
    expected = "".join(d + "\x00" for d in kept_docs).encode()[:available // 2]
    assert tokens.tobytes() == np.frombuffer(expected, np.uint8).astype(np.uint16).tobytes()


def test_dedup_removes_an_exact_and_a_near_duplicate(embedded, tmp_path):
    originals = [d for d in embedded.train["text"] if 200 < len(d.split()) < 2000][:20]
    words = originals[3].split()
    words[10], words[100] = "CHANGED", "ALTERED"
    exact = "  " + originals[5].upper().replace(" ", "   ") + "\n"  # only case and spacing differ
    near = " ".join(words)
    docs = originals + [exact, near]
    corpus = Corpus("dups", "dups-test", train={"text": docs}, validation={"text": []}, reference={"text": []})
    keep = data.filter_keep_mask(corpus, BYTE, "text", "dedup", cache_dir=tmp_path)
    assert keep.tolist() == [True] * len(originals) + [False, False]
    available = data.corpus_tokens_available(corpus, BYTE, "text", "dedup", cache_dir=tmp_path)
    assert available == sum(len(d.encode()) + 1 for d in originals)


def test_dedup_keeps_documents_that_merely_share_some_text():
    base = " ".join(f"word{i}" for i in range(300))
    half = " ".join(f"word{i}" for i in range(150)) + " " + " ".join(f"other{i}" for i in range(150))
    assert data.deduplicate([base, half]).tolist() == [True, True]


# --- loading files -----------------------------------------------------------------------------


RECORDS = [{"body": f"document number {i} about {'code' if i % 3 == 0 else 'prose'}",
            "kind": "code" if i % 3 == 0 else "text"} for i in range(120)]


def test_jsonl_json_and_parquet_files_load_the_same_corpus(tmp_path):
    jsonl, array, parquet = tmp_path / "docs.jsonl", tmp_path / "docs.json", tmp_path / "docs.parquet"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    array.write_text(json.dumps(RECORDS))
    pq.write_table(pa.Table.from_pylist(RECORDS), parquet)
    corpora = [data.load_corpus(str(p), text_column="body", domain_column="kind") for p in (jsonl, array, parquet)]
    assert corpora[0].fingerprint == corpora[1].fingerprint == corpora[2].fingerprint
    corpus = corpora[2]
    assert corpus.domains == ["code", "text"]
    everything = {d for s in ("train", "validation", "reference") for docs in getattr(corpus, s).values() for d in docs}
    assert everything == {r["body"] for r in RECORDS}
    single = data.load_corpus(str(jsonl), text_column="body")
    assert single.domains == ["text"]


def test_unreadable_data_is_a_data_error(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json\n')
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), parquet)
    with pytest.raises(DataError, match="no such file"):
        data.load_corpus(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="'text'"):
        data.load_corpus(str(jsonl))  # the default column is "text"; these records use "body"
    with pytest.raises(DataError, match="'text'.*columns: body, kind"):
        data.load_corpus(str(parquet))
    with pytest.raises(DataError, match="cannot read"):
        data.load_corpus(str(broken))
    (tmp_path / "docs.csv").write_text("text\nhello\n")
    with pytest.raises(DataError, match="unsupported format"):
        data.load_corpus(str(tmp_path / "docs.csv"))


def test_hf_data_goes_through_datasets_load_dataset(tmp_path):
    """``hf:NAME`` is ``datasets.load_dataset(NAME, split="train")``: checked on a local dataset
    folder (no network); without the package it is a DataError naming it."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="datasets"):
            data.load_corpus("hf:allenai/c4")
        return
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    docs = [f"document {i}: " + "the quick brown fox jumps over the lazy dog. " * (5 + i % 7) for i in range(60)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"body": d, "lang": "en"}) for d in docs) + "\n")
    corpus = data.load_corpus(f"hf:{folder}", text_column="body")
    loaded = [d for split in (corpus.train, corpus.validation, corpus.reference) for v in split.values() for d in v]
    assert sorted(loaded) == sorted(docs)
    with pytest.raises(DataError, match="no column 'text'"):
        data.load_corpus(f"hf:{folder}")
    with pytest.raises(DataError, match="cannot load"):
        data.load_corpus(f"hf:{tmp_path / 'missing'}")


# --- epochs ----------------------------------------------------------------------------------


def counting_tokens(sequences: int, seq_len: int) -> np.ndarray:
    """Token t is t, so a sequence announces its own index: x[0] // seq_len."""
    return np.arange(sequences * seq_len + 1, dtype=np.uint32)


def test_every_sequence_is_seen_exactly_once_per_epoch():
    seq_len, batch_size, sequences = 8, 6, 50  # 50 % 6 != 0: batches straddle epoch boundaries
    batches = EpochBatches(counting_tokens(sequences, seq_len), seq_len, batch_size, seed=1,
                           total_tokens=3 * sequences * seq_len)
    assert batches.sequences_per_epoch == sequences and len(batches) == 25
    seen = []
    for x, y in batches:
        assert x.dtype == np.int64 and x.shape == (batch_size, seq_len)
        np.testing.assert_array_equal(y, x + 1)  # targets are the next tokens
        np.testing.assert_array_equal(x[:, 0] % seq_len, 0)  # sequences start on boundaries
        seen += (x[:, 0] // seq_len).tolist()
    assert np.bincount(seen, minlength=sequences).tolist() == [3] * sequences
    assert batches.epochs_at(25) == 3.0 and batches.epochs_at(5) == pytest.approx(0.6)
    first_epochs = [seen[:sequences], seen[sequences:2 * sequences]]
    assert sorted(first_epochs[0]) == list(range(sequences)) and first_epochs[0] != first_epochs[1]


def test_training_tokens_round_up_to_whole_steps():
    batches = EpochBatches(counting_tokens(40, 10), 10, 4, seed=0, total_tokens=1001)
    assert batches.steps == 26 and sum(1 for _ in batches) == 26  # 1001 / 40 per step


def test_resuming_at_any_step_reproduces_the_same_batches():
    tokens = counting_tokens(30, 16)
    original = EpochBatches(tokens, 16, 4, seed=7, total_tokens=16 * 4 * 40)
    expected = [x for x, _ in original]
    resumed = EpochBatches(tokens, 16, 4, seed=7, start_step=23, total_tokens=16 * 4 * 40)
    for x_expected, (x, _) in zip(expected[23:], resumed, strict=True):
        np.testing.assert_array_equal(x, x_expected)
    other_seed = EpochBatches(tokens, 16, 4, seed=8)
    assert not np.array_equal(other_seed.batch(0)[0], expected[0])


def test_too_little_unique_data_for_one_batch_is_a_data_error():
    with pytest.raises(DataError, match="too little unique data"):
        EpochBatches(np.arange(100, dtype=np.uint16), seq_len=32, batch_size=4, seed=0)
