"""Corpora with a fixed held-out split: the embedded one built offline from this Python's own
documentation (text) and standard library (code, or seven library domains), and ``--data`` files
(jsonl, Parquet) or ``hf:NAME`` datasets."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from scaling.errors import DataError
from runners.data.cache import _cache_root, _first_line, _sha


#: Split by document hash, in thousandths: ~2% validation, ~3% reference, the rest train.
SPLIT_PER_MILLE = {"validation": 20, "reference": 30}


#: Standard-library directories left out of the embedded code domain: tests, the IDE, vendored or
#: generated text that is not representative Python.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages",
                     "turtledemo", "__pycache__", "pydoc_data", "ensurepip"}


#: Bump when the embedded corpus recipe changes, so stale caches are not reused.
_EMBEDDED_RECIPE = "embedded-v1"


_EMBEDDED_DOMAINS_RECIPE = "embedded-domains-v2"


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
    except RecursionError:
        raise DataError(f"cannot read {data}: JSON nested too deeply to be a corpus") from None
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
        domain = record[domain_column] if domain_column is not None else "text"
        if domain is None or (isinstance(domain, float) and domain != domain) or not str(domain).strip():
            raise DataError(f"{source}: record {number}: column {domain_column!r} labels no domain ({domain!r})")
        rows.append((str(domain), text, text))
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
