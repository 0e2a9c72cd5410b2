"""The store at scale: ``update_run`` writes one side file and rewrites no other run's file;
``compact`` merges run files and side files into one segment that ``pandas.read_parquet(DIR)``
reads, and every reader sees each run exactly once before, during and after it; a run written
again after ``compact`` leaves its segment; ``check`` covers segments and side files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling import store
from scaling.errors import DataError


def runs(n):
    return [{"run_id": f"r{i:04d}", "params": 1e6 * (i + 1), "tokens": 2e7, "loss": 3.0 - 1e-4 * i} for i in range(n)]


def stats(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.stat().st_mtime_ns for p in d.rglob("*.parquet")
            if not p.name.startswith("_")}


def test_update_run_writes_one_side_file_and_rewrites_no_other_file(tmp_path):
    d = tmp_path / "s"
    for r in runs(30):
        store.write_run(d, r)
    before = stats(d)
    store.update_run(d, "r0007", **{"eval.cloze.acc": 0.5, "eval.cloze.acc_stderr": 0.01})
    after = stats(d)
    assert set(after) - set(before) == {"_updates/r0007.parquet"}
    assert all(after[k] == v for k, v in before.items())          # nothing else rewritten
    got = store.read_runs(d).set_index("run_id")
    assert got.loc["r0007", "eval.cloze.acc"] == 0.5 and got["eval.cloze.acc"].notna().sum() == 1
    store.update_run(d, "r0007", **{"eval.cloze.acc": 0.6})      # a second update keeps the first's other columns
    row = store.read_run(d, "r0007")
    assert row["eval.cloze.acc"] == 0.6 and row["eval.cloze.acc_stderr"] == 0.01 and row["loss"] == runs(30)[7]["loss"]


def test_an_update_whose_type_conflicts_is_refused(tmp_path):
    d = tmp_path / "s"
    store.write_run(d, runs(1)[0])
    with pytest.raises(DataError, match="loss"):
        store.update_run(d, "r0000", loss="high")
    assert not store.update_path(d, "r0000").exists()


def test_a_run_written_again_drops_its_old_evaluations(tmp_path):
    d = tmp_path / "s"
    store.write_run(d, runs(1)[0])
    store.update_run(d, "r0000", **{"eval.acc": 0.5})
    store.write_run(d, {**runs(1)[0], "loss": 2.5})               # retrained: the old scores are not its
    row = store.read_run(d, "r0000")
    assert row["loss"] == 2.5 and not row.get("eval.acc") == 0.5


def test_compact_makes_one_segment_that_every_reader_reads_once(tmp_path, capsys):
    d = tmp_path / "s"
    for r in runs(50):
        store.write_run(d, r)
    store.update_run(d, "r0003", **{"eval.acc": 0.25})
    before = store.read_runs(d)
    assert store.main(["compact", str(d), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs"] == 50 and report["run_files"] == 50 and report["updates"] == 1
    assert store.run_files(d) == [] and store.update_files(d) == [] and len(store.segment_files(d)) == 1
    after = store.read_runs(d)
    pd.testing.assert_frame_equal(before, after, check_dtype=False)
    direct = pd.read_parquet(d)
    assert len(direct) == 50 and direct["run_id"].is_unique
    assert direct.set_index("run_id").loc["r0003", "eval.acc"] == 0.25
    assert store.read_run(d, "r0003")["eval.acc"] == 0.25 and store.read_run(d, "nope") is None

    store.write_run(d, {**runs(50)[10], "loss": 9.0})             # rerun of a compacted run
    store.write_run(d, {"run_id": "new", "params": 1.0, "tokens": 1.0, "loss": 1.0, "extra": 3})
    direct = pd.read_parquet(d).set_index("run_id")
    assert len(direct) == 51 and direct.index.is_unique and direct.loc["r0010", "loss"] == 9.0
    assert direct.loc["new", "extra"] == 3 and np.isnan(direct.loc["r0003", "extra"])
    assert len(store.read_runs(d)) == 51
    assert store.check(d)["bad"] == [] and store.check(d)["conflicts"] == []
    store.compact(d)                                              # again: the old segment is absorbed
    assert len(store.segment_files(d)) == 1 and len(pd.read_parquet(d)) == 51


def test_check_reports_a_torn_segment(tmp_path, capsys):
    d = tmp_path / "s"
    for r in runs(5):
        store.write_run(d, r)
    store.compact(d)
    seg = store.segment_files(d)[0]
    seg.write_bytes(seg.read_bytes()[:50])
    report = store.check(d)
    assert [b["file"] for b in report["bad"]] == [seg.relative_to(d).as_posix()]
    assert (report["files"], report["run_files"], report["segments"], report["updates"]) == (1, 0, 1, 0)
    assert store.main(["check", str(d)]) == 1
    assert "1 file(s) (0 run file(s), 1 segment(s), 0 side file(s)), 0 readable" in capsys.readouterr().out


READER = textwrap.dedent("""
    import json, sys
    from scaling import store
    counts = []
    for _ in range(int(sys.argv[2])):
        ids = store.read_runs(sys.argv[1])["run_id"].tolist()
        counts.append([len(ids), len(set(ids))])
    print(json.dumps(counts))
