"""The data layer's on-disk cache (``$SCALING_CACHE``, default ``~/.cache/scaling-data``): content
fingerprints, safe names, atomic ``.npy`` writes, measurements kept per machine (``cached_json``),
and the one-line form of an error."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np


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


def cached_json(name: str, key: str, measure, cache_dir=None):
    """``measure()`` once per ``key``, kept in ``<cache>/name`` (a JSON object, key -> value): what a
    machine measured about itself (the CPU dtype, how many runs to stack). An unreadable file is
    measured again; an unwritable one only costs the measurement next time."""
    path = _cache_root(cache_dir) / name
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        cached[key] = measure()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cached, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass
    return cached[key]


def _cached_npy(path: Path, build) -> np.ndarray:
    """Load ``path`` if present, else ``build()`` it and save it; content is keyed by the path."""
    if not path.exists():
        _save_npy_atomic(path, build())
    return np.load(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
