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
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.humanise import count as human
from scaling.cli import UsageError

# --------------------------------------------------------------------------------------------
# Constants

#: Split by document hash, in thousandths: ~2% validation, ~3% reference, the rest train.
SPLIT_PER_MILLE = {"validation": 20, "reference": 30}

#: Valid values of ``filter`` (reference.md section 3: perplexity percentiles and deduplication).
FILTERS = ("none", "ppl25", "ppl50", "ppl25-75", "dedup")

#: When domains are mixed, documents longer than this are cut into pieces (each ended by eot) so
#: that every prefix of the mix is within about this many tokens of the requested code share.
MIX_PIECE_TOKENS = 1024

#: Standard-library directories left out of the embedded code domain: tests, the IDE, vendored or
#: generated text that is not representative Python.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages",
                     "turtledemo", "__pycache__", "pydoc_data", "ensurepip"}

#: Bump when the embedded corpus recipe changes, so stale caches are not reused.
_EMBEDDED_RECIPE = "embedded-v1"
_EMBEDDED_DOMAINS_RECIPE = "embedded-domains-v2"

#: Most characters of training text fed to a ``bpe:N`` trainer (a vocabulary needs far less).
_BPE_TRAIN_CHARS = 50_000_000

_EOT_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>")


# DataError (scaling.errors): an unreadable ``--data``, a bad tokenizer, too little data; exit 1
from scaling.errors import DataError  # noqa: E402,F401


# --------------------------------------------------------------------------------------------
# Cache helpers


def default_cache_dir() -> Path:
    """``$SCALING_CACHE`` or ``~/.cache/scaling-data``: one place for every derived data file."""
    return Path(os.environ.get("SCALING_CACHE") or "~/.cache/scaling-data").expanduser()


def _cache_root(cache_dir) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _safe_name(name: str) -> str:
    """A filename-safe, collision-free version of an arbitrary name (domain, tokenizer)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]
    return f"{readable}-{_sha(name)[:8]}"


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write to a temporary file in the destination directory, then rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _cached_npy(path: Path, build) -> np.ndarray:
    """Load ``path`` if present, else ``build()`` it and save it; content is keyed by the path."""
    if not path.exists():
        _save_npy_atomic(path, build())
    return np.load(path)


# --------------------------------------------------------------------------------------------
# Tokenizers


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


def _bpe_tokenizer(spec: str, corpus, cache_dir) -> HFTokenizer:
    """A byte-level BPE trained on the corpus's train split; cached by corpus fingerprint and size."""
    try:
        vocab_size = int(spec.split(":", 1)[1])
    except ValueError:
        raise DataError(f"bad tokenizer {spec!r} (expected bpe:VOCAB, e.g. bpe:512)") from None
    if vocab_size <= 257:
        raise DataError(f"bad tokenizer {spec!r}: a byte-level BPE needs a vocabulary above 257 "
                        "(256 bytes + end-of-text)")
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


# --------------------------------------------------------------------------------------------
# Corpus


@dataclass
class Corpus:
    """Documents per domain and split. Splits are decided by content hash, so they never move."""

    name: str                            #: "embedded" or the path/name given to load_corpus
    fingerprint: str                     #: content hash; keys every cache derived from this corpus
    train: dict[str, list[str]]          #: domain -> training documents (the unique-data pool)
    validation: dict[str, list[str]]     #: domain -> held-out documents for validation loss
    reference: dict[str, list[str]]      #: domain -> documents for the filtering reference model

    @property
    def domains(self) -> list[str]:
        return sorted(self.train)


def _split_of(split_key: str, validation_per_mille: int | None = None) -> str:
    bucket = int(_sha(split_key)[:8], 16) % 1000
    validation = SPLIT_PER_MILLE["validation"] if validation_per_mille is None else validation_per_mille
    if bucket < validation:
        return "validation"
    if bucket < validation + SPLIT_PER_MILLE["reference"]:
        return "reference"
    return "train"


