"""What ``scaling.store check`` lists and ``--repair`` moves out of the way: torn, foreign or odd files."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from scaling.store.files import _Vanished, _as_dir, _inspect, _listing, _reader_lock, _writer_lock, run_files
from scaling.store.runs import SEGMENTS, UPDATES, _unified_schema, segment_files, update_files


def odd_files(store) -> list[tuple[Path, str]]:
    """Entries named like run files, segments or side files that are not regular files."""
    d = _as_dir(store)
    return [x for folder in (d, d / SEGMENTS, d / UPDATES) for x in _listing(folder)[1]]


QUARANTINE = "_quarantine"


def quarantine(store, names) -> list[str]:
    """Move run files out of the store into ``_quarantine/`` (renamed, so a later run file of the
    same name is never confused with them); returns the names moved."""
    d = _as_dir(store)
    (d / QUARANTINE).mkdir(exist_ok=True)
    moved = []
    with _writer_lock(store):
        for name in names:
            src = d / name
            if os.path.lexists(src):               # a dangling link or a loop is moved too
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
                os.replace(src, d / QUARANTINE / f"{name.replace('/', '__')}.{stamp}")
                moved.append(name)
    return moved


def check(store) -> dict:
    """What ``python -m scaling.store check`` reports: run files that cannot be read (torn,
    zero bytes, not Parquet, not a run) and files whose columns conflict with the others' types."""
    d = _as_dir(store)
    with _reader_lock(store):
        kinds = {"run_files": run_files(store), "segments": segment_files(store), "updates": update_files(store)}
    files = [f for fs in kinds.values() for f in fs]
    bad, schemas = [], {}
    odd = odd_files(store)
    for f, what in odd:
        bad.append({"file": f.relative_to(d).as_posix(), "problem": what})
    for f in files:
        name = f.relative_to(d).as_posix()
        try:
            t, problem = _inspect(f, many=f.parent.name == SEGMENTS)
        except _Vanished:
            continue
        if problem:
            bad.append({"file": name, "problem": problem})
        elif f.parent.name != UPDATES:
            schemas[name] = t.schema
    conflicts = []
    if schemas and _unified_schema(schemas.values()) is None:
        types: dict[str, dict[str, tuple]] = {}
        for name, sch in schemas.items():
            for field in sch:
                entry = types.setdefault(field.name, {}).setdefault(str(field.type), (field.type, []))
                entry[1].append(name)
        for col, by_type in types.items():
            if _unified_schema([pa.schema([pa.field(col, t)]) for t, _ in by_type.values()]) is None:
                conflicts.append({"column": col, "types": {k: sorted(v)[:5] for k, (_, v) in by_type.items()}})
    return {"files": len(files) + len(odd), **{k: len(v) for k, v in kinds.items()},
            "readable": len(files) - (len(bad) - len(odd)), "bad": bad, "conflicts": conflicts}
