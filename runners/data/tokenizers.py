"""Tokenizers that never reach the network: byte-level, a BPE trained locally on the corpus
(``bpe:N``, cached), or a saved Hugging Face tokenizer; documents encoded with an end-of-text token."""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from scaling.errors import DataError
from runners.data.cache import _cache_root, _first_line, _safe_name, _sha

if TYPE_CHECKING:
    from runners.data.corpus import Corpus


#: Most characters of training text fed to a ``bpe:N`` trainer (a vocabulary needs far less).
_BPE_TRAIN_CHARS = 50_000_000


_EOT_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>")


class ByteTokenizer:
    """UTF-8 bytes as tokens: no training, no files, and any text round-trips."""

    name = "byte"
    vocab_size = 256
    eot_id = 0  # NUL never occurs in documents (stripped at load), so it can separate them
    cache_key = "byte"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", "replace"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` behind the same five attributes as ``ByteTokenizer``."""

    def __init__(self, tokenizer, name: str, eot_id: int):
        tokenizer.encode_special_tokens = True  # "<|endoftext|>" inside a document is just text
        self._tokenizer = tokenizer
        self.name = name
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot_id = int(eot_id)
        self.cache_key = f"{_safe_name(name)}-{_sha(tokenizer.to_str())[:12]}"

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def get_tokenizer(spec: str = "byte", corpus: "Corpus | None" = None, cache_dir=None):
    """``byte``, ``bpe:N`` (trained here on ``corpus``), or a local/cached HF tokenizer; never downloads."""
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("bpe:"):
        return _bpe_tokenizer(spec, corpus, cache_dir)
    return _pretrained_tokenizer(spec)


MAX_BPE_VOCAB = 2 ** 20


def bpe_vocab(spec: str) -> int:
    """The vocabulary of a ``bpe:VOCAB`` spec, or one ``DataError``: wrong on any machine, so a dry
    run refuses it as the real run would."""
    digits = spec.split(":", 1)[1].strip()
    if not digits.isdigit() or not digits.isascii():       # no 1_000, no 1e3, no sign
        raise DataError(f"bad tokenizer {spec!r} (expected bpe:VOCAB, e.g. bpe:512)")
    vocab_size = int(digits)
    if vocab_size <= 257:
        raise DataError(f"bad tokenizer {spec!r}: a byte-level BPE needs a vocabulary above 257 "
                        "(256 bytes + end-of-text)")
    if vocab_size > MAX_BPE_VOCAB:
        raise DataError(f"bad tokenizer {spec!r}: at most {MAX_BPE_VOCAB:,} tokens (the largest published "
                        "vocabularies are ~256K; the trainer allocates per token)")
    return vocab_size


def _bpe_tokenizer(spec: str, corpus, cache_dir) -> HFTokenizer:
    """A byte-level BPE trained on the corpus's train split; cached by corpus fingerprint and size."""
    vocab_size = bpe_vocab(spec)
    if corpus is None:
        raise DataError(f"tokenizer {spec!r} is trained on the corpus, but no corpus was given")
    from tokenizers import Tokenizer

    path = _cache_root(cache_dir) / "tokenizers" / f"bpe{vocab_size}-{corpus.fingerprint}.json"
    if not path.exists():
        trained = _train_bpe(_bpe_training_texts(corpus), vocab_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        trained.save(str(tmp))
        os.replace(tmp, path)
    return HFTokenizer(Tokenizer.from_file(str(path)), name=spec, eot_id=0)


def _bpe_training_texts(corpus) -> list[str]:
    """Train documents, round-robin over domains, up to ``_BPE_TRAIN_CHARS`` characters."""
    texts, used = [], 0
    queues = [list(corpus.train[d]) for d in sorted(corpus.train)]
    for row in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if row < len(queue) and used < _BPE_TRAIN_CHARS:
                texts.append(queue[row])
                used += len(queue[row])
    if not texts:
        raise DataError(f"corpus {corpus.name!r} has no training documents to train a BPE on")
    return texts


def _train_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def _pretrained_tokenizer(spec: str) -> HFTokenizer:
    """A tokenizer.json path or folder, or a name already in the local Hugging Face cache."""
    from tokenizers import Tokenizer

    path = _local_tokenizer_file(spec)
    if path is not None:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad user file
            raise DataError(f"cannot read tokenizer {spec!r}: {_first_line(exc)}") from None
        return HFTokenizer(tokenizer, name=spec, eot_id=_find_eot(tokenizer, spec))
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DataError(f"cannot load tokenizer {spec!r}: not 'byte', 'bpe:N', a tokenizer.json path, "
                        "or a tokenizer in the local Hugging Face cache (nothing is downloaded)") from None
    try:
        loaded = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for "not found"
        raise DataError(f"cannot load tokenizer {spec!r} from local files (nothing is downloaded): "
                        f"{_first_line(exc)}") from None
    if not getattr(loaded, "is_fast", False):
        raise DataError(f"tokenizer {spec!r} has no fast (tokenizers) version; give a tokenizer.json instead")
    eot = loaded.eos_token_id if loaded.eos_token_id is not None else _find_eot(loaded.backend_tokenizer, spec)
    return HFTokenizer(loaded.backend_tokenizer, name=spec, eot_id=eot)


def _local_tokenizer_file(spec: str) -> Path | None:
    """``spec`` as a tokenizer.json file, a folder holding one, or a snapshot in the HF hub cache."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    hub = Path(os.environ.get("HF_HUB_CACHE")
               or Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser() / "hub")
    snapshots = hub.expanduser() / f"models--{spec.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/tokenizer.json")) if snapshots.is_dir() else []
    return found[-1] if found else None


def _find_eot(tokenizer, spec: str) -> int:
    for token in _EOT_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise DataError(f"tokenizer {spec!r} has no end-of-text token (looked for {', '.join(_EOT_CANDIDATES)})")


def _token_dtype(tokenizer):
    return np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32


def _encode_documents(tokenizer, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of ``docs`` each followed by eot, and the end offset of each document (eot included)."""
    dtype = _token_dtype(tokenizer)
    if isinstance(tokenizer, ByteTokenizer):  # fast path: NUL-joined bytes are exactly the stream
        encoded = [d.encode("utf-8", "replace") for d in docs]
        tokens = np.frombuffer(b"".join(e + b"\0" for e in encoded), dtype=np.uint8).astype(dtype)
        lengths = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
        return tokens, np.cumsum(lengths)
    batch = getattr(tokenizer, "encode_batch", None)
    ids = batch(docs) if batch is not None else [tokenizer.encode(d) for d in docs]
    lengths = np.fromiter((len(i) + 1 for i in ids), dtype=np.int64, count=len(ids))
    tokens = np.empty(int(lengths.sum()), dtype=dtype)
    ends = np.cumsum(lengths)
    for doc_ids, end, length in zip(ids, ends, lengths):
        tokens[end - length:end - 1] = doc_ids
        tokens[end - 1] = tokenizer.eot_id
    return tokens, ends
