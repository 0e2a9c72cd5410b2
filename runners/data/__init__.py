"""Unique training data for data-constrained runs: corpora, tokenizers, nested subsets, filters, epochs.

The data-constrained experiments (Muennighoff et al. 2023, section 3)
need four things from the data layer, and each is a function here:

* a corpus with a fixed held-out split (``load_corpus``), the embedded one built offline from the
  running Python's own documentation (English) and standard library (code);
* unique-data subsets that are *nested*: a smaller subset is the head of every larger one, so runs
  differ only in quantity (``train_tokens``), optionally mixing in code by tokens or filtered by
  reference-model perplexity or deduplication;
* repeated epochs over that unique data, reshuffled each epoch and reproducible at any step
  (``EpochBatches``);
* tokenizers that never reach the network (``get_tokenizer``).

Everything expensive (corpus build, tokenised streams, perplexity scores, trained BPE) is cached on
disk under ``$SCALING_CACHE`` (default ``~/.cache/scaling-data``), keyed by content fingerprints.

One room per concern: ``cache`` (fingerprints, atomic files), ``tokenizers``, ``corpus`` (the
embedded corpus, ``--data`` files, ``hf:NAME``), ``streams`` (tokenised, cached), ``filters``
(perplexity, deduplication), ``mixing`` (nested unique subsets, validation tokens), ``batches``
(epochs). This package re-exports what the rest of the toolkit uses, so ``from runners import data``
is the one import a caller needs.
"""

from scaling.errors import DataError

from runners.data.cache import default_cache_dir
from runners.data.tokenizers import ByteTokenizer, HFTokenizer, get_tokenizer
from runners.data.corpus import Corpus, EMBEDDED_DOMAINS, EMBEDDED_DOMAINS_VALIDATION, SPLIT_PER_MILLE, corpus_from_documents, load_corpus
from runners.data.streams import FILTERS
from runners.data.filters import NgramReferenceModel, deduplicate, document_perplexities, filter_keep_mask, reference_model
from runners.data.mixing import MIX_PIECE_TOKENS, corpus_tokens_available, mix_of_corpus, train_tokens, validation_tokens
from runners.data.batches import EpochBatches

__all__ = ["ByteTokenizer", "Corpus", "DataError", "EMBEDDED_DOMAINS", "EMBEDDED_DOMAINS_VALIDATION", "EpochBatches", "FILTERS", "HFTokenizer", "MIX_PIECE_TOKENS", "NgramReferenceModel", "SPLIT_PER_MILLE", "corpus_from_documents", "corpus_tokens_available", "deduplicate", "default_cache_dir", "document_perplexities", "filter_keep_mask", "get_tokenizer", "load_corpus", "mix_of_corpus", "reference_model", "train_tokens", "validation_tokens"]