def _clean(text: str) -> str:
    """NUL is the byte tokenizer's separator; lone surrogates cannot be encoded."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _build_corpus(name: str, rows, validation_per_mille: int | None = None) -> Corpus:
    """``rows`` of (domain, text, split_key) -> Corpus with hash-sorted documents and a fingerprint."""
    keyed = []
    for domain, text, split_key in rows:
        text = _clean(text)
        if text.strip():
            keyed.append((_split_of(split_key, validation_per_mille), domain, _sha(text), text))
    keyed.sort(key=lambda row: row[:3])
    domains = sorted({row[1] for row in keyed})
    splits = {split: {d: [] for d in domains} for split in ("train", "validation", "reference")}
    for split, domain, _, text in keyed:
        splits[split][domain].append(text)
    digest = hashlib.sha256("".join(f"{s}\t{d}\t{h}\n" for s, d, h, _ in keyed).encode()).hexdigest()
    return Corpus(name=name, fingerprint=digest[:16], **splits)


def corpus_from_documents(name: str, documents: dict[str, list[str]]) -> Corpus:
    """A corpus from in-memory documents per domain, split by the hash of each document's text."""
    return _build_corpus(name, ((d, t, t) for d, docs in documents.items() for t in docs))


def load_corpus(data: str = "embedded", text_column: str = "text", domain_column: str | None = None,
                cache_dir=None) -> Corpus:
    """``embedded`` (text, code), ``embedded-domains`` (seven domains, ``EMBEDDED_DOMAINS``), a
    .jsonl/.json/.parquet file (``domain_column`` labels each row's domain), or ``hf:NAME[:CONFIG]``
    (needs ``datasets``)."""
    if data == "embedded":
        return _load_embedded(cache_dir)
    if data == "embedded-domains":
        return _load_embedded(cache_dir, domains=True)
    if data.startswith("hf:"):
        return _build_corpus(data, _hf_rows(data, text_column, domain_column))
    return _build_corpus(data, _file_rows(data, text_column, domain_column))