""")


def test_readers_see_each_run_exactly_once_while_the_store_is_compacted(tmp_path):
    d = tmp_path / "s"
    for r in runs(300):
        store.write_run(d, r)
    for r in runs(300)[::7]:
        store.update_run(d, r["run_id"], **{"eval.acc": 0.5})
    store.read_runs(d)                                            # the index, as a grid leaves it
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(d), "40"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    compactions = 0
    while reader.poll() is None:                                  # compactions for as long as it reads
        store.compact(d)
        store.write_run(d, {**runs(300)[compactions % 300], "loss": 5.0})   # and a rerun each time
        compactions += 1
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-2000:]
    counts = json.loads(out)
    assert compactions >= 3 and len(counts) == 40
    assert all(c == [300, 300] for c in counts), counts


def test_a_claim_records_its_owner_and_a_second_claim_fails_while_it_is_held(tmp_path):
    import socket
    d = tmp_path / "s"
    with store.claim_run(d, "r1") as mine:
        assert mine
        owner = store.claim_owner(d, "r1")
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        probe = subprocess.run([sys.executable, "-c", "import sys; from scaling import store\n"
                                "with store.claim_run(sys.argv[1], 'r1') as m: print(m)", str(d)],
                               capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert probe.stdout.strip() == "False", probe.stderr[-1000:]
    assert not (d / "_claims").exists() and store.claim_owner(d, "r1") is None   # released: nothing left
    with store.claim_run(d, "r1") as mine:                        # and claimable again
        assert mine


def test_a_claim_on_a_lock_file_its_holder_just_removed_starts_again(tmp_path, monkeypatch):
    """Holders remove their lock file on release. A claimant that opened the file just before
    (and so locks a removed inode) must not count as holding the run: it opens the path again."""
    d = tmp_path / "s"
    real_open, opened = os.open, []

    def open_then_holder_releases(path, *args):
        fd = real_open(path, *args)
        if str(path).endswith(".lock") and not opened:
            os.unlink(path)                                         # the previous holder let go
        opened.append(str(path))
        return fd
    monkeypatch.setattr(os, "open", open_then_holder_releases)
    with store.claim_run(d, "r1") as mine:
        monkeypatch.setattr(os, "open", real_open)
        assert mine and len(opened) == 2 and (d / "_claims" / "r1.lock").exists()
        probe = subprocess.run([sys.executable, "-c", "import sys; from scaling import store\n"
                                "with store.claim_run(sys.argv[1], 'r1') as m: print(m)", str(d)],
                               capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert probe.stdout.strip() == "False", probe.stderr[-1000:]  # the claim is on the file others see
    assert not (d / "_claims").exists()