def _file_rows(data: str, text_column: str, domain_column: str | None):
    path = Path(data).expanduser()
    if not path.is_file():
        raise DataError(f"--data {data!r}: no such file "
                        "(expected 'embedded', a .jsonl/.json/.parquet file, or hf:NAME)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            records = _parquet_records(path, text_column, domain_column)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            records = _json_records(path)
        else:
            raise DataError(f"--data {data!r}: unsupported format {suffix or '(none)'} "
                            "(expected .jsonl, .json or .parquet)")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {data}: {_first_line(exc)}") from None
    return _rows_from_records(records, data, text_column, domain_column)


def _json_records(path: Path) -> list[dict]:
    """JSON lines, or one JSON array of objects."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _parquet_records(path: Path, text_column: str, domain_column: str | None) -> list[dict]:
    import pyarrow.parquet as pq

    schema_names = pq.read_schema(path).names
    wanted = [c for c in (text_column, domain_column) if c]
    missing = [c for c in wanted if c not in schema_names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(schema_names)})")
    return pq.read_table(path, columns=wanted).to_pylist()


def _rows_from_records(records, source: str, text_column: str, domain_column: str | None):
    rows = []
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or text_column not in record:
            raise DataError(f"{source}: record {number} has no column {text_column!r}")
        if domain_column is not None and domain_column not in record:
            raise DataError(f"{source}: record {number} has no column {domain_column!r}")
        text = record[text_column]
        if text is None:
            continue
        if not isinstance(text, str):
            raise DataError(f"{source}: record {number}: column {text_column!r} is not text")
        domain = str(record[domain_column]) if domain_column is not None else "text"
        rows.append((domain, text, text))
    if not rows:
        raise DataError(f"{source}: no documents in column {text_column!r}")
    return rows


def _hf_rows(data: str, text_column: str, domain_column: str | None):
    try:
        import datasets
    except ImportError:
        raise DataError(f"--data {data}: needs the 'datasets' package (pip install datasets)") from None
    repo, _, config = data[3:].partition(":")
    try:
        dataset = datasets.load_dataset(repo, config or None, split="train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for "cannot load"
        raise DataError(f"cannot load {data}: {_first_line(exc)}") from None
    missing = [c for c in (text_column, domain_column) if c and c not in dataset.column_names]
    if missing:
        raise DataError(f"{data}: no column {missing[0]!r} (columns: {', '.join(dataset.column_names)})")
    return _rows_from_records(dataset, data, text_column, domain_column)


# --- the embedded corpus: this Python's documentation (text) and standard library (code) -----


def _load_embedded(cache_dir, domains: bool = False) -> Corpus:
    """Built once per Python installation (a few seconds), then read back from a Parquet cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stdlib = sysconfig.get_paths()["stdlib"]
    name, recipe = ("embedded-domains", _EMBEDDED_DOMAINS_RECIPE) if domains else ("embedded", _EMBEDDED_RECIPE)
    key = _sha(f"{recipe}|{sys.version}|{stdlib}")[:16]
    path = _cache_root(cache_dir) / "corpora" / f"{name}-{key}.parquet"
    if path.exists():
        return _corpus_from_table(pq.read_table(path))
    # the seven domains hold 40-1,000 documents each: 8% held out leaves several validation
    # documents in every one (2% left one in three of them)
    corpus = (_build_corpus(name, _embedded_domain_rows(stdlib), validation_per_mille=EMBEDDED_DOMAINS_VALIDATION)
              if domains else _build_corpus(name, _embedded_rows(stdlib)))
    table = _corpus_to_table(corpus, pa)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return corpus


def _corpus_to_table(corpus: Corpus, pa):
    columns = {"split": [], "domain": [], "text": []}
    for split in ("train", "validation", "reference"):
        for domain, docs in getattr(corpus, split).items():
            columns["split"] += [split] * len(docs)
            columns["domain"] += [domain] * len(docs)
            columns["text"] += docs
    metadata = {"name": corpus.name, "fingerprint": corpus.fingerprint}
    return pa.table(columns).replace_schema_metadata(metadata)


def _corpus_from_table(table) -> Corpus:
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    domains = sorted(set(table.column("domain").to_pylist()))
    splits = {split: {d: [] for d in domains} for split in ("train", "validation", "reference")}
    for split, domain, text in zip(*(table.column(c).to_pylist() for c in ("split", "domain", "text"))):
        splits[split][domain].append(text)
    return Corpus(name=meta["name"], fingerprint=meta["fingerprint"], **splits)


def _embedded_rows(stdlib: str):
    """pydoc topics and each module's docstrings as "text"; module sources as "code".

    A module's documentation takes the split of its source, so no held-out text is trained on
    through the code domain (docstrings appear in both).
    """
    from pydoc_data.topics import topics

    for title, body in topics.items():
        yield "text", body, f"topic:{title}"
    for _, source, documentation in _stdlib_documents(stdlib):
        yield "code", source, source
        if documentation:
            yield "text", documentation, source


def _stdlib_documents(stdlib: str):
    """(top-level module name, source, docstrings) of every standard-library module, in order."""
    for path in _stdlib_sources(stdlib):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        top = path.relative_to(stdlib).parts[0]
        yield (top[:-3] if top.endswith(".py") else top), source, _module_documentation(source)


#: The ``embedded-domains`` corpus: seven disjoint domains that every CPython installation has,
#: the language reference, the API documentation, and the standard library's source split by what
#: the modules are for (top-level package or module name; anything not listed is ``lib-core``).
EMBEDDED_DOMAINS = ("reference", "apidoc", "lib-text", "lib-net", "lib-sys", "lib-dev", "lib-core")
EMBEDDED_DOMAINS_VALIDATION = 80
_LIBRARY_GROUPS = {
    "lib-text": "encodings email xml html re json csv difflib textwrap string codecs locale mailbox configparser "
                "plistlib gettext stringprep sre_compile sre_parse sre_constants tomllib _markupbase quopri base64 "
                "binhex uu shlex mimetypes netrc _pydecimal".split(),
    "lib-net": "asyncio http urllib xmlrpc wsgiref ssl socket socketserver smtplib smtpd imaplib poplib ftplib "
               "nntplib telnetlib ipaddress cgi cgitb webbrowser selectors asynchat asyncore uuid".split(),
    "lib-sys": "multiprocessing concurrent threading subprocess importlib os ntpath posixpath shutil tempfile "
               "pathlib zipfile tarfile ctypes sysconfig site platform zipimport glob fnmatch logging signal "
               "_osx_support _aix_support _pyio io filecmp gzip bz2 lzma zipapp sched queue".split(),
    "lib-dev": "unittest doctest pdb bdb inspect ast dis typing dataclasses traceback trace pstats profile cProfile "
               "timeit pydoc lib2to3 distutils argparse optparse pickle pickletools tokenize token symtable "
               "tabnanny py_compile compileall code codeop linecache modulefinder pyclbr tkinter turtle".split(),
}
_GROUP_OF = {module: group for group, modules in _LIBRARY_GROUPS.items() for module in modules}


def _embedded_domain_rows(stdlib: str):
    """pydoc topics as ``reference``, docstrings as ``apidoc``, module sources by group. A module's
    docstrings take the split of its source (as in the two-domain corpus)."""
    from pydoc_data.topics import topics

    for title, body in topics.items():
        yield "reference", body, f"topic:{title}"
    for top, source, documentation in _stdlib_documents(stdlib):
        yield _GROUP_OF.get(top, "lib-core"), source, source
        if documentation:
            yield "apidoc", documentation, source


def _stdlib_sources(stdlib: str) -> list[Path]:
    """Standard-library .py files, sorted by relative path so the listing order never matters."""
    found = []
    for directory, subdirs, files in os.walk(stdlib):
        subdirs[:] = [d for d in subdirs if d not in _STDLIB_SKIP_DIRS and not d.startswith("config-")]
        found += [Path(directory) / f for f in files if f.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(stdlib).as_posix())


def _module_documentation(source: str) -> str:
    """The docstrings of a module, its classes and functions, read with ``ast`` (nothing is imported)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    parts = [ast.get_docstring(tree) or ""]
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= 4:  # skip one-word stubs like "Return self."
                parts.append(doc)
    return "\n\n".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------
# Token streams (cached): one per corpus, tokenizer, split, domain and filter


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
    """Tokenised documents of one split and domain, after ``filter``; built once, then memory-mapped."""
    _check_filter(filter)
    docs = _documents(corpus, split, domain)
    base = _stream_dir(corpus, tokenizer, cache_dir) / f"{split}-{_safe_name(domain)}-{filter}"
    ends_path, tokens_path = base.with_suffix(".ends.npy"), base.with_suffix(".tokens.npy")
    if not (ends_path.exists() and tokens_path.exists()):
        if filter == "none":
            tokens, ends = _encode_documents(tokenizer, docs)
        else:
            full = _stream(corpus, tokenizer, split, domain, "none", cache_dir)
            keep = (filter_keep_mask(corpus, tokenizer, domain, filter, cache_dir) if split == "train"
                    else np.ones(len(docs), dtype=bool))  # filters choose unique data, never held-out data
            tokens, ends = _select_documents(full, keep)
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


# --------------------------------------------------------------------------------------------
# Filtering: reference-model perplexity and deduplication


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


# --------------------------------------------------------------------------------------------
# Unique data: nested, mixed subsets


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


# --------------------------------------------------------------------------------------------
# Epochs over the unique data


class EpochBatches:
    """Iterate (x, y) batches over `tokens` for exactly `total_tokens` training tokens (rounded up to
    whole steps), as whole epochs over the unique data, reshuffled each epoch.

    A batch is a pure function of its step, so a run resumed at any step sees the same data.
    ``total_tokens=None`` iterates without end.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int,
                 start_step: int = 0, total_tokens: int | None = None):
        self.tokens, self.seq_len, self.batch_size = tokens, int(seq_len), int(batch_size)
        self.seed, self.start_step, self.total_tokens = int(seed), int(start_step), total_tokens
        self._n = (len(tokens) - 1) // self.seq_len
        if self._n < self.batch_size:
            raise DataError(f"too little unique data for one batch: {len(tokens)} tokens make {max(self._n, 0)} "
                            f"sequences of {self.seq_len} tokens, but a batch needs {self.batch_size}")
        self._permutations: dict[int, np.ndarray] = {}

    @property
    def sequences_per_epoch(self) -> int:
        return self._n

    @property
    def steps(self) -> int | None:
        """Steps that cover ``total_tokens`` (rounded up), or None for an endless iterator."""
        if self.total_tokens is None:
            return None
        return math.ceil(self.total_tokens / (self.batch_size * self.seq_len))

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 4:
                self._permutations.pop(next(iter(self._permutations)))
            self._permutations[epoch] = np.random.default_rng((self.seed, epoch)).permutation(self._n)
        return self._permutations[epoch]

    def sequence_indices(self, step: int) -> np.ndarray:
        """Which sequences form batch ``step``: consecutive slots in the stream of shuffled epochs."""
        slots = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        epochs, positions = np.divmod(slots, self._n)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._permutation(int(epoch))[positions[mask]]
        return out

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        offsets = self.sequence_indices(step)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        window = np.asarray(self.tokens[offsets.ravel()], dtype=np.int64).reshape(self.batch_size, self.seq_len + 1)
        return window[:, :-1], window[:, 1:]

    def epochs_at(self, step: int) -> float:
        """Passes over the unique data completed after ``step`` steps."""
        return step * self.batch_size / self._n

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an EpochBatches without total_tokens has no length")
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.batch(step)
            step += 1
